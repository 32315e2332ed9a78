"""Webhook payloads built from the fake's current state, as Bitbucket Cloud delivers them.

``pullrequest_event`` gives ``{"actor", "pullrequest", "repository"}`` (plus
``approval`` or ``changes_request`` for those events) with the single-PR shape,
participants and reviewers included and 12-character hashes, as webhooks carry
them. ``commit_status_event`` gives a ``repo:commit_status_created/updated``
body. Both are dicts: ``json.dumps`` them and sign them for a delivery. They are
supersets of the ``{"pullrequest": render_pr(...), "repository": {"full_name"}}``
bodies older tests post, so a receiver reading those reads these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from rcingest.testing.fake_bitbucket.data import FakeData, FakePullRequest, FakeRepo
from rcingest.testing.fake_bitbucket.render import (
    author_user,
    render_pr_detail,
    render_user,
    repo_ref,
)

__all__ = ["COMMIT_STATUS_EVENTS", "PULLREQUEST_EVENTS", "commit_status_event", "pullrequest_event"]

PULLREQUEST_EVENTS = frozenset(
    {
        "pullrequest:created",
        "pullrequest:updated",
        "pullrequest:approved",
        "pullrequest:unapproved",
        "pullrequest:changes_request_created",
        "pullrequest:changes_request_removed",
        "pullrequest:fulfilled",
        "pullrequest:rejected",
    }
)
COMMIT_STATUS_EVENTS = frozenset({"repo:commit_status_created", "repo:commit_status_updated"})
API = "https://api.bitbucket.org/2.0"


class _HasData(Protocol):
    @property
    def data(self) -> FakeData: ...


def _data(fake_or_data: FakeData | _HasData) -> FakeData:
    return fake_or_data if isinstance(fake_or_data, FakeData) else fake_or_data.data


def _repository(repo: FakeRepo) -> dict[str, Any]:
    return repo_ref(repo.full_name, repo.uuid)


def _latest(pr: FakePullRequest, state: str | None) -> dict[str, Any] | None:
    """The participant who most recently moved to ``state`` (any state for None)."""
    acted = [
        p
        for p in pr.participants.values()
        if p["participated_on"] and (state is None or p["state"] == state)
    ]
    return max(acted, key=lambda p: str(p["participated_on"]), default=None)


def _default_actor(data: FakeData, pr: FakePullRequest, event_key: str) -> dict[str, Any]:
    # Who Bitbucket would name: the reviewer who just acted, the one who closed
    # the pull request, else its author.
    wanted = {
        "pullrequest:approved": "approved",
        "pullrequest:changes_request_created": "changes_requested",
    }
    if event_key in wanted or event_key.endswith(("unapproved", "changes_request_removed")):
        found = _latest(pr, wanted.get(event_key))
        if found is not None:
            user: dict[str, Any] = found["user"]
            return user
    if event_key in ("pullrequest:fulfilled", "pullrequest:rejected") and pr.closed_by:
        return pr.closed_by
    return author_user(data, pr.author)


def pullrequest_event(
    fake_or_data: FakeData | _HasData,
    repo: str,
    pr_id: int,
    event_key: str,
    actor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of a ``pullrequest:*`` delivery for ``repo`` (``workspace/slug``) ``#pr_id``.

    ``actor`` defaults to whoever Bitbucket would name (the latest approver for
    ``approved``, the closer for ``fulfilled``, else the author).
    """
    if event_key not in PULLREQUEST_EVENTS:
        raise ValueError(f"not a pull request event: {event_key!r}")
    data = _data(fake_or_data)
    r = data.repos[repo]
    pr = next((p for p in r.pull_requests if p.id == pr_id), None)
    if pr is None:
        raise KeyError(f"no pull request {repo}#{pr_id} in the fake")
    who = actor if actor is not None else _default_actor(data, pr, event_key)
    body: dict[str, Any] = {
        "actor": who,
        "pullrequest": render_pr_detail(data, r, pr),
        "repository": _repository(r),
    }
    if event_key.endswith("approved"):
        body["approval"] = {"date": _when(pr, who), "user": who}
    elif "changes_request" in event_key:
        body["changes_request"] = {"date": _when(pr, who), "user": who}
    return body


def _when(pr: FakePullRequest, who: dict[str, Any]) -> str:
    held = pr.participants.get(str(who.get("account_id") or who.get("uuid")))
    when = held["participated_on"] if held else None
    return str(when) if when else datetime.now(UTC).isoformat()


def commit_status_event(
    repo: str,
    commit_hash: str,
    status_dict: dict[str, Any],
    *,
    fake_or_data: FakeData | _HasData | None = None,
    actor: dict[str, Any] | None = None,
    base_url: str = API,
) -> dict[str, Any]:
    """The body of a ``repo:commit_status_created``/``_updated`` delivery.

    ``status_dict`` is a status as stored (``ReviewState.add_status`` returns one)
    or any dict with ``key`` and ``state``. With ``fake_or_data`` a short hash is
    expanded and the repository carries its real uuid. ``base_url`` is where
    ``links.commit`` points (the fake's ``base_url`` to make it followable).
    """
    full = commit_hash
    repository = repo_ref(repo)
    if fake_or_data is not None:
        r = _data(fake_or_data).repos[repo]
        found = r.resolve(commit_hash)
        full = found.hash if found is not None else commit_hash
        repository = _repository(r)
    now = datetime.now(UTC).isoformat()
    status: dict[str, Any] = {
        "name": status_dict.get("name") or status_dict["key"],
        "description": status_dict.get("description", ""),
        "state": status_dict["state"],
        "key": status_dict["key"],
        "url": status_dict.get("url", ""),
        "type": "build",
        "created_on": status_dict.get("created_on", now),
        "updated_on": status_dict.get("updated_on", now),
    }
    if status_dict.get("refname") is not None:
        status["refname"] = status_dict["refname"]
    status["commit"] = {"type": "commit", "hash": full}
    status["links"] = {
        "commit": {"href": f"{base_url.rstrip('/')}/repositories/{repo}/commit/{full}"}
    }
    return {
        "actor": actor if actor is not None else render_user("ci-bot"),
        "repository": repository,
        "commit_status": status,
    }
