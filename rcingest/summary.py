"""The one-screen run summary and the cadence lines (terminal progress: ``rcingest.progress``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from rcingest.config import Pipeline
from rcingest.interfaces import RunContext, Window
from rcingest.pipeline import RunResult
from rcingest.runtime import redact


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


def format_summary(
    result: RunResult, pipeline: Pipeline, context: RunContext, exit_code: int
) -> str:
    """A few lines: outcome (and why it failed), window, records per type, per sink, counters.

    A sink's line counts the records *handed* to it; what it wrote (rows,
    files) is its own report (the database's ``runs.counts``, the artifact).
    """
    mode = " (dry run: nothing written)" if result.dry_run else ""
    lines = [
        f"run {result.run_id} of {pipeline.config.name!r}: {result.status} in "
        f"{result.duration:.2f}s, exit {exit_code}{mode}",
    ]
    if result.error:
        # The reason may quote a path or URL built from a secret.
        lines.append(f"reason:  {redact(result.error, pipeline.secrets)}")
    if result.window is not None:
        start = context.local(result.window.start).isoformat()
        end = context.local(result.window.end).isoformat()
        lines.append(f"window:  [{start}, {end}) {pipeline.config.timezone}")
    lines.append(f"records: {_counts(result.records)}")
    for label in (c.label for c in pipeline.sinks):
        if not result.dry_run:
            handed = _counts(dict(result.sinks.get(label, {})))
            lines.append(f"sink {label}: records handed: {handed}")
    lines.append(f"checkpoints: {result.checkpoints}")
    if result.stats:
        lines.append(f"stats:   {_counts(result.stats)}")
    return "\n".join(lines)


def cadence_line(
    result: RunResult,
    context: RunContext,
    *,
    window: Window | None = None,
    records: Mapping[str, int] | None = None,
    duration: float | None = None,
) -> str:
    """The one log line that states a run's cadence: id, window, records per type, duration.

    ``run 20261202T171503Z-7f3a1c: window [2026-12-02T06:15:00-07:00,
    2026-12-02T10:15:00-07:00) commit 120, pull_request 4 in 3.21s``

    A run without a scan window (a daemon) reports the time it covered. The
    daemon's interval summaries pass their own ``window``, ``records`` and
    ``duration`` (that interval's), so the log shows what each interval took in.
    """
    duration = result.duration if duration is None else duration
    if window is None:
        window = result.window or Window(
            context.started_at, context.started_at + timedelta(seconds=duration)
        )
    start = context.local(window.start).isoformat(timespec="seconds")
    end = context.local(window.end).isoformat(timespec="seconds")
    counts = ", ".join(
        f"{name} {n}"
        for name, n in sorted((result.records if records is None else records).items())
    )
    line = (
        f"run {result.run_id}: window [{start}, {end}) {counts or 'no records'} in {duration:.2f}s"
    )
    if result.dry_run:
        line += " (dry run)"
    if result.status not in ("succeeded", "running"):
        line += f"; {result.status}" + (f": {result.error}" if result.error else "")
    return line


class IntervalSummary:
    """The daemon's lines for each summary interval: its cadence, then the running totals."""

    def __init__(self, context: RunContext, result: RunResult) -> None:
        self.context = context
        self.since = datetime.now(UTC)
        self.seen = dict(result.records)

    def lines(self, result: RunResult, now: datetime | None = None) -> list[str]:
        now = now or datetime.now(UTC)
        taken = {k: n - self.seen.get(k, 0) for k, n in result.records.items()}
        cadence = cadence_line(
            result,
            self.context,
            window=Window(self.since, now),
            records={k: n for k, n in taken.items() if n},
            duration=(now - self.since).total_seconds(),
        )
        self.since, self.seen = now, dict(result.records)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.records.items())) or "no records"
        stats = ", ".join(f"{k} {v}" for k, v in self.context.stats.snapshot().items())
        totals = f"summary: {counts}; checkpoints {result.checkpoints}; {stats or 'no stats'}"
        return [cadence, totals]
