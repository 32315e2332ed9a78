"""Where scheduled runs are recorded, and how a run claims its slot.

A run claims ``(job, slot)`` before it starts and reports how it ended after.
A claim is refused when another daemon holds the job's lock right now, or when
a run of the slot already started (``last_started_at >= slot``): the lock alone
would let the slower of two daemons run the slot again right after the faster
one released it. Backends: :class:`MemoryStore` (one process, nothing kept),
``SqliteStore`` and ``PostgresStore``; :func:`open_store` picks one for a
``database`` setting.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from rcingest.errors import RcingestError

__all__ = [
    "Claim",
    "MemoryStore",
    "Refused",
    "RunState",
    "ScheduleStore",
    "SchedulesLocked",
    "lock_key",
    "open_store",
]

#: The table both SQL backends create (CREATE TABLE IF NOT EXISTS: it belongs to
#: no migration of the database sink, and a database without that sink works).
TABLE = "schedule_runs"


class SchedulesLocked(RcingestError):
    """Another process runs the schedules of this SQLite database (one process only)."""

    exit_code = 1


@dataclass(frozen=True)
class RunState:
    """One row of ``schedule_runs``: what is known about a job's runs."""

    job: str
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_success_at: datetime | None = None
    #: The last run's error (redacted), None when it succeeded.
    last_error: str | None = None
    last_duration_s: float | None = None
    runs: int = 0
    failures: int = 0


@dataclass(frozen=True)
class Claim:
    """A run that may start: release it with :meth:`ScheduleStore.finish`."""

    job: str
    slot: datetime
    started_at: datetime


@dataclass(frozen=True)
class Refused:
    """A claim refused: ``locked`` (another daemon runs the job now) or ``done``."""

    job: str
    slot: datetime
    reason: Literal["locked", "done"]
    #: When the run that did the slot started (``done`` only).
    started_at: datetime | None = None


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks take a bigint).

    sha256 rather than ``hash()``: the same in every process and Python version.
    """
    digest = hashlib.sha256(f"rcingest.schedules\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ScheduleStore(ABC):
    """The run records of one database, and the claims on them.

    ``namespace`` (such as the pipeline's name) keeps the jobs of two pipelines
    that share a database apart: rows and locks are keyed ``namespace:job``.
    """

    #: For log messages: what this store is (a redacted database setting).
    where: str = "memory"

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace

    def qualified(self, job: str) -> str:
        return f"{self.namespace}:{job}" if self.namespace else job

    async def open(self) -> None:  # noqa: B027 - optional: MemoryStore needs nothing
        """Connect, take process locks, create the table. Raises :class:`SchedulesLocked`."""

    async def close(self) -> None:  # noqa: B027 - optional, as open()
        """Release everything :meth:`open` took (idempotent)."""

    @abstractmethod
    async def state(self, job: str) -> RunState | None:
        """The record of ``job`` (None: never ran here)."""

    @abstractmethod
    async def claim(self, job: str, slot: datetime, now: datetime) -> Claim | Refused:
        """Claim ``slot`` of ``job``: record ``now`` as the start, or refuse."""

    @abstractmethod
    async def finish(
        self, claim: Claim, *, finished_at: datetime, duration: float, error: str | None
    ) -> RunState:
        """Record how a claimed run ended (``error`` None: success) and release its lock."""

    async def __aenter__(self) -> ScheduleStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def finished(
    state: RunState, *, finished_at: datetime, duration: float, error: str | None
) -> RunState:
    """``state`` after a run that ended at ``finished_at`` (``error`` None: success)."""
    return replace(
        state,
        last_finished_at=finished_at,
        last_success_at=finished_at if error is None else state.last_success_at,
        last_error=error,
        last_duration_s=duration,
        runs=state.runs + 1,
        failures=state.failures + (error is not None),
    )


class MemoryStore(ScheduleStore):
    """Records in this process only: for a pipeline without a database, and for tests.

    Nothing survives a restart (every job then counts as never run), and no
    other process is kept out.
    """

    def __init__(self, namespace: str = "") -> None:
        super().__init__(namespace)
        self._rows: dict[str, RunState] = {}
        self._running: set[str] = set()
        self._lock = asyncio.Lock()

    async def state(self, job: str) -> RunState | None:
        return self._rows.get(self.qualified(job))

    async def claim(self, job: str, slot: datetime, now: datetime) -> Claim | Refused:
        name = self.qualified(job)
        async with self._lock:
            if name in self._running:
                return Refused(job, slot, "locked")
            row = self._rows.get(name) or RunState(name)
            if row.last_started_at is not None and row.last_started_at >= slot:
                return Refused(job, slot, "done", row.last_started_at)
            self._rows[name] = replace(row, last_started_at=now)
            self._running.add(name)
            return Claim(job, slot, now)

    async def finish(
        self, claim: Claim, *, finished_at: datetime, duration: float, error: str | None
    ) -> RunState:
        name = self.qualified(claim.job)
        async with self._lock:
            self._running.discard(name)
            row = finished(
                self._rows.get(name) or RunState(name),
                finished_at=finished_at,
                duration=duration,
                error=error,
            )
            self._rows[name] = row
            return row


def open_store(database: str | None, namespace: str = "") -> ScheduleStore:
    """The store for a ``database`` setting (None: :class:`MemoryStore`); not yet opened.

    Raises the ``ConfigError`` of a bad setting (as the database sink would).
    """
    if database is None:
        return MemoryStore(namespace)
    from rcingest.default_plugins.database.connect import check_database, is_postgres

    check_database(database)
    if is_postgres(database):
        from rcingest.schedules.postgres_store import PostgresStore

        return PostgresStore(database, namespace)
    from rcingest.schedules.sqlite_store import SqliteStore

    return SqliteStore(database, namespace)
