"""Credentials for Bitbucket Cloud and the ``Authorization`` header they make.

Three ways, in the order Atlassian recommends them: an Atlassian API token
sent as Basic ``email:token``; a repository/project/workspace access token or
an OAuth access token sent as ``Bearer``; and the legacy username + app
password (Basic), which Atlassian removed on 2026-07-28 and which therefore
only works with a warning. Pure functions: no I/O, no logging of values.
"""

from __future__ import annotations

import base64
import logging

from rcingest.errors import ConfigError
from rcingest.interfaces import ComponentConfig

__all__ = ["AuthConfig", "auth_header", "auth_secrets"]


class AuthConfig(ComponentConfig):
    """How to authenticate; embedded in source configs as ``auth:``.

    Fill in exactly one pair or token, from the environment
    (``api_token: ${BITBUCKET_API_TOKEN}``); leave everything empty for
    anonymous access (60 requests/hour on Bitbucket Cloud).
    """

    #: Atlassian account e-mail, the user name of an API token (Basic auth).
    email: str | None = None
    #: Atlassian API token with Bitbucket scopes (Basic ``email:api_token``).
    api_token: str | None = None
    #: Repository/project/workspace access token or OAuth access token (Bearer).
    access_token: str | None = None
    #: Legacy: Bitbucket username for an app password.
    username: str | None = None
    #: Legacy: app password (removed by Atlassian in July 2026; warns).
    app_password: str | None = None

    def __post_init__(self) -> None:
        # An empty or blank value (``${BITBUCKET_EMAIL:-}`` with the variable
        # unset) is the same as an unset field.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():
                setattr(self, name, None)

    @property
    def anonymous(self) -> bool:
        """True when no credential at all is set."""
        return not any(getattr(self, name) for name in self.__struct_fields__)


def _basic(user: str, password: str) -> str:
    raw = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def auth_header(config: AuthConfig, logger: logging.Logger | None = None) -> str | None:
    """The ``Authorization`` header value for ``config``, or ``None`` for anonymous access.

    Raises ``ConfigError`` (naming fields, never values) when the settings are
    incomplete or mix two methods; warns when the legacy app password is used.
    """
    header = _header(config)
    if config.app_password:
        (logger or logging.getLogger("rcingest.bitbucket")).warning(
            "auth: app passwords were removed by Atlassian on 2026-07-28; "
            "use an API token (email + api_token) or an access token"
        )
    return header


def _header(config: AuthConfig) -> str | None:
    methods = []
    if config.email or config.api_token:
        methods.append("email + api_token")
    if config.access_token:
        methods.append("access_token")
    if config.username or config.app_password:
        methods.append("username + app_password")
    if len(methods) > 1:
        raise ConfigError(f"auth: choose one way to authenticate, not {' and '.join(methods)}")
    if config.email or config.api_token:
        if not (config.email and config.api_token):
            missing = "email" if not config.email else "api_token"
            raise ConfigError(f"auth.{missing}: an API token needs both email and api_token")
        return _basic(config.email, config.api_token)
    if config.access_token:
        return "Bearer " + config.access_token
    if config.username or config.app_password:
        if not (config.username and config.app_password):
            missing = "username" if not config.username else "app_password"
            raise ConfigError(
                f"auth.{missing}: an app password needs both username and app_password"
            )
        return _basic(config.username, config.app_password)
    return None


def auth_secrets(config: AuthConfig) -> frozenset[str]:
    """Every credential value of ``config`` (and the encoded header), for redaction."""
    values = {v for v in (config.api_token, config.access_token, config.app_password) if v}
    header = None
    try:
        header = _header(config)
    except ConfigError:
        pass
    if header is not None:
        values.add(header.split(" ", 1)[1])
    return frozenset(values)
