"""What the fake Bitbucket does wrong, and what it counts: ``Faults``, ``Counters``, the middleware.

Every request (except ``/_fake/...``) passes through :func:`faults_middleware`,
which counts it, delays it, checks its ``Authorization`` and answers 429, an
injected error or a diffstat timeout as ``Faults`` says, before the route's
handler runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
from aiohttp import web

__all__ = [
    "AUTH",
    "COUNTERS",
    "FAULTS",
    "Counters",
    "Faults",
    "NotFound",
    "error_response",
    "faults_middleware",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_encode = msgspec.json.Encoder().encode


@dataclass
class Faults:
    """What the fake does wrong; change fields at any time, they apply to the next request."""

    #: Seconds every request waits before it is answered.
    latency: float = 0.0
    #: Every Nth request (counted over the whole server) is answered 429.
    rate_limit_every: int = 0
    #: ``Retry-After`` seconds sent with those 429s (None: no header, like Bitbucket).
    retry_after: float | None = None
    #: A request repeated after its 429 is served, and the 429 goes to the next new
    #: request instead (a server honouring its own Retry-After); False: purely by count.
    honour_retries: bool = True
    #: Every Nth request is answered ``error_status``.
    error_every: int = 0
    error_status: int = 503
    #: Every Nth diffstat request is answered 555 (diffstat generation timed out).
    diffstat_timeout_every: int = 0
    #: Opaque page tokens instead of page numbers on every listing.
    opaque_pages: bool = False
    #: A ``next`` on the last page, pointing at an empty page that has a ``next`` too.
    next_on_empty_last: bool = False
    #: Send ``next`` URLs on this origin instead (e.g. ``http://evil.example``).
    next_origin: str | None = None
    #: Requests whose path contains a key are answered with its status, every time.
    fail_paths: dict[str, int] = field(default_factory=dict)
    #: Requests to a route are answered with its status, every time. Keys: a route
    #: name (``effective_default_reviewers``), ``route ws/slug`` (as in
    #: ``Counters.repo_routes``) or ``route ws/slug#id`` for one pull request.
    fail_routes: dict[str, int] = field(default_factory=dict)


@dataclass
class Counters:
    """Requests per route and status, and the peak number in flight."""

    total: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    #: ``route workspace/slug`` → requests, for per-repository assertions.
    repo_routes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    diffstat_requests: int = 0
    authorizations: set[str] = field(default_factory=set)
    #: Requests answered 429 and not yet repeated; a 429 due but not yet given.
    rate_limited: set[str] = field(default_factory=set)
    rate_limit_due: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly counters (without the authorization headers seen)."""
        out = asdict(self)
        out.pop("authorizations")
        out.pop("rate_limited")
        out["routes"] = dict(self.routes)
        out["repo_routes"] = dict(self.repo_routes)
        out["statuses"] = {str(k): v for k, v in self.statuses.items()}
        return out


FAULTS = web.AppKey("faults", Faults)
COUNTERS = web.AppKey("counters", Counters)
AUTH = web.AppKey("expected_auth", str)


class NotFound(Exception):
    """Answered 404 with Bitbucket's error envelope."""


def error_response(status: int, message: str) -> web.Response:
    body = _encode({"type": "error", "error": {"message": message}})
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts, delays, authenticates and breaks requests as ``Faults`` says."""
    if request.path.startswith("/_fake/"):
        return await handler(request)
    counters, faults = request.app[COUNTERS], request.app[FAULTS]
    counters.total += 1
    n = counters.total
    route = request.match_info.route.name or "unknown"
    counters.routes[route] += 1
    if "slug" in request.match_info:
        counters.repo_routes[
            f"{route} {request.match_info['ws']}/{request.match_info['slug']}"
        ] += 1
    counters.in_flight += 1
    counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
    try:
        if faults.latency:
            await asyncio.sleep(faults.latency)
        response = await _answer(request, handler, n, route)
    finally:
        counters.in_flight -= 1
    counters.statuses[response.status] += 1
    return response


def _route_fault(request: web.Request, route: str, fail: dict[str, int]) -> int | None:
    info = request.match_info
    keys = [route]
    if "slug" in info:
        keys.append(f"{route} {info['ws']}/{info['slug']}")
        if "id" in info:
            keys.append(f"{keys[-1]}#{info['id']}")
    return next((fail[k] for k in reversed(keys) if k in fail), None)


async def _answer(request: web.Request, handler: Handler, n: int, route: str) -> web.StreamResponse:
    counters, faults = request.app[COUNTERS], request.app[FAULTS]
    authorization = request.headers.get("Authorization")
    if authorization:
        counters.authorizations.add(authorization)
    expected = request.app.get(AUTH)
    if expected and authorization != expected:
        return error_response(401, "Token is invalid, expired, or not supported for this endpoint.")
    if faults.rate_limit_every and n % faults.rate_limit_every == 0:
        counters.rate_limit_due = True
    retried = request.path_qs in counters.rate_limited
    if retried:
        counters.rate_limited.discard(request.path_qs)
    if counters.rate_limit_due and not (retried and faults.honour_retries):
        counters.rate_limit_due = False
        counters.rate_limited.add(request.path_qs)
        headers = {}
        if faults.retry_after is not None:
            headers["Retry-After"] = f"{faults.retry_after:g}"
        return web.Response(
            status=429, text="Rate limit for this resource has been exceeded", headers=headers
        )
    for fragment, status in faults.fail_paths.items():
        if fragment in request.path:
            return error_response(status, f"Injected failure for {fragment}")
    injected = _route_fault(request, route, faults.fail_routes) if faults.fail_routes else None
    if injected is not None:
        return error_response(injected, f"Injected failure for {route}")
    if faults.error_every and n % faults.error_every == 0:
        return error_response(faults.error_status, "Something went wrong")
    if route == "diffstat":
        counters.diffstat_requests += 1
        every = faults.diffstat_timeout_every
        if every and counters.diffstat_requests % every == 0:
            return error_response(555, "Generating the diffstat timed out")
    try:
        return await handler(request)
    except NotFound as exc:
        return error_response(404, str(exc))
