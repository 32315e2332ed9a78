"""``repo_sync`` jobs: a repository's full value read after its delivery was answered.

A repository event's payload is partial; the job reads
``GET /repositories/{workspace}/{slug}`` and emits the ``Repository`` with the
inventory filters applied (a filtered repository stays ``filtered``). One
that is gone by then (404) is tombstoned, not retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from rcingest.bitbucket import api
from rcingest.bitbucket.parse import repository_from_api
from rcingest.errors import RcingestError
from rcingest.inventory.filters import RepositoryFilters, filtered_reason
from rcingest.records import Record, Repository
from rcingest.webhooks.decode import BackfillJob

__all__ = ["fetch_repository"]


async def fetch_repository(
    client: Any, job: BackfillJob, filters: RepositoryFilters | None = None
) -> list[Record]:
    try:
        body = await client.get_bytes(f"/repositories/{job.repository}")
    except RcingestError as exc:
        if getattr(exc, "status", None) == 404:
            gone = Repository(
                full_name=job.repository, state="deleted", state_reason="not found (404)"
            )
            return [gone]
        raise  # retried by the backfill worker
    repo = repository_from_api(msgspec.json.decode(body, type=api.Repository))
    if filters is not None:
        reason = filtered_reason(repo, filters, datetime.now(UTC))
        if reason is not None:
            repo.state, repo.state_reason = "filtered", reason
    return [repo]
