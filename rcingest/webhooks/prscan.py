"""The daemon's pull-request scans: ``pr_scan`` jobs from the durable queue (issue 12).

A ``pullrequest:created``/``updated`` delivery queues a ``pr_scan`` job keyed
by (repository, pull request, source head) before its 2xx; the backfill
worker then runs it, off the acknowledgement path:

1. ``announce``: the head is resolved to its full hash and a ``scanning``
   record goes through the pipeline (the status sink shows INPROGRESS);
2. ``fetch``: the diff is read (same-API redirect, bounded, 555 an answer),
   parsed and scanned; the final ``PullRequestScan`` goes through the pipeline.

A head already scanned is never queued again (the queue keeps done keys), so
a repeated delivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rcingest.errors import RcingestError
from rcingest.records import Record
from rcingest.scanning.pullrequest import PullRequestTarget, Scanner, full_head, scan_pull_request
from rcingest.scanning.records import PullRequestScan
from rcingest.webhooks.decode import BackfillJob

__all__ = ["ClientScanAPI", "PullRequestScans"]


class ClientScanAPI:
    """``PullRequestAPI`` over the REST client: a PR's diff, bounded; a commit by short hash."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def commit(self, repo: str, rev: str) -> dict[str, Any]:
        value: dict[str, Any] = await self.client.commit(repo, rev)
        return value

    async def pullrequest_diff(self, repo: str, pr_id: int, *, max_bytes: int) -> bytes:
        from rcingest.bitbucket.client import ResponseTooLarge
        from rcingest.scanning.diff import DiffTooLarge

        path = f"/repositories/{repo}/pullrequests/{pr_id}/diff"
        try:
            body: bytes = await self.client.get_text(
                path, max_bytes=max_bytes, final=frozenset({555})
            )
        except ResponseTooLarge:
            raise DiffTooLarge(max_bytes + 1, max_bytes) from None
        return body


def target_of(job: BackfillJob, head: str) -> PullRequestTarget:
    pr = job.pull_request
    return PullRequestTarget(
        repository=job.repository,
        pull_request_id=pr.id if pr is not None else 0,
        head=head,
        title=pr.title if pr is not None else None,
        source_branch=pr.source_branch if pr is not None else None,
        destination_branch=pr.destination_branch if pr is not None else None,
    )


@dataclass
class PullRequestScans:
    """Runs ``pr_scan`` jobs with the pipeline's scanners through one REST client."""

    client: Any
    scanners: Sequence[Scanner]
    max_diff_bytes: int
    #: Full heads resolved by ``announce``, for the ``fetch`` that follows.
    _heads: dict[str, str] = field(default_factory=dict)

    async def announce(self, job: BackfillJob) -> list[Record]:
        """The ``scanning`` record, sent before the scan (INPROGRESS on the PR)."""
        if job.kind != "pr_scan" or job.head is None:
            return []
        api = ClientScanAPI(self.client)
        try:
            head = await full_head(api, job.repository, job.head)
        except (RcingestError, ValueError):  # the scan itself reports what went wrong
            return []
        self._heads[job.key] = head
        target = target_of(job, head)
        return [
            PullRequestScan(
                repository=target.repository,
                pull_request_id=target.pull_request_id,
                head=head,
                state="scanning",
                scanned_at=datetime.now(UTC),
                title=target.title,
                source_branch=target.source_branch,
                destination_branch=target.destination_branch,
                scanners=[s.name for s in self.scanners],
            )
        ]

    async def fetch(self, job: BackfillJob) -> list[Record]:
        """The scan's final record (``findings``, ``clean`` or why it could not be scanned)."""
        head = self._heads.pop(job.key, None) or job.head or ""
        result = await scan_pull_request(
            ClientScanAPI(self.client),
            self.scanners,
            target_of(job, head),
            max_diff_bytes=self.max_diff_bytes,
        )
        return [result]
