"""Webhook decoding, sans-I/O: headers and raw bytes in, records or a typed error out.

``decode`` turns one Bitbucket Cloud delivery into what the pipeline stores:
the ``WebhookDelivery`` audit record, the commits and pull requests the
payload itself holds, and the backfill jobs that need the network (a
truncated push range, a pull request's commits). It does no I/O, so the same
function serves the aiohttp daemon and a receiver mounted in FastAPI or Flask.

Payload Structs are lenient (unknown fields ignored) and declare only what is
used; a payload of the wrong shape raises :class:`DecodeError` with msgspec's
path to the offending field.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import msgspec

from rcingest.bitbucket.parse import commit_from_api, pull_request_from_api
from rcingest.nul import strip_nul
from rcingest.records import Commit, PullRequest, PullRequestRef, Record, WebhookDelivery
from rcingest.webhooks import shapes
from rcingest.webhooks.checks import (
    shape_error,
)
from rcingest.webhooks.events import KNOWN_EVENTS, PR_EVENTS, PUSH, STORED_EVENTS

# Re-exported: callers import the header names from here, as before.
from rcingest.webhooks.headers import (
    MAX_ATTEMPT,
    MAX_HEADER_CHARS,
    MAX_ID,
    DecodeError,
    DeliveryHeaders,
    header_value,
    read_headers,
)

__all__ = [
    "MAX_ATTEMPT",
    "MAX_HEADER_CHARS",
    "MAX_ID",
    "SCANNED_EVENTS",
    "STORED_EVENTS",
    "BackfillJob",
    "DecodeError",
    "Decoded",
    "DeliveryHeaders",
    "decode",
    "header_value",
    "read_headers",
]

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX = re.compile(r"^[0-9a-f]{7,40}$")
#: Pull request events whose source head is scanned for secrets (when scanners are set).
SCANNED_EVENTS = frozenset({"pullrequest:created", "pullrequest:updated"})
# A branch name that may hold a story key in any mode (a key is a word, a
# hyphen and a number): a looser test than either grammar, so no key is missed.
_MAY_HOLD_KEY = re.compile(r"[A-Za-z0-9_]-[0-9]")
# A repository name safe to put in an API path (backfill): workspace/slug, no dot segments.
_SAFE_REPO = re.compile(r"^(?!\.\.?/)[A-Za-z0-9_.-]+/(?!\.\.?$)[A-Za-z0-9_.-]+$")


def backfill_safe(repository: str) -> bool:
    """True when ``repository`` may be used in a REST path (``workspace/slug``, nothing else)."""
    return bool(_SAFE_REPO.match(repository))


# ---- results ----------------------------------------------------------------


class BackfillJob(msgspec.Struct, frozen=True, kw_only=True):
    """Network work a delivery leaves behind, done after it is acknowledged.

    ``push_range`` lists the commits ``include`` minus ``exclude`` on
    ``branch``; on a branch other than the main one it also excludes the main
    branch and the other branches' heads (looked up when the job runs), so
    the commits it finds are the ones the branch brought and may carry its
    name's story key. It is made for a truncated change, and for every change
    of a branch whose name may hold a key. ``pr_commits`` lists a pull
    request's commits. Hashes come from the payload; the URL is always built
    from the configured API host.
    """

    kind: Literal["push_range", "pr_commits", "pr_scan", "compliance", "repo_sync"]
    repository: str
    key: str
    include: list[str] = []
    exclude: list[str] = []
    branch: str | None = None
    #: ``push_range``: Bitbucket truncated the change's commit list. A job for
    #: the main branch that is not truncated has nothing to do.
    truncated: bool = True
    pull_request: PullRequest | None = None
    #: ``pr_commits``: the repository of the source branch (a fork's, for a
    #: pull request from a fork); None when it is ``repository``.
    source_repository: str | None = None
    #: ``pr_scan``: the source head to scan (12 characters in payloads). The
    #: job key holds it, so a head already scanned is never queued again.
    head: str | None = None
    #: ``compliance``: the pull request to evaluate (None: the open ones whose
    #: source head is ``head``) and the event that asked for it.
    pr_id: int | None = None
    event: str | None = None


class Decoded(msgspec.Struct, kw_only=True):
    """One decoded delivery: the audit record, the records to store, the jobs to run."""

    delivery: WebhookDelivery
    records: list[Record] = []
    jobs: list[BackfillJob] = []
    #: Changes whose commit list Bitbucket truncated.
    truncated: int = 0


def _commit(c: shapes.Commit, repository: str, branches: list[str], fallback: datetime) -> Commit:
    if c.date is None:
        c = msgspec.structs.replace(c, date=fallback)
    return commit_from_api(c, repository, branches)


def _decode_push(body: bytes, headers: DeliveryHeaders, delivery: WebhookDelivery) -> Decoded:
    event = shapes.checked_push(body, headers)
    repo = event.repository.full_name
    commits: dict[str, Commit] = {}
    jobs: list[BackfillJob] = []
    keys: list[str] = []
    truncated = 0
    for change in event.push.changes:
        ref = change.new or change.old
        ref_name = ref.name if ref is not None else ""
        is_branch = ref is not None and ref.type in ("branch", "named_branch")
        head = change.new.target.hash if change.new and change.new.target else None
        keys.append(f"{ref.type if ref else '?'}:{ref_name}:{head or 'deleted'}")
        branches = [ref_name] if is_branch and change.new is not None else []
        for raw in change.commits:
            known = commits.get(raw.hash)
            if known is None:
                commits[raw.hash] = _commit(raw, repo, list(branches), delivery.received_at)
            else:
                known.branches.extend(b for b in branches if b not in known.branches)
        if change.truncated:
            truncated += 1
        # Which listed commits the branch brought is not in the payload (a created
        # branch lists the 5 newest commits reachable from it, all perhaps on
        # main): only the job, which can exclude the other branches, knows.
        lends_key = is_branch and _MAY_HOLD_KEY.search(ref_name) is not None
        if (change.truncated or lends_key) and head is not None and _HEX40.match(head):
            if backfill_safe(repo):
                old = change.old.target.hash if change.old and change.old.target else None
                jobs.append(
                    BackfillJob(
                        kind="push_range",
                        repository=repo,
                        key=f"push:{repo}:{ref_name}:{head}",
                        include=[head],
                        exclude=[old] if old and _HEX40.match(old) else [],
                        branch=ref_name if is_branch else None,
                        truncated=change.truncated,
                    )
                )
    delivery.repository = repo
    delivery.content_key = f"{event.repository.uuid or repo}|push|" + ";".join(keys)
    return Decoded(
        delivery=delivery, records=list(commits.values()), jobs=jobs, truncated=truncated
    )


def _decode_pr(
    body: bytes, headers: DeliveryHeaders, delivery: WebhookDelivery, scan: bool
) -> Decoded:
    event = shapes.checked_pull_request(body, headers)
    pr, repo = event.pullrequest, event.repository.full_name
    # merge_commit keeps the 12-character abbreviation of webhook payloads (§0.8).
    record = pull_request_from_api(pr, repo, [])
    source = pr.source.repository.full_name if pr.source.repository else ""
    job = BackfillJob(
        kind="pr_commits",
        repository=repo,
        key=f"pr:{repo}:{pr.id}:{pr.updated_on.isoformat()}",
        pull_request=record,
        # Only a plain workspace/slug is believed; anything else: the target's.
        source_repository=source if source != repo and backfill_safe(source) else None,
    )
    jobs = [job]
    head = pr.source.commit.hash if pr.source.commit else None
    if (
        scan
        and headers.event in SCANNED_EVENTS
        and pr.state == "OPEN"
        and head
        and _HEX.match(head)
    ):
        # Keyed by head: an `updated` event for a head already scanned does nothing
        # (the queue keeps done keys), a new head is scanned again.
        jobs.append(
            BackfillJob(
                kind="pr_scan",
                repository=repo,
                key=f"pr_scan:{repo}:{pr.id}:{head[:12]}",
                pull_request=record,
                head=head,
            )
        )
    delivery.repository = repo
    delivery.content_key = (
        f"{event.repository.uuid or repo}|pr|{pr.id}|{headers.event}|{pr.updated_on.isoformat()}"
    )
    return Decoded(delivery=delivery, records=[record], jobs=jobs if backfill_safe(repo) else [])


def decode(
    headers: Mapping[str, str],
    body: bytes,
    *,
    received_at: datetime,
    scan_pull_requests: bool = False,
    compliance_keys: frozenset[str] | None = None,
    inventory: bool = False,
) -> Decoded:
    """Decode one delivery (already authenticated) into records and backfill jobs.

    With ``scan_pull_requests``, a ``pullrequest:created``/``updated`` of an
    open pull request also yields a ``pr_scan`` job for its source head. With
    ``compliance_keys`` (the compliance status keys; None: no policy), the
    events of ``rcingest.webhooks.review_events`` yield ``compliance`` jobs.
    With ``inventory``, repository events (``rcingest.webhooks.repo_events``)
    yield ``Repository`` records and ``repo_sync`` jobs.

    An event rcingest does not store yields a ``Decoded`` with no records and
    ``delivery.outcome`` ``"ignored"`` (a documented event) or
    ``"unknown_event"``; the caller answers 202 and stores nothing. Raises
    :class:`DecodeError` for a missing event key, a body that is not JSON or
    a payload of the wrong shape or with a value :mod:`rcingest.webhooks.checks`
    refuses, never anything else (JSON nested too deeply included).
    Text fields lose their NUL characters (:mod:`rcingest.nul`).
    """
    try:
        decoded = _decode(
            headers,
            body,
            received_at=received_at,
            scan=scan_pull_requests,
            compliance_keys=compliance_keys,
            inventory=inventory,
        )
    except RecursionError:
        # msgspec gives up past its nesting limit; Bitbucket never nests that deep.
        raise DecodeError("body is not valid JSON: nested too deeply") from None
    # A JSON string spells NUL only as this escape; records from parse.py are
    # already clean, the delivery and the jobs may not be.
    return strip_nul(decoded) if b"\\u0000" in body else decoded


def _decode(
    headers: Mapping[str, str],
    body: bytes,
    *,
    received_at: datetime,
    scan: bool,
    compliance_keys: frozenset[str] | None,
    inventory: bool,
) -> Decoded:
    head = read_headers(headers)
    # Retries of one delivery must map to one row even without X-Request-UUID.
    request_uuid = head.request_uuid or "sha256:" + hashlib.sha256(body).hexdigest()
    delivery = WebhookDelivery(
        request_uuid=request_uuid,
        event=head.event,
        received_at=received_at,
        hook_uuid=head.hook_uuid,
        attempt=head.attempt,
    )
    if head.event == PUSH:
        pushed = _decode_push(body, head, delivery)
        if inventory:
            from rcingest.webhooks.repo_events import push_activity

            push_activity(pushed, received_at)
        return pushed
    if inventory:
        from rcingest.webhooks import repo_events

        if head.event in repo_events.REPO_EVENTS:
            return repo_events.decode_repo(body, head, delivery)
    if head.event in PR_EVENTS:
        decoded = _decode_pr(body, head, delivery, scan)
        if compliance_keys is not None:
            from rcingest.webhooks import review_events as rev

            pr = decoded.records[0]
            if head.event in rev.EVALUATED_PR_EVENTS and isinstance(pr, PullRequest):
                if backfill_safe(pr.repository):
                    job = rev.compliance_job(
                        head.event, pr.repository, request_uuid, pr_id=pr.id, head=None
                    )
                    decoded.jobs.append(job)
        return decoded
    if compliance_keys is not None:
        from rcingest.webhooks import review_events as rev

        if head.event in rev.REVIEW_EVENTS:
            return rev.decode_review(body, head, delivery)
        if head.event in rev.STATUS_EVENTS:
            return rev.decode_status(body, head, delivery, compliance_keys)
    # Not stored, but still held to the contract: the body must be JSON.
    try:
        shapes.any_json(body)
        body.decode("utf-8")  # Raw does not look inside strings
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise shape_error(head.event, exc, body) from None
    delivery.outcome = "ignored" if head.event in KNOWN_EVENTS else "unknown_event"
    return Decoded(delivery=delivery)


def commit_with_pull_request(commit: Commit, pr: PullRequest) -> Commit:
    """``commit`` carrying a reference to ``pr``, so PR-title keys reach it."""
    ref = PullRequestRef(
        id=pr.id,
        title=pr.title,
        source_branch=pr.source_branch,
        repository=pr.repository if pr.repository != commit.repository else None,
    )
    if any(r.id == ref.id and r.repository == ref.repository for r in commit.pull_requests):
        return commit
    return msgspec.structs.replace(commit, pull_requests=[*commit.pull_requests, ref])
