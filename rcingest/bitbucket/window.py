"""The scan window and the early-stop rule for walking a branch newest first.

Bitbucket's commits endpoint has no date filter and lists commits in
topological order (newest first, like ``git log``), so dates are *mostly*
but not strictly decreasing: a merged branch brings commits whose dates are
older than mainline commits listed after them, and rebases and clock skew do
the same. The rule, pure and tested:

* a commit belongs to the scan if ``window.start <= date < window.end``
  (half-open), wherever it appears in the listing;
* walking stops once ``stop_after`` consecutive commits (default 100, a full
  page) are older than ``window.start`` *and* the latest one seen is older
  than ``window.start - margin`` (default 60 minutes) *and* the branch's
  first-parent chain is finished; one newer commit resets the count. An
  out-of-order run shorter than ``stop_after`` does not end the walk early;
* the first-parent chain: starting at the branch head, the walk expects the
  first parent of each chain commit it reads whose date is not older than
  ``window.start - margin``; while such a parent has not been listed yet, the
  walk goes on whatever the old-commit run. A merge that brings in a long,
  old branch is listed before its first parent (topological order), so this
  is what keeps the mainline commits behind it: an in-window commit reachable
  from the head through first parents is never dropped. The chain ends at the
  first chain commit older than ``window.start - margin`` (or a root, or a
  listing without ``parents``), which on a linear history is right where the
  window ends, so a branch is never paged to its root for a short window;
* the check runs at page boundaries: a page already fetched is read whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rcingest.errors import ConfigError
from rcingest.interfaces import Window

__all__ = ["EarlyStop", "branch_window", "covered_start", "resolve_window"]


def _localize(moment: datetime, tz: ZoneInfo) -> datetime:
    """A naive config value is read in the pipeline's timezone."""
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


def resolve_window(
    now: datetime,
    tz: ZoneInfo,
    *,
    hours: float | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Window:
    """The half-open window ``[start, end)`` from ``hours`` or ``since``/``until``.

    ``hours`` counts back from ``until`` (default now) in real (UTC) time, so a
    window across a DST change is still ``hours`` long. Naive ``since``/``until``
    are read in ``tz``. Raises ``ConfigError`` naming the fields at fault.
    """
    end = (_localize(until, tz) if until is not None else now).astimezone(UTC)
    if hours is not None and since is not None:
        raise ConfigError("hours and since: set one of them, not both")
    if hours is not None:
        if hours <= 0:
            raise ConfigError("hours: must be > 0")
        start = end - timedelta(hours=hours)
    elif since is not None:
        start = _localize(since, tz).astimezone(UTC)
    else:
        raise ConfigError("hours or since: the source needs a window (e.g. hours: 4)")
    if start >= end:
        raise ConfigError(
            f"since/until: the window is empty "
            f"({start.isoformat()} is not before {end.isoformat()})"
        )
    return Window(start.astimezone(tz), end.astimezone(tz))


def branch_window(
    window: Window,
    cursor: dict[str, object] | None,
    *,
    incremental: bool,
    overlap: timedelta,
    resume: bool = False,
) -> Window | None:
    """The part of ``window`` one branch still needs, given its saved cursor; ``None`` = nothing.

    * incremental: from the end of the last successful scan of the branch minus
      ``overlap`` (the run window's start when there is no cursor yet);
    * otherwise, with ``resume``: a cursor that already covers the beginning of
      the window (a crashed or repeated run) skips the covered part, so finished
      branches are not fetched again.
    """
    start_s = cursor.get("start") if cursor else None
    end_s = cursor.get("end") if cursor else None
    if not isinstance(end_s, str):
        return window
    try:
        saved_end = datetime.fromisoformat(end_s)
        saved_start = datetime.fromisoformat(start_s) if isinstance(start_s, str) else None
    except ValueError:
        return window
    if incremental:
        start = saved_end - overlap
        return Window(start, window.end) if start < window.end else None
    if not resume or saved_start is None or saved_start > window.start:
        return window
    if saved_end >= window.end:
        return None
    start = max(window.start, saved_end - overlap)
    return Window(start, window.end)


def covered_start(scanned: Window, cursor: dict[str, object] | None) -> datetime:
    """The start of the time a branch's new cursor covers once ``scanned`` is done.

    A saved cursor that reaches into (or up to) ``scanned`` is contiguous
    with it, so the new cursor covers their union and keeps the earlier start;
    otherwise (no cursor, a broken one, or a gap) it covers ``scanned`` only.
    Storing the union is what lets ``resume`` skip a branch whose window was
    extended and then scanned again.
    """
    start_s = cursor.get("start") if cursor else None
    end_s = cursor.get("end") if cursor else None
    if not isinstance(start_s, str) or not isinstance(end_s, str):
        return scanned.start
    try:
        saved_start = datetime.fromisoformat(start_s)
        saved_end = datetime.fromisoformat(end_s)
    except ValueError:
        return scanned.start
    if saved_start.tzinfo is None or saved_end.tzinfo is None:
        return scanned.start
    if saved_start <= scanned.start <= saved_end:
        return saved_start
    return scanned.start


class EarlyStop:
    """Sans-I/O state of one branch walk: feed commits in listing order, ask whether to stop.

    Feed ``hash`` and ``parents`` (first parent first) for the first-parent
    rule; without them only the old-commit run counts.
    """

    def __init__(
        self, start: datetime, *, stop_after: int = 100, margin: timedelta = timedelta(hours=1)
    ) -> None:
        self.start = start
        self.stop_after = stop_after
        self.limit = start - margin
        self.old_run = 0
        self.last: datetime | None = None
        self.started = False
        #: The first-parent chain commit the walk still expects; ``None`` = chain done.
        self.pending: str | None = None

    def see(
        self, date: datetime, commit_hash: str | None = None, parents: Sequence[str] = ()
    ) -> None:
        """Record the next commit (its date, hash and parent hashes) in listing order."""
        self.last = date
        self.old_run = self.old_run + 1 if date < self.start else 0
        on_chain = not self.started or (commit_hash is not None and commit_hash == self.pending)
        self.started = True
        if on_chain:
            self.pending = parents[0] if parents and date >= self.limit else None

    def should_stop(self) -> bool:
        """True when the walk is safely past the window (see the module docstring)."""
        return (
            self.pending is None
            and self.old_run >= self.stop_after
            and self.last is not None
            and self.last < self.limit
        )
