"""The normaliser: inbox rows in, committed records out, each row marked with its outcome.

One loop per daemon. It claims the oldest due rows (each repository's in
the order they arrived, see :meth:`rcingest.inbox.db.InboxDB.claim`),
derives their records with the decoder, records their backfill jobs,
hands each delivery's records to the pipeline like the direct path does
(the runner enriches them, writes them to every sink and acknowledges),
and then settles the rows: ``done`` when acknowledged, ``failed`` with the
reason and a growing delay when a sink failed, ``parked`` after
``max_attempts`` failures or at once when the decoder refuses the payload
(retrying a deterministic refusal cannot help; ``rcingest inbox retry``
puts it back after an upgrade).

Crash safety: a row is marked done only after the sinks committed its
records, so a kill at any instant leaves it open and it is normalised again
on restart. The sinks upsert by natural keys, so doing it twice stores what
doing it once stores. The loop itself never dies of an error: it logs it,
reports itself unhealthy (``/readyz``, ``/metrics``) and backs off.

Yielding to the request path: the normaliser shares the event loop (and the
GIL) with the handler that acknowledges deliveries, and normalising a
delivery costs several times what acknowledging it does. So while
deliveries keep arriving (``busy()``) it waits, for at most ``defer``
seconds after it last caught up; past that bound it normalises until the
inbox is drained again, so the lag stays bounded under sustained load. It
also hands the loop back between deliveries of a batch, so one batch does
not hold up the answers for its whole duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rcingest import faults
from rcingest.inbox.derive import DecodeSettings, derive
from rcingest.inbox.model import InboxEntry
from rcingest.inbox.store import Inbox
from rcingest.records import Record
from rcingest.webhooks.decode import BackfillJob

__all__ = ["Normaliser"]

#: Hand ``records`` to the pipeline; resolves None once committed, else the reason it was not.
Deliver = Callable[[list[Record]], Awaitable[str | None]]
#: Record backfill jobs durably (raises when it cannot).
AddJobs = Callable[[Sequence[BackfillJob]], Awaitable[Any]]

#: Longest wait between retries of a failed row.
MAX_DELAY = 900.0
#: How often a deferring normaliser looks again whether deliveries still arrive.
DEFER_TICK = 0.02


class Normaliser:
    """Consumes one inbox until :meth:`stop`."""

    def __init__(
        self,
        inbox: Inbox,
        deliver: Deliver,
        *,
        settings: DecodeSettings,
        add_jobs: AddJobs | None = None,
        jobs_added: Callable[[], None] = lambda: None,
        batch: int = 256,
        max_attempts: int = 8,
        retry_delay: float = 5.0,
        poll_interval: float = 1.0,
        commit_timeout: float = 60.0,
        observe: Callable[[str, int], None] = lambda outcome, n: None,
        delay: Callable[[float], None] = lambda seconds: None,
        logger: logging.Logger | None = None,
        redact: Callable[[str], str] = lambda s: s,
        busy: Callable[[], bool] = lambda: False,
        defer: float = 0.0,
    ) -> None:
        self.inbox = inbox
        self.deliver = deliver
        self.settings = settings
        self.add_jobs = add_jobs
        self.jobs_added = jobs_added
        self.batch = batch
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.poll_interval = poll_interval
        self.commit_timeout = commit_timeout
        self.observe = observe
        self.delay = delay
        self.log = logger or logging.getLogger("rcingest.webhooks")
        self.redact = redact
        self.busy = busy
        self.defer = defer
        self.healthy = True
        self.last_error = ""
        #: Why the last delivery that failed or was parked did (shown by /readyz).
        self.last_failure = ""
        self._wake = asyncio.Event()
        self._stopping = False
        self._drain_until = 0.0
        self._failures = 0
        #: When the oldest delivery we were told about and have not claimed
        #: arrived (monotonic; None: none): deferring is bounded from there.
        self._pending_since: float | None = time.monotonic()  # a backlog, perhaps
        self._wakes = 0

    def wake(self) -> None:
        """New rows were appended: claim now rather than at the next poll."""
        self._wakes += 1
        if self._pending_since is None:
            self._pending_since = time.monotonic()
        self._wake.set()

    def stop(self, drain: float = 0.0) -> None:
        """Return from :meth:`run` once the inbox is empty or ``drain`` seconds passed.

        The batch under way is always finished; what is left stays in the
        inbox and is normalised at the next start.
        """
        self._stopping = True
        self._drain_until = time.monotonic() + drain
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping or time.monotonic() < self._drain_until:
            try:
                worked = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # log, back off, carry on: never die silently
                self._failures += 1
                self.healthy = False
                self.last_error = self.redact(f"{type(exc).__name__}: {exc}")
                self.log.error("normaliser: %s; retrying", self.last_error)
                await self._sleep(min(30.0, 0.5 * 2 ** min(self._failures, 6)))
                continue
            self._failures = 0
            self.healthy = True
            if not worked:
                if self._stopping:
                    return  # drained
                await self._sleep(self.poll_interval)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def yield_to_requests(self) -> None:
        """Wait while deliveries arrive, within the bound."""
        while self.defer > 0 and not self._stopping and self.busy():
            now = time.monotonic()
            since = now if self._pending_since is None else self._pending_since
            if now - since >= self.defer:
                return
            await asyncio.sleep(DEFER_TICK)

    async def step(self) -> bool:
        """Claim, normalise and settle one batch; False when there was nothing to do."""
        await self.yield_to_requests()
        started, wakes = time.monotonic(), self._wakes
        entries = await self.inbox.claim(self.batch)
        if len(entries) < self.batch:
            # Everything due was claimed: what is pending now arrived during the
            # claim at the earliest (or is not ours to wait for).
            self._pending_since = None if self._wakes == wakes else started
        if not entries:
            return False
        try:
            await self._normalise(entries)
        except BaseException:
            # Whatever went wrong, the rows stay open and are claimed again.
            with contextlib.suppress(Exception):
                await self.inbox.release()
            raise
        return True

    async def _normalise(self, entries: list[InboxEntry]) -> None:
        # Each delivery goes to the pipeline as soon as it is derived, so the
        # sinks write (in their threads, mostly outside the GIL) while the
        # rest of the batch is still being derived. The pipeline keeps the
        # order it was handed, as when the whole batch went at once.
        todo: list[InboxEntry] = []
        futures: list[asyncio.Future[str | None]] = []
        jobs: list[BackfillJob] = []
        parked: list[tuple[int, str | None]] = []
        try:
            for n, entry in enumerate(entries, 1):
                d = derive(entry, self.settings)
                if d.error is not None:
                    parked.append((entry.row.id, d.error))
                    self.log.warning(
                        "inbox: parked delivery %s (%s): %s",
                        entry.row.request_uuid,
                        entry.row.event,
                        self.redact(d.error),
                    )
                else:
                    todo.append(entry)
                    jobs.extend(d.jobs)
                    futures.append(asyncio.ensure_future(self.deliver(d.records)))
                if n % 16 == 0:
                    await asyncio.sleep(0)  # let the pipeline (and a handler) run in between
            if jobs and self.add_jobs is not None:
                await self.add_jobs(jobs)  # before the rows are done: a job is never lost
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), self.commit_timeout
            )
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        faults.reached("normalise")
        now = time.time()
        done: list[int] = []
        failed: list[tuple[int, str, float]] = []
        for entry, outcome in zip(todo, results, strict=True):
            if outcome is None:
                done.append(entry.row.id)
                continue
            if isinstance(outcome, BaseException):
                outcome = f"{type(outcome).__name__}: {outcome}"
            reason = self.last_failure = self.redact(outcome)
            attempts = entry.row.attempts + 1
            if attempts >= self.max_attempts:
                parked.append((entry.row.id, f"after {attempts} attempts: {reason}"))
            else:
                wait = min(MAX_DELAY, self.retry_delay * 2 ** (attempts - 1))
                failed.append((entry.row.id, reason, now + wait))
        await self.inbox.settle(done, failed, [(i, r or "") for i, r in parked])
        finished = set(done)
        for entry in todo:
            if entry.row.id in finished:
                self.delay(now - entry.row.received_at)
        self.observe("done", len(done))
        self.observe("failed", len(failed))
        self.observe("parked", len(parked))
        if jobs and done:
            self.jobs_added()
