"""Prometheus series of the scheduled jobs, in a registry the caller passes in.

The daemon passes its own registry (so ``/metrics`` shows these beside the
webhook series); tests pass a fresh one each, so two schedulers never collide.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

from rcingest.schedules.store import RunState

__all__ = ["OUTCOMES", "Outcome", "ScheduleMetrics"]

Outcome = Literal["success", "failure", "skipped_locked"]
#: ``skipped_locked``: another daemon held the job's lock, or had already run the slot.
OUTCOMES: tuple[Outcome, ...] = ("success", "failure", "skipped_locked")


class ScheduleMetrics:
    """``rcingest_schedule_*`` series, labelled by job."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.last_success = Gauge(
            "rcingest_schedule_last_success_timestamp_seconds",
            "Unix time the job's last successful run finished (from the shared run "
            "records, so after a restart too)",
            ["job"],
            registry=registry,
        )
        self.last_duration = Gauge(
            "rcingest_schedule_last_duration_seconds",
            "How long the job's last run took, successful or not",
            ["job"],
            registry=registry,
        )
        self.runs = Counter(
            "rcingest_schedule_runs",
            "Scheduled runs by job and outcome (success, failure, skipped_locked: "
            "another daemon held or had run the slot)",
            ["job", "outcome"],
            registry=registry,
        )

    def declare(self, jobs: Iterable[str]) -> None:
        """Create every job's counters at 0, so a rate() works before the first run."""
        for job in jobs:
            for outcome in OUTCOMES:
                self.runs.labels(job, outcome)

    def restore(self, job: str, state: RunState | None) -> None:
        """Show what the run records know of ``job`` (its last success and duration)."""
        if state is None:
            return
        if state.last_success_at is not None:
            self.last_success.labels(job).set(state.last_success_at.timestamp())
        if state.last_duration_s is not None:
            self.last_duration.labels(job).set(state.last_duration_s)

    def outcome(self, job: str, outcome: Outcome) -> None:
        self.runs.labels(job, outcome).inc()

    def finished(self, job: str, state: RunState) -> None:
        """After a run of ``job`` here: its outcome counted, its gauges set."""
        self.outcome(job, "failure" if state.last_error is not None else "success")
        self.restore(job, state)
