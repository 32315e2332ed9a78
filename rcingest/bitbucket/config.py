"""The REST client's settings, and the checks its constructor makes, without aiohttp.

``ClientConfig`` is the base of the ``bitbucket_rest`` and ``bitbucket_webhook``
source configs, which ``rcingest validate``, ``rcingest schema`` and plugin
discovery need; the client itself (``rcingest.bitbucket.client``) imports
aiohttp, yarl and backoff, which only a run that talks to Bitbucket should pay
for. ``client.py`` re-exports ``ClientConfig`` so existing imports keep working.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from rcingest.bitbucket.auth import AuthConfig, auth_header
from rcingest.errors import ConfigError
from rcingest.interfaces import ComponentConfig

__all__ = ["DEFAULT_REQUESTS_PER_HOUR", "ClientConfig", "check_client_config"]

#: Bitbucket Cloud's hourly limit for authenticated user tokens: the default budget.
DEFAULT_REQUESTS_PER_HOUR = 1000


class ClientConfig(ComponentConfig):
    """Settings of the REST client; a source config inherits them at its top level."""

    #: The API root; change it for the fake Bitbucket or a proxy.
    base_url: str = "https://api.bitbucket.org/2.0"
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    #: Requests in flight at most.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    #: Client-side budget over a rolling hour (Bitbucket: 1,000 for user tokens); 0 = unlimited.
    #: Anonymous against api.bitbucket.org, the default 1,000 becomes 60.
    requests_per_hour: Annotated[int, msgspec.Meta(ge=0)] = DEFAULT_REQUESTS_PER_HOUR
    #: Total seconds for one request (connect + read).
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: Attempts per request, the first included.
    max_tries: Annotated[int, msgspec.Meta(ge=1)] = 8
    #: Seconds one request may spend retrying, in all.
    max_time: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    #: First back-off delay in seconds; doubles per retry up to ``backoff_max``.
    backoff_base: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    backoff_max: Annotated[float, msgspec.Meta(ge=0)] = 60.0


def client_settings(config: Any) -> ClientConfig:
    """The ``ClientConfig`` part of a component's config that extends it (or holds its fields)."""
    fields = {f: getattr(config, f) for f in ClientConfig.__struct_fields__ if hasattr(config, f)}
    return msgspec.convert(fields, ClientConfig, from_attributes=True)


def check_client_config(config: ClientConfig, logger: logging.Logger | None = None) -> None:
    """Raise the ``ConfigError`` ``BitbucketClient(config, ...)`` would raise, without aiohttp.

    For ``rcingest validate`` (a source's ``preflight``): the same base URL
    rule (an http(s) URL with a host) and the same auth rules and warnings
    (``auth_header``). ``tests/test_startup.py`` checks that both agree.
    """
    parts = urlsplit(config.base_url.rstrip("/"))
    # A malformed host or port raises ValueError here as it does in yarl (the
    # build then "cannot start", in both cases).
    _ = parts.port
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base_url: expected an http(s) URL, got {config.base_url!r}")
    auth_header(config.auth, logger)
