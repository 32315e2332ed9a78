"""The WAL checkpointer keeps a continuously written SQLite file's WAL bounded.

Without the writer-side reset, SQLite rewinds the WAL only when a write
begins with every frame checkpointed, which a steady stream of commits
never allows: the WAL grows by every page every commit dirties. These tests
write without pause and check the file stays near the reset bound, with
every row there.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from rcingest.default_plugins.database.checkpointer import WalCheckpointer

COMMITS = 1500
ROWS = 20  # random keys: each row dirties a different index page


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA journal_size_limit={1024 * 1024}")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    return conn


def _write(conn: sqlite3.Connection, n: int) -> None:
    rows = [(hashlib.sha1(f"{n}:{i}".encode()).hexdigest(), "x" * 100) for i in range(ROWS)]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    conn.execute("COMMIT")


def _run(path: Path, *, reset: bool) -> tuple[WalCheckpointer, int]:
    """Write COMMITS transactions (bounded in time); return the checkpointer, the largest WAL."""
    conn = _writer(path)
    ckpt = WalCheckpointer(str(path), interval=0.005, reset_frames=300, offer_ttl=0.05)
    ckpt.start()
    wal = Path(f"{path}-wal")
    biggest = 0
    deadline = time.monotonic() + 60
    try:
        for n in range(COMMITS):
            _write(conn, n)
            if reset:
                ckpt.reset_if_offered(conn)
            biggest = max(biggest, wal.stat().st_size)
            if time.monotonic() > deadline:
                break
    finally:
        ckpt.stop()
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == (n + 1) * ROWS
    conn.close()
    return ckpt, biggest


def test_writer_resets_keep_the_wal_bounded(tmp_path: Path) -> None:
    ckpt, biggest = _run(tmp_path / "reset.db", reset=True)
    assert ckpt.resets >= 3
    # 300 frames of 4 KB is the reset bound; the WAL overshoots it until an
    # offer finds the checkpoint caught up (6-13 MB seen here). Without
    # resets the same writes leave a 164 MB WAL (the control below).
    assert biggest < 32 * 1024 * 1024, biggest


def test_without_writer_resets_the_wal_keeps_growing(tmp_path: Path) -> None:
    # The control: the same writes with only the background PASSIVE
    # checkpoints. It shows what the reset prevents.
    ckpt, biggest = _run(tmp_path / "grow.db", reset=False)
    assert ckpt.resets == 0
    assert biggest > 64 * 1024 * 1024, biggest
