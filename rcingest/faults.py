"""Fault injection for the kill tests: ``RCINGEST_KILL_AT=<point>:<n>``.

The inbox's promise ("every 2xx-acknowledged delivery is normalised exactly
once, whatever instant the process dies") is only worth what the kill test
shows, and a kill from outside lands wherever the scheduler happens to be.
Setting ``RCINGEST_KILL_AT`` makes the process SIGKILL itself at the n-th
time it reaches a named point, so each dangerous instant is tested on purpose
(``bench/kill_test.py``):

* ``append``: an inbox batch is inserted and not yet committed;
* ``normalise``: the sinks committed a normalised batch, and its inbox rows
  are not yet marked done;
* ``checkpoint``: a SQLite WAL checkpoint of the database sink is running
  (the kill comes from a timer thread a moment after it starts).

With ``RCINGEST_KILL_ONCE=<file>`` the fault fires only if that file does
not exist yet, and creates it as it fires: a normaliser process that
``rcingest serve`` restarts inherits the environment, and must not die at
the same point again (the file also tells the test that the fault fired).

Unset (always, outside tests) every call is one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

__all__ = ["during", "reached"]


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec or ":" not in spec:
        return None
    point, _, n = spec.partition(":")
    return (point.strip(), int(n)) if n.strip().isdigit() and int(n) > 0 else None


_TARGET = _parse(os.environ.get("RCINGEST_KILL_AT"))
_ONCE = os.environ.get("RCINGEST_KILL_ONCE") or None
_counts: dict[str, int] = {}
_lock = threading.Lock()


def _due(point: str) -> bool:
    if _TARGET is None or _TARGET[0] != point:
        return False
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        if _counts[point] != _TARGET[1]:
            return False
        if _ONCE is not None:
            try:
                os.close(os.open(_ONCE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return False  # fired before, in an earlier process
        return True


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reached(point: str) -> None:
    """Die here if this is the n-th time ``point`` is reached under ``RCINGEST_KILL_AT``."""
    if _TARGET is not None and _due(point):
        _kill()


@contextlib.contextmanager
def during(point: str, delay: float = 0.0005) -> Iterator[None]:
    """Die while the block runs (a thread fires ``delay`` seconds after it starts)."""
    if _TARGET is not None and _due(point):
        threading.Timer(delay, _kill).start()
    yield
