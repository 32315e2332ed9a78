"""Run registered async jobs by name on their schedules, until stopped.

One task per scheduled job: plan the next run (:func:`plan_next` from the
store's record of the last start), sleep until it is due, claim the slot in
the store (refused: another daemon has it), run, record. One run of a job at
a time; a failing job is logged (redacted) and counted, and its loop goes on.

::

    scheduler = Scheduler(config.schedules, {"full_sync": full_sync}, store, metrics=m)
    async with scheduler:          # open the store (SQLite: may raise SchedulesLocked)
        await stopping.wait()      # stop() on leaving: waits cancelled, runs awaited
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType

from rcingest.errors import ConfigError
from rcingest.schedules.config import ScheduleConfig, job_problems
from rcingest.schedules.metrics import ScheduleMetrics
from rcingest.schedules.store import Claim, Refused, ScheduleStore
from rcingest.schedules.timing import MISSED_CAP, Plan, draw_jitter, plan_next

__all__ = ["Job", "Scheduler"]

#: A scheduled job: ``async def job() -> None``.
Job = Callable[[], Awaitable[None]]

# A long wait is cut into pieces, each ending with a fresh look at the wall
# clock: a host suspended or a clock stepped by NTP does not shift the run.
_MAX_NAP = 60.0
# How long a job loop waits after the store failed before it tries again.
_STORE_RETRY = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _identity(text: str) -> str:
    return text


class Scheduler:
    """Runs ``jobs`` (name → async callable) per ``schedules`` (name → schedule).

    Every enabled schedule must name a job in ``jobs`` (else ``ConfigError``);
    a job without a schedule is not run. ``redact`` is applied to every error
    message logged or recorded; ``rng`` (seeded in tests) draws the jitter;
    ``clock`` is the wall clock (UTC); ``store_retry`` is how long a job waits
    after its store failed (a database down) before trying again.
    """

    def __init__(
        self,
        schedules: Mapping[str, ScheduleConfig],
        jobs: Mapping[str, Job],
        store: ScheduleStore,
        *,
        metrics: ScheduleMetrics | None = None,
        redact: Callable[[str], str] = _identity,
        logger: logging.Logger | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = _utcnow,
        store_retry: float = _STORE_RETRY,
    ) -> None:
        active = {name: cfg for name, cfg in schedules.items() if cfg.enabled}
        problems = job_problems(dict(active), frozenset(jobs))
        if problems:
            raise ConfigError(problems[0] if len(problems) == 1 else "; ".join(problems), problems)
        self.schedules = active
        self.jobs = dict(jobs)
        self.store = store
        self.metrics = metrics
        self.redact = redact
        self.log = logger or logging.getLogger("rcingest.schedules")
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.clock = clock
        self.store_retry = store_retry
        self._stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: set[str] = set()
        self._opened = False

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and start one loop per job. Raises what the store's ``open`` raises."""
        if self._tasks:
            return
        await self.store.open()
        self._opened = True
        self._stopping.clear()
        if self.metrics is not None:
            self.metrics.declare(self.schedules)
        for name, cfg in self.schedules.items():
            self.log.info("schedules: %s runs %s (%s)", name, cfg.describe(), self.store.where)
            self._tasks[name] = asyncio.create_task(self._loop(name, cfg), name=f"schedule:{name}")

    async def stop(self, grace: float = 30.0) -> None:
        """Stop: waits end now; a running job gets up to ``grace`` seconds, then is cancelled."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                self.log.warning(
                    "schedules: %s still running after %.0f s; cancelled",
                    task.get_name().removeprefix("schedule:"),
                    grace,
                )
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._opened:
            self._opened = False
            await self.store.close()

    @property
    def running(self) -> frozenset[str]:
        """The jobs running right now."""
        return frozenset(self._running)

    async def __aenter__(self) -> Scheduler:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- one job ----------------------------------------------------------------------

    async def _loop(self, name: str, cfg: ScheduleConfig) -> None:
        # After a refused claim: that slot is someone else's, plan past it even
        # before the other daemon's record of it is visible.
        floor: datetime | None = None
        restored = False
        while not self._stopping.is_set():
            try:
                state = await self.store.state(name)
                if not restored and self.metrics is not None:
                    self.metrics.restore(name, state)
                    restored = True
                last = state.last_started_at if state else None
                if floor is not None and (last is None or last < floor):
                    last = floor
                plan = plan_next(cfg, last, self.clock(), draw_jitter(cfg, self.rng))
                self._log_plan(name, cfg, plan, last)
                if not await self._sleep_until(plan.due):
                    return
                claim = await self.store.claim(name, plan.slot, self.clock())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.error(
                    "schedules: %s: the run records at %s failed: %s; retrying in %.0f s",
                    name,
                    self.store.where,
                    self._message(exc),
                    self.store_retry,
                )
                if not await self._sleep(self.store_retry):
                    return
                continue
            if isinstance(claim, Refused):
                floor = plan.slot
                self._refused(name, claim)
                continue
            floor = None
            await self._run(name, claim)

    async def _run(self, name: str, claim: Claim) -> None:
        self._running.add(name)
        started = time.monotonic()
        error: str | None = None
        self.log.info("schedules: %s started (slot %s)", name, claim.slot.isoformat())
        try:
            await self.jobs[name]()
        except Exception as exc:
            error = self._message(exc)
            self.log.error("schedules: %s failed: %s", name, error)
        except BaseException as exc:
            # Recorded as a failure, never as a success; then passed on.
            cancelled = isinstance(exc, asyncio.CancelledError)
            error = "cancelled (the scheduler stopped)" if cancelled else type(exc).__name__
            raise
        finally:
            self._running.discard(name)
            duration = time.monotonic() - started
            try:
                state = await self.store.finish(
                    claim, finished_at=self.clock(), duration=duration, error=error
                )
            except Exception as exc:
                self.log.error(
                    "schedules: %s: recording its run at %s failed: %s",
                    name,
                    self.store.where,
                    self._message(exc),
                )
            else:
                if self.metrics is not None:
                    self.metrics.finished(name, state)
        if error is None:
            self.log.info("schedules: %s succeeded in %.1f s", name, duration)

    def _refused(self, name: str, refused: Refused) -> None:
        if self.metrics is not None:
            self.metrics.outcome(name, "skipped_locked")
        if refused.reason == "locked":
            why = "another daemon holds its lock"
        else:
            started = refused.started_at.isoformat() if refused.started_at else "?"
            why = f"already run for this slot (started {started})"
        self.log.info("schedules: %s skipped at slot %s: %s", name, refused.slot.isoformat(), why)

    def _log_plan(self, name: str, cfg: ScheduleConfig, plan: Plan, last: datetime | None) -> None:
        if plan.missed:
            count = f"{plan.missed}+" if plan.missed >= MISSED_CAP else str(plan.missed)
            since = f"since {last.isoformat()}" if last else "(never ran)"
            then = "one catch-up run now" if plan.catch_up else f"next at {plan.due.isoformat()}"
            self.log.info("schedules: %s missed %s slot(s) %s; %s", name, count, since, then)
        else:
            self.log.debug("schedules: %s next at %s", name, plan.due.isoformat())

    def _message(self, exc: BaseException) -> str:
        return self.redact(str(exc) or type(exc).__name__)

    # -- waiting ----------------------------------------------------------------------

    async def _sleep_until(self, due: datetime) -> bool:
        """Wait until the wall clock reaches ``due``; False when stopped first."""
        while not self._stopping.is_set():
            left = (due - self.clock()) / timedelta(seconds=1)
            if left <= 0:
                return True
            if not await self._sleep(min(left, _MAX_NAP)):
                return False
        return False

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when stopped meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False
