"""Bitbucket webhook payload shapes and the checks on their values, sans-I/O.

The Structs are lenient (unknown fields ignored) and declare only what is
used. :func:`checked_push` and :func:`checked_pull_request` are everything
the decoder refuses in those payloads and nothing more: the inbox's request
path calls them to answer 400 before it stores a delivery, without building
a record, and the decoder calls them before it builds the records.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from rcingest.bitbucket import api
from rcingest.webhooks.checks import (
    check_full_name,
    check_hash,
    check_moment,
    check_pr_refs,
    shape_error,
)
from rcingest.webhooks.headers import MAX_ID, DecodeError, DeliveryHeaders

__all__ = ["PullRequestEvent", "PushEvent", "any_json", "checked_pull_request", "checked_push"]

_PR_STATES = frozenset({"OPEN", "MERGED", "DECLINED", "SUPERSEDED"})


class Commit(api.Commit):
    # Atlassian's documentation example omits dates; live payloads carry them.
    date: datetime | None = None  # type: ignore[assignment]


class _Target(msgspec.Struct):
    hash: str


class _Ref(msgspec.Struct):
    name: str
    type: str = "branch"
    target: _Target | None = None


class _Change(msgspec.Struct):
    new: _Ref | None = None
    old: _Ref | None = None
    created: bool = False
    closed: bool = False
    forced: bool = False
    truncated: bool = False
    commits: list[Commit] = []


class _Push(msgspec.Struct):
    changes: list[_Change]


class _Repository(msgspec.Struct):
    full_name: str
    uuid: str | None = None


class PushEvent(msgspec.Struct):
    push: _Push
    repository: _Repository


class PullRequestEvent(msgspec.Struct):
    pullrequest: api.PullRequest
    repository: _Repository


_push_decoder = msgspec.json.Decoder(PushEvent)
_pr_decoder = msgspec.json.Decoder(PullRequestEvent)
# Validates any JSON document without building it (Raw keeps the bytes).
any_json = msgspec.json.Decoder(msgspec.Raw).decode


def checked_push(body: bytes, headers: DeliveryHeaders) -> PushEvent:
    """A ``repo:push`` body of the right shape with sane values, or :class:`DecodeError`.

    All the decoder refuses, and nothing more: the inbox's request path calls
    it to answer 400 before storing, without building any record.
    """
    try:
        event = _push_decoder.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise shape_error(headers.event, exc, body) from None
    check_full_name(headers.event, "repository.full_name", event.repository.full_name)
    for change in event.push.changes:
        for side, end in (("new", change.new), ("old", change.old)):
            if end is not None and end.target is not None:
                check_hash(headers.event, f"{side}.target.hash", end.target.hash)
        for raw in change.commits:
            check_hash(headers.event, "commit hash", raw.hash)
            for parent in raw.parents:
                check_hash(headers.event, f"commit {raw.hash[:12]!r} parent", parent.hash)
            check_moment(headers.event, f"commit {raw.hash[:12]!r} date", raw.date)
    return event


def checked_pull_request(body: bytes, headers: DeliveryHeaders) -> PullRequestEvent:
    """A pull request event's body of the right shape with sane values, or :class:`DecodeError`."""
    try:
        event = _pr_decoder.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise shape_error(headers.event, exc, body) from None
    pr, repo = event.pullrequest, event.repository.full_name
    if pr.state not in _PR_STATES:
        raise DecodeError(f"{headers.event} payload of the wrong shape: unknown state {pr.state!r}")
    if not 1 <= pr.id <= MAX_ID:
        raise DecodeError(f"{headers.event} payload has pull request id {pr.id} out of range")
    check_moment(headers.event, "created_on", pr.created_on)
    check_moment(headers.event, "updated_on", pr.updated_on)
    check_pr_refs(headers.event, pr, repo)
    return event
