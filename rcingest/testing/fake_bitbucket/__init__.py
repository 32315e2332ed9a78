"""A fake Bitbucket Cloud REST API for tests, plugin authors, the demo and the benchmark.

``FakeBitbucket(spec, faults)`` is an async context manager that serves a
``FakeData`` workspace on 127.0.0.1 (port 0) and exposes ``base_url``,
``counters``, the live ``faults``, what was written (``writes``) and the review
helpers (``review``); ``events.py`` builds webhook payloads from its state.
``python -m rcingest.testing.fake_bitbucket`` runs it as a process (the benchmark
does, so that the server does not share a core with the client it measures).
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from rcingest.testing.fake_bitbucket.app import make_app
from rcingest.testing.fake_bitbucket.data import FakeData, GenSpec
from rcingest.testing.fake_bitbucket.faults import COUNTERS, Counters, Faults
from rcingest.testing.fake_bitbucket.review import REVIEW, ReviewState
from rcingest.testing.fake_bitbucket.writeback import WRITES, WriteState

__all__ = ["FakeBitbucket", "FakeData", "Faults", "GenSpec", "ReviewState", "WriteState"]


class FakeBitbucket:
    """Runs the fake on loopback for the duration of an ``async with`` block."""

    def __init__(
        self,
        spec: GenSpec | FakeData | None = None,
        faults: Faults | None = None,
        *,
        expected_auth: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.data = spec if isinstance(spec, FakeData) else FakeData(spec)
        self.faults = faults or Faults()
        self.app = make_app(self.data, self.faults, expected_auth=expected_auth)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def counters(self) -> Counters:
        """Live request counters (per route, per status, peak in flight)."""
        return self.app[COUNTERS]

    @property
    def writes(self) -> WriteState:
        """Planted diffs, and the comments, statuses and reports written (with raw bodies)."""
        return self.app[WRITES]

    @property
    def review(self) -> ReviewState:
        """Reviewers, approvals, default reviewers, other tools' statuses, pushes and merges."""
        return self.app[REVIEW]

    @property
    def base_url(self) -> str:
        """What a client's ``base_url`` should be: ``http://127.0.0.1:<port>/2.0``."""
        return f"http://{self.host}:{self.port}/2.0"

    async def start(self) -> None:
        """Bind and serve (port 0 picks a free port, read back into ``port``)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBitbucket:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
