"""Runs that died without saying so: found and marked by the next run on the same host.

A run killed with ``kill -9`` (or by a power cut) never updates its ``runs``
row, which would say ``running`` for ever. Each run records its host and
process id; when the database sink opens, every ``running`` row of this host
whose process is gone becomes ``interrupted``, with ``noticed_at`` set. Rows
of other hosts are left alone: their processes cannot be seen from here (two
daemons on one PostgreSQL database are normal).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from rcingest.default_plugins.database.models import Run

__all__ = ["HOST", "mark_dead_runs", "process_alive"]

#: This machine's name as stored in ``runs.host``.
HOST = socket.gethostname()


def process_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host (signal 0 probes, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def mark_dead_runs(runs: type[Run], now: datetime, own_id: str) -> list[str]:
    """Mark this host's ``running`` rows whose process is gone; return their ids.

    A process id reused by an unrelated process keeps its row ``running``:
    the mistake goes toward claiming too little, never a live run as dead.
    """
    stale = [
        row.id
        for row in runs.select(runs.id, runs.pid).where(
            (runs.status == "running") & (runs.host == HOST) & (runs.id != own_id)
        )
        if row.pid is not None and not process_alive(int(row.pid))
    ]
    if stale:
        runs.update(status="interrupted", noticed_at=now).where(runs.id.in_(stale)).execute()
    return stale
