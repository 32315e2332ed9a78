"""The normaliser in a process of its own: the parent's supervisor and the child's side of the pipe.

Why a process: acknowledging a delivery costs about 150 µs of CPU and
normalising it several times that; in one process both share one core
under the GIL, so under sustained load the daemon's end-to-end rate was
the rate one core manages for both (bench/README.md, issue 15). With
``normaliser: subprocess`` ``rcingest serve`` only receives: it appends to
the inbox and answers, and starts ``rcingest normalise --supervised``, which
runs the pipeline (normaliser, backfill worker, sinks) on a core of its own.

The pipe between them carries one byte per committed append (the child
claims at once instead of at its next poll) and nothing else; when it
closes the parent is gone, however it went, and the child stops after the
batch under way. Health travels through the inbox itself: the child writes
a :class:`rcingest.inbox.model.WorkerBeat` every few seconds, and the
parent's ``/readyz`` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["NormaliserProcess", "watch_parent"]

#: Longest wait before restarting a normaliser process that exited.
MAX_RESTART_DELAY = 30.0
#: A child that ran this long before it exited restarts without delay growth.
STEADY_AFTER = 60.0


class NormaliserProcess:
    """Starts the normaliser process, restarts it when it exits, stops it on request."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.log = logger or logging.getLogger("rcingest.webhooks")
        self.stop_timeout = stop_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.restarts = 0
        #: Why it is not running (None while it is).
        self.down: str | None = "not started"
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="rcingest-normaliser-process")

    async def _spawn(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            env=self.env,
            # Its own process group: a Ctrl-C on the terminal reaches the parent,
            # which then stops the child in order (receiver first).
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.down = None
        self.log.info("normaliser process started (pid %d)", self.proc.pid)

    async def _supervise(self) -> None:
        delay = 1.0
        while True:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            ran = time.monotonic() - self.started_at
            if ran >= STEADY_AFTER:
                delay = 1.0
            self.restarts += 1
            self.down = f"the normaliser process exited (code {code}); restarting in {delay:g}s"
            self.log.error("%s", self.down)
            await asyncio.sleep(delay)
            delay = min(MAX_RESTART_DELAY, delay * 2)
            if self._stopping:
                return
            try:
                await self._spawn()
            except OSError as exc:
                self.down = f"cannot start the normaliser process: {exc}"
                self.log.error("%s", self.down)

    def wake(self) -> None:
        """Tell the child new deliveries are in (dropped when the pipe is full: it polls too)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        transport = proc.stdin.transport
        if transport.is_closing() or transport.get_write_buffer_size() > 64:
            return
        with contextlib.suppress(Exception):
            proc.stdin.write(b"w")

    def failing(self) -> str | None:
        """Why no normaliser process runs, or None."""
        if self.proc is not None and self.proc.returncode is None:
            return None
        return self.down or "the normaliser process is not running"

    async def stop(self) -> None:
        """SIGTERM (the child drains within its bound), then SIGKILL after ``stop_timeout``."""
        self._stopping = True
        proc = self.proc
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            self.log.error(
                "normaliser process %d did not stop within %.0fs; killing it (its batch "
                "stays open and is normalised at the next start)",
                proc.pid,
                self.stop_timeout,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        self.down = "stopped"


async def watch_parent(on_wake: Callable[[], None], on_gone: Callable[[], None]) -> None:
    """The child's end of the pipe (its stdin): each byte wakes, end of file stops."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            on_gone()
            return
        on_wake()
