"""Draining the outbox: send what is due, record what Chariot accepted, keep the rest.

A change leaves the outbox only after Chariot answered 2xx, so nothing queued
is lost to an outage, a crash or a cancelled flush. Per change:

- 2xx: recorded in ``sent`` (with its time, for the TTL sweep), removed;
- 429/5xx/no answer after the client's retries: Chariot is taken to be down.
  The change gets ``attempts + 1`` and a ``next_try`` (``retry_interval``
  doubling per attempt, at most an hour), nothing else is started in this
  flush, and flushes until then send nothing: a run with Chariot down pays
  for one round of retries, not one per batch;
- 400/403/404 (``ChariotRejected``): parked with Chariot's message, logged once
  per route and status; retried only when its record changes or on
  ``retry_parked``;
- a refused API key (``ChariotAuthError``) fails the flush: no change can pass.

Assets go first and an attribute or risk waits while its asset is still
queued; deletes of replaced attribute values go last, after their new value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from rcingest.interfaces import Stats
from rcingest_chariot.errors import ChariotAuthError, ChariotRejected, ChariotUnavailable
from rcingest_chariot.state import Change, Pending, StateDB

if TYPE_CHECKING:  # the client imports aiohttp: only when the sink opens
    from rcingest_chariot.client import ChariotClient

__all__ = ["Sender"]

#: A change that keeps failing is tried at least this often.
MAX_RETRY_INTERVAL = 3600.0
#: Accepted changes recorded per state-file transaction.
RECORD_EVERY = 200


class Sender:
    """Sends the outbox of one state file with one client."""

    def __init__(
        self,
        state: StateDB,
        client: ChariotClient,
        *,
        clock: Callable[[], float],
        stats: Stats,
        logger: logging.Logger,
        ttl_margin: float,
        retry_interval: float,
    ) -> None:
        self.state = state
        self.client = client
        self.clock = clock
        self.stats = stats
        self.logger = logger
        self.ttl_margin = ttl_margin
        self.retry_interval = retry_interval
        #: No flush sends anything before this time: Chariot was down at the last try.
        self.paused_until = 0.0
        self._down: ChariotUnavailable | None = None
        self._auth: ChariotAuthError | None = None
        self._refusals_logged: set[str] = set()
        #: Accepted changes not yet recorded: committed in groups (one fsync per group).
        self._accepted: list[tuple[Change, float]] = []

    def sweep(self, now: float) -> int:
        """Queue again what was sent longer ago than the TTL margin and is kept alive."""
        stale = self.state.stale(now - self.ttl_margin)
        if stale:
            with self.state.transaction():
                for change in stale:
                    self.state.enqueue(change, now)
            self.stats.incr("chariot.retouched", len(stale))
            self.logger.info("chariot: %d items re-touched within Chariot's TTL", len(stale))
        return len(stale)

    async def flush(self) -> None:
        now = self.clock()
        self.sweep(now)
        if now < self.paused_until:
            return
        self._down = self._auth = None
        due = self.state.due(now)
        await self._send_all([p for p in due if p.change.kind == "asset"])
        if self._down is None and self._auth is None:
            waiting = self.state.waiting_parents()
            ready = [p for p in due if p.change.kind != "asset" and p.change.parent not in waiting]
            await self._send_all([p for p in ready if p.change.kind != "delete"])
            await self._send_all([p for p in ready if p.change.kind == "delete"])
        if self._auth is not None:
            raise self._auth
        if self._down is not None:
            pending = self.state.counts()["pending"]
            self.logger.warning(
                "chariot: unavailable (%s); %d changes kept in the outbox, next try in %.0fs",
                self._down.message,
                pending,
                max(0.0, self.paused_until - self.clock()),
            )

    async def _send_all(self, items: list[Pending]) -> None:
        # The client's semaphore bounds what is in flight; a task per change keeps it full.
        if items and self._down is None and self._auth is None:
            try:
                await asyncio.gather(*(self._send(p) for p in items))
            finally:
                self._record_accepted()

    def _record_accepted(self) -> None:
        # A crash before this commit re-sends these changes next time: PUTs are
        # upserts and the deletes are of keys, so a repeat changes nothing.
        if self._accepted:
            done, self._accepted = self._accepted, []
            self.state.mark_sent_many(done)

    async def _send(self, item: Pending) -> None:
        if self._down is not None or self._auth is not None:
            return  # Chariot is down or the key refused: leave it queued, untouched
        change = item.change
        try:
            await self.client.request(change.method, change.path, body=change.body)
        except ChariotUnavailable as exc:
            wait = min(MAX_RETRY_INTERVAL, self.retry_interval * 2**item.attempts)
            next_try = self.clock() + wait
            self.state.mark_failed(change, next_try, exc.message)
            self.stats.incr("chariot.failed")
            if self._down is None:
                self._down = exc
                self.paused_until = next_try
        except ChariotAuthError as exc:
            self.state.mark_failed(change, 0.0, exc.message)
            self.stats.incr("chariot.failed")
            self._auth = self._auth or exc
        except ChariotRejected as exc:
            self.state.mark_parked(change, exc.message)
            self.stats.incr("chariot.failed")
            self.stats.incr("chariot.parked")
            kind = f"{change.method} {change.path} {exc.status}"
            if kind not in self._refusals_logged:
                self._refusals_logged.add(kind)
                self.logger.error(
                    "chariot: %s; parked in the outbox (not retried until it changes, "
                    "or with retry_parked: true); further %s refusals are counted, not logged",
                    exc.message,
                    kind,
                )
        else:
            self._accepted.append((change, self.clock()))
            self.stats.incr("chariot.sent")
            if len(self._accepted) >= RECORD_EVERY:
                self._record_accepted()
