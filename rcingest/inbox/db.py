"""The inbox table, synchronously, on SQLite or PostgreSQL: one connection per object.

Everything here runs on the thread that owns the connection (the async
shells in :mod:`rcingest.inbox.store` give each its own single-thread
executor). The SQL is one dialect with two spellings: ``?`` becomes ``%s``,
and only PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so that several
daemons can share one inbox, each holding the rows it claimed until it
settles them.

Bodies are stored zlib-compressed, with the configured secrets masked first
(a credential pasted into a commit message must not reach the inbox any
more than the main tables).
"""

# Every SQL string here is built from constants and "?" placeholders only;
# values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from rcingest import faults
from rcingest.inbox.model import OPEN_STATES, Arrival, InboxEntry, InboxFilter, InboxRow

__all__ = ["TABLE", "InboxDB", "connect"]

TABLE = "webhook_inbox"
_json = msgspec.json.Encoder()
_headers = msgspec.json.Decoder(dict[str, str])

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_inbox (
    id {id},
    request_uuid TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    repository TEXT NOT NULL,
    received_at {real} NOT NULL,
    headers TEXT NOT NULL,
    body {blob} NOT NULL,
    body_bytes INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before {real} NOT NULL DEFAULT 0,
    last_error TEXT,
    done_at {real},
    received INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS webhook_inbox_open ON webhook_inbox (id)
    WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS webhook_inbox_open_repository ON webhook_inbox (repository, id)
    WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS webhook_inbox_received ON webhook_inbox (received_at)
"""
_ROW = (
    "id, request_uuid, event, repository, received_at, state, attempts, last_error, "
    "done_at, body_bytes, received"
)
_OPEN = "('pending', 'failed')"


def connect(spec: str, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> InboxDB:
    """An :class:`InboxDB` on ``spec``: a SQLite path or a ``postgresql://`` URL."""
    if "://" in spec and spec.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        import psycopg2

        conn: Any = psycopg2.connect(spec)
        conn.autocommit = False
        return InboxDB(conn, "postgresql")
    path = Path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return InboxDB(conn, "sqlite")


def _row(r: Sequence[Any]) -> InboxRow:
    return InboxRow(
        id=int(r[0]),
        request_uuid=r[1],
        event=r[2],
        repository=r[3],
        received_at=float(r[4]),
        state=r[5],
        attempts=int(r[6]),
        last_error=r[7],
        done_at=None if r[8] is None else float(r[8]),
        body_bytes=int(r[9]),
        received=int(r[10]),
    )


class InboxDB:
    """The inbox on one open connection (not thread-safe: one thread uses it)."""

    def __init__(self, conn: Any, dialect: Literal["sqlite", "postgresql"]) -> None:
        self.conn = conn
        self.dialect = dialect
        self._secrets: tuple[bytes, ...] = ()
        self._claimed = False

    # ---- plumbing -----------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == "sqlite" else sql.replace("?", "%s")

    def _begin(self) -> Any:
        cur = self.conn.cursor()
        if self.dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        return cur

    def _commit(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()

    def _rollback(self) -> None:
        if self.dialect == "sqlite":
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cur = self.conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        rows = cur.fetchall()
        if self.dialect == "postgresql" and not self._claimed:
            self.conn.commit()  # end the read's transaction (no locks kept)
        return list(rows)

    def _write(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> int:
        cur = self._begin()
        changed = 0
        try:
            for sql, params in statements:
                cur.execute(self._sql(sql), tuple(params))
                changed += max(cur.rowcount, 0)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return changed

    def create(self) -> None:
        """Create the table and its indexes when missing."""
        if self.dialect == "sqlite":
            ddl = _SCHEMA.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB")
        else:
            ddl = _SCHEMA.format(id="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION", blob="BYTEA")
        self._write((stmt, ()) for stmt in ddl.split(";") if stmt.strip())

    def close(self) -> None:
        self._rollback()
        self.conn.close()

    def mask(self, secrets: Iterable[str]) -> None:
        """Values to replace by ``***`` in bodies and headers before they are stored."""
        self._secrets = tuple(
            sorted({s.encode() for s in secrets if len(s) >= 8}, key=len, reverse=True)
        )

    def _clean(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, b"***")
        return data

    # ---- the request path: append ---------------------------------------------

    def append(self, arrivals: Sequence[Arrival]) -> list[bool]:
        """Store ``arrivals`` in one transaction; per arrival True when new.

        An arrival whose request UUID is already stored is a retry or a
        redelivery: it is counted (``received``), its headers replace the
        stored ones (the latest ``X-Attempt-Number``), and a row already ``done``
        goes back to ``pending``, so the redelivery refreshes ``last_seen_at``
        of what it carries as the runbook says (nothing is duplicated: the
        sinks upsert).
        """
        prepared = [
            (
                a.request_uuid,
                a.event,
                a.repository,
                a.received_at,
                self._clean(_json.encode(a.headers)).decode(),
                zlib.compress(self._clean(a.body), 1),
                len(a.body),
            )
            for a in arrivals
        ]
        insert = self._sql(
            "INSERT INTO webhook_inbox (request_uuid, event, repository, received_at, headers, "
            "body, body_bytes) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (request_uuid) DO NOTHING RETURNING id"
        )
        again = self._sql(
            "UPDATE webhook_inbox SET received = received + 1, headers = ?, state = CASE "
            "WHEN state = 'done' THEN 'pending' ELSE state END, not_before = 0 "
            "WHERE request_uuid = ?"
        )
        new: list[bool] = []
        cur = self._begin()
        try:
            for params in prepared:
                cur.execute(insert, params)
                fresh = cur.fetchone() is not None
                if not fresh:
                    cur.execute(again, (params[4], params[0]))
                new.append(fresh)
            faults.reached("append")
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return new

    # ---- the normaliser: claim and settle --------------------------------------

    def claim(self, limit: int, now: float | None = None) -> list[InboxEntry]:
        """The oldest due open rows, each repository's in order, at most ``limit``.

        A row is left out when an earlier open row of its repository is not
        among those claimed: being normalised by another daemon, or waiting
        out a retry delay. So deliveries of one repository are never
        normalised out of order. On PostgreSQL the rows stay locked (the
        transaction stays open) until :meth:`settle` or :meth:`release`.
        """
        now = time.time() if now is None else now
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        self._claimed = True
        try:
            rows = self._query(
                f"SELECT {_ROW}, headers, body FROM webhook_inbox "
                f"WHERE state IN {_OPEN} AND not_before <= ? ORDER BY id LIMIT ?{lock}",
                (now, limit),
            )
            if not rows:
                self.release()
                return []
            repos = sorted({r[3] for r in rows})
            marks = ", ".join("?" for _ in repos)
            first = dict(
                self._query(
                    f"SELECT repository, MIN(id) FROM webhook_inbox WHERE state IN {_OPEN} "
                    f"AND repository IN ({marks}) GROUP BY repository",
                    repos,
                )
            )
        except BaseException:
            self.release()
            raise
        claimed = {int(r[0]) for r in rows}
        # A repository whose first open row is not ours waits for it.
        blocked = {repo for repo, first_id in first.items() if int(first_id) not in claimed}
        entries = [
            InboxEntry(
                row=_row(r),
                headers=_headers.decode(r[11]),
                body=zlib.decompress(bytes(r[12])),
            )
            for r in rows
            if r[3] not in blocked
        ]
        if not entries:
            self.release()
        return entries

    def settle(
        self,
        done: Sequence[int] = (),
        failed: Sequence[tuple[int, str, float]] = (),
        parked: Sequence[tuple[int, str]] = (),
        now: float | None = None,
    ) -> None:
        """Record the outcome of claimed rows and end the claim.

        ``failed`` holds (id, reason, not_before): tried again after that time.
        """
        now = time.time() if now is None else now
        stmts: list[tuple[str, Sequence[Any]]] = []
        for i in range(0, len(done), 500):
            ids = list(done[i : i + 500])
            marks = ", ".join("?" for _ in ids)
            stmts.append(
                (
                    "UPDATE webhook_inbox SET state = 'done', done_at = ?, "
                    "attempts = attempts + 1, last_error = NULL "
                    f"WHERE id IN ({marks}) AND state IN {_OPEN}",
                    [now, *ids],
                )
            )
        for row_id, reason, not_before in failed:
            stmts.append(
                (
                    "UPDATE webhook_inbox SET state = 'failed', attempts = attempts + 1, "
                    "last_error = ?, not_before = ? WHERE id = ?",
                    (reason[:2000], not_before, row_id),
                )
            )
        for row_id, reason in parked:
            stmts.append(
                (
                    "UPDATE webhook_inbox SET state = 'parked', attempts = attempts + 1, "
                    "last_error = ? WHERE id = ?",
                    (reason[:2000], row_id),
                )
            )
        try:
            if self.dialect == "postgresql":
                # The claim's transaction is still open: these join it.
                cur = self.conn.cursor()
                for sql, params in stmts:
                    cur.execute(self._sql(sql), tuple(params))
                self.conn.commit()
            else:
                self._write(stmts)
        except BaseException:
            self._rollback()
            raise
        finally:
            self._claimed = False

    def release(self) -> None:
        """End a claim without changing its rows (they are claimed again later)."""
        self._claimed = False
        self._rollback()

    # ---- reading, retrying, purging --------------------------------------------

    def _where(self, f: InboxFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if f.states:
            clauses.append(f"state IN ({', '.join('?' for _ in f.states)})")
            params.extend(f.states)
        if f.repository is not None:
            clauses.append("repository = ?")
            params.append(f.repository)
        if f.since is not None:
            clauses.append("received_at >= ?")
            params.append(f.since)
        if f.until is not None:
            clauses.append("received_at < ?")
            params.append(f.until)
        if f.request_uuids:
            clauses.append(f"request_uuid IN ({', '.join('?' for _ in f.request_uuids)})")
            params.extend(f.request_uuids)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def rows(self, f: InboxFilter | None = None) -> list[InboxRow]:
        """The rows ``f`` selects, oldest first (no bodies)."""
        f = f or InboxFilter()
        where, params = self._where(f)
        limit = f" LIMIT {int(f.limit)}" if f.limit is not None else ""
        return [
            _row(r)
            for r in self._query(
                f"SELECT {_ROW} FROM webhook_inbox{where} ORDER BY id{limit}", params
            )
        ]

    def entries(self, f: InboxFilter | None = None, page: int = 500) -> Iterator[InboxEntry]:
        """The entries ``f`` selects with their bodies, oldest first, read a page at a time."""
        f = f or InboxFilter()
        where, params = self._where(f)
        after, left = 0, f.limit
        glue = " AND " if where else " WHERE "
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            rows = self._query(
                f"SELECT {_ROW}, headers, body FROM webhook_inbox{where}{glue}id > ? "
                f"ORDER BY id LIMIT {size}",
                [*params, after],
            )
            if not rows:
                return
            for r in rows:
                yield InboxEntry(
                    row=_row(r), headers=_headers.decode(r[11]), body=zlib.decompress(bytes(r[12]))
                )
            after = int(rows[-1][0])
            if left is not None:
                left -= len(rows)

    def retry(self, f: InboxFilter) -> int:
        """Put the ``failed`` and ``parked`` rows ``f`` selects back to ``pending``; how many."""
        states = tuple(s for s in (f.states or ("failed", "parked")) if s in ("failed", "parked"))
        if not states:
            return 0
        where, params = self._where(msgspec.structs.replace(f, states=states))
        return self._write(
            [
                (
                    "UPDATE webhook_inbox SET state = 'pending', not_before = 0, "
                    f"attempts = 0{where}",
                    params,
                )
            ]
        )

    def counts(self) -> dict[str, int]:
        """Rows per state (every state present, 0 when none)."""
        found = dict(self._query("SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state"))
        return {s: int(found.get(s, 0)) for s in ("pending", "failed", "done", "parked")}

    def oldest_open(self) -> float | None:
        """``received_at`` of the oldest row still to normalise (None when none)."""
        row = self._query(
            f"SELECT received_at FROM webhook_inbox WHERE state IN {_OPEN} ORDER BY id LIMIT 1"
        )
        return float(row[0][0]) if row else None

    def purge(self, before: float) -> int:
        """Delete the ``done`` rows received before ``before``; how many.

        Parked rows are kept whatever their age: they wait for an operator.
        """
        return self._write(
            [("DELETE FROM webhook_inbox WHERE state = 'done' AND received_at < ?", (before,))]
        )


assert OPEN_STATES == ("pending", "failed")  # _OPEN spells them in SQL
