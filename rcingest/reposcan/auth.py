"""The ``Authorization`` header git sends to Bitbucket Cloud for an ``AuthConfig``.

git over HTTPS does not take every credential the way the REST API does
(../shared/docs/bitbucket-api.md §3 "Authentication"):

* an Atlassian API token: REST wants Basic ``email:api_token``, git wants
  the user ``x-bitbucket-api-token-auth`` (or the account's Bitbucket user
  name, which the config does not hold) with the token as the password;
* a repository/project/workspace access token (and an OAuth access token,
  both sent as Bearer to REST): git wants Basic ``x-token-auth:{token}``;
* the legacy app password: Basic ``username:app_password``, as for REST.

So the header is Basic in every case; it is given to git as
``http.extraHeader`` (``rcingest.reposcan.clone``), never in the URL.
"""

from __future__ import annotations

import base64
import logging

from rcingest.bitbucket.auth import AuthConfig, auth_header, auth_secrets

__all__ = ["ACCESS_TOKEN_GIT_USER", "API_TOKEN_GIT_USER", "git_auth_header", "git_auth_secrets"]

#: §3: the static git user name of an Atlassian API token.
API_TOKEN_GIT_USER = "x-bitbucket-api-token-auth"  # noqa: S105 (a user name)
#: §3: the git user name of an access token.
ACCESS_TOKEN_GIT_USER = "x-token-auth"  # noqa: S105 (a user name)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def git_auth_header(config: AuthConfig, logger: logging.Logger | None = None) -> str | None:
    """The header value for git, or ``None`` for anonymous access.

    Checks the settings exactly as the REST client does (``ConfigError`` naming
    fields, the app-password warning).
    """
    if auth_header(config, logger) is None:
        return None
    return _git_header(config)


def _git_header(config: AuthConfig) -> str | None:
    if config.api_token:
        return _basic(API_TOKEN_GIT_USER, config.api_token)
    if config.access_token:
        return _basic(ACCESS_TOKEN_GIT_USER, config.access_token)
    if config.username and config.app_password:
        return _basic(config.username, config.app_password)
    return None


def git_auth_secrets(config: AuthConfig) -> frozenset[str]:
    """Every value to redact for git: the REST ones plus git's encoded header."""
    values = set(auth_secrets(config))
    header = _git_header(config)  # unchecked: redaction must not raise or warn
    if header is not None:
        values.add(header.split(" ", 1)[1])
    return frozenset(values)
