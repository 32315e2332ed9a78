"""The sink's local record: what Chariot was sent, what it still must be sent, open risks.

One SQLite file (``data/chariot/state.db`` by default), four tables:

- ``sent``: per *slot* (an asset key, a risk key, or an asset key plus an
  attribute name) the request Chariot last accepted, its hash and when; what
  lets a second sync skip what did not change, and what the TTL sweep re-sends;
- ``outbox``: every change still to send, written in ``write()``'s transaction
  before anything is sent and deleted only after a 2xx; one row per slot, so a
  newer change to the same slot replaces an older one that was never sent;
  ``state`` is ``pending`` (retried at ``next_try``) or ``parked`` (Chariot
  refused it: kept, visible, not retried until it changes or is unparked);
- ``open_risks``: per repository, the risks its last conclusive scan left open:
  a finding missing from the next scan is remediated;
- ``repos``: per repository, its asset key and whether a scan was seen.

Why SQLite and not the run's database: this is a third-party plugin, and the
outbox must be durable even in a pipeline with no database sink.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Change", "Pending", "RepoRow", "SentRow", "StateDB"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (
    repository TEXT PRIMARY KEY, asset_key TEXT NOT NULL, grp TEXT NOT NULL,
    status TEXT, scanned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sent (
    slot TEXT PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL, repository TEXT NOT NULL,
    parent TEXT NOT NULL, live INTEGER NOT NULL, sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_due ON sent (live, sent_at);
CREATE INDEX IF NOT EXISTS sent_repository ON sent (repository);
CREATE INDEX IF NOT EXISTS sent_key ON sent (key);
CREATE TABLE IF NOT EXISTS outbox (
    slot TEXT PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, body TEXT NOT NULL, hash TEXT NOT NULL, repository TEXT NOT NULL,
    parent TEXT NOT NULL, live INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT, queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try);
CREATE TABLE IF NOT EXISTS open_risks (
    repository TEXT NOT NULL, risk_key TEXT NOT NULL, severity TEXT NOT NULL,
    PRIMARY KEY (repository, risk_key)
);
"""
_CHANGE_COLUMNS = "slot, key, kind, method, path, body, hash, repository, parent, live"


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One request to make: ``slot`` is what it replaces, ``key`` the Chariot key it touches.

    ``kind`` is ``asset``, ``attribute``, ``risk`` or ``delete`` (an attribute whose
    value changed or went away); ``parent`` is the asset it needs to exist first;
    ``live`` says whether the TTL sweep keeps it alive once sent.
    """

    slot: str
    key: str
    kind: str
    method: str
    path: str
    body: dict[str, Any]
    hash: str
    repository: str
    parent: str = ""
    live: bool = True


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    change: Change
    state: str
    attempts: int
    next_try: float
    last_error: str | None


class SentRow(msgspec.Struct, frozen=True, kw_only=True):
    change: Change
    sent_at: float


class RepoRow(msgspec.Struct, frozen=True, kw_only=True):
    repository: str
    asset_key: str
    group: str
    status: str | None
    scanned: bool


def _change(row: tuple[Any, ...]) -> Change:
    slot, key, kind, method, path, body, digest, repository, parent, live = row[:10]
    return Change(
        slot=slot,
        key=key,
        kind=kind,
        method=method,
        path=path,
        body=msgspec.json.decode(body),
        hash=digest,
        repository=repository,
        parent=parent,
        live=bool(live),
    )


def _values(change: Change) -> tuple[Any, ...]:
    c = change
    body = msgspec.json.encode(c.body).decode()
    return (c.slot, c.key, c.kind, c.method, c.path, body, c.hash, c.repository, c.parent, c.live)


class StateDB:
    """The SQLite state file; ``open()`` creates it and its folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        # WAL: a reader (rcingest's tests, an operator's sqlite3) never blocks a flush;
        # synchronous FULL: a committed outbox row survives a power cut.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "state file used before open()"
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on any error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- repositories and open risks ------------------------------------------

    def repo(self, repository: str) -> RepoRow | None:
        row = self.db.execute(
            "SELECT repository, asset_key, grp, status, scanned FROM repos WHERE repository = ?",
            (repository,),
        ).fetchone()
        if row is None:
            return None
        return RepoRow(
            repository=row[0], asset_key=row[1], group=row[2], status=row[3], scanned=bool(row[4])
        )

    def put_repo(self, row: RepoRow) -> None:
        self.db.execute(
            "INSERT INTO repos (repository, asset_key, grp, status, scanned) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (repository) DO UPDATE SET asset_key = excluded.asset_key,"
            " grp = excluded.grp, status = excluded.status, scanned = excluded.scanned",
            (row.repository, row.asset_key, row.group, row.status, int(row.scanned)),
        )

    def open_risks(self, repository: str) -> dict[str, str]:
        """Risk key → severity of the risks ``repository``'s last conclusive scan left open."""
        rows = self.db.execute(
            "SELECT risk_key, severity FROM open_risks WHERE repository = ?", (repository,)
        )
        return dict(rows.fetchall())

    def set_open_risks(self, repository: str, risks: dict[str, str]) -> None:
        self.db.execute("DELETE FROM open_risks WHERE repository = ?", (repository,))
        self.db.executemany(
            "INSERT INTO open_risks (repository, risk_key, severity) VALUES (?, ?, ?)",
            [(repository, k, s) for k, s in risks.items()],
        )

    # -- sent and outbox ------------------------------------------------------

    def sent(self, slot: str) -> SentRow | None:
        row = self.db.execute(
            f"SELECT {_CHANGE_COLUMNS}, sent_at FROM sent WHERE slot = ?",  # noqa: S608
            (slot,),
        ).fetchone()
        return None if row is None else SentRow(change=_change(row), sent_at=row[10])

    def pending(self, slot: str) -> Pending | None:
        row = self.db.execute(
            f"SELECT {_CHANGE_COLUMNS}, state, attempts, next_try, last_error"  # noqa: S608
            " FROM outbox WHERE slot = ?",
            (slot,),
        ).fetchone()
        return None if row is None else _pending(row)

    def enqueue(self, change: Change, now: float) -> None:
        """Queue ``change``, replacing whatever was queued for its slot (parked or not)."""
        self.db.execute(
            f"INSERT OR REPLACE INTO outbox ({_CHANGE_COLUMNS}, state, attempts, next_try,"  # noqa: S608
            " last_error, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0,"
            " NULL, ?)",
            (*_values(change), now),
        )

    def drop_pending(self, slot: str) -> None:
        self.db.execute("DELETE FROM outbox WHERE slot = ?", (slot,))

    def retire_repository(self, repository: str, *, include_asset: bool) -> None:
        """What was sent for ``repository`` is no longer kept alive (its asset too, if asked)."""
        kinds = "" if include_asset else " AND kind != 'asset'"
        self.db.execute(
            f"UPDATE sent SET live = 0 WHERE repository = ?{kinds}",  # noqa: S608
            (repository,),
        )

    def due(self, now: float) -> list[Pending]:
        """Pending changes whose time has come, assets first (the others need them)."""
        rows = self.db.execute(
            f"SELECT {_CHANGE_COLUMNS}, state, attempts, next_try, last_error"  # noqa: S608
            " FROM outbox WHERE state = 'pending' AND next_try <= ?"
            " ORDER BY kind != 'asset', queued_at, slot",
            (now,),
        )
        return [_pending(r) for r in rows.fetchall()]

    def waiting_parents(self) -> set[str]:
        """Asset keys still in the outbox: their attributes and risks must wait."""
        rows = self.db.execute("SELECT key FROM outbox WHERE kind = 'asset'")
        return {r[0] for r in rows.fetchall()}

    def mark_sent_many(self, accepted: list[tuple[Change, float]]) -> None:
        """Chariot accepted these changes (at those times): record them, take them off."""
        with self.transaction():
            for change, when in accepted:
                if change.kind == "delete":
                    self.db.execute(
                        "DELETE FROM sent WHERE key = ? AND kind = 'attribute'", (change.key,)
                    )
                else:
                    self.db.execute(
                        f"INSERT OR REPLACE INTO sent ({_CHANGE_COLUMNS}, sent_at)"  # noqa: S608
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (*_values(change), when),
                    )
                # Only this version: a newer change to the slot (none while flushing) stays.
                self.db.execute(
                    "DELETE FROM outbox WHERE slot = ? AND hash = ?", (change.slot, change.hash)
                )

    def mark_failed(self, change: Change, next_try: float, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_try = ?, last_error = ?"
            " WHERE slot = ? AND hash = ?",
            (next_try, error, change.slot, change.hash),
        )

    def mark_parked(self, change: Change, error: str) -> None:
        self.db.execute(
            "UPDATE outbox SET state = 'parked', attempts = attempts + 1, last_error = ?"
            " WHERE slot = ? AND hash = ?",
            (error, change.slot, change.hash),
        )

    def unpark(self) -> int:
        """Put every parked change back in the queue; how many there were."""
        cur = self.db.execute(
            "UPDATE outbox SET state = 'pending', next_try = 0 WHERE state = 'parked'"
        )
        return cur.rowcount

    def stale(self, before: float) -> list[Change]:
        """What was sent before ``before``, is kept alive, and is not queued already."""
        rows = self.db.execute(
            f"SELECT {_CHANGE_COLUMNS} FROM sent WHERE live = 1 AND sent_at < ?"  # noqa: S608
            " AND slot NOT IN (SELECT slot FROM outbox)",
            (before,),
        )
        return [_change(r) for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        """Outbox rows per state (``pending``, ``parked``)."""
        rows = self.db.execute("SELECT state, count(*) FROM outbox GROUP BY state")
        found = dict(rows.fetchall())
        return {"pending": found.get("pending", 0), "parked": found.get("parked", 0)}

    def parked(self) -> list[Pending]:
        rows = self.db.execute(
            f"SELECT {_CHANGE_COLUMNS}, state, attempts, next_try, last_error"  # noqa: S608
            " FROM outbox WHERE state = 'parked' ORDER BY slot"
        )
        return [_pending(r) for r in rows.fetchall()]


def _pending(row: tuple[Any, ...]) -> Pending:
    return Pending(
        change=_change(row), state=row[10], attempts=row[11], next_try=row[12], last_error=row[13]
    )
