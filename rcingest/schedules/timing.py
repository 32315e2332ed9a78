"""When a scheduled job runs next: pure functions of a schedule, the last run and now.

No I/O and no clock of its own, so every case (downtime, DST, jitter) is a unit
test with fixed times. All datetimes are timezone-aware; results are in UTC.

A *slot* is a moment a schedule names: a multiple of ``every`` since the Unix
epoch, or a time matching ``cron``. Slots are what daemons agree on: the run
for a slot is recorded with its start time, and a slot is done once a run
started at or after it (see :mod:`rcingest.schedules.store`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rcingest.schedules.config import ScheduleConfig

__all__ = ["MISSED_CAP", "Plan", "draw_jitter", "plan_next", "slot_after", "slot_at_or_before"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Missed slots are counted up to this many (a minutely cron down for a month
#: would otherwise be counted one by one, only to be logged).
MISSED_CAP = 1000
# A cron step can land before ``after`` only inside a repeated (DST fall-back)
# hour; a minutely expression needs at most 60 steps to leave it.
_MAX_STEPS = 10_000


@dataclass(frozen=True)
class Plan:
    """The next run of one job."""

    #: The slot the run belongs to: what two daemons deduplicate by.
    slot: datetime
    #: When to start it: the slot plus its jitter, or now for a catch-up run.
    due: datetime
    #: Slots that passed without a run (downtime, or a run that outlasted its
    #: slot); at most ``MISSED_CAP``. 0: on time.
    missed: int = 0
    #: This is the one catch-up run of ``on_missed: run_once``.
    catch_up: bool = False


def draw_jitter(schedule: ScheduleConfig, rng: random.Random) -> float:
    """A random delay in ``[0, jitter]`` seconds (``rng`` seeded: the same every time)."""
    top = schedule.jitter_seconds
    return rng.uniform(0.0, top) if top > 0 else 0.0


def plan_next(
    schedule: ScheduleConfig,
    last_started: datetime | None,
    now: datetime,
    jitter: float = 0.0,
) -> Plan:
    """The next run of ``schedule``, given when its last run started (None: never) and now.

    ``jitter`` (seconds, from :func:`draw_jitter`) delays a regular run, never a
    catch-up run: after downtime ``on_missed: run_once`` runs at once, once for
    all the slots missed; ``skip`` waits for the next slot. A job that never ran
    counts as one missed slot.
    """
    _aware(now, "now")
    delay = timedelta(seconds=jitter)
    if last_started is None:
        if schedule.on_missed == "run_once":
            latest = slot_at_or_before(schedule, now)
            return Plan(slot=latest, due=_utc(now), missed=1, catch_up=True)
        following = slot_after(schedule, now)
        return Plan(slot=following, due=following + delay, missed=1)
    _aware(last_started, "last_started")
    upcoming = slot_after(schedule, last_started)
    if upcoming > now:
        return Plan(slot=upcoming, due=upcoming + delay)
    missed = _count_slots(schedule, upcoming, now)
    if schedule.on_missed == "run_once":
        latest = slot_at_or_before(schedule, now)
        return Plan(slot=latest, due=_utc(now), missed=missed, catch_up=True)
    following = slot_after(schedule, now)
    return Plan(slot=following, due=following + delay, missed=missed)


def slot_after(schedule: ScheduleConfig, moment: datetime) -> datetime:
    """The first slot strictly after ``moment``."""
    _aware(moment, "moment")
    interval = schedule.interval
    if interval is not None:
        step = _micros(interval)
        index = _micros(moment - _EPOCH) // step + 1
        return _EPOCH + _MICROSECOND * (index * step)
    assert schedule.cron is not None
    return _cron_after(schedule.cron, schedule.zone, moment)


def slot_at_or_before(schedule: ScheduleConfig, moment: datetime) -> datetime:
    """The latest slot at or before ``moment``."""
    _aware(moment, "moment")
    interval = schedule.interval
    if interval is not None:
        step = _micros(interval)
        index = _micros(moment - _EPOCH) // step
        return _EPOCH + _MICROSECOND * (index * step)
    assert schedule.cron is not None
    return _cron_at_or_before(schedule.cron, schedule.zone, moment)


def _count_slots(schedule: ScheduleConfig, first: datetime, now: datetime) -> int:
    """How many slots lie in ``[first, now]`` (``first`` a slot ≤ now), up to ``MISSED_CAP``."""
    interval = schedule.interval
    if interval is not None:
        count = (_micros(now - first) // _micros(interval)) + 1
        return int(min(count, MISSED_CAP))
    count, slot = 1, first
    while count < MISSED_CAP:
        slot = slot_after(schedule, slot)
        if slot > now:
            break
        count += 1
    return count


def _cron_after(expression: str, zone: ZoneInfo, moment: datetime) -> datetime:
    """The first time after ``moment`` that ``expression`` names in ``zone``.

    croniter steps through naive wall times, and each is placed in ``zone``
    with ``fold=0``: a wall time skipped by a DST change (02:30 on the night
    clocks go forward) lands at the same distance past the change (03:30), a
    repeated wall time (the hour clocks go back) means its first occurrence
    only. Doing this here rather than through croniter's own timezone support
    keeps the answer the same across croniter versions, which changed it.
    """
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    start = moment.astimezone(zone).replace(tzinfo=None, fold=0)
    steps = croniter(expression, start)
    for _ in range(_MAX_STEPS):
        wall: datetime = steps.get_next(datetime)
        candidate = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if candidate > moment:
            return candidate
    raise ValueError(f"cron {expression!r}: no time after {moment.isoformat()}")


def _cron_at_or_before(expression: str, zone: ZoneInfo, moment: datetime) -> datetime:
    """The latest time at or before ``moment`` that ``expression`` names in ``zone``."""
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    # From one minute on (cron's resolution), so that ``moment`` itself, if it
    # is a slot, is among the candidates whichever way croniter treats its start.
    start = moment.astimezone(zone).replace(tzinfo=None, fold=0, second=0, microsecond=0)
    steps = croniter(expression, start + timedelta(minutes=1))
    for _ in range(_MAX_STEPS):
        wall: datetime = steps.get_prev(datetime)
        candidate = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if candidate <= moment:
            return candidate
    raise ValueError(f"cron {expression!r}: no time before {moment.isoformat()}")


def _micros(delta: timedelta) -> int:
    """``delta`` in whole microseconds: exact slot arithmetic (0.2 s steps drift in floats)."""
    return delta // _MICROSECOND


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")
