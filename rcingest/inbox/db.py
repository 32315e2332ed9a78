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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from rcingest import faults
from rcingest.inbox.model import Arrival, InboxEntry, InboxFilter, WorkerBeat
from rcingest.inbox.sql import OPEN, ROW, InboxTable, entry_of

__all__ = ["TABLE", "InboxDB", "connect"]

TABLE = "webhook_inbox"
_json = msgspec.json.Encoder()


def connect(
    spec: str, synchronous: Literal["NORMAL", "FULL"] = "NORMAL", *, must_exist: bool = False
) -> InboxDB:
    """An :class:`InboxDB` on ``spec``: a SQLite path or a ``postgresql://`` URL.

    ``must_exist``: a SQLite file that is not there raises ``FileNotFoundError``
    instead of being created (the read-only commands).
    """
    if "://" in spec and spec.split("://", 1)[0].lower() in ("postgresql", "postgres"):
        import psycopg2

        conn: Any = psycopg2.connect(spec)
        conn.autocommit = False
        return InboxDB(conn, "postgresql")
    path = Path(spec)
    if must_exist and not path.is_file():
        raise FileNotFoundError(f"no inbox at {spec}")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return InboxDB(conn, "sqlite")


class InboxDB(InboxTable):
    """The inbox's write protocol on one connection: append, claim, settle, retry, purge."""

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
        among those claimed: being normalised by another daemon, waiting out
        a retry delay, or a done row put back by a redelivery. So deliveries
        of one repository are never normalised out of order. On PostgreSQL
        the rows stay locked (the transaction stays open) until
        :meth:`settle` or :meth:`release`.
        """
        now = time.time() if now is None else now
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        self._claimed = True
        try:
            rows = self._query(
                f"SELECT {ROW}, headers, body FROM webhook_inbox "
                f"WHERE state IN {OPEN} AND not_before <= ? ORDER BY id LIMIT ?{lock}",
                (now, limit),
            )
            if not rows:
                self.release()
                return []
            repos = sorted({r[3] for r in rows})
            ids = [int(r[0]) for r in rows]
            # Per repository, the first open row that is not ours: ours after it wait.
            waiting = dict(
                self._query(
                    f"SELECT repository, MIN(id) FROM webhook_inbox WHERE state IN {OPEN} "
                    f"AND repository IN ({', '.join('?' for _ in repos)}) "
                    f"AND id NOT IN ({', '.join('?' for _ in ids)}) GROUP BY repository",
                    [*repos, *ids],
                )
            )
        except BaseException:
            self.release()
            raise
        entries = [
            entry_of(r) for r in rows if r[3] not in waiting or int(r[0]) < int(waiting[r[3]])
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
                    f"WHERE id IN ({marks}) AND state IN {OPEN}",
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

    def probe(self) -> bool:
        """Commit a one-row write (readiness: the inbox can store a delivery right now)."""
        self._write(
            [
                (
                    "INSERT INTO webhook_inbox_probe (id, probed_at) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
                    (time.time(),),
                )
            ]
        )
        return True

    def beat(self, beat: WorkerBeat) -> None:
        """Record what a normaliser process reports (one row per ``host:pid``).

        Rows of workers gone for a day are deleted on the way: a restarted
        worker has a new pid, and the table must not grow with every restart.
        """
        self._write(
            [
                (
                    "INSERT INTO webhook_inbox_workers (worker, started_at, beat_at, healthy, "
                    "last_error, normalised) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker) DO "
                    "UPDATE SET beat_at = excluded.beat_at, healthy = excluded.healthy, "
                    "last_error = excluded.last_error, normalised = excluded.normalised",
                    (
                        beat.worker,
                        beat.started_at,
                        beat.beat_at,
                        int(beat.healthy),
                        beat.last_error[:2000],
                        beat.normalised,
                    ),
                ),
                ("DELETE FROM webhook_inbox_workers WHERE beat_at < ?", (beat.beat_at - 86_400,)),
            ]
        )

    # ---- retrying, purging -------------------------------------------------------

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

    def purge(self, before: float) -> int:
        """Delete the ``done`` rows received before ``before``; how many.

        Parked rows are kept whatever their age: they wait for an operator.
        """
        return self._write(
            [("DELETE FROM webhook_inbox WHERE state = 'done' AND received_at < ?", (before,))]
        )
