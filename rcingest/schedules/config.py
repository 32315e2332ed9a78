"""The ``schedules:`` section of a pipeline: when each scheduled job runs.

::

    schedules:
      full_sync: {every: 24h, jitter: 10m}
      incremental_sync: {cron: "0 */6 * * *", timezone: Europe/Berlin}
      scan: {every: 6h, on_missed: skip}

Each entry names a job the daemon knows (``full_sync``, ``incremental_sync``,
``scan``, ...); :func:`job_problems` reports names it does not.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = [
    "Duration",
    "ScheduleConfig",
    "SchedulesConfig",
    "job_problems",
    "parse_duration",
    "schedules_problems",
    "validate_cron",
]

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# One or more <number><unit> parts, largest first by convention: 90s, 30m, 6h, 1h30m, 0.2s.
_DURATION_PART = r"[0-9]+(?:\.[0-9]+)?[smhd]"
_DURATION_PATTERN = rf"^(?:{_DURATION_PART})+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")

#: Seconds (a number) or a string such as ``6h``, ``30m``, ``1h30m``, ``0.2s``.
Duration: TypeAlias = (
    Annotated[float, msgspec.Meta(ge=0)] | Annotated[str, msgspec.Meta(pattern=_DURATION_PATTERN)]
)

#: Job names: what the daemon's job table and the ``schedule_runs`` rows are keyed by.
JobName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


def parse_duration(value: float | str) -> float:
    """Seconds of a :data:`Duration`: ``6h`` → 21600.0, ``1h30m`` → 5400.0, ``45`` → 45.0."""
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r}: expected seconds or a string such as 6h or 30m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value!r}: must not be negative")
        return float(value)
    text = value.strip()
    if not re.fullmatch(_DURATION_PATTERN, text):
        raise ValueError(
            f"duration {value!r}: expected seconds or <number><unit> parts "
            "with units s, m, h, d (6h, 30m, 1h30m, 0.2s)"
        )
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))


def validate_cron(expression: str) -> str:
    """``expression`` normalised (single spaces), or a ``ValueError`` naming it.

    Only the classic five fields (minute hour day-of-month month day-of-week):
    croniter also takes a sixth (seconds) and seventh (year) field, which would
    make the same string mean something else to every other cron reader.
    """
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expression!r}: expected 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    normal = " ".join(fields)
    if not croniter.is_valid(normal):
        raise ValueError(f"cron {expression!r}: not a valid cron expression")
    return normal


class ScheduleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """When one job runs: an interval (``every``) or a cron expression (``cron``)."""

    every: Annotated[
        Duration | None,
        msgspec.Meta(
            description="Run at this interval: seconds or 6h, 30m, 1h30m. Slots are aligned "
            "to the Unix epoch in UTC (every 6h: 00:00, 06:00, 12:00, 18:00 UTC), so every "
            "daemon agrees on them. Set every or cron, not both."
        ),
    ] = None
    cron: Annotated[
        str | None,
        msgspec.Meta(
            description="Run at the times of this 5-field cron expression "
            "(minute hour day month weekday), in `timezone`. Set every or cron, not both."
        ),
    ] = None
    timezone: Annotated[
        str | None,
        msgspec.Meta(
            description="IANA timezone of `cron` (default UTC). A time skipped by a DST "
            "change runs at the same wall time shifted forward; a repeated time runs once."
        ),
    ] = None
    jitter: Annotated[
        Duration,
        msgspec.Meta(
            description="Each run starts after a random delay up to this long (seconds or "
            "10m), so that many daemons do not hit Bitbucket at the same second."
        ),
    ] = 0
    on_missed: Annotated[
        Literal["run_once", "skip"],
        msgspec.Meta(
            description="After downtime (or a run that outlasted its slot): run_once runs "
            "one catch-up run immediately, however many slots were missed; skip waits for "
            "the next slot. A job that never ran counts as missed."
        ),
    ] = "run_once"
    enabled: Annotated[
        bool, msgspec.Meta(description="false: the job is not scheduled at all.")
    ] = True

    def __post_init__(self) -> None:
        if self.every is not None and self.cron is not None:
            raise ValueError("set every or cron, not both")
        if self.every is None and self.cron is None:
            raise ValueError("missing every (an interval such as 6h) or cron (5 fields)")
        if self.every is not None:
            if parse_duration(self.every) <= 0:
                raise ValueError(f"every {self.every!r}: must be longer than 0 seconds")
            if self.timezone is not None:
                raise ValueError("timezone applies to cron only; every is aligned to UTC")
        if self.cron is not None:
            self.cron = validate_cron(self.cron)
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"timezone {self.timezone!r}: not an IANA timezone (such as Europe/Berlin)"
                ) from None
        parse_duration(self.jitter)

    @property
    def interval(self) -> timedelta | None:
        """``every`` as a timedelta (None for a cron schedule)."""
        return None if self.every is None else timedelta(seconds=parse_duration(self.every))

    @property
    def jitter_seconds(self) -> float:
        return parse_duration(self.jitter)

    @property
    def zone(self) -> ZoneInfo:
        """The timezone of ``cron`` (UTC unless set)."""
        return ZoneInfo(self.timezone or "UTC")

    def describe(self) -> str:
        """``every 6h`` or ``cron "0 3 * * *" (Europe/Berlin)``, for logs."""
        if self.cron is None:
            return f"every {self.every}"
        return f'cron "{self.cron}" ({self.timezone or "UTC"})'


#: The ``schedules:`` section: job name → its schedule.
SchedulesConfig: TypeAlias = dict[JobName, ScheduleConfig]


def schedules_problems(
    section: object,
    known: set[str] | frozenset[str] | None = None,
    path: str = "$.schedules",
) -> list[str]:
    """Every problem of a ``schedules:`` mapping, each under ``$.schedules.<job>``.

    Entry by entry, because msgspec names a bad value of a mapping ``$[...]``,
    not by its key. With ``known``, names of jobs the daemon lacks are problems too.
    """
    from rcingest.validation import errors_for

    if section is None:
        return []
    if not isinstance(section, dict):
        return [f"{path}: expected a mapping of job name to schedule"]
    found: list[str] = []
    for name, entry in section.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name):
            found.append(f"{path}.{name}: job names are lower case letters, digits and _")
            continue
        found += errors_for(entry, ScheduleConfig, f"{path}.{name}")
    if known is not None:
        found += job_problems({n: e for n, e in section.items() if isinstance(n, str)}, known, path)
    return found


def job_problems(
    schedules: dict[str, object], known: set[str] | frozenset[str], path: str = "$.schedules"
) -> list[str]:
    """``$.schedules.<name>: ...`` for every scheduled name that is not one of ``known`` jobs."""
    listed = ", ".join(sorted(known)) or "none"
    named = [n for n in schedules if re.fullmatch(r"[a-z][a-z0-9_]{0,62}", n)]
    return [f"{path}.{name}: unknown job (known: {listed})" for name in named if name not in known]
