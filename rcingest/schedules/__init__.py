"""Scheduled jobs (issue 14): ``schedules:`` config, next-run math, per-job locks, a scheduler.

- :mod:`.config`: ``ScheduleConfig`` / ``SchedulesConfig`` (the pipeline's ``schedules:``).
- :mod:`.timing`: when a job runs next (pure; downtime, DST, jitter).
- :mod:`.store`: run records and slot claims (memory, SQLite one-process, PostgreSQL locks).
- :mod:`.scheduler`: ``Scheduler``, running async jobs until stopped.
- :mod:`.metrics`: the ``rcingest_schedule_*`` Prometheus series.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rcingest.schedules.config import (
        ScheduleConfig,
        SchedulesConfig,
        job_problems,
        parse_duration,
        schedules_problems,
    )
    from rcingest.schedules.metrics import ScheduleMetrics
    from rcingest.schedules.scheduler import Job, Scheduler
    from rcingest.schedules.store import (
        MemoryStore,
        RunState,
        SchedulesLocked,
        ScheduleStore,
        open_store,
    )
    from rcingest.schedules.timing import Plan, plan_next

#: Where each public name lives. Imported on first use: a pipeline's config
#: imports ``rcingest.schedules.config`` alone, and ``rcingest validate`` must
#: not pay for prometheus-client and the stores (tests/test_startup.py).
_WHERE = {
    "ScheduleConfig": "config",
    "SchedulesConfig": "config",
    "job_problems": "config",
    "parse_duration": "config",
    "schedules_problems": "config",
    "ScheduleMetrics": "metrics",
    "Job": "scheduler",
    "Scheduler": "scheduler",
    "MemoryStore": "store",
    "RunState": "store",
    "SchedulesLocked": "store",
    "ScheduleStore": "store",
    "open_store": "store",
    "Plan": "timing",
    "plan_next": "timing",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'rcingest.schedules' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rcingest.schedules.{where}"), name)


__all__ = [
    "Job",
    "MemoryStore",
    "Plan",
    "RunState",
    "ScheduleConfig",
    "ScheduleMetrics",
    "ScheduleStore",
    "Scheduler",
    "SchedulesConfig",
    "SchedulesLocked",
    "job_problems",
    "open_store",
    "parse_duration",
    "plan_next",
    "schedules_problems",
]
