"""Scheduled jobs (issue 14): ``schedules:`` config, next-run math, per-job locks, a scheduler.

- :mod:`.config`: ``ScheduleConfig`` / ``SchedulesConfig`` (the pipeline's ``schedules:``).
- :mod:`.timing`: when a job runs next (pure; downtime, DST, jitter).
- :mod:`.store`: run records and slot claims (memory, SQLite one-process, PostgreSQL locks).
- :mod:`.scheduler`: ``Scheduler``, running async jobs until stopped.
- :mod:`.metrics`: the ``rcingest_schedule_*`` Prometheus series.
"""

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
