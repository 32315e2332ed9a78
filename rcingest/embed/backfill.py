"""Backfill for the embedded receiver: the daemon's durable queue and worker, on the storage loop.

Given REST credentials (``CommitStorage(api=ClientConfig(...))``), a truncated
push (Bitbucket lists 5 commits per change) and a pull request (its payload
lists no commits) leave a job in the queue file *before* the delivery is
answered, as ``rcingest serve`` does; the worker of
:mod:`rcingest.webhooks.backfill` then fetches from the configured API host
only and writes the completed records through the same storage. The worker
is one task on the storage's loop; ``close()`` cancels it and the job it was
on stays pending for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rcingest.bitbucket.client import BitbucketClient, ClientConfig
from rcingest.interfaces import Stats
from rcingest.records import Record
from rcingest.webhooks.backfill import BackfillStore, BackfillWorker, Deliver, fetch_job
from rcingest.webhooks.decode import BackfillJob

__all__ = ["Backfill"]


class Backfill:
    """The queue, the REST client and the worker task; started and stopped on one loop."""

    def __init__(
        self,
        api: ClientConfig,
        queue: Path,
        deliver: Deliver,
        *,
        stats: Stats,
        logger: logging.Logger,
        secrets: frozenset[str],
        max_commits: int = 1000,
        retry_delay: float = 5.0,
    ) -> None:
        self.api = api
        self.store = BackfillStore(queue)
        self.deliver = deliver
        self.stats = stats
        self.logger = logger
        self.secrets = secrets
        self.max_commits = max_commits
        self.retry_delay = retry_delay
        self.worker: BackfillWorker | None = None
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        """Open the queue and the client, and start the worker (on the running loop)."""
        await self.store.open()
        self._stack.push_async_callback(self.store.close)
        try:
            client = await self._stack.enter_async_context(
                BitbucketClient(self.api, self.stats, self.logger, secrets=self.secrets)
            )

            async def fetch(job: Any) -> list[Record]:
                return await fetch_job(client, job, self.max_commits)

            self.worker = BackfillWorker(
                self.store,
                fetch,
                self.deliver,
                base_delay=self.retry_delay,
                logger=self.logger,
                redact=client.redact,
            )
            self._task = asyncio.create_task(self.worker.run(), name="rcingest-embed-backfill")
        except BaseException:
            await self._stack.aclose()
            raise

    async def add(self, jobs: Sequence[BackfillJob]) -> None:
        """Record ``jobs`` durably (before the delivery is answered)."""
        await self.store.add(jobs)

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    async def stop(self) -> None:
        """Cancel the worker (its job stays pending), then close the client and the queue."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stack.aclose()
