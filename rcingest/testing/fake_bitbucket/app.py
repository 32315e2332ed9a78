"""The fake Bitbucket Cloud REST API on aiohttp.web (faults and counters: ``faults.py``).

Routes (under ``/2.0``): workspaces; repositories of a workspace (``q``,
``role``); one repository (with ``mainbranch``); branches; commits per branch
with ``include``/``exclude``; one commit by full or short hash; diffstat;
pull requests (``state``, ``q``); one pull request (with participants and
reviewers); its commits (opaque cursor pages). Diffs and writes: ``writeback.py``;
reviews, approvals, default reviewers, PR statuses: ``review.py``.
``GET /_fake/stats`` returns the counters as JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
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
from rcingest.testing.fake_bitbucket.faults import (
    AUTH,
    COUNTERS,
    FAULTS,
    Counters,
    Faults,
    NotFound,
    error_response,
    faults_middleware,
)
from rcingest.testing.fake_bitbucket.render import (
    render_commit,
    render_pr,
    render_pr_detail,
    render_repo,
)
from rcingest.testing.fake_bitbucket.review import add_review_routes
from rcingest.testing.fake_bitbucket.writeback import add_writeback_routes

__all__ = ["make_app"]

_encode = msgspec.json.Encoder().encode


DATA = web.AppKey("data", FakeData)


class _BadPage(ValueError):
    """An unreadable ``page`` parameter (400)."""


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
        return error_response(400, "Invalid pagelen")
    if pagelen < 1 or pagelen > max_len:
        return error_response(400, "Invalid pagelen")
    try:
        page = _page_number(request.query.get("page"))
    except _BadPage as exc:
        return error_response(400, str(exc))
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
        raise NotFound(f"Repository {name} not found")
    return repo


async def workspaces(request: web.Request) -> web.Response:
    ws = request.app[DATA].spec.workspace
    value = {"type": "workspace", "slug": ws, "name": ws.title()}
    if "ws" in request.match_info:
        if request.match_info["ws"] != ws:
            return error_response(404, f"Workspace {request.match_info['ws']} not found")
        return _json(value)
    return _paginate(request, [value], lambda v: v, max_len=100, default_len=10)


async def all_repositories(request: web.Request) -> web.Response:
    """``GET /2.0/repositories``: the global listing; here, the one workspace's first page."""
    repos = list(request.app[DATA].repos.values())
    return _paginate(request, repos, render_repo, max_len=100, default_len=10, numbered=False)


async def repositories(request: web.Request) -> web.Response:
    data = request.app[DATA]
    ws = request.match_info["ws"]
    if ws != data.spec.workspace:
        return error_response(404, f"Workspace {ws} not found")
    repos = list(data.repos.values())
    role = request.query.get("role")
    if role in ("admin", "owner"):
        repos = [r for r in repos if r.owner_role]
    elif role not in (None, "member", "contributor"):
        return error_response(400, f"Invalid role {role}")
    if "q" in request.query:
        try:
            predicate = compile_query(request.query["q"])
        except BBQLError as exc:
            return error_response(400, f"Invalid query: {exc}")
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
            return error_response(400, f"Invalid query: {exc}")
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
        return error_response(404, "Commit not found")
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
        return error_response(404, f"Commit not found: {request.match_info['rev']}")
    return _json(render_commit(request.app[DATA], repo, found))


async def diffstat(request: web.Request) -> web.Response:
    repo = _repo(request)
    spec = request.match_info["spec"].split("..", 1)[0]
    found = repo.resolve(spec)
    if found is None:
        return error_response(404, f"Commit not found: {spec}")
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
        return error_response(400, f"Invalid query: {exc}")
    data = request.app[DATA]
    return _paginate(request, prs, lambda p: render_pr(data, repo, p), max_len=50, default_len=10)


def _pr(request: web.Request, repo: FakeRepo) -> FakePullRequest:
    pr_id = int(request.match_info["id"])
    for pr in repo.pull_requests:
        if pr.id == pr_id:
            return pr
    raise NotFound(f"Pull request {pr_id} not found")


async def pullrequest(request: web.Request) -> web.Response:
    repo = _repo(request)
    # The only representation with participants and reviewers (not the listing).
    return _json(render_pr_detail(request.app[DATA], repo, _pr(request, repo)))


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


def _pr_exists(data: FakeData, name: str, pr_id: int) -> bool:
    repo = data.repos.get(name)
    return repo is not None and any(pr.id == pr_id for pr in repo.pull_requests)


async def stats(request: web.Request) -> web.Response:
    return _json(request.app[COUNTERS].as_dict())


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
    app.router.add_get("/2.0/repositories", all_repositories, name="all_repositories")
    app.router.add_get("/2.0/repositories/{ws}", repositories, name="repositories")
    app.router.add_get(repo, repository, name="repository")
    app.router.add_get(repo + "/refs/branches", branches, name="branches")
    app.router.add_get(repo + "/commits", commits, name="commits")
    app.router.add_get(repo + "/commits/{revision:.+}", commits, name="commits_rev")
    app.router.add_get(repo + "/commit/{rev}", commit, name="commit")
    app.router.add_get(repo + "/diffstat/{spec:.+}", diffstat, name="diffstat")
    add_writeback_routes(app, repo, lambda name, pr_id: _pr_exists(data, name, pr_id))
    add_review_routes(app, repo, data, _paginate)
    app.router.add_get(repo + "/pullrequests", pullrequests, name="pullrequests")
    app.router.add_get(repo + "/pullrequests/{id:\\d+}", pullrequest, name="pullrequest")
    app.router.add_get(
        repo + "/pullrequests/{id:\\d+}/commits", pullrequest_commits, name="pullrequest_commits"
    )
    app.router.add_get("/_fake/stats", stats, name="fake_stats")
    return app
