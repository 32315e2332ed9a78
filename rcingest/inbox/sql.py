"""The inbox table's SQL and the reads every user of it needs, on SQLite or PostgreSQL.

One dialect with two spellings: ``?`` becomes ``%s`` on PostgreSQL. The
write protocol (append, claim, settle) is :class:`rcingest.inbox.db.InboxDB`,
built on :class:`InboxTable`; ``rcingest inbox`` and ``rcingest replay`` only
read (and retry), through the same class.
"""

# Every SQL string here is built from constants and "?" placeholders only;
# values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import msgspec

from rcingest.inbox.model import OPEN_STATES, InboxEntry, InboxFilter, InboxRow, WorkerBeat

__all__ = ["OPEN", "ROW", "SCHEMA", "InboxTable", "entry_of", "row_of"]

_headers = msgspec.json.Decoder(dict[str, str])

SCHEMA = """
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
CREATE INDEX IF NOT EXISTS webhook_inbox_received ON webhook_inbox (received_at);
CREATE TABLE IF NOT EXISTS webhook_inbox_probe (
    id INTEGER PRIMARY KEY,
    probed_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_inbox_workers (
    worker TEXT PRIMARY KEY,
    started_at {real} NOT NULL,
    beat_at {real} NOT NULL,
    healthy INTEGER NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    normalised INTEGER NOT NULL DEFAULT 0
)
"""
ROW = (
    "id, request_uuid, event, repository, received_at, state, attempts, last_error, "
    "done_at, body_bytes, received"
)
OPEN = "('pending', 'failed')"


def row_of(r: Sequence[Any]) -> InboxRow:
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


def entry_of(r: Sequence[Any]) -> InboxEntry:
    """An entry from a row selected as ``ROW, headers, body``."""
    return InboxEntry(
        row=row_of(r), headers=_headers.decode(r[11]), body=zlib.decompress(bytes(r[12]))
    )


class InboxTable:
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
            ddl = SCHEMA.format(id="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL", blob="BLOB")
        else:
            ddl = SCHEMA.format(id="BIGSERIAL PRIMARY KEY", real="DOUBLE PRECISION", blob="BYTEA")
        statements = [(stmt, ()) for stmt in ddl.split(";") if stmt.strip()]
        if self.dialect == "postgresql":
            # Two daemons starting together would race in CREATE ... IF NOT
            # EXISTS (PostgreSQL then fails one with a duplicate type); a
            # transaction-scoped lock makes the second wait and find it made.
            statements.insert(0, ("SELECT pg_advisory_xact_lock(7215049521)", ()))
        self._write(statements)

    def close(self) -> None:
        self._rollback()
        self.conn.close()

    # ---- reading ---------------------------------------------------------------

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
            row_of(r)
            for r in self._query(
                f"SELECT {ROW} FROM webhook_inbox{where} ORDER BY id{limit}", params
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
                f"SELECT {ROW}, headers, body FROM webhook_inbox{where}{glue}id > ? "
                f"ORDER BY id LIMIT {size}",
                [*params, after],
            )
            if not rows:
                return
            for r in rows:
                yield InboxEntry(
                    row=row_of(r),
                    headers=_headers.decode(r[11]),
                    body=zlib.decompress(bytes(r[12])),
                )
            after = int(rows[-1][0])
            if left is not None:
                left -= len(rows)

    def counts(self) -> dict[str, int]:
        """Rows per state (every state present, 0 when none)."""
        found = dict(self._query("SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state"))
        return {s: int(found.get(s, 0)) for s in ("pending", "failed", "done", "parked")}

    def workers(self, since: float) -> list[WorkerBeat]:
        """The normalisers that reported at or after ``since``, most recent first."""
        return [
            WorkerBeat(
                worker=r[0],
                started_at=float(r[1]),
                beat_at=float(r[2]),
                healthy=bool(r[3]),
                last_error=r[4],
                normalised=int(r[5]),
            )
            for r in self._query(
                "SELECT worker, started_at, beat_at, healthy, last_error, normalised "
                "FROM webhook_inbox_workers WHERE beat_at >= ? ORDER BY beat_at DESC",
                (since,),
            )
        ]

    def oldest_open(self) -> float | None:
        """``received_at`` of the oldest row still to normalise (None when none)."""
        row = self._query(
            f"SELECT received_at FROM webhook_inbox WHERE state IN {OPEN} ORDER BY id LIMIT 1"
        )
        return float(row[0][0]) if row else None


assert OPEN_STATES == ("pending", "failed")  # OPEN spells them in SQL
