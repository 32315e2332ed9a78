"""Terminal progress of ``rcingest run``: what a long scan has done, and what it waits for.

On a terminal (``progress_wanted``), ``live_progress`` draws a bar (24
columns, shortened here) and a line or two on stderr with rich, refreshed
four times a second::

    ━━━━━╸━━ repositories 1/3 · branches 2 · commits 120 · records 126 · requests 45 · 0:00:41
             waiting 1 s for Bitbucket's rate limit (429 Too Many Requests)

Where the numbers come from (nothing here asks a source to change):

* repositories and branches done: the ``repository`` records and the
  checkpoints written (the REST scan emits one of each per repository and
  per branch, after it is complete); their totals: ``source_info
  ["repositories"]`` (set by the source once it listed them) or the stats
  ``plan.repositories`` / ``plan.branches`` a source may add to;
* commits and records written: the runner's counts after each batch;
* requests: the ``http.requests`` stat, read live (``Stats`` is thread-safe);
* waits: ``rcingest.bitbucket.budget.observe_waits`` (pacing, 429, retries).

While it is live, the stderr log handler writes through rich's console, so a
log line lands above the display instead of on it; only the handler's stream
is swapped, its level, formatter and ``RedactingFilter`` stay as they are.
The display is transient: it is erased when the run ends, before the summary.

Not enabled (piped, ``--quiet``, ``CI``, ``TERM=dumb``), ``live_progress``
yields ``None`` and imports nothing: rich is only imported for a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import IO, TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from rcingest.interfaces import RunContext
    from rcingest.pipeline import RunResult

__all__ = [
    "PLANNED_BRANCHES",
    "PLANNED_REPOSITORIES",
    "LiveProgress",
    "Snapshot",
    "describe",
    "live_progress",
    "progress_wanted",
    "snapshot_of",
]

#: Stats a source may add to when it knows its plan (``context.stats.incr(PLANNED_BRANCHES, n)``).
PLANNED_REPOSITORIES = "plan.repositories"
PLANNED_BRANCHES = "plan.branches"
#: Redraws per second: the requests count and a wait's countdown move between batches.
REFRESH_PER_SECOND = 4

_WAIT_TEXT = {
    "pacing": "waiting {s} s for Bitbucket's rate limit (pacing: the requests_per_hour budget)",
    "429": "waiting {s} s for Bitbucket's rate limit (429 Too Many Requests)",
    "retry": "waiting {s} s before retrying a failed request",
}


def progress_wanted(
    quiet: bool, stream: IO[str] | Any = sys.stderr, environ: Mapping[str, str] = os.environ
) -> bool:
    """Whether to draw progress: ``stream`` is a terminal, not ``--quiet``, no ``CI``, no dumb TERM.

    ``CI`` counts as set when it is non-empty (CI services set ``CI=true``);
    a dumb terminal cannot move the cursor back over the display.
    """
    if quiet or environ.get("CI") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """What the display shows at one moment (``None``: the total is not known)."""

    repositories_done: int = 0
    repositories_total: int | None = None
    #: ``None``: the source does not scan branches (its checkpoints are something else).
    branches_done: int | None = None
    branches_total: int | None = None
    commits: int = 0
    records: int = 0
    requests: int = 0
    elapsed: float = 0.0
    #: Seconds left of the wait in progress (0: none) and its reason.
    waiting: float = 0.0
    wait_reason: str | None = None


def snapshot_of(
    records: Mapping[str, int],
    checkpoints: int,
    stats: Mapping[str, int],
    source_info: Mapping[str, Any],
    *,
    elapsed: float = 0.0,
    waiting: float = 0.0,
    wait_reason: str | None = None,
) -> Snapshot:
    """The display's numbers from the runner's counts, the stats and the source's info."""
    listed = source_info.get("repositories")
    repositories_total = stats.get(PLANNED_REPOSITORIES) or (
        len(listed) if isinstance(listed, list) else None
    )
    # Checkpoints are branches only for a source that scans branches.
    has_branches = "branches" in source_info or bool(stats.get(PLANNED_BRANCHES))
    return Snapshot(
        repositories_done=records.get("repository", 0),
        repositories_total=repositories_total,
        branches_done=checkpoints if has_branches else None,
        branches_total=stats.get(PLANNED_BRANCHES) or None,
        commits=records.get("commit", 0),
        records=sum(records.values()),
        requests=stats.get("http.requests", 0),
        elapsed=elapsed,
        waiting=max(0.0, waiting),
        wait_reason=wait_reason if waiting > 0 else None,
    )


