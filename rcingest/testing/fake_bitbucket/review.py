"""The fake's review side: reviewers, approvals, change requests, default reviewers, PR statuses.

Review state is kept on the generated data (``FakePullRequest.participants``,
``.reviewers``, ``.closed_by``, ``.source_repository``; ``FakeRepo.default_reviewers``)
so that ``events.py`` can build webhook payloads from a ``FakeData`` alone.
Statuses live in ``WriteState.statuses``, the store ``writeback.py`` writes, so
the ones rcingest posts and the ones "other tools" post (``add_status``) are
listed together. ``ReviewState`` (``FakeBitbucket.review``) is how tests change
the state; the routes are what a client sees:

* ``GET .../pullrequests/{id}/statuses``: the source head's statuses, paged;
* ``GET .../effective-default-reviewers`` (project and repository level) and
  ``GET .../default-reviewers`` (repository level, users), paged;
* ``POST``/``DELETE .../pullrequests/{id}/approve`` and ``.../request-changes``
  as the token's user (``WriteState.user``): 200 with the participant / 204,
  400 when the pull request is not open, 401/403 like every write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from rcingest.testing.fake_bitbucket.data import FakeCommit, FakeData, FakePullRequest, FakeRepo
from rcingest.testing.fake_bitbucket.faults import NotFound, error_response
from rcingest.testing.fake_bitbucket.render import author_user, render_user
from rcingest.testing.fake_bitbucket.writeback import STATES, WRITES, WriteState, _write_body

__all__ = ["REVIEW", "ReviewState", "add_review_routes"]

User = dict[str, Any]
#: ``app._paginate``, handed in because ``app.py`` imports this module.
Paginate = Callable[..., web.Response]
PAGINATE: web.AppKey[Paginate] = web.AppKey("review_paginate")
REVIEWER_TYPES = ("project", "repository")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ReviewState:
    """Test helpers over the fake's review state; ``repo`` is ``workspace/slug`` throughout.

    The helpers do not refuse what Bitbucket's routes refuse (approving a merged
    pull request), so a test can build any history, e.g. a merged pull request
    that was approved before it was merged.
    """

    def __init__(self, data: FakeData, writes: WriteState) -> None:
        self.data = data
        self.writes = writes

    # -- users -------------------------------------------------------------

    def user(self, name: str) -> User:
        """A user by display name or nickname; an author of the data's commits is that author."""
        for index, (display, _, _) in enumerate(self.data.authors()):
            candidate = author_user(self.data, index)
            if name in (display, candidate["nickname"], display.split()[0].lower()):
                return candidate
        return render_user(name)

    def _user(self, user: User | str) -> User:
        return self.user(user) if isinstance(user, str) else user

    def author(self, repo: str, pr_id: int) -> User:
        """The pull request's author as a user."""
        return author_user(self.data, self.pull_request(repo, pr_id).author)

    # -- lookups -----------------------------------------------------------

    def repository(self, repo: str) -> FakeRepo:
        found = self.data.repos.get(repo)
        if found is None:
            raise KeyError(f"no repository {repo} in the fake")
        return found

    def pull_request(self, repo: str, pr_id: int) -> FakePullRequest:
        for pr in self.repository(repo).pull_requests:
            if pr.id == pr_id:
                return pr
        raise KeyError(f"no pull request {repo}#{pr_id} in the fake")

    # -- reviewers and participants ------------------------------------------

    def _participant(self, pr: FakePullRequest, user: User) -> dict[str, Any]:
        key = str(user.get("account_id") or user.get("uuid"))
        held = pr.participants.get(key)
        if held is None:
            is_reviewer = any(r.get("account_id") == user.get("account_id") for r in pr.reviewers)
            held = pr.participants[key] = {
                "type": "participant",
                "user": user,
                "role": "REVIEWER" if is_reviewer else "PARTICIPANT",
                "approved": False,
                "state": None,
                "participated_on": None,
            }
        return held

    def add_reviewer(self, repo: str, pr_id: int, user: User | str) -> dict[str, Any]:
        """Make ``user`` a reviewer (a ``REVIEWER`` participant who has not acted yet)."""
        pr, who = self.pull_request(repo, pr_id), self._user(user)
        if all(r.get("account_id") != who.get("account_id") for r in pr.reviewers):
            pr.reviewers.append(who)
        held = self._participant(pr, who)
        held["role"] = "REVIEWER"
        return held

    def remove_reviewer(self, repo: str, pr_id: int, user: User | str) -> None:
        """No longer a reviewer; one who has acted stays as a ``PARTICIPANT``."""
        pr, who = self.pull_request(repo, pr_id), self._user(user)
        pr.reviewers = [r for r in pr.reviewers if r.get("account_id") != who.get("account_id")]
        key = str(who.get("account_id") or who.get("uuid"))
        held = pr.participants.get(key)
        if held is not None and held["participated_on"] is None:
            del pr.participants[key]
        elif held is not None:
            held["role"] = "PARTICIPANT"

    def act(self, repo: str, pr_id: int, user: User | str, state: str | None) -> dict[str, Any]:
        """Set one participant's review ``state`` (``approved``, ``changes_requested``, None)."""
        held = self._participant(self.pull_request(repo, pr_id), self._user(user))
        held.update(approved=state == "approved", state=state, participated_on=_now())
        return held

    def _withdraw(self, repo: str, pr_id: int, user: User | str, state: str) -> dict[str, Any]:
        # Withdrawing an approval leaves a change request alone, and the reverse.
        held = self._participant(self.pull_request(repo, pr_id), self._user(user))
        return self.act(repo, pr_id, held["user"], None) if held["state"] == state else held

    def approve(self, repo: str, pr_id: int, user: User | str) -> dict[str, Any]:
        """``user`` approves (replacing a change request of theirs, as in Bitbucket)."""
        return self.act(repo, pr_id, user, "approved")

    def unapprove(self, repo: str, pr_id: int, user: User | str) -> dict[str, Any]:
        return self._withdraw(repo, pr_id, user, "approved")

    def request_changes(self, repo: str, pr_id: int, user: User | str) -> dict[str, Any]:
        """``user`` requests changes (and no longer approves)."""
        return self.act(repo, pr_id, user, "changes_requested")

    def remove_change_request(self, repo: str, pr_id: int, user: User | str) -> dict[str, Any]:
        return self._withdraw(repo, pr_id, user, "changes_requested")

    def set_default_reviewers(
        self, repo: str, users: list[User | str], reviewer_type: str = "repository"
    ) -> None:
        """Replace the default reviewers of one level (``repository`` or ``project``)."""
        if reviewer_type not in REVIEWER_TYPES:
            raise ValueError(f"reviewer_type must be one of {REVIEWER_TYPES}")
        r = self.repository(repo)
        kept = [d for d in r.default_reviewers if d["reviewer_type"] != reviewer_type]
        new = [
            {"type": "default_reviewer", "reviewer_type": reviewer_type, "user": self._user(u)}
            for u in users
        ]
        r.default_reviewers = sorted(  # project level first, as in Bitbucket's answer
            kept + new, key=lambda d: REVIEWER_TYPES.index(d["reviewer_type"])
        )

    # -- statuses, source, commits, closing ------------------------------------

    def add_status(
        self,
        repo: str,
        commit_hash: str,
        key: str,
        state: str,
        name: str | None = None,
        *,
        url: str | None = None,
        description: str = "",
        refname: str | None = None,
    ) -> dict[str, Any]:
        """A build status from another tool, in the store rcingest's statuses go to (same key
        overwrites); a short hash of a known commit is stored under the full one."""
        if state not in STATES:
            raise ValueError(f"state must be one of {sorted(STATES)}")
        found = self.repository(repo).resolve(commit_hash)
        full = found.hash if found is not None else commit_hash
        held = self.writes.statuses.setdefault((repo, full), {})
        now = _now()
        status: dict[str, Any] = {
            "type": "build",
            "key": key,
            "state": state,
            "name": name or key,
            "url": url or f"https://ci.example/{repo}/{key}/{full[:12]}",
            "description": description,
            "created_on": held.get(key, {}).get("created_on", now),
            "updated_on": now,
            "commit": {"type": "commit", "hash": full},
        }
        if refname is not None:
            status["refname"] = refname
        held[key] = status
        return status

    def statuses(self, repo: str, pr_id: int) -> list[dict[str, Any]]:
        """The statuses of the pull request's source head (what its statuses route lists)."""
        pr = self.pull_request(repo, pr_id)
        if not pr.commits:
            return []
        head = pr.commits[0]
        # Copies naming the full hash, as Bitbucket does whatever hash a status was posted to.
        return [
            {**s, "commit": {"type": "commit", "hash": head}}
            for s in self.writes.statuses_on(repo, head)
        ]

    def set_source(
        self, repo: str, pr_id: int, *, branch: str | None = None, fork: str | None = None
    ) -> None:
        """Rename the source branch (its head moves with it) and/or set the fork it comes from
        (``workspace/slug``; this repository's own name undoes it)."""
        r, pr = self.repository(repo), self.pull_request(repo, pr_id)
        if branch is not None and branch != pr.source_branch:
            if pr.source_branch in r.heads and branch not in r.heads:
                r.heads[branch] = r.heads.pop(pr.source_branch)
                r._cache.clear()  # listings are cached by ref name
            pr.source_branch = branch
        if fork is not None:
            pr.source_repository = None if fork == repo else fork

    def push(self, repo: str, pr_id: int, message: str) -> str:
        """A new head commit on the pull request's source branch, by its author; its full hash."""
        r, pr = self.repository(repo), self.pull_request(repo, pr_id)
        parent = r.commits[pr.commits[0] if pr.commits else r.heads[pr.destination_branch]]
        when = max(pr.updated_on, parent.date) + timedelta(minutes=1)
        seed = f"{self.data.spec.seed}:{repo}:{pr.source_branch}:push:{len(r._order)}"
        h = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
        c = FakeCommit(h, len(r._order), when, [parent.hash], pr.author, message, pr.source_branch)
        r.commits[h] = c
        r._order.append(c)
        if pr.source_repository is None and pr.source_branch in r.heads:
            r.heads[pr.source_branch] = h
        r._cache.clear()
        pr.commits.insert(0, h)
        pr.updated_on = when
        return h

    def _close(self, repo: str, pr_id: int, state: str, by: User | str | None) -> None:
        pr = self.pull_request(repo, pr_id)
        pr.state = state
        pr.closed_by = self._user(by) if by is not None else author_user(self.data, pr.author)
        pr.updated_on += timedelta(minutes=1)

    def merge(self, repo: str, pr_id: int, *, by: User | str | None = None) -> None:
        """State ``MERGED``, ``closed_by`` = ``by`` (default: the author); fast-forward merge
        commit = source head; the destination branch does not move."""
        self._close(repo, pr_id, "MERGED", by)

    def decline(self, repo: str, pr_id: int, *, by: User | str | None = None) -> None:
        self._close(repo, pr_id, "DECLINED", by)


