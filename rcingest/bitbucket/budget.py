"""A client-side request budget over a rolling window (Bitbucket counts per rolling hour).

A run that stays within the budget is never delayed; a request that would
exceed it waits until the oldest request in the window falls out, and the
first wait of each episode is logged. Pure asyncio, no I/O.

Waits are also told to observers (``observe_waits``): the terminal progress
display shows "waiting N s for Bitbucket's rate limit" instead of silence.
With no observer (the default) telling them costs one empty-tuple check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rcingest.interfaces import Stats

__all__ = ["PACING", "RATE_LIMITED", "RETRY", "HourlyBudget", "notify_wait", "observe_waits"]

#: Why a client waits, as told to observers: its own hourly budget ...
PACING = "pacing"
#: ... a 429 from Bitbucket (its ``Retry-After``, or backoff without one) ...
RATE_LIMITED = "429"
#: ... or the backoff before retrying a 5xx, a timeout or a reset.
RETRY = "retry"

WaitObserver = Callable[[float, str], None]
# A tuple replaced whole, never mutated: notify_wait reads it without a lock.
_observers: tuple[WaitObserver, ...] = ()
_log = logging.getLogger("rcingest.bitbucket")


@contextmanager
def observe_waits(observer: WaitObserver) -> Iterator[None]:
    """Call ``observer(seconds, reason)`` whenever a client is about to wait, while inside.

    ``reason`` is ``PACING``, ``RATE_LIMITED`` or ``RETRY``. The observer is
    called on the event loop, just before the sleep: it must be quick and
    must not block (it records the wait; a display draws it later).
    """
    global _observers
    _observers = (*_observers, observer)
    try:
        yield
    finally:
        _observers = tuple(o for o in _observers if o is not observer)


def notify_wait(seconds: float, reason: str) -> None:
    """Tell the observers that a wait of ``seconds`` starts now (a no-op without any)."""
    for observer in _observers:
        try:
            observer(seconds, reason)
        except Exception:
            # A broken display must not break a scan: the wait happens anyway.
            _log.debug("wait observer %r failed", observer, exc_info=True)


class HourlyBudget:
    """At most ``limit`` acquisitions in any ``window`` seconds; ``limit=0`` means unlimited."""

    def __init__(
        self,
        limit: int,
        *,
        window: float = 3600.0,
        stats: Stats | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.stats = stats
        self.logger = logger or logging.getLogger("rcingest.bitbucket")
        self.clock = clock
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()
        self._pacing = False

    async def acquire(self) -> float:
        """Take one request from the budget; returns the seconds waited (0.0 within budget)."""
        if self.limit <= 0:
            return 0.0
        async with self._lock:
            now = self.clock()
            self._expire(now)
            waited = 0.0
            if len(self._times) >= self.limit:
                waited = self._times[0] + self.window - now
                if self.stats is not None:
                    self.stats.incr("http.paced")
                if not self._pacing:
                    self._pacing = True
                    self.logger.warning(
                        "request budget of %d per %gs reached: pacing requests "
                        "(next in %.1fs) instead of tripping Bitbucket's rate limit",
                        self.limit,
                        self.window,
                        waited,
                    )
                notify_wait(max(0.0, waited), PACING)
                # Waiters queue on the lock, so paced requests leave in order.
                await asyncio.sleep(max(0.0, waited))
                now = self.clock()
                self._expire(now)
            else:
                self._pacing = False
            self._times.append(now)
            return waited

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    @property
    def used(self) -> int:
        """Requests counted in the current window."""
        self._expire(self.clock())
        return len(self._times)
