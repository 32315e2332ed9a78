"""Schedules on a SQLite database: one process runs them, the others are refused.

SQLite has no locks that outlive a statement, so "each job once" across
daemons is "one daemon runs the schedules": an exclusive, non-blocking
``flock`` on ``<database>.schedules.lock``, held from :meth:`open` to
:meth:`close` (the kernel drops it when the process dies, so a crash leaves
no stale lock). A second process gets :class:`SchedulesLocked` from
:meth:`open`, naming the first one's pid; for several daemons use PostgreSQL.
The run records live in the database file itself (``schedule_runs``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rcingest.schedules.sql_store import SqlStore
from rcingest.schedules.store import TABLE, SchedulesLocked

__all__ = ["SqliteStore", "lock_path"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    job TEXT PRIMARY KEY,
    last_started_at TEXT,
    last_finished_at TEXT,
    last_success_at TEXT,
    last_error TEXT,
    last_duration_s REAL,
    runs INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0
)
"""


def lock_path(database: str) -> Path:
    """The lock file of a SQLite ``database`` path: ``<database>.schedules.lock``."""
    path = Path(database).expanduser()
    return path.with_name(path.name + ".schedules.lock")


class SqliteStore(SqlStore):
    """``schedule_runs`` in a SQLite file, and the one-process lock beside it."""

    marker = "?"

    def __init__(self, database: str, namespace: str = "") -> None:
        super().__init__(namespace)
        self.database = database
        self.where = database
        self._memory = database == ":memory:"
        self._lock_fd: int | None = None

    async def open(self) -> None:
        if not self._memory:
            await asyncio.to_thread(self._take_process_lock)
        try:
            await super().open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self._release_process_lock)

    def _take_process_lock(self) -> None:
        import fcntl

        if self._lock_fd is not None:
            return
        path = lock_path(self.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SchedulesLocked(
                f"schedules: another process (pid {holder}) runs the schedules of "
                f"{self.database!r} (it holds {str(path)!r}); with SQLite only one process "
                "may run them, so this one runs no scheduled jobs. Stop the other one, or "
                "put the database on PostgreSQL to run several daemons."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Who holds it, for the message above; the lock, not the text, is what counts.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_process_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            # Closing the descriptor releases the flock; the file stays (deleting it
            # would race with a process that opened it and is about to lock it).
            os.close(fd)

    def _connect(self) -> Any:
        # isolation_level=None: autocommit, every statement its own transaction;
        # the busy timeout waits out a database sink's write transaction.
        target = self.database if self._memory else str(Path(self.database).expanduser())
        conn = sqlite3.connect(target, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _encode_time(self, moment: datetime) -> Any:
        return moment.astimezone(UTC).isoformat()

    def _decode_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(str(value))
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
