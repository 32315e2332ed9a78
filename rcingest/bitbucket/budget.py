"""A client-side request budget over a rolling window (Bitbucket counts per rolling hour).

A run that stays within the budget is never delayed; a request that would
exceed it waits until the oldest request in the window falls out, and the
first wait of each episode is logged. Pure asyncio, no I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from rcingest.interfaces import Stats

__all__ = ["HourlyBudget"]


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
