"""The hand-over between HTTP handlers (and the backfill worker) and the pipeline.

A handler ``submit``s a delivery's records and awaits the returned future.
The source's ``records()`` drains the queue, yielding each submission's
records followed by a ``Checkpoint(stream="webhook", token=<id>)``; the runner
writes the batch to every sink and then calls ``acknowledge`` (the future
resolves ``True``, the handler answers 2xx) or, when a sink failed,
``reject`` (``False``, the handler answers 503). Concurrent submissions sit in
the queue together, so the runner takes them as one batch: group commit.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from rcingest.records import Checkpoint, Record

__all__ = [
    "PROBE_STREAM",
    "STREAM",
    "STREAMS",
    "Closed",
    "Intake",
    "RecentDeliveries",
    "Submission",
]

#: The checkpoint stream of webhook acknowledgements (state is always None).
STREAM = "webhook"
#: The readiness probe's stream: its state is saved as a cursor, a real commit.
PROBE_STREAM = "webhook.readyz"
STREAMS = frozenset({STREAM, PROBE_STREAM})


class Closed(Exception):
    """The intake no longer accepts work (the daemon is stopping)."""


class Submission:
    """Records waiting for the pipeline, and the future their sender awaits."""

    __slots__ = ("error", "future", "records", "state", "stream", "submitted", "token")

    def __init__(
        self,
        token: int,
        records: Sequence[Record],
        future: asyncio.Future[bool],
        stream: str = STREAM,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.token = token
        self.records = records
        self.future = future
        self.stream = stream
        self.state = state
        self.submitted = time.monotonic()
        #: Why a sink rejected it (set by ``reject``), for the inbox's records.
        self.error: BaseException | None = None


class Intake:
    """A FIFO of submissions with one acknowledgement future each."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._queue: asyncio.Queue[Submission | None] = asyncio.Queue()
        self._pending: dict[int, Submission] = {}
        self._tokens = itertools.count(1)
        self._closed = False
        self.consuming = False

    @property
    def depth(self) -> int:
        """Submissions handed over and not yet acknowledged or rejected."""
        return len(self._pending)

    @property
    def closed(self) -> bool:
        return self._closed

    def oldest_age(self) -> float:
        """Seconds the oldest unacknowledged submission has waited (0 when none)."""
        for sub in self._pending.values():
            return time.monotonic() - sub.submitted
        return 0.0

    def submit(
        self,
        records: Sequence[Record],
        *,
        stream: str = STREAM,
        state: dict[str, Any] | None = None,
    ) -> Submission:
        """Queue ``records``; raise :class:`Closed` when stopping or when too much is pending.

        ``state`` is given only by the readiness probe: a checkpoint with state
        makes a cursor-storing sink commit a transaction even with no records.
        """
        if self._closed:
            raise Closed("the daemon is stopping")
        if len(self._pending) >= self.max_pending:
            raise Closed(f"{len(self._pending)} deliveries already wait for the database")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        sub = Submission(next(self._tokens), records, future, stream, state)
        self._pending[sub.token] = sub
        self._queue.put_nowait(sub)
        return sub

    async def items(self) -> AsyncIterator[Record | Checkpoint]:
        """Records and checkpoints in submission order, until ``close`` and drained."""
        self.consuming = True
        drained = False
        try:
            while True:
                sub = await self._queue.get()
                if sub is None:
                    drained = True
                    return
                for record in sub.records:
                    yield record
                yield Checkpoint(stream=sub.stream, state=sub.state, token=sub.token)
        finally:
            self.consuming = False
            if drained:
                # Ended by ``close``: everything was yielded, and the runner may
                # still be writing the last of it. Failing it here answered 503
                # for deliveries the runner then stored (issue 15, defect 2);
                # its acknowledge or reject settles each one.
                self._fail_queued()
            else:
                # Cancelled or closed early: the runner stopped consuming, so
                # nothing yielded or queued will be acknowledged.
                self._fail_all()

    def _settle(self, token: int, ok: bool) -> Submission | None:
        sub = self._pending.pop(token, None)
        if sub is not None and not sub.future.done():
            sub.future.set_result(ok)
        return sub

    def acknowledge(self, token: int) -> Submission | None:
        """Every sink committed the submission ``token``: its sender may answer 2xx."""
        return self._settle(token, True)

    def reject(self, token: int, error: BaseException | None = None) -> Submission | None:
        """A sink failed on the submission ``token`` (with ``error``): its sender answers 503."""
        sub = self._pending.get(token)
        if sub is not None:
            sub.error = error
        return self._settle(token, False)

    def forget(self, sub: Submission) -> None:
        """The sender stopped waiting (timeout); a late acknowledgement is then a no-op."""
        self._pending.pop(sub.token, None)

    def close(self) -> None:
        """Stop accepting; ``items`` ends after yielding everything already submitted."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    def _fail_all(self) -> None:
        for token in list(self._pending):
            self._settle(token, False)

    def _fail_queued(self) -> None:
        while True:
            try:
                sub = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if sub is not None:
                self._settle(sub.token, False)


class RecentDeliveries:
    """The request UUIDs acknowledged lately, to spot Bitbucket's retries cheaply."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, request_uuid: object) -> bool:
        return request_uuid in self._seen

    def add(self, request_uuid: str) -> None:
        self._seen[request_uuid] = None
        self._seen.move_to_end(request_uuid)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
