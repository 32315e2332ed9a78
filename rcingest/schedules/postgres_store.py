"""Schedules on PostgreSQL: any number of daemons, each job run once per slot.

A run holds the session-level advisory lock ``pg_try_advisory_lock(key)``
(``key``: :func:`~rcingest.schedules.store.lock_key` of ``namespace:job``) on
the store's own connection while it runs, and records its start in
``schedule_runs`` before it starts; a daemon that finds the lock taken, or the
slot's start already recorded, does not run it. A daemon that dies mid-run
loses its session and with it the lock; its recorded start still marks the
slot done. psycopg2 is imported only here, when a PostgreSQL store is opened.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rcingest.default_plugins.database.connect import redact, scrub, url_secrets
from rcingest.errors import RcingestError
from rcingest.schedules.sql_store import SqlStore
from rcingest.schedules.store import TABLE, lock_key

__all__ = ["PostgresStore"]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    job TEXT PRIMARY KEY,
    last_started_at TIMESTAMPTZ,
    last_finished_at TIMESTAMPTZ,
    last_success_at TIMESTAMPTZ,
    last_error TEXT,
    last_duration_s DOUBLE PRECISION,
    runs BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0
)
"""


class PostgresStore(SqlStore):
    """``schedule_runs`` and advisory locks on one dedicated PostgreSQL connection."""

    marker = "%s"

    def __init__(self, url: str, namespace: str = "") -> None:
        super().__init__(namespace)
        self._url = url
        self.where = redact(url)
        self._secrets = url_secrets(url)
        #: Lock names this connection's session holds (a new session holds none).
        self._held: set[str] = set()

    def _connect(self) -> Any:
        import psycopg2

        self._held.clear()
        try:
            # libpq reads the URL itself, ?sslmode= and the like included.
            conn = psycopg2.connect(
                self._url, connect_timeout=10, application_name="rcingest-schedules"
            )
        except psycopg2.Error as exc:
            message = scrub(str(exc).strip(), self._secrets)
            raise RcingestError(f"schedules: database {self.where}: {message}") from None
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # A stuck query must not stall a job loop forever (claims are tiny).
                cur.execute("SET statement_timeout = '30s'")
                # Two daemons starting at once would race CREATE TABLE IF NOT
                # EXISTS (a unique violation on pg_type): serialise it.
                cur.execute("BEGIN")
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("\0create"),))
                cur.execute(_SCHEMA)
                cur.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return conn

    def _reconnect_on(self) -> tuple[type[BaseException], ...]:
        import psycopg2

        return (psycopg2.OperationalError, psycopg2.InterfaceError)

    def _try_lock(self, conn: Any, name: str) -> bool:
        if name in self._held:
            # Session locks nest: taking one twice would succeed, so say no here.
            return False
        with conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(name),))
            row = cur.fetchone()
        taken = bool(row and row[0])
        if taken:
            self._held.add(name)
        return taken

    def _unlock(self, conn: Any, name: str) -> None:
        if name not in self._held:
            return
        self._held.discard(name)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(name),))

    def _encode_time(self, moment: datetime) -> Any:
        return moment.astimezone(UTC)

    def _decode_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
