"""The fake's pull-request diffs and write paths: comments, build statuses, Code Insights.

Everything written is kept in ``WriteState`` (``FakeBitbucket.writes``) so
tests assert on what the fake received, including every raw request body
(``received``) for leak searches. Bitbucket's behaviour modelled here:

* ``GET .../pullrequests/{id}/diff`` answers 302 to ``.../diff/{spec}``
  (``text/plain`` bytes, not necessarily UTF-8), or 555 when told to;
* comments: create (201), list (paged), edit (200), delete (204);
* build statuses: ``POST .../statuses/build`` creates or overwrites by key;
* Code Insights: ``PUT`` a report, ``POST`` bare arrays of 1-100 annotations,
  at most 1,000 per report (400 beyond), ``DELETE`` a report;
* branch restrictions: list and create;
* writes need an ``Authorization`` header (401) that is not read-only (403).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from rcingest.testing.fake_bitbucket.faults import error_response

__all__ = ["WRITES", "WriteState", "add_writeback_routes", "default_diff"]

MAX_ANNOTATIONS_PER_REQUEST = 100
MAX_ANNOTATIONS_PER_REPORT = 1000
STATES = {"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"}
REPORT_TYPES = {"SECURITY", "COVERAGE", "TEST", "BUG"}
RESULTS = {"PASSED", "FAILED", "PENDING"}

Key = tuple[str, int]  # (workspace/slug, pull request id)


def default_diff(repo: str, pr_id: int) -> bytes:
    """A small clean diff for a pull request nobody planted one for."""
    return (
        f"diff --git a/README.md b/README.md\n"
        f"index 1111111..2222222 100644\n"
        f"--- a/README.md\n+++ b/README.md\n"
        f"@@ -1,2 +1,3 @@\n # {repo}\n-Old text.\n+New text for pull request {pr_id}.\n"
        f"+Nothing secret here.\n"
    ).encode()


@dataclass
class WriteState:
    """What the fake holds beyond the generated data, and what it was sent."""

    #: Planted diffs per pull request (bytes: they need not be UTF-8).
    diffs: dict[Key, bytes] = field(default_factory=dict)
    #: A status to answer instead of a diff (555: generation timed out).
    diff_status: dict[Key, int] = field(default_factory=dict)
    #: Send the diff redirect to this origin instead of the fake's own.
    diff_redirect_origin: str | None = None
    comments: dict[Key, list[dict[str, Any]]] = field(default_factory=dict)
    #: (repo, commit) -> key -> status
    statuses: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: (repo, commit) -> report id -> report
    reports: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: (repo, commit, report id) -> external id -> annotation
    annotations: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    restrictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The account the token belongs to (``GET /2.0/user``).
    user: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "user",
            "uuid": "{00000000-0000-4000-8000-00000000b07}",
            "account_id": "557058:rcingest-bot",
            "display_name": "rcingest bot",
        }
    )
    #: ``Authorization`` values allowed to read but not to write (403 on writes).
    read_only: set[str] = field(default_factory=set)
    #: Every write received: (method, path, raw body).
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))

    def plant_diff(self, repo: str, pr_id: int, diff: bytes | str) -> None:
        self.diffs[(repo, pr_id)] = diff.encode() if isinstance(diff, str) else diff

    def live_comments(self, repo: str, pr_id: int) -> list[dict[str, Any]]:
        return [c for c in self.comments.get((repo, pr_id), []) if not c["deleted"]]

    def statuses_on(self, repo: str, commit: str) -> list[dict[str, Any]]:
        """A commit's statuses, whether posted under its full hash or a prefix (newest per key)."""
        found: dict[str, dict[str, Any]] = {}
        for (name, posted), by_key in self.statuses.items():
            if name == repo and (posted.startswith(commit) or commit.startswith(posted)):
                for key, status in by_key.items():
                    if key not in found or status["updated_on"] >= found[key]["updated_on"]:
                        found[key] = status
        return list(found.values())

    def received_text(self) -> str:
        """Every request body received, decoded, for searching secrets in them."""
        return "\n".join(body.decode("utf-8", "replace") for _m, _p, body in self.received)


WRITES = web.AppKey("writes", WriteState)
#: Whether a pull request exists: (workspace/slug, id) -> bool; set by ``make_app``.
PrExists = Callable[[str, int], bool]
PR_EXISTS: web.AppKey[PrExists] = web.AppKey("pr_exists")


@web.middleware
async def missing_pr_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """404 for the diff and comments of a pull request that does not exist (or was deleted)."""
    if "id" in request.match_info and "slug" in request.match_info:
        exists = request.app.get(PR_EXISTS)
        pr_id = int(request.match_info["id"])
        if exists is not None and not exists(_repo_name(request), pr_id):
            return error_response(404, f"Pull request {pr_id} not found")
    return await handler(request)


def _repo_name(request: web.Request) -> str:
    return f"{request.match_info['ws']}/{request.match_info['slug']}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


