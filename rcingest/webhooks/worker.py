"""The backfill worker: one task running the durable queue's due jobs, surviving its failures.

Jobs come from ``rcingest.webhooks.backfill.BackfillStore``; each is fetched
(``fetch``), optionally announced first, and handed to the pipeline
(``deliver``); a job is done only once its records are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from rcingest.records import Record
from rcingest.webhooks.decode import BackfillJob

if TYPE_CHECKING:
    from rcingest.webhooks.backfill import BackfillStore, StoredJob

__all__ = ["Announce", "BackfillWorker", "Deliver", "Fetch", "Observe"]


Fetch = Callable[[BackfillJob], Awaitable[list[Record]]]
#: Records to deliver before a job's fetch (a PR scan's "scanning" state).
Announce = Callable[[BackfillJob], Awaitable[list[Record]]]
# Hands records to the pipeline and waits for the verdict: True once committed.
Deliver = Callable[[list[Record]], Awaitable[bool]]
Observe = Callable[[str, str], None]


class BackfillWorker:
    """One task taking due jobs from the store, in order, one at a time.

    One at a time is deliberate: backfill shares the hourly REST budget with
    nothing else in the daemon, and a burst of truncated pushes should drain
    steadily rather than trip Bitbucket's rate limit.
    """

    def __init__(
        self,
        store: BackfillStore,
        fetch: Fetch,
        deliver: Deliver,
        *,
        max_attempts: int = 8,
        base_delay: float = 5.0,
        max_delay: float = 900.0,
        poll_interval: float = 5.0,
        observe: Observe | None = None,
        logger: logging.Logger | None = None,
        redact: Callable[[str], str] = lambda s: s,
        announce: Announce | None = None,
        on_error: Callable[[Exception], None] | None = None,
        error_delay_min: float = 0.5,
        error_delay_max: float = 30.0,
    ) -> None:
        self.store = store
        self.on_error = on_error or (lambda exc: None)
        self.error_delay_min = error_delay_min
        self.error_delay_max = error_delay_max
        #: False while the queue store fails (``/readyz`` answers 503 then).
        self.healthy = True
        self.last_error: str | None = None
        self.announce = announce
        self.fetch = fetch
        self.deliver = deliver
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self.observe = observe or (lambda kind, outcome: None)
        self.logger = logger or logging.getLogger("rcingest.webhooks")
        self.redact = redact
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New work was added: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Work until cancelled; an unfinished job stays pending for the next start.

        A failing queue store (disk full, a lock held past the busy timeout)
        must not end the task: that left jobs pending for ever, ``/readyz``
        green and shutdown hanging. The error is logged, counted and shown as
        ``healthy = False``; the loop backs off (bounded) and tries again.
        """
        backoff = self.error_delay_min
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._store_failed(exc, backoff)
                # The wake event is ignored here: new work is no reason to
                # hammer a store that just failed.
                await asyncio.sleep(backoff)
                backoff = min(self.error_delay_max, backoff * 2)
                continue
            backoff = self.error_delay_min
            self.healthy, self.last_error = True, None

    async def _step(self) -> None:
        """One turn: run the next due job, or sleep until one may be due."""
        self._wake.clear()
        stored = await self.store.next_due()
        if stored is None:
            # Sleep until the next retry is due, new work arrives, or the poll.
            due = await self.store.seconds_to_next()
            timeout = self.poll_interval if due is None else min(due, self.poll_interval)
            self.healthy, self.last_error = True, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(timeout, 0.01))
            return
        await self.run_one(stored)

    def _store_failed(self, exc: Exception, backoff: float) -> None:
        error = self.redact(f"{type(exc).__name__}: {exc}")
        if self.healthy:
            # Once per outage at error level; repeats at debug, so a full disk
            # does not flood the log the worker is failing to help with.
            self.logger.error("backfill queue failing, retrying in %.1fs: %s", backoff, error)
        else:
            self.logger.debug("backfill queue still failing, retrying in %.1fs: %s", backoff, error)
        self.healthy, self.last_error = False, error
        self.on_error(exc)

    async def run_one(self, stored: StoredJob) -> bool:
        """Fetch, deliver and settle one job; True when it is done."""
        job = stored.job
        try:
            if self.announce is not None:
                early = await self.announce(job)
                if early:
                    await self.deliver(early)  # best effort: the final records follow
            records = await self.fetch(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(stored, f"{type(exc).__name__}: {exc}")
            return False
        if await self.deliver(records):
            await self.store.done(stored.id)
            self.observe(job.kind, "done")
            return True
        await self._failed(stored, "the pipeline could not store the records")
        return False

    async def _failed(self, stored: StoredJob, error: str) -> None:
        error = self.redact(error)
        attempts = stored.attempts + 1
        give_up = attempts >= self.max_attempts
        delay = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
        await self.store.retry(stored.id, error, delay, give_up=give_up)
        self.observe(stored.job.kind, "failed" if give_up else "retry")
        if give_up:
            self.logger.error(
                "backfill %s gave up after %d attempts: %s", stored.job.key, attempts, error
            )
        else:
            self.logger.warning(
                "backfill %s failed (attempt %d), retrying in %.0fs: %s",
                stored.job.key,
                attempts,
                delay,
                error,
            )
