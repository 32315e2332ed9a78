"""The fake Bitbucket Cloud REST API on aiohttp.web, with fault injection and counters.

Routes (under ``/2.0``): workspaces; repositories of a workspace (``q``,
``role``); one repository (with ``mainbranch``); branches; commits per branch
with ``include``/``exclude``; one commit by full or short hash; diffstat;
pull requests (``state``, ``q``); one pull request; its commits (opaque
cursor pages). ``GET /_fake/stats`` returns the counters as JSON.
"""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from rcingest.testing.fake_bitbucket.bbql import BBQLError, compile_query
from rcingest.testing.fake_bitbucket.data import (
    FakeData,
    FakePullRequest,
    FakeRepo,
)
from rcingest.testing.fake_bitbucket.render import render_commit, render_pr, render_repo

__all__ = ["Counters", "Faults", "make_app"]

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


DATA = web.AppKey("data", FakeData)
FAULTS = web.AppKey("faults", Faults)
COUNTERS = web.AppKey("counters", Counters)
AUTH = web.AppKey("expected_auth", str)


class _BadPage(ValueError):
    """An unreadable ``page`` parameter (400)."""


class _NotFound(Exception):
    """Answered 404 with Bitbucket's error envelope."""


def _error(status: int, message: str) -> web.Response:
    body = _encode({"type": "error", "error": {"message": message}})
    return web.Response(status=status, body=body, content_type="application/json")


def _json(value: Any) -> web.Response:
    return web.Response(body=_encode(value), content_type="application/json")


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _token(n: int) -> str:
    return base64.urlsafe_b64encode(f"cursor:{n}".encode()).decode().rstrip("=")


def _page_number(raw: str | None) -> int:
    if raw is None:
        return 1
    if raw.isdigit():
        return int(raw)
    try:
        padded = raw + "=" * (-len(raw) % 4)
        return int(base64.urlsafe_b64decode(padded).decode().split(":", 1)[1])
    except (ValueError, IndexError):
        raise _BadPage("invalid page token") from None


def _paginate(
    request: web.Request,
    items: list[Any],
    render: Callable[[Any], dict[str, Any]],
    *,
    max_len: int,
    default_len: int,
    opaque: bool = False,
    numbered: bool = True,
) -> web.Response:
    faults = request.app[FAULTS]
    try:
        pagelen = int(request.query.get("pagelen", default_len))
    except ValueError:
        return _error(400, "Invalid pagelen")
    if pagelen < 1 or pagelen > max_len:
        return _error(400, "Invalid pagelen")
    try:
        page = _page_number(request.query.get("page"))
    except _BadPage as exc:
        return _error(400, str(exc))
    chunk = items[(page - 1) * pagelen : page * pagelen]
    body: dict[str, Any] = {"pagelen": pagelen, "values": [render(v) for v in chunk]}
    if numbered and not (opaque or faults.opaque_pages):
        body.update(page=page, size=len(items))
    more = page * pagelen < len(items)
    if more or (faults.next_on_empty_last and (chunk or page * pagelen >= len(items))):
        token = _token(page + 1) if (opaque or faults.opaque_pages) else str(page + 1)
        rel = str(request.rel_url.update_query({"page": token}))
        origin = faults.next_origin or str(request.url.origin())
        body["next"] = origin + rel
    return _json(body)


def _repo(request: web.Request) -> FakeRepo:
    name = f"{request.match_info['ws']}/{request.match_info['slug']}"
    repo = request.app[DATA].repos.get(name)
    if repo is None:
        raise _NotFound(f"Repository {name} not found")
    return repo


async def workspaces(request: web.Request) -> web.Response:
    ws = request.app[DATA].spec.workspace
    value = {"type": "workspace", "slug": ws, "name": ws.title()}
    if "ws" in request.match_info:
        if request.match_info["ws"] != ws:
            return _error(404, f"Workspace {request.match_info['ws']} not found")
        return _json(value)
    return _paginate(request, [value], lambda v: v, max_len=100, default_len=10)


async def repositories(request: web.Request) -> web.Response:
    data = request.app[DATA]
    ws = request.match_info["ws"]
    if ws != data.spec.workspace:
        return _error(404, f"Workspace {ws} not found")
    repos = list(data.repos.values())
    role = request.query.get("role")
    if role in ("admin", "owner"):
        repos = [r for r in repos if r.owner_role]
    elif role not in (None, "member", "contributor"):
        return _error(400, f"Invalid role {role}")
    if "q" in request.query:
        try:
            predicate = compile_query(request.query["q"])
        except BBQLError as exc:
            return _error(400, f"Invalid query: {exc}")
        rendered = {r.full_name: render_repo(r) for r in repos}

        def getter(repo: FakeRepo) -> Callable[[str], Any]:
            def get(name: str) -> Any:
                value: Any = rendered[repo.full_name]
                for part in name.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if name == "updated_on":
                    return repo.updated_on
                return value

            return get

        try:
            repos = [r for r in repos if predicate(getter(r))]
        except BBQLError as exc:
            return _error(400, f"Invalid query: {exc}")
    return _paginate(request, repos, render_repo, max_len=100, default_len=10)


async def repository(request: web.Request) -> web.Response:
    return _json(render_repo(_repo(request)))


async def branches(request: web.Request) -> web.Response:
    repo = _repo(request)
    data = request.app[DATA]
    values = [
        {"type": "branch", "name": n, "target": render_commit(data, repo, repo.commits[h])}
        for n, h in sorted(repo.heads.items())
    ]
    return _paginate(request, values, lambda v: v, max_len=100, default_len=10)