async def _write_body(request: web.Request) -> tuple[Any, web.Response | None]:
    """The JSON body of a write, or the refusal Bitbucket would give."""
    state = request.app[WRITES]
    raw = await request.read()
    state.received.append((request.method, request.path_qs, raw))
    authorization = request.headers.get("Authorization")
    if not authorization:
        return None, error_response(
            401,
            "This API is only accessible with the following authentication types: "
            "apppassword, session, api_token",
        )
    if authorization in state.read_only:
        return None, error_response(
            403, "Your credentials lack one or more required privilege scopes."
        )
    if request.method == "DELETE":
        return None, None
    try:
        return json.loads(raw or b"null"), None
    except ValueError:
        return None, error_response(400, "The request body is not JSON")


async def user(request: web.Request) -> web.Response:
    return web.json_response(request.app[WRITES].user)


async def pr_diff(request: web.Request) -> web.Response:
    state = request.app[WRITES]
    repo, pr_id = _repo_name(request), int(request.match_info["id"])
    origin = state.diff_redirect_origin or str(request.url.origin())
    target = f"{origin}/2.0/repositories/{repo}/diff/pr-{pr_id}?from_pullrequest_id={pr_id}"
    raise web.HTTPFound(target)


async def diff(request: web.Request) -> web.Response:
    state = request.app[WRITES]
    repo = _repo_name(request)
    pr_id = int(request.query.get("from_pullrequest_id", "0"))
    status = state.diff_status.get((repo, pr_id))
    if status is not None:
        return error_response(status, "The diff timed out" if status == 555 else "Diff failed")
    body = state.diffs.get((repo, pr_id)) or default_diff(repo, pr_id)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def _comment(
    state: WriteState, repo: str, pr_id: int, raw: str, comment_id: int | None = None
) -> dict[str, Any]:
    cid = comment_id or next(state._ids)
    now = _now()
    return {
        "type": "pullrequest_comment",
        "id": cid,
        "content": {"raw": raw, "markup": "markdown", "html": ""},
        "user": state.user,
        "deleted": False,
        "created_on": now,
        "updated_on": now,
        "pullrequest": {"type": "pullrequest", "id": pr_id},
        "links": {
            "html": {
                "href": f"https://bitbucket.org/{repo}/pull-requests/{pr_id}/_/diff#comment-{cid}"
            }
        },
    }


async def list_comments(request: web.Request) -> web.Response:
    state = request.app[WRITES]
    key = (_repo_name(request), int(request.match_info["id"]))
    values = state.live_comments(*key)
    pagelen = min(int(request.query.get("pagelen", "10")), 100)
    page = int(request.query.get("page", "1"))
    chunk = values[(page - 1) * pagelen : page * pagelen]
    body: dict[str, Any] = {"pagelen": pagelen, "page": page, "size": len(values), "values": chunk}
    if page * pagelen < len(values):
        body["next"] = str(request.url.update_query({"page": str(page + 1)}))
    return web.json_response(body)


def _raw_content(body: Any) -> str | None:
    content = body.get("content") if isinstance(body, dict) else None
    raw = content.get("raw") if isinstance(content, dict) else None
    return raw if isinstance(raw, str) and raw else None


async def create_comment(request: web.Request) -> web.Response:
    body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    raw = _raw_content(body)
    if raw is None:
        return error_response(400, "content.raw is required")
    state = request.app[WRITES]
    key = (_repo_name(request), int(request.match_info["id"]))
    comment = _comment(state, key[0], key[1], raw)
    state.comments.setdefault(key, []).append(comment)
    return web.json_response(comment, status=201)


def _find_comment(request: web.Request) -> dict[str, Any] | None:
    state = request.app[WRITES]
    key = (_repo_name(request), int(request.match_info["id"]))
    wanted = int(request.match_info["cid"])
    for comment in state.comments.get(key, []):
        if comment["id"] == wanted and not comment["deleted"]:
            return comment
    return None


async def edit_comment(request: web.Request) -> web.Response:
    body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    comment = _find_comment(request)
    if comment is None:
        return error_response(404, "No such comment")
    raw = _raw_content(body)
    if raw is None:
        return error_response(400, "content.raw is required")
    comment["content"]["raw"] = raw
    comment["updated_on"] = _now()
    return web.json_response(comment)


async def delete_comment(request: web.Request) -> web.Response:
    _body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    comment = _find_comment(request)
    if comment is None:
        return error_response(404, "No such comment")
    comment["deleted"] = True
    return web.Response(status=204)


async def post_status(request: web.Request) -> web.Response:
    body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    if not isinstance(body, dict) or not body.get("key") or body.get("state") not in STATES:
        return error_response(400, "key and a valid state are required")
    state = request.app[WRITES]
    key = (_repo_name(request), request.match_info["commit"])
    held = state.statuses.setdefault(key, {})
    now, old = _now(), held.get(str(body["key"]), {})
    status = {"created_on": old.get("created_on", now), **body, "type": "build", "updated_on": now}
    status.setdefault("commit", {"type": "commit", "hash": key[1]})
    held[str(body["key"])] = status  # same key overwrites
    return web.json_response(status, status=201)


