"""Repository deliveries that keep the inventory current (issue 14), sans-I/O.

With ``inventory: true`` on the webhook source:

* ``repo:created``, ``repo:updated``, ``repo:transfer``: the repository as the
  payload has it, and a ``repo_sync`` job that reads its full value from the
  API after the 2xx (the payload is partial). A rename or transfer (the full
  name changed) also tombstones the old name, with ``renamed_to``;
* ``repo:fork``: the fork, with ``fork_of``, and a job for its full value;
* ``repo:deleted``: a tombstone at once (there is nothing left to read);
* ``repo:push``: the repository's ``last_push`` (no job: nothing else changed).

Payload Structs are lenient and declare only what is used.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from rcingest.bitbucket import api
from rcingest.bitbucket.parse import repository_from_api
from rcingest.records import Repository, WebhookDelivery
from rcingest.webhooks.checks import check_full_name, shape_error
from rcingest.webhooks.decode import (
    BackfillJob,
    Decoded,
    DeliveryHeaders,
    backfill_safe,
)

__all__ = ["REPO_EVENTS", "decode_repo", "push_activity", "repo_sync_job"]

REPO_EVENTS = frozenset(
    {"repo:created", "repo:updated", "repo:transfer", "repo:fork", "repo:deleted"}
)


class _Change(msgspec.Struct):
    old: str | None = None
    new: str | None = None


class _Changes(msgspec.Struct):
    full_name: _Change | None = None


class _RepoEvent(msgspec.Struct):
    repository: api.Repository
    changes: _Changes | None = None
    fork: api.Repository | None = None


_decoder = msgspec.json.Decoder(_RepoEvent)


def repo_sync_job(repository: str, request_uuid: str) -> BackfillJob:
    """Read ``repository``'s full value after the 2xx (a tombstone if it is gone by then)."""
    return BackfillJob(
        kind="repo_sync", repository=repository, key=f"repo_sync:{repository}:{request_uuid}"
    )


def decode_repo(body: bytes, headers: DeliveryHeaders, delivery: WebhookDelivery) -> Decoded:
    try:
        event = _decoder.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise shape_error(headers.event, exc, body) from None
    check_full_name(headers.event, "repository.full_name", event.repository.full_name)
    if event.fork is not None:
        check_full_name(headers.event, "fork.full_name", event.fork.full_name)
    old = event.changes.full_name.old if event.changes and event.changes.full_name else None
    if old:
        check_full_name(headers.event, "changes.full_name.old", old)
    repo = repository_from_api(event.repository)
    delivery.repository = repo.full_name
    delivery.content_key = (
        f"{repo.uuid or repo.full_name}|repo|{headers.event}|{delivery.request_uuid}"
    )
    records: list[Repository] = []
    jobs: list[BackfillJob] = []
    if headers.event == "repo:deleted":
        repo.state, repo.state_reason = "deleted", "repo:deleted delivery"
        records.append(repo)
        return Decoded(delivery=delivery, records=list(records))
    if headers.event == "repo:fork" and event.fork is not None:
        fork = repository_from_api(event.fork)
        fork.fork_of = repo.full_name
        records.append(fork)
        target = fork.full_name
    else:
        change = event.changes.full_name if event.changes else None
        old = change.old if change else None
        if old and old != repo.full_name:
            records.append(
                Repository(
                    full_name=old,
                    uuid=repo.uuid,
                    state="deleted",
                    state_reason=f"renamed to {repo.full_name}",
                    renamed_to=repo.full_name,
                )
            )
        records.append(repo)
        target = repo.full_name
    if backfill_safe(target):
        jobs.append(repo_sync_job(target, delivery.request_uuid))
    return Decoded(delivery=delivery, records=list(records), jobs=jobs)


def push_activity(decoded: Decoded, received_at: datetime) -> None:
    """A push is activity: the repository's ``last_push`` is now."""
    name = decoded.delivery.repository
    if name:
        decoded.records.append(Repository(full_name=name, last_push=received_at))