def _clock(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"


def describe(snapshot: Snapshot) -> list[str]:
    """The display's text: the counts line, then the wait in progress (if any)."""
    s = snapshot

    def of(done: int, total: int | None) -> str:
        return f"{done}/{total}" if total is not None else str(done)

    parts = []
    if s.repositories_total is not None or s.repositories_done:
        parts.append(f"repositories {of(s.repositories_done, s.repositories_total)}")
    if s.branches_done is not None:
        parts.append(f"branches {of(s.branches_done, s.branches_total)}")
    parts += [f"commits {s.commits}", f"records {s.records}", f"requests {s.requests}"]
    lines = [" · ".join([*parts, _clock(s.elapsed)])]
    if s.wait_reason is not None:
        seconds = max(1, round(s.waiting))  # "waiting 0 s" would read as not waiting
        text = _WAIT_TEXT.get(s.wait_reason, "waiting {s} s ({reason})")
        lines.append(text.format(s=seconds, reason=s.wait_reason))
    return lines


class LiveProgress:
    """The runner's progress callback and the wait observer; rich renders it on refresh.

    The callback and the observer run on the event loop and only store
    references; rich's refresh thread reads them (each is replaced whole, so
    it never sees half an update) and the thread-safe ``Stats``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._context: RunContext | None = None
        self._counts: tuple[dict[str, int], int] = ({}, 0)
        self._wait: tuple[float, str] | None = None
        self._live: Live | None = None

    def __call__(self, result: RunResult, context: RunContext) -> None:
        """``Runner(progress=...)``: the counts so far (at the start and after each batch)."""
        self._context = context
        self._counts = (dict(result.records), result.checkpoints)

    def waiting(self, seconds: float, reason: str) -> None:
        """A client waits ``seconds`` from now; of concurrent waits the one ending last is shown."""
        now = self._clock()
        deadline = now + seconds
        current = self._wait
        if current is None or current[0] <= now or current[0] < deadline:
            self._wait = (deadline, reason)
        live = self._live
        if live is not None:
            live.refresh()  # a wait is rare and long: show it now, not at the next tick

    def snapshot(self) -> Snapshot:
        """What to show now."""
        now = self._clock()
        records, checkpoints = self._counts
        context = self._context
        stats = context.stats.snapshot() if context is not None else {}
        info = context.source_info if context is not None else {}
        wait = self._wait
        return snapshot_of(
            records,
            checkpoints,
            stats,
            info,
            elapsed=now - self._started,
            waiting=wait[0] - now if wait is not None else 0.0,
            wait_reason=wait[1] if wait is not None else None,
        )

    def __rich__(self) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        snap = self.snapshot()
        lines = describe(snap)
        # The bar follows the finest total known; without one it pulses.
        done, total = (
            (snap.branches_done or 0, snap.branches_total)
            if snap.branches_total
            else (snap.repositories_done, snap.repositories_total)
        )
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=24, no_wrap=True)
        grid.add_column()
        grid.add_row(ProgressBar(total=total or None, completed=done, width=24), Text(lines[0]))
        for line in lines[1:]:
            grid.add_row(Text(""), Text(line, style="bold yellow"))
        return grid


class _ConsoleLines:
    """A text stream for a log handler: each complete line is printed above the live display."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._print(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._pending = self._pending, ""
        if rest:
            self._print(rest)

    def _print(self, line: str) -> None:
        from rich.text import Text

        # Text, not a str: no markup or highlighting of log content; soft_wrap:
        # the terminal wraps a long line, rich inserts no line breaks into it.
        self.console.print(Text(line), soft_wrap=True)


@contextmanager
def _log_lines_through(console: Console, stream: Any) -> Iterator[None]:
    """Point the ``rcingest`` log handlers that write to ``stream`` at ``console`` for a while."""
    lines = _ConsoleLines(console)
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for logger in (logging.getLogger("rcingest"), logging.getLogger()):
        for handler in logger.handlers:
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and handler.stream is stream
            ):
                swapped.append((handler, handler.setStream(lines)))
    try:
        yield
    finally:
        for handler, original in swapped:
            handler.setStream(original)
        lines.flush()


@contextmanager
def live_progress(enabled: bool, stream: IO[str] | None = None) -> Iterator[LiveProgress | None]:
    """``with live_progress(progress_wanted(quiet)) as progress: Runner(..., progress)``.

    Enabled: a transient rich display on ``stream`` (default stderr), the
    stderr log handler printing above it and client waits shown while they
    last. Not enabled: yields ``None`` (no progress callback), prints nothing.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.live import Live

    from rcingest.bitbucket.budget import observe_waits

    target = stream if stream is not None else sys.stderr
    console = Console(file=target, highlight=False)
    display = LiveProgress()
    live = Live(
        display,
        console=console,
        transient=True,
        refresh_per_second=REFRESH_PER_SECOND,
        redirect_stdout=False,  # stdout may be a pipe (--json): it is not the display's
        redirect_stderr=True,  # stray stderr writes go above the display too
    )
    with ExitStack() as stack:
        stack.enter_context(live)
        stack.enter_context(_log_lines_through(console, target))
        stack.enter_context(observe_waits(display.waiting))
        display._live = live
        try:
            yield display
        finally:
            display._live = None
