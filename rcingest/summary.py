"""The one-screen run summary and the terminal progress line."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rcingest.config import Pipeline
from rcingest.interfaces import RunContext
from rcingest.pipeline import RunResult


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
        lines.append(f"reason:  {result.error}")
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


def progress_printer() -> Callable[[RunResult], None]:
    """A progress callback that rewrites one stderr line (terminals only)."""

    def show(result: RunResult) -> None:
        total = sum(result.records.values())
        sys.stderr.write(f"\r{total} records ({_counts(result.records)})\033[K")
        sys.stderr.flush()

    return show