async def list_statuses(request: web.Request) -> web.Response:
    state = request.app[WRITES]
    values = state.statuses_on(_repo_name(request), request.match_info["commit"])
    return web.json_response({"pagelen": 100, "values": values, "page": 1, "size": len(values)})


async def put_report(request: web.Request) -> web.Response:
    body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    if (
        not isinstance(body, dict)
        or not body.get("title")
        or body.get("report_type") not in REPORT_TYPES
        or body.get("result", "PASSED") not in RESULTS
        or len(body.get("data") or []) > 10
    ):
        return error_response(400, "invalid report")
    state = request.app[WRITES]
    repo, commit, rid = _repo_name(request), request.match_info["commit"], request.match_info["rid"]
    state.reports.setdefault((repo, commit), {})[rid] = {**body, "uuid": rid}
    return web.json_response(state.reports[(repo, commit)][rid])


async def delete_report(request: web.Request) -> web.Response:
    _body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    state = request.app[WRITES]
    repo, commit, rid = _repo_name(request), request.match_info["commit"], request.match_info["rid"]
    if rid not in state.reports.get((repo, commit), {}):
        return error_response(404, "No such report")
    del state.reports[(repo, commit)][rid]
    state.annotations.pop((repo, commit, rid), None)
    return web.Response(status=204)


async def post_annotations(request: web.Request) -> web.Response:
    body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    state = request.app[WRITES]
    repo, commit, rid = _repo_name(request), request.match_info["commit"], request.match_info["rid"]
    if rid not in state.reports.get((repo, commit), {}):
        return error_response(404, "No such report")
    if not isinstance(body, list) or not 1 <= len(body) <= MAX_ANNOTATIONS_PER_REQUEST:
        return error_response(400, "expected a list of 1 to 100 annotations")
    held = state.annotations.setdefault((repo, commit, rid), {})
    for item in body:
        if not isinstance(item, dict) or not item.get("external_id"):
            return error_response(400, "every annotation needs an external_id")
    new = {str(i["external_id"]) for i in body} - held.keys()
    if len(held) + len(new) > MAX_ANNOTATIONS_PER_REPORT:
        return error_response(400, "a report can contain up to 1000 annotations")
    for item in body:
        held[str(item["external_id"])] = item
    return web.json_response({"values": body}, status=200)


async def list_annotations(request: web.Request) -> web.Response:
    state = request.app[WRITES]
    key = (_repo_name(request), request.match_info["commit"], request.match_info["rid"])
    values = list(state.annotations.get(key, {}).values())
    return web.json_response({"pagelen": 1000, "values": values, "size": len(values)})


async def restrictions(request: web.Request) -> web.Response:
    state = request.app[WRITES]
    repo = _repo_name(request)
    if request.method == "GET":
        values = state.restrictions.get(repo, [])
        return web.json_response({"pagelen": 100, "values": values, "size": len(values)})
    body, refusal = await _write_body(request)
    if refusal is not None:
        return refusal
    if not isinstance(body, dict) or not body.get("kind"):
        return error_response(400, "kind is required")
    item = {**body, "id": next(state._ids), "type": "branchrestriction"}
    state.restrictions.setdefault(repo, []).append(item)
    return web.json_response(item, status=201)


def add_writeback_routes(
    app: web.Application, repo: str, pr_exists: Callable[[str, int], bool]
) -> None:
    """Register the diff and write routes under ``repo`` (``/2.0/repositories/{ws}/{slug}``)."""
    app[WRITES] = WriteState()
    app[PR_EXISTS] = pr_exists
    app.middlewares.append(missing_pr_middleware)
    r = app.router
    pr = repo + "/pullrequests/{id:\\d+}"
    commit = repo + "/commit/{commit}"
    r.add_get("/2.0/user", user, name="user")
    r.add_get(pr + "/diff", pr_diff, name="pullrequest_diff")
    r.add_get(repo + "/diff/{spec:.+}", diff, name="diff")
    r.add_get(pr + "/comments", list_comments, name="comments")
    r.add_post(pr + "/comments", create_comment, name="comment_create")
    r.add_put(pr + "/comments/{cid:\\d+}", edit_comment, name="comment_edit")
    r.add_delete(pr + "/comments/{cid:\\d+}", delete_comment, name="comment_delete")
    r.add_post(commit + "/statuses/build", post_status, name="status_create")
    r.add_get(commit + "/statuses", list_statuses, name="statuses")
    r.add_put(commit + "/reports/{rid}", put_report, name="report_put")
    r.add_delete(commit + "/reports/{rid}", delete_report, name="report_delete")
    r.add_post(commit + "/reports/{rid}/annotations", post_annotations, name="annotations_post")
    r.add_get(commit + "/reports/{rid}/annotations", list_annotations, name="annotations")
    r.add_route("*", repo + "/branch-restrictions", restrictions, name="branch_restrictions")