async def commits(request: web.Request) -> web.Response:
    repo = _repo(request)
    data = request.app[DATA]
    include = request.query.getall("include", [])
    if request.match_info.get("revision"):
        include = [request.match_info["revision"], *include]
    listing = repo.listing(include, request.query.getall("exclude", []))
    if listing is None:
        return _error(404, "Commit not found")
    return _paginate(
        request,
        listing,
        lambda c: render_commit(data, repo, c),
        max_len=100,
        default_len=30,
        numbered=False,
    )


async def commit(request: web.Request) -> web.Response:
    repo = _repo(request)
    found = repo.resolve(request.match_info["rev"])
    if found is None:
        return _error(404, f"Commit not found: {request.match_info['rev']}")
    return _json(render_commit(request.app[DATA], repo, found))


async def diffstat(request: web.Request) -> web.Response:
    repo = _repo(request)
    spec = request.match_info["spec"].split("..", 1)[0]
    found = repo.resolve(spec)
    if found is None:
        return _error(404, f"Commit not found: {spec}")
    files = repo.files(found.hash, request.app[DATA].spec.max_files)
    return _paginate(request, files, lambda v: v, max_len=5000, default_len=500)


def _prs(request: web.Request, repo: FakeRepo) -> list[FakePullRequest]:
    states = request.query.getall("state", ["OPEN"])
    prs = [p for p in repo.pull_requests if p.state in states]
    if "q" in request.query:
        predicate = compile_query(request.query["q"])
        prs = [p for p in prs if predicate(lambda name, p=p: getattr(p, name, None))]  # type: ignore[misc]
    # Bitbucket's observed default order: most recently updated first.
    return sorted(prs, key=lambda p: p.updated_on, reverse=True)


async def pullrequests(request: web.Request) -> web.Response:
    repo = _repo(request)
    try:
        prs = _prs(request, repo)
    except BBQLError as exc:
        return _error(400, f"Invalid query: {exc}")
    data = request.app[DATA]
    return _paginate(request, prs, lambda p: render_pr(data, repo, p), max_len=50, default_len=10)


def _pr(request: web.Request, repo: FakeRepo) -> FakePullRequest:
    pr_id = int(request.match_info["id"])
    for pr in repo.pull_requests:
        if pr.id == pr_id:
            return pr
    raise _NotFound(f"Pull request {pr_id} not found")


async def pullrequest(request: web.Request) -> web.Response:
    repo = _repo(request)
    return _json(render_pr(request.app[DATA], repo, _pr(request, repo)))


async def pullrequest_commits(request: web.Request) -> web.Response:
    repo = _repo(request)
    pr = _pr(request, repo)
    data = request.app[DATA]
    listing = [repo.commits[h] for h in pr.commits]
    return _paginate(
        request,
        listing,
        lambda c: render_commit(data, repo, c),
        max_len=100,
        default_len=10,
        opaque=True,
        numbered=False,
    )


async def stats(request: web.Request) -> web.Response:
    return _json(request.app[COUNTERS].as_dict())


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


async def _answer(request: web.Request, handler: Handler, n: int, route: str) -> web.StreamResponse:
    counters, faults = request.app[COUNTERS], request.app[FAULTS]
    authorization = request.headers.get("Authorization")
    if authorization:
        counters.authorizations.add(authorization)
    expected = request.app.get(AUTH)
    if expected and authorization != expected:
        return _error(401, "Token is invalid, expired, or not supported for this endpoint.")
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
            return _error(status, f"Injected failure for {fragment}")
    if faults.error_every and n % faults.error_every == 0:
        return _error(faults.error_status, "Something went wrong")
    if route == "diffstat":
        counters.diffstat_requests += 1
        every = faults.diffstat_timeout_every
        if every and counters.diffstat_requests % every == 0:
            return _error(555, "Generating the diffstat timed out")
    try:
        return await handler(request)
    except _NotFound as exc:
        return _error(404, str(exc))


def make_app(
    data: FakeData, faults: Faults | None = None, *, expected_auth: str | None = None
) -> web.Application:
    """The fake's ``web.Application`` (use ``FakeBitbucket`` to run it on loopback)."""
    app = web.Application(middlewares=[faults_middleware])
    app[DATA] = data
    app[FAULTS] = faults or Faults()
    app[COUNTERS] = Counters()
    if expected_auth:
        app[AUTH] = expected_auth
    repo = "/2.0/repositories/{ws}/{slug}"
    app.router.add_get("/2.0/workspaces", workspaces, name="workspaces")
    app.router.add_get("/2.0/workspaces/{ws}", workspaces, name="workspace")
    app.router.add_get("/2.0/repositories/{ws}", repositories, name="repositories")
    app.router.add_get(repo, repository, name="repository")
    app.router.add_get(repo + "/refs/branches", branches, name="branches")
    app.router.add_get(repo + "/commits", commits, name="commits")
    app.router.add_get(repo + "/commits/{revision:.+}", commits, name="commits_rev")
    app.router.add_get(repo + "/commit/{rev}", commit, name="commit")
    app.router.add_get(repo + "/diffstat/{spec:.+}", diffstat, name="diffstat")
    app.router.add_get(repo + "/pullrequests", pullrequests, name="pullrequests")
    app.router.add_get(repo + "/pullrequests/{id:\\d+}", pullrequest, name="pullrequest")
    app.router.add_get(
        repo + "/pullrequests/{id:\\d+}/commits", pullrequest_commits, name="pullrequest_commits"
    )
    app.router.add_get("/_fake/stats", stats, name="fake_stats")
    return app
