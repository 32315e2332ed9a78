"""The inbox path's settings and state, and how its health is judged and reported.

:mod:`rcingest.webhooks.inbox_app` owns the tasks; this module holds what
``/readyz`` and ``/metrics`` read from them: the inbox's figures, why the
normaliser (in this process, or the normaliser process a receiver started)
is not doing its work, and the reports normaliser processes write into the
inbox (``webhook_inbox_workers``) so that a receiver can tell.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from rcingest.inbox.lock import NormaliserLock
from rcingest.inbox.model import WorkerBeat
from rcingest.inbox.normaliser import Normaliser
from rcingest.inbox.store import Inbox
from rcingest.webhooks.app import Receiver
from rcingest.webhooks.normaliser_process import NormaliserProcess

__all__ = [
    "BEAT_INTERVAL",
    "BEAT_STALE",
    "InboxSettings",
    "InboxState",
    "normaliser_failing",
    "notes",
    "process_failing",
    "read_reports",
    "report_health",
]


@dataclass(frozen=True)
class InboxSettings:
    """Where the inbox is and how its normaliser behaves (from the source's Config)."""

    spec: str
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    secrets: frozenset[str] = frozenset()
    #: Whether backfill jobs can run (REST credentials configured).
    backfill: bool = False
    batch: int = 256
    max_attempts: int = 8
    retry_delay: float = 5.0
    #: Seconds between claims when idle: other daemons' appends (PostgreSQL)
    #: and due retries are found this way; our own appends wake it at once.
    poll_interval: float = 1.0
    #: Days a normalised delivery's raw body is kept.
    retention_days: float = 30.0
    #: Normalisation lag (seconds) past which /readyz says the daemon is behind.
    lag_threshold: float = 60.0
    #: Seconds the normaliser waits at most while deliveries keep arriving.
    defer: float = 1.0
    #: Seconds a stop keeps normalising what was acknowledged, then leaves the rest.
    drain_timeout: float = 10.0
    #: What this process does with the inbox (see the module's docstring).
    role: Literal["all", "receiver", "normaliser"] = "all"
    #: ``receiver``: the command line of the normaliser process to start and
    #: supervise (None: the normaliser runs elsewhere, ``normaliser: external``).
    spawn: tuple[str, ...] | None = None
    #: ``receiver``: the environment of that process (None: this one's).
    spawn_env: dict[str, str] | None = None
    #: ``normaliser``: started by a receiver, whose pipe is our stdin.
    supervised: bool = False


@dataclass
class InboxState:
    """What the inbox context started, for the handler, the checks and the stop."""

    inbox: Inbox
    settings: InboxSettings
    #: None in the receiver role.
    normaliser: Normaliser | None = None
    task: asyncio.Task[None] | None = None
    retention: asyncio.Task[None] | None = None
    #: ``all`` and ``normaliser``: the SQLite inbox's one-normaliser lock.
    lock: NormaliserLock | None = None
    #: ``receiver``: the normaliser process it started, and what the workers last reported.
    process: NormaliserProcess | None = None
    beats: list[WorkerBeat] = field(default_factory=list)
    #: ``normaliser``: the heartbeat writer, or ``receiver``: its reader.
    heartbeat: asyncio.Task[None] | None = None
    settled: int = 0


#: Seconds between a normaliser process's reports.
BEAT_INTERVAL = 2.0
#: A normaliser that has not reported for this long is taken for gone.
BEAT_STALE = 15.0


async def notes(state: InboxState, r: Receiver) -> dict[str, Any]:
    """The inbox's figures for /readyz (and the gauges /metrics shows).

    Readiness itself depends on the append path (and the pipeline's probe):
    a daemon whose normalisation lags still acknowledges safely, so it says
    so here instead of refusing traffic.
    """
    inbox, settings, normaliser = state.inbox, state.settings, state.normaliser
    lag = await inbox.lag()
    counts = await inbox.counts()
    r.metrics.normalisation_lag.set(lag)
    r.metrics.inbox_pending.set(counts["pending"] + counts["failed"])
    r.metrics.inbox_parked.set(counts["parked"])
    notes: dict[str, Any] = {"inbox": {"lag_seconds": round(lag, 3), **counts}}
    if normaliser is not None and normaliser.last_failure and counts["failed"] + counts["parked"]:
        notes["inbox"]["last_failure"] = normaliser.last_failure
    if settings.role == "receiver":
        now = time.time()
        notes["normalisers"] = [
            {
                "worker": b.worker,
                "seconds_since_report": round(now - b.beat_at, 1),
                "healthy": b.healthy,
                "normalised": b.normalised,
                **({"last_error": b.last_error} if b.last_error else {}),
            }
            for b in state.beats
        ]
        if not state.beats:
            notes["normaliser"] = f"no normaliser has reported in the last {BEAT_STALE:g}s"
    if settings.lag_threshold and lag > settings.lag_threshold:
        notes["lagging"] = (
            f"normalisation lag {lag:.1f}s exceeds {settings.lag_threshold:g}s "
            f"({counts['pending'] + counts['failed']} deliveries to normalise)"
        )
    return notes


def normaliser_failing(state: InboxState, r: Receiver) -> str | None:
    """``all`` and ``normaliser``: why this process's normaliser does not do its work."""
    normaliser, task = state.normaliser, state.task
    if normaliser is None:
        return None
    if task is not None and task.done() and not r.closing:
        return "the normaliser stopped"
    if not normaliser.healthy:
        return f"the normaliser is failing: {normaliser.last_error}"
    return None


def process_failing(state: InboxState) -> str | None:
    """``receiver`` with a normaliser process: why it does not do its work."""
    process = state.process
    if process is None:
        return None
    down = process.failing()
    if down is not None:
        return down
    mine = f"{socket.gethostname()}:{process.pid}"
    beat = next((b for b in state.beats if b.worker == mine), None)
    if beat is None:
        up = time.monotonic() - process.started_at
        # A child still loading the pipeline has not reported yet.
        return f"the normaliser process has not reported for {up:.0f}s" if up > BEAT_STALE else None
    if not beat.healthy:
        return f"the normaliser process is failing: {beat.last_error}"
    return None


async def report_health(state: InboxState, r: Receiver) -> None:
    """``normaliser``: report this process's health in the inbox every BEAT_INTERVAL."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    started = time.time()
    while True:
        failing = normaliser_failing(state, r) or r.backfill_failure()
        lock = state.lock
        if failing is None and lock is not None and not lock.held:
            failing = f"waiting for another normaliser (pid {lock.waited_for}) to stop"
        try:
            await state.inbox.beat(
                WorkerBeat(
                    worker=worker,
                    started_at=started,
                    beat_at=time.time(),
                    healthy=failing is None,
                    last_error=r.redact(failing or ""),
                    normalised=state.settled,
                )
            )
        except Exception as exc:
            r.logger.error("normaliser report: %s", r.redact(f"{type(exc).__name__}: {exc}"))
        await asyncio.sleep(BEAT_INTERVAL)


async def read_reports(state: InboxState, r: Receiver) -> None:
    """``receiver``: keep what the normalisers reported at hand for /readyz."""
    while True:
        try:
            state.beats = await state.inbox.workers(BEAT_STALE)
        except Exception as exc:
            r.logger.error("reading normaliser reports: %s", r.redact(f"{exc}"))
        await asyncio.sleep(BEAT_INTERVAL)
