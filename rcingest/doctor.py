"""``rcingest validate --check-connection``: try the API host and the credentials once.

Read-only and small: for each component that talks to Bitbucket (anything
whose config has ``base_url`` and ``auth``), one request to the workspace's
repository listing (``pagelen=1``), then one per configured repository (at
most ``MAX_REPOSITORIES``), or, without a workspace (the webhook daemon's
backfill client), one to the global listing. No retries, no redirects
followed (credentials go to the configured host and nowhere else), a short
timeout, and every detail redacted of the pipeline's secrets.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from rcingest.bitbucket.auth import AuthConfig, auth_header, auth_secrets
from rcingest.config import Component, Pipeline
from rcingest.errors import ConfigError
from rcingest.runtime import redact

__all__ = ["MAX_REPOSITORIES", "Check", "check_connection"]

#: Repositories tried one by one at most (the listing request covers the rest).
MAX_REPOSITORIES = 10
TIMEOUT = 10.0
_WHAT = {401: "credentials refused", 403: "no permission", 404: "not found (or no access)"}


@dataclass(frozen=True)
class Check:
    """One thing tried: what, whether it worked, and what was seen."""

    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


def _talks_to_bitbucket(component: Component) -> bool:
    config = component.config
    return isinstance(getattr(config, "base_url", None), str) and isinstance(
        getattr(config, "auth", None), AuthConfig
    )


def check_connection(pipeline: Pipeline) -> list[Check]:
    """Every check for the pipeline's Bitbucket components, in order; no component: none."""
    components = [
        c for c in [pipeline.source, *pipeline.enrichers, *pipeline.sinks] if _talks_to_bitbucket(c)
    ]
    return asyncio.run(_check_all(components, pipeline.secrets))


async def _check_all(components: list[Component], secrets: frozenset[str]) -> list[Check]:
    import aiohttp

    checks: list[Check] = []
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for component in components:
            checks.extend(await _check_one(session, component, secrets))
    return checks


def _method(auth: AuthConfig) -> str:
    if auth.email or auth.api_token:
        return "API token (email + api_token)"
    if auth.access_token:
        return "access token (Bearer)"
    if auth.username or auth.app_password:
        return "app password (legacy)"
    return "anonymous"


async def _check_one(session: Any, component: Component, secrets: frozenset[str]) -> list[Check]:
    config: Any = component.config
    base = str(config.base_url).rstrip("/")
    hidden = secrets | auth_secrets(config.auth)
    try:
        header = auth_header(config.auth)
    except ConfigError as exc:  # validation reports this too; say it here as well
        return [Check(f"{component.label}: credentials", False, redact(str(exc), hidden))]
    headers = {"Accept": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    label = component.label
    workspace = getattr(config, "workspace", None)
    first = f"/repositories/{quote(workspace, safe='')}" if workspace else "/repositories"
    status, detail = await _get(session, f"{base}{first}?pagelen=1", headers, hidden)
    what = f"{label}: {base} with {_method(config.auth)}"
    if status != 200:
        return [Check(what, False, detail)]
    checks = [Check(what, True, detail)]
    repositories = list(getattr(config, "repositories", None) or [])[:MAX_REPOSITORIES]
    for entry in repositories:
        full = entry if "/" in entry else f"{workspace}/{entry}"
        ws, _, slug = full.partition("/")
        path = f"/repositories/{quote(ws, safe='')}/{quote(slug, safe='')}"
        status, detail = await _get(session, base + path, headers, hidden)
        checks.append(Check(f"{label}: repository {full}", status == 200, detail))
    return checks


async def _get(
    session: Any, url: str, headers: dict[str, str], hidden: frozenset[str]
) -> tuple[int, str]:
    """One GET, no redirect followed: (status or 0, what to print)."""
    import aiohttp

    started = time.monotonic()
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            ms = (time.monotonic() - started) * 1000
            if resp.status == 200:
                return 200, f"200 in {ms:.0f} ms"
            if 300 <= resp.status < 400:
                where = resp.headers.get("Location", "?")
                return resp.status, redact(
                    f"{resp.status}: redirects to {where} (not followed)", hidden
                )
            meaning = _WHAT.get(resp.status, resp.reason or "error")
            return resp.status, f"{resp.status} {meaning}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        return 0, redact(f"cannot reach it: {reason}", hidden)
