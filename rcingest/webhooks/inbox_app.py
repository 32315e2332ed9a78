"""The daemon's inbox path: acknowledge on the durable raw log, normalise behind it.

``install`` mounts the delivery route and a cleanup context that owns the
inbox, the normaliser task and the retention task. The handler does only
what :func:`rcingest.inbox.gate.admit` needs and one append (group-committed
with whatever else arrived meanwhile), then answers: 200 means the verified
raw delivery is durably in the inbox (docs/webhooks.md, "The inbox").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from rcingest.inbox.derive import DecodeSettings
from rcingest.inbox.gate import admit
from rcingest.inbox.normaliser import Normaliser
from rcingest.inbox.store import Inbox
from rcingest.webhooks.app import RECEIVER, Receiver, _answer, _refuse, read_delivery

__all__ = ["INBOX", "InboxSettings", "install"]


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


@dataclass
class _State:
    inbox: Inbox
    normaliser: Normaliser
    settings: InboxSettings
    task: asyncio.Task[None] | None = None
    retention: asyncio.Task[None] | None = None


@dataclass
class _Slot:
    """Filled by the cleanup context (the app's state is frozen once it starts)."""

    state: _State | None = None


INBOX = web.AppKey("inbox", InboxSettings)
_SLOT = web.AppKey("inbox_slot", _Slot)


async def handle_inbox_delivery(request: web.Request) -> web.Response:
    """``POST <path>``: verify, parse the minimum, append to the inbox, then answer."""
    r = request.app[RECEIVER]
    state = request.app[_SLOT].state
    s = r.settings
    r.entering += 1
    r.idle.clear()
    try:
        body = await read_delivery(r, request)
        if isinstance(body, web.Response):
            return body
        admission = admit(
            request.headers,
            body,
            secret=s.secret,
            accept_secret_header=s.accept_secret_header,
            max_body_bytes=s.max_body_bytes,
            received_at=time.time(),
            scan_pull_requests=s.scan_pull_requests,
            compliance_keys=s.compliance_keys,
            inventory=s.inventory,
        )
        arrival = admission.arrival
        if arrival is None:
            return _refuse(r, admission.verdict)
        if state is None:  # not started, or already stopped
            return _answer(503, "the inbox is not open; retry")
        appended = state.inbox.append(arrival)
    finally:
        r.entering -= 1
        if not r.entering:
            r.idle.set()
    try:
        # Cancelling the future on timeout does not stop its flush: the arrival
        # may still be stored, and the sender's retry then gets "duplicate".
        async with asyncio.timeout(s.ack_timeout):
            new = await appended
    except Exception as exc:  # the inbox could not store it: the sender retries
        r.note_write(False)
        r.metrics.delivery(arrival.event, "unavailable")
        r.stats.incr("webhook.rejected")
        if not isinstance(exc, TimeoutError):
            r.logger.error("inbox append failed: %s", r.redact(f"{type(exc).__name__}: {exc}"))
        return _answer(503, "not stored; retry", request_uuid=arrival.request_uuid)
    r.note_write(True)
    outcome = "stored" if new else "duplicate"
    r.metrics.delivery(arrival.event, outcome)
    r.stats.incr(f"webhook.{outcome}")
    return _answer(200, outcome, request_uuid=arrival.request_uuid)


def _normaliser(
    r: Receiver, inbox: Inbox, settings: InboxSettings, app: web.Application
) -> Normaliser:
    from rcingest.webhooks.app import BACKFILL

    backfill = app[BACKFILL]
    s = r.settings

    async def add_jobs(jobs: Sequence[Any]) -> None:
        if r.backfill is not None:
            await r.backfill.store.add(jobs)

    def jobs_added() -> None:
        if r.backfill is not None:
            r.backfill.wake()

    def observe(outcome: str, n: int) -> None:
        if n:
            r.metrics.inbox_normalised.labels(outcome).inc(n)
            r.stats.incr(f"webhook.inbox.{outcome}", n)

    return Normaliser(
        inbox,
        r.commit,
        settings=DecodeSettings(
            scan_pull_requests=s.scan_pull_requests,
            compliance_keys=s.compliance_keys,
            inventory=s.inventory,
            backfill=backfill is not None,
        ),
        add_jobs=add_jobs if backfill is not None else None,
        jobs_added=jobs_added,
        batch=settings.batch,
        max_attempts=settings.max_attempts,
        retry_delay=settings.retry_delay,
        poll_interval=settings.poll_interval,
        observe=observe,
        delay=r.metrics.normalisation_delay.observe,
        logger=r.logger,
        redact=r.redact,
        busy=inbox.busy,
        defer=settings.defer,
    )


async def _retention(inbox: Inbox, settings: InboxSettings, r: Receiver) -> None:
    """Delete normalised deliveries older than the retention, at start and hourly."""
    while True:
        try:
            gone = await inbox.purge(time.time() - settings.retention_days * 86_400)
            if gone:
                r.logger.info("inbox: deleted %d deliveries past the retention", gone)
        except Exception as exc:
            r.logger.error("inbox retention: %s", r.redact(str(exc)))
        await asyncio.sleep(3600)


async def _notes(
    inbox: Inbox, normaliser: Normaliser, settings: InboxSettings, r: Receiver
) -> dict[str, Any]:
    """The inbox's figures for /readyz (and the gauges /metrics shows).

    Readiness itself depends on the append path (and the pipeline's probe):
    a daemon whose normalisation lags still acknowledges safely, so it says
    so here instead of refusing traffic.
    """
    lag = await inbox.lag()
    counts = await inbox.counts()
    r.metrics.normalisation_lag.set(lag)
    r.metrics.inbox_pending.set(counts["pending"] + counts["failed"])
    r.metrics.inbox_parked.set(counts["parked"])
    notes: dict[str, Any] = {"inbox": {"lag_seconds": round(lag, 3), **counts}}
    if normaliser.last_failure and counts["failed"] + counts["parked"]:
        notes["inbox"]["last_failure"] = normaliser.last_failure
    if settings.lag_threshold and lag > settings.lag_threshold:
        notes["lagging"] = (
            f"normalisation lag {lag:.1f}s exceeds {settings.lag_threshold:g}s "
            f"({counts['pending'] + counts['failed']} deliveries to normalise)"
        )
    return notes


async def _inbox_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[INBOX]
    r = app[RECEIVER]
    inbox = Inbox(settings.spec, synchronous=settings.synchronous, secrets=sorted(settings.secrets))
    await inbox.open()
    normaliser = _normaliser(r, inbox, settings, app)
    inbox.on_append = normaliser.wake
    state = _State(inbox, normaliser, settings)
    app[_SLOT].state = state

    def failing() -> str | None:
        task = state.task
        if task is not None and task.done() and not r.closing:
            return "the normaliser stopped"
        if not normaliser.healthy:
            return f"the normaliser is failing: {normaliser.last_error}"
        return None

    async def notes() -> dict[str, Any]:
        return await _notes(inbox, normaliser, settings, r)

    r.checks.append(failing)
    r.probes.append(inbox.probe)
    r.notes = notes
    r.metrics.normaliser_healthy.set_function(lambda: 0.0 if failing() else 1.0)
    state.task = asyncio.create_task(normaliser.run(), name="rcingest-normaliser")
    state.retention = asyncio.create_task(_retention(inbox, settings, r), name="rcingest-retention")
    r.stop_hooks.append(lambda: stop_normaliser(state, r))
    try:
        yield
    finally:
        await stop_normaliser(state, r)
        app[_SLOT].state = None
        await inbox.close()


async def stop_normaliser(state: _State, r: Receiver) -> None:
    """Let the batch under way finish (bounded), then end the tasks; never raises."""
    # What is acknowledged is normalised before the pipeline closes, within
    # the bound; the rest waits in the inbox for the next start.
    drain = state.settings.drain_timeout
    state.normaliser.stop(drain=drain)
    timeout = drain + 5.0  # the batch under way when the drain time is up
    for task in (state.retention, state.task):
        if task is None:
            continue
        if task is state.retention:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({task}, timeout=timeout)
            r.logger.error("normaliser did not finish within %.0fs; its batch stays open", timeout)
    state.task = state.retention = None


def install(app: web.Application, settings: InboxSettings) -> None:
    """Mount the inbox path on ``app`` (see :func:`rcingest.webhooks.app.create_app`)."""
    app[INBOX] = settings
    app[_SLOT] = _Slot()
    app.cleanup_ctx.append(_inbox_context)
    app.router.add_post(app[RECEIVER].settings.path, handle_inbox_delivery)
