"""One normaliser per SQLite inbox: an advisory file lock next to the inbox file.

A SQLite claim is a plain read (SQLite has no ``SKIP LOCKED``), so two
normalisers on one SQLite inbox would both claim the oldest rows and store
them twice over (harmless for the sinks, which upsert, but wasted work and
interleaved settles). Whoever normalises a SQLite inbox (``rcingest serve``
in-process, or ``rcingest normalise``) first takes ``<inbox>.normaliser.lock``
with ``flock``; a second one waits for it and says so. The kernel drops the
lock when its process ends, however it ends, so a ``kill -9`` never leaves a
stale lock behind. PostgreSQL inboxes need none: claims skip locked rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

__all__ = ["NormaliserLock", "lock_path"]


def lock_path(spec: str) -> Path | None:
    """The lock file of the SQLite inbox at ``spec`` (None for a PostgreSQL URL)."""
    if "://" in spec:
        return None
    path = Path(spec)
    return path.with_name(path.name + ".normaliser.lock")


class NormaliserLock:
    """``async with NormaliserLock(spec):`` waits until this process is the inbox's normaliser."""

    def __init__(self, spec: str, poll: float = 0.25) -> None:
        self.path = lock_path(spec)
        self.poll = poll
        self._fd: int | None = None
        #: The pid that held the lock when we first found it taken (None: we never waited).
        self.waited_for: str | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (True), without waiting."""
        if self.path is None or self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.waited_for is None:
                with contextlib.suppress(OSError):
                    self.waited_for = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            return False
        # Who holds it, for the message of the one that waits.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    async def acquire(self) -> None:
        # Polled: the holder is another process, nothing here could signal us.
        while not self.try_acquire():  # noqa: ASYNC110
            await asyncio.sleep(self.poll)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    @property
    def held(self) -> bool:
        return self.path is None or self._fd is not None

    async def __aenter__(self) -> NormaliserLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