REVIEW = web.AppKey("review", ReviewState)


def _lookup(request: web.Request) -> tuple[ReviewState, str, FakeRepo]:
    review = request.app[REVIEW]
    name = f"{request.match_info['ws']}/{request.match_info['slug']}"
    repo = review.data.repos.get(name)
    if repo is None:
        raise NotFound(f"Repository {name} not found")
    return review, name, repo


def _pull_request(request: web.Request) -> tuple[ReviewState, str, FakePullRequest]:
    review, name, repo = _lookup(request)
    pr_id = int(request.match_info["id"])
    for pr in repo.pull_requests:
        if pr.id == pr_id:
            return review, name, pr
    raise NotFound(f"Pull request {pr_id} not found")


def _ident(value: Any) -> Any:
    return value


async def pr_statuses(request: web.Request) -> web.Response:
    review, name, pr = _pull_request(request)
    origin = f"{request.url.origin()}/2.0/repositories/{name}/commit"
    values = [
        {**s, "links": {"commit": {"href": f"{origin}/{s['commit']['hash']}"}}}
        for s in review.statuses(name, pr.id)
    ]
    return request.app[PAGINATE](request, values, _ident, max_len=100, default_len=10)


async def effective_default_reviewers(request: web.Request) -> web.Response:
    _review, _name, repo = _lookup(request)
    values = list(repo.default_reviewers)
    return request.app[PAGINATE](request, values, _ident, max_len=100, default_len=20)


