"""Deliveries that re-evaluate compliance: reviews, approvals and other tools' statuses.

With a ``compliance:`` section, each of these deliveries leaves a
``compliance`` job for the pull request(s) it concerns, run from the durable
queue after the 2xx (never blocking it):

* ``pullrequest:created``/``updated``/``fulfilled`` (decoded as before, plus
  the job; ``fulfilled`` freezes the final evaluation);
* ``pullrequest:approved``/``unapproved``/``changes_request_created``/
  ``changes_request_removed``: only the delivery is stored, and the job;
* ``repo:commit_status_created``/``updated``: a job for the open pull
  requests whose source head is the status's commit. A status with one of
  rcingest's own compliance keys is ignored: reporting a verdict must not
  trigger a new evaluation of it, or every verdict would loop.

Sans-I/O, like ``rcingest.webhooks.decode``.
"""

from __future__ import annotations

import re

import msgspec

from rcingest.records import WebhookDelivery
from rcingest.webhooks.checks import check_full_name, shape_error
from rcingest.webhooks.decode import (
    BackfillJob,
    Decoded,
    DecodeError,
    DeliveryHeaders,
    backfill_safe,
)

__all__ = [
    "EVALUATED_PR_EVENTS",
    "REVIEW_EVENTS",
    "STATUS_EVENTS",
    "compliance_job",
    "decode_review",
    "decode_status",
]

REVIEW_EVENTS = frozenset(
    {
        "pullrequest:approved",
        "pullrequest:unapproved",
        "pullrequest:changes_request_created",
        "pullrequest:changes_request_removed",
    }
)
STATUS_EVENTS = frozenset({"repo:commit_status_created", "repo:commit_status_updated"})
#: Pull request events decoded as before that also re-evaluate compliance.
EVALUATED_PR_EVENTS = frozenset(
    {"pullrequest:created", "pullrequest:updated", "pullrequest:fulfilled"}
)
_HEX = re.compile(r"^[0-9a-f]{7,40}$")
_COMMIT_HREF = re.compile(r"/commit/([0-9a-f]{7,40})(?:$|[/?#])")


class _Repo(msgspec.Struct):
    full_name: str
    uuid: str | None = None


class _Commit(msgspec.Struct):
    hash: str | None = None


class _Ref(msgspec.Struct):
    commit: _Commit | None = None


class _PR(msgspec.Struct):
    id: int
    state: str = "OPEN"
    source: _Ref | None = None


class _When(msgspec.Struct):
    date: str | None = None


class _ReviewEvent(msgspec.Struct):
    pullrequest: _PR
    repository: _Repo
    approval: _When | None = None
    changes_request: _When | None = None


class _Href(msgspec.Struct):
    href: str = ""


class _StatusLinks(msgspec.Struct):
    commit: _Href | None = None


class _Status(msgspec.Struct):
    key: str
    state: str = ""
    updated_on: str | None = None
    commit: _Commit | None = None
    links: _StatusLinks | None = None


class _StatusEvent(msgspec.Struct):
    commit_status: _Status
    repository: _Repo


_review = msgspec.json.Decoder(_ReviewEvent)
_status = msgspec.json.Decoder(_StatusEvent)


def compliance_job(
    event: str, repository: str, request_uuid: str, *, pr_id: int | None, head: str | None
) -> BackfillJob:
    """One evaluation to run: of ``pr_id``, or of the open PRs whose head is ``head``."""
    target = f"pr:{pr_id}" if pr_id is not None else f"commit:{head}"
    # Keyed by delivery: each new delivery re-evaluates; a retried one is the same job.
    return BackfillJob(
        kind="compliance",
        repository=repository,
        key=f"compliance:{repository}:{target}:{request_uuid}",
        head=head,
        pr_id=pr_id,
        event=event,
    )


def decode_review(body: bytes, headers: DeliveryHeaders, delivery: WebhookDelivery) -> Decoded:
    try:
        event = _review.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise shape_error(headers.event, exc, body) from None
    repo, pr = event.repository.full_name, event.pullrequest
    check_full_name(headers.event, "repository.full_name", repo)
    if pr.id < 1:
        raise DecodeError(f"{headers.event} payload has pull request id {pr.id} out of range")
    when = event.approval or event.changes_request
    delivery.repository = repo
    delivery.content_key = (
        f"{event.repository.uuid or repo}|review|{pr.id}|{headers.event}|"
        f"{when.date if when else delivery.request_uuid}"
    )
    jobs = []
    if backfill_safe(repo):
        jobs.append(
            compliance_job(headers.event, repo, delivery.request_uuid, pr_id=pr.id, head=None)
        )
    return Decoded(delivery=delivery, jobs=jobs)


def status_commit(status: _Status) -> str | None:
    """The status's commit hash: ``commit.hash``, else the end of its ``links.commit``."""
    if status.commit and status.commit.hash and _HEX.match(status.commit.hash):
        return status.commit.hash
    href = status.links.commit.href if status.links and status.links.commit else ""
    match = _COMMIT_HREF.search(href)
    return match.group(1) if match else None


def decode_status(
    body: bytes, headers: DeliveryHeaders, delivery: WebhookDelivery, own_keys: frozenset[str]
) -> Decoded:
    try:
        event = _status.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise shape_error(headers.event, exc, body) from None
    repo, status = event.repository.full_name, event.commit_status
    check_full_name(headers.event, "repository.full_name", repo)
    commit = status_commit(status)
    if commit is None:
        raise DecodeError(f"{headers.event} payload names no commit (commit_status.links.commit)")
    delivery.repository = repo
    delivery.content_key = (
        f"{event.repository.uuid or repo}|status|{status.key}|{commit}|{status.state}|"
        f"{status.updated_on or delivery.request_uuid}"
    )
    if status.key in own_keys:
        delivery.outcome = "ignored"  # our own verdict: evaluating it again would loop
        return Decoded(delivery=delivery)
    jobs = []
    if backfill_safe(repo):
        jobs.append(
            compliance_job(headers.event, repo, delivery.request_uuid, pr_id=None, head=commit)
        )
    return Decoded(delivery=delivery, jobs=jobs)
