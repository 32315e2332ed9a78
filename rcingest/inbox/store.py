"""The inbox for asyncio code: group commit on the request path, claims for the normaliser.

Two connections, each on a single-thread executor of its own: the *writer*
appends arrivals, the *reader* claims, settles and answers questions. On
PostgreSQL a claim holds its transaction (and its row locks) open while
the batch is normalised, so it must not share a connection with appends.

Group commit: :meth:`Inbox.append` queues the arrival and, if no flush is
running, starts one; a flush writes everything queued in one transaction,
and arrivals that came while it ran form the next. At 32 deliveries in
flight that is one commit for many deliveries, without a timer to wait for.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

from rcingest.inbox.db import InboxDB, connect
from rcingest.inbox.model import Arrival, InboxEntry, InboxFilter, InboxRow, WorkerBeat

__all__ = ["Inbox"]

T = TypeVar("T")


class _Conn:
    """One :class:`InboxDB` and the thread that uses it."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rcingest-{name}")
        self.db: InboxDB | None = None

    async def call(self, fn: Callable[[InboxDB], T]) -> T:
        def run() -> T:
            if self.db is None:
                raise RuntimeError("the inbox is closed")
            return fn(self.db)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    async def open(self, spec: str, synchronous: Literal["NORMAL", "FULL"]) -> InboxDB:
        def start() -> InboxDB:
            self.db = connect(spec, synchronous)
            return self.db

        return await asyncio.get_running_loop().run_in_executor(self.executor, start)

    async def close(self) -> None:
        def shut() -> None:
            if self.db is not None:
                db, self.db = self.db, None
                db.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self.executor, shut)
        finally:
            self.executor.shutdown(wait=True)


class Inbox:
    """The durable inbox of one daemon (several daemons may share a PostgreSQL one)."""

    def __init__(
        self,
        spec: str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        secrets: Sequence[str] = (),
    ) -> None:
        self.spec = spec
        self.synchronous = synchronous
        self.secrets = tuple(secrets)
        self._writer = _Conn("inbox-append")
        self._reader = _Conn("inbox-read")
        self._waiting: list[tuple[Arrival, asyncio.Future[bool]]] = []
        self._flushing = False
        self._flushes: set[asyncio.Task[None]] = set()
        #: Called after each committed append batch (the normaliser's wake-up).
        self.on_append: Callable[[], None] = lambda: None
        #: When the last delivery was queued (monotonic), for :meth:`busy`.
        self.last_append = float("-inf")

    @property
    def dialect(self) -> str:
        db = self._reader.db
        return db.dialect if db is not None else "unknown"

    async def open(self) -> None:
        """Connect both connections and create the table when missing."""
        writer = await self._writer.open(self.spec, self.synchronous)
        writer.mask(self.secrets)
        await self._writer.call(lambda db: db.create())
        await self._reader.open(self.spec, self.synchronous)

    async def close(self) -> None:
        """Wait for the flushes under way, then close both connections."""
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self._writer.close()
        await self._reader.close()

    # ---- the request path ----------------------------------------------------

    def append(self, arrival: Arrival) -> asyncio.Future[bool]:
        """Queue ``arrival``; the future is True once it is durably stored as new,
        False once stored as a repeat, or fails with the database's error."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.last_append = time.monotonic()
        self._waiting.append((arrival, future))
        if not self._flushing:
            self._flushing = True
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return future

    async def _flush(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                arrivals = [a for a, _ in batch]
                try:
                    fresh = await self._writer.call(
                        functools.partial(InboxDB.append, arrivals=arrivals)
                    )
                except Exception as exc:  # every sender answers 503 and retries
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), new in zip(batch, fresh, strict=True):
                    if not future.done():
                        future.set_result(new)
                self.on_append()
        finally:
            self._flushing = False

    def busy(self, quiet: float = 0.05) -> bool:
        """Whether a delivery was queued in the last ``quiet`` seconds."""
        return time.monotonic() - self.last_append < quiet

    async def probe(self) -> bool:
        """A real write on the append connection (for /readyz); raises when it fails."""
        return await self._writer.call(lambda db: db.probe())

    # ---- the normaliser ------------------------------------------------------

    async def claim(self, limit: int) -> list[InboxEntry]:
        return await self._reader.call(lambda db: db.claim(limit))

    async def settle(
        self,
        done: Sequence[int] = (),
        failed: Sequence[tuple[int, str, float]] = (),
        parked: Sequence[tuple[int, str]] = (),
    ) -> None:
        await self._reader.call(lambda db: db.settle(done, failed, parked))

    async def release(self) -> None:
        await self._reader.call(lambda db: db.release())

    # ---- questions -------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        return await self._reader.call(lambda db: db.counts())

    async def lag(self) -> float:
        """Seconds the oldest delivery still to normalise has waited (0 when none)."""
        oldest = await self._reader.call(lambda db: db.oldest_open())
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    async def rows(self, f: InboxFilter | None = None) -> list[InboxRow]:
        return await self._reader.call(lambda db: db.rows(f))

    async def beat(self, beat: WorkerBeat) -> None:
        """A normaliser process's report, on the append connection (idle in a worker,
        and never inside a claim's transaction on PostgreSQL)."""
        await self._writer.call(lambda db: db.beat(beat))

    async def workers(self, within: float) -> list[WorkerBeat]:
        """The normaliser processes that reported in the last ``within`` seconds."""
        since = time.time() - within
        return await self._reader.call(lambda db: db.workers(since))

    async def purge(self, before: float) -> int:
        return await self._writer.call(lambda db: db.purge(before))