async def default_reviewers(request: web.Request) -> web.Response:
    _review, _name, repo = _lookup(request)
    users = [d["user"] for d in repo.default_reviewers if d["reviewer_type"] == "repository"]
    return request.app[PAGINATE](request, users, _ident, max_len=100, default_len=20)


def _acting(action: str, state: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        _body, refusal = await _write_body(request)
        if refusal is not None:
            return refusal
        review, name, pr = _pull_request(request)
        if pr.state != "OPEN":
            return error_response(400, f"You can't {action} a pull request that is {pr.state}")
        me = request.app[WRITES].user  # the token's user, as ``GET /2.0/user`` answers
        if request.method == "DELETE":
            review._withdraw(name, pr.id, me, state)
            return web.Response(status=204)
        return web.json_response(review.act(name, pr.id, me, state))

    return handler


def add_review_routes(
    app: web.Application, repo: str, data: FakeData, paginate: Paginate
) -> ReviewState:
    """Register the review routes under ``repo``; call after ``add_writeback_routes``."""
    review = app[REVIEW] = ReviewState(data, app[WRITES])
    app[PAGINATE] = paginate
    r = app.router
    pr = repo + "/pullrequests/{id:\\d+}"
    approve = _acting("approve", "approved")
    changes = _acting("request changes on", "changes_requested")
    r.add_get(pr + "/statuses", pr_statuses, name="pullrequest_statuses")
    r.add_post(pr + "/approve", approve, name="approve")
    r.add_delete(pr + "/approve", approve, name="unapprove")
    r.add_post(pr + "/request-changes", changes, name="request_changes")
    r.add_delete(pr + "/request-changes", changes, name="remove_request_changes")
    r.add_get(
        repo + "/effective-default-reviewers",
        effective_default_reviewers,
        name="effective_default_reviewers",
    )
    r.add_get(repo + "/default-reviewers", default_reviewers, name="default_reviewers")
    return review
