"""Move SQLite's WAL checkpoints off the commit path.

With ``wal_autocheckpoint`` on (SQLite's default), the commit that pushes the
WAL past 1,000 pages copies the WAL into the database file and fsyncs it,
inside that commit: one batch in a few hundred waits tens of milliseconds,
which a webhook sender sees as its p99, and a scan as lost throughput. The
writer connection therefore turns automatic checkpoints off and this thread,
on its own connection, runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
``interval`` seconds. PASSIVE never blocks the writer; the sqlite3 module
releases the GIL while it runs. Durability is unchanged: a committed
transaction is in the WAL either way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("rcingest.database")


class WalCheckpointer:
    """A daemon thread that checkpoints one SQLite file's WAL periodically."""

    def __init__(self, path: str, *, interval: float = 0.5, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.interval = interval
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="rcingest-wal-checkpoint", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            log.warning("WAL checkpointer for %s could not connect: %s", self.path, exc)
            return
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    # Busy or locked: the next round tries again; the WAL only grows meanwhile.
                    log.debug("WAL checkpoint of %s skipped: %s", self.path, exc)
        finally:
            conn.close()
