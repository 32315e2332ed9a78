"""``rcingest run`` on the PR security pipeline: scan the open pull requests once.

The same pipeline file ``rcingest serve`` runs (the webhook source with
``scanners:``) scans, under ``rcingest run``, every open pull request of the
source's ``scan_repositories`` and ends. Heads go through the same durable
queue as the daemon's ``pr_scan`` jobs, so a head the daemon (or an earlier
run) already scanned is not scanned again, and a head scanned here is not
scanned again by the daemon.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from rcingest.bitbucket import api
from rcingest.bitbucket.parse import pull_request_from_api
from rcingest.records import Checkpoint, Record
from rcingest.webhooks.backfill import BackfillStore
from rcingest.webhooks.decode import BackfillJob
from rcingest.webhooks.prscan import PullRequestScans

__all__ = ["evaluate_open_pull_requests", "scan_open_pull_requests"]

#: The stream of the checkpoint after each repository (nothing to resume: state None).
STREAM = "pr_scan"


async def scan_open_pull_requests(
    client: Any,
    store: BackfillStore,
    scans: PullRequestScans,
    repositories: Sequence[str],
    stats: Any,
) -> AsyncIterator[Record | Checkpoint]:
    """Each open pull request's scan records, a checkpoint after each repository.

    Yields the ``scanning`` record, then the scan's; the job is marked done
    in ``store`` once its records are yielded (the caller's acknowledgement
    follows the checkpoint).
    """
    for repository in repositories:
        path = f"/repositories/{repository}/pullrequests"
        async for values in client.typed_pages(path, api.PullRequest, {"state": "OPEN"}):
            for value in values:
                head = value.source.commit.hash if value.source.commit else None
                if not head:
                    continue
                record = pull_request_from_api(value, repository, [])
                job = BackfillJob(
                    kind="pr_scan",
                    repository=repository,
                    key=f"pr_scan:{repository}:{value.id}:{head[:12]}",
                    pull_request=record,
                    head=head,
                )
                if not await store.add([job]):
                    stats.incr("scan.already_scanned")
                    continue
                for item in await scans.announce(job):
                    yield item
                for item in await scans.fetch(job):
                    yield item
                stats.incr("scan.pull_requests")
                await store.finish(job.key)
        yield Checkpoint(STREAM)


async def evaluate_open_pull_requests(
    gatherer: Any, repositories: Sequence[str], stats: Any
) -> AsyncIterator[Record | Checkpoint]:
    """Each open pull request's compliance evaluation, a checkpoint after each repository.

    Unlike scans, evaluations are not deduplicated by head: approvals and
    statuses change without a new head, so every run evaluates afresh (the
    database keeps one row per distinct outcome).
    """
    for repository in repositories:
        for pr_id in await gatherer.open_pull_requests(repository):
            yield await gatherer.evaluation(repository, pr_id, trigger="run")
            stats.incr("compliance.evaluated")
        yield Checkpoint("compliance")
