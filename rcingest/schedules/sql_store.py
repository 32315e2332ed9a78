"""What the SQLite and PostgreSQL stores share: the ``schedule_runs`` table and its queries.

The drivers block, so every query runs in a thread (``asyncio.to_thread``),
one at a time on the store's one connection (a ``threading.Lock``): on
PostgreSQL the advisory locks belong to that connection's session.
"""

from __future__ import annotations

import asyncio
import threading
from abc import abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from rcingest.schedules.store import (
    TABLE,
    Claim,
    Refused,
    RunState,
    ScheduleStore,
    finished,
)

__all__ = ["SqlStore"]

T = TypeVar("T")

_COLUMNS = (
    "job, last_started_at, last_finished_at, last_success_at, "
    "last_error, last_duration_s, runs, failures"
)


class SqlStore(ScheduleStore):
    """A store on a DB-API connection; subclasses connect, lock and encode times."""

    #: The driver's parameter marker (``?`` for sqlite3, ``%s`` for psycopg2).
    marker = "?"

    def __init__(self, namespace: str = "") -> None:
        super().__init__(namespace)
        self._conn: Any = None
        self._guard = threading.Lock()

    # -- what a backend provides (all blocking, called in a thread) -----------------

    @abstractmethod
    def _connect(self) -> Any:
        """A new autocommit connection, the table created."""

    def _try_lock(self, conn: Any, name: str) -> bool:
        """Take the cross-process lock of job ``name`` without waiting (default: none needed)."""
        return True

    def _unlock(self, conn: Any, name: str) -> None:
        """Release what :meth:`_try_lock` took."""

    def _reconnect_on(self) -> tuple[type[BaseException], ...]:
        """Driver errors after which the connection is replaced and the call retried once."""
        return ()

    @abstractmethod
    def _encode_time(self, moment: datetime) -> Any: ...

    @abstractmethod
    def _decode_time(self, value: Any) -> datetime | None: ...

    # -- the store --------------------------------------------------------------------

    async def open(self) -> None:
        await self._call(lambda conn: None)

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    async def state(self, job: str) -> RunState | None:
        return await self._call(lambda conn: self._read(conn, self.qualified(job)))

    async def claim(self, job: str, slot: datetime, now: datetime) -> Claim | Refused:
        return await self._call(lambda conn: self._claim(conn, job, slot, now))

    async def finish(
        self, claim: Claim, *, finished_at: datetime, duration: float, error: str | None
    ) -> RunState:
        def record(conn: Any) -> RunState:
            name = self.qualified(claim.job)
            try:
                row = finished(
                    self._read(conn, name) or RunState(name),
                    finished_at=finished_at,
                    duration=duration,
                    error=error,
                )
                self._write(conn, row)
                return row
            finally:
                self._unlock(conn, name)

        # Shielded: a run cancelled at shutdown still records its end and releases its lock.
        return await asyncio.shield(self._call(record))

    # -- blocking parts ---------------------------------------------------------------

    def _claim(self, conn: Any, job: str, slot: datetime, now: datetime) -> Claim | Refused:
        name = self.qualified(job)
        if not self._try_lock(conn, name):
            return Refused(job, slot, "locked")
        try:
            row = self._read(conn, name) or RunState(name)
            if row.last_started_at is not None and row.last_started_at >= slot:
                self._unlock(conn, name)
                return Refused(job, slot, "done", row.last_started_at)
            self._write(conn, RunState(**{**row.__dict__, "last_started_at": now}))
        except BaseException:
            self._unlock(conn, name)
            raise
        return Claim(job, slot, now)

    def _read(self, conn: Any, name: str) -> RunState | None:
        cur = conn.cursor()
        try:
            # Only constants are formatted in (names, the driver's marker); values are bound.
            query = f"SELECT {_COLUMNS} FROM {TABLE} WHERE job = {self.marker}"  # noqa: S608
            cur.execute(query, (name,))
            found = cur.fetchone()
        finally:
            cur.close()
        if found is None:
            return None
        job, started, ended, success, error, duration, runs, failures = found
        return RunState(
            job=job,
            last_started_at=self._decode_time(started),
            last_finished_at=self._decode_time(ended),
            last_success_at=self._decode_time(success),
            last_error=error,
            last_duration_s=None if duration is None else float(duration),
            runs=int(runs),
            failures=int(failures),
        )

    def _write(self, conn: Any, row: RunState) -> None:
        m = self.marker
        values = (
            row.job,
            self._time_or_none(row.last_started_at),
            self._time_or_none(row.last_finished_at),
            self._time_or_none(row.last_success_at),
            row.last_error,
            row.last_duration_s,
            row.runs,
            row.failures,
        )
        updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[1:])
        cur = conn.cursor()
        try:
            cur.execute(
                f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({', '.join([m] * 8)}) "  # noqa: S608
                f"ON CONFLICT (job) DO UPDATE SET {updates}",
                values,
            )
        finally:
            cur.close()

    def _time_or_none(self, moment: datetime | None) -> Any:
        return None if moment is None else self._encode_time(moment)

    async def _call(self, work: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self._call_sync, work)

    def _call_sync(self, work: Callable[[Any], T]) -> T:
        with self._guard:
            if self._conn is None:
                self._conn = self._connect()
            try:
                return work(self._conn)
            except self._reconnect_on():
                # The connection broke (a database restart, a dropped TCP
                # connection): its session locks are gone with it, so a new one
                # is as good; once, so that a database that is down fails fast.
                self._drop()
                self._conn = self._connect()
                return work(self._conn)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: S110 - closing a broken connection may fail too
                pass

    def _close_sync(self) -> None:
        with self._guard:
            self._drop()
