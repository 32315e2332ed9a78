"""Keep SQLite's WAL checkpoints off the commit path, and the WAL bounded.

With ``wal_autocheckpoint`` on (SQLite's default), the commit that pushes the
WAL past 1,000 pages copies the WAL into the database file and fsyncs it,
inside that commit: one batch in a few hundred waits tens of milliseconds,
which a webhook sender sees as its p99, and a scan as lost throughput. The
writer connection therefore turns automatic checkpoints off and this thread,
on its own connection, runs ``PRAGMA wal_checkpoint(PASSIVE)``. PASSIVE never
blocks the writer, and the sqlite3 module releases the GIL while it runs.
Durability is unchanged: a committed transaction is in the WAL either way.

PASSIVE alone is not enough under a steady stream of commits: SQLite rewinds
the WAL only when a write transaction begins with *every* frame copied, and
the writer always appends a few more while the checkpoint runs, so the file
grows without bound (about 90 KB per webhook delivery, 0.9 GB after 10,000
deliveries, with every commit slower than the last). So once the WAL holds
``reset_frames`` frames, this thread checkpoints again at once and offers a
*reset*: the writer, between two of its transactions, runs one more PASSIVE
checkpoint on its own connection, which has only the frames of the last
batch or two left to copy (no other writer exists), and its next
transaction starts the WAL from the beginning.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from rcingest import faults

log = logging.getLogger("rcingest.database")

#: WAL size (in pages, 4 KB each) past which the writer resets the WAL: 256 MB.
RESET_FRAMES = 65_536


def _passive(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied to the database)."""
    with faults.during("checkpoint"):  # the kill test's third point (rcingest/faults.py)
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
    return int(busy), int(frames), int(copied)


class WalCheckpointer:
    """A daemon thread that checkpoints one SQLite file's WAL and keeps it bounded."""

    def __init__(
        self,
        path: str,
        *,
        interval: float = 0.5,
        busy_timeout_ms: int = 5000,
        reset_frames: int = RESET_FRAMES,
        offer_ttl: float = 0.02,
    ) -> None:
        self.path = path
        self.interval = interval
        self.busy_timeout_ms = busy_timeout_ms
        self.reset_frames = reset_frames
        #: How long an offer stays good: later, the writer has appended too much.
        self.offer_ttl = offer_ttl
        self.checkpoints = 0
        #: WAL resets done by the writer.
        self.resets = 0
        #: When the last PASSIVE found the WAL past ``reset_frames`` (monotonic), else 0.
        self._offer = 0.0
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
        wait = self.interval
        try:
            while not self._stop.wait(wait):
                wait = self.interval
                try:
                    busy, frames, copied = _passive(conn)
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    # Busy or locked: the next round tries again; the WAL only grows meanwhile.
                    log.debug("WAL checkpoint of %s skipped: %s", self.path, exc)
                    continue
                if frames >= self.reset_frames:
                    # Offer the writer a reset while little is left to copy,
                    # and keep copying often until it has taken the offer.
                    caught_up = not busy and frames - copied <= self.reset_frames // 16
                    self._offer = time.monotonic() if caught_up else 0.0
                    wait = min(self.interval, 0.05)
                else:
                    self._offer = 0.0
        finally:
            conn.close()

    def reset_if_offered(self, conn: sqlite3.Connection | None) -> None:
        """On the writer's thread, between transactions: take a fresh reset offer.

        A stale offer (older than ``offer_ttl``: the writer has appended much
        since) is left alone; the thread makes a new one shortly. The reset
        costs the writer one short checkpoint (tens of milliseconds on this
        project's benchmark machine), once per ``reset_frames`` of WAL.
        """
        offer = self._offer
        if conn is None or not offer or time.monotonic() - offer > self.offer_ttl:
            return
        self._offer = 0.0
        started = time.perf_counter()
        try:
            busy, frames, copied = _passive(conn)
        except sqlite3.Error as exc:
            log.debug("WAL reset of %s skipped: %s", self.path, exc)
            return
        took = time.perf_counter() - started
        if not busy and frames == copied:
            self.resets += 1
            log.debug("WAL of %s reset after %d frames in %.1f ms", self.path, frames, took * 1000)
