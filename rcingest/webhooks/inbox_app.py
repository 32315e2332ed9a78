"""The daemon's inbox path: acknowledge on the durable raw log, normalise behind it.

``install`` mounts the delivery route and a cleanup context that owns the
inbox, the normaliser task and the retention task. The handler does only
what :func:`rcingest.inbox.gate.admit` needs and one append (group-committed
with whatever else arrived meanwhile), then answers: 200 means the verified
raw delivery is durably in the inbox (docs/webhooks.md, "The inbox").

Three roles (``InboxSettings.role``): ``all`` acknowledges and normalises in
this process; ``receiver`` only acknowledges, and supervises the normaliser
process when it started one (``normaliser: subprocess``); ``normaliser``
(``rcingest normalise``) only normalises, serves nothing, and reports its
health in the inbox for the receiver's ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from rcingest.inbox.derive import DecodeSettings
from rcingest.inbox.gate import admit
from rcingest.inbox.lock import NormaliserLock
from rcingest.inbox.normaliser import Normaliser
from rcingest.inbox.store import Inbox
from rcingest.webhooks.app import RECEIVER, Receiver, _answer, _refuse, read_delivery
from rcingest.webhooks.inbox_state import (
    InboxSettings,
    InboxState,
    normaliser_failing,
    notes,
    process_failing,
    read_reports,
    report_health,
)
from rcingest.webhooks.normaliser_process import NormaliserProcess, watch_parent

__all__ = ["INBOX", "InboxSettings", "install"]


@dataclass
class _Slot:
    """Filled by the cleanup context (the app's state is frozen once it starts)."""

    state: InboxState | None = None


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


async def _run_normaliser(state: InboxState, r: Receiver) -> None:
    """Take the SQLite inbox's lock (waiting for another normaliser to let go), then run."""
    assert state.normaliser is not None and state.lock is not None
    lock = state.lock
    if not lock.try_acquire():
        r.logger.warning(
            "another normaliser (pid %s) holds %s; waiting for it to stop",
            lock.waited_for,
            lock.path,
        )
        await lock.acquire()
        r.logger.info("took over %s", lock.path)
    try:
        await state.normaliser.run()
    finally:
        lock.release()


async def _inbox_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[INBOX]
    r = app[RECEIVER]
    inbox = Inbox(settings.spec, synchronous=settings.synchronous, secrets=sorted(settings.secrets))
    await inbox.open()
    state = InboxState(inbox, settings)
    app[_SLOT].state = state
    tasks: list[asyncio.Task[Any]] = []
    try:
        if settings.role == "receiver":
            if settings.spawn is not None:
                state.process = NormaliserProcess(
                    settings.spawn,
                    env=settings.spawn_env,
                    logger=r.logger,
                    stop_timeout=settings.drain_timeout + 15.0,
                )
                await state.process.start()
                inbox.on_append = state.process.wake
            r.checks.append(lambda: process_failing(state))
            r.metrics.normaliser_healthy.set_function(
                lambda: 0.0 if process_failing(state) or not state.beats else 1.0
            )
            state.heartbeat = asyncio.create_task(read_reports(state, r), name="rcingest-beats")
        else:
            _start_normaliser(state, r, app)
            if settings.supervised:
                assert state.normaliser is not None
                normaliser = state.normaliser
                tasks.append(
                    asyncio.create_task(
                        watch_parent(normaliser.wake, lambda: _parent_gone(r)),
                        name="rcingest-parent-pipe",
                    )
                )
        r.probes.append(inbox.probe)

        async def readyz_notes() -> dict[str, Any]:
            return await notes(state, r)

        r.notes = readyz_notes
        r.stop_hooks.append(lambda: stop_normaliser(state, r))
        yield
    finally:
        for task in tasks:
            task.cancel()
        await stop_normaliser(state, r)
        app[_SLOT].state = None
        await inbox.close()


def _start_normaliser(state: InboxState, r: Receiver, app: web.Application) -> None:
    """``all`` and ``normaliser``: the normaliser, retention and (``normaliser``) report tasks."""
    settings, inbox = state.settings, state.inbox
    normaliser = _normaliser(r, inbox, settings, app)
    observe = normaliser.observe

    def counted(outcome: str, n: int) -> None:
        state.settled += n
        observe(outcome, n)

    normaliser.observe = counted
    inbox.on_append = normaliser.wake
    state.normaliser = normaliser
    state.lock = NormaliserLock(settings.spec)
    r.checks.append(lambda: normaliser_failing(state, r))
    r.metrics.normaliser_healthy.set_function(lambda: 0.0 if normaliser_failing(state, r) else 1.0)
    state.task = asyncio.create_task(_run_normaliser(state, r), name="rcingest-normaliser")
    state.retention = asyncio.create_task(_retention(inbox, settings, r), name="rcingest-retention")
    if settings.role == "normaliser":
        state.heartbeat = asyncio.create_task(report_health(state, r), name="rcingest-beat")


def _parent_gone(r: Receiver) -> None:
    """The receiver that started us is gone: the source stops as on SIGTERM."""
    r.logger.warning("the receiving daemon is gone (its pipe closed); stopping")
    r.parent_gone.set()


async def stop_normaliser(state: InboxState, r: Receiver) -> None:
    """Let the batch under way finish (bounded), then end the tasks; never raises."""
    if state.heartbeat is not None:
        state.heartbeat.cancel()
        state.heartbeat = None
    if state.process is not None:
        # The receiver has stopped appending (stop hooks run after the
        # requests finished): the child drains what was acknowledged.
        process, state.process = state.process, None
        await process.stop()
    if state.normaliser is None:
        return
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
    if settings.role != "normaliser":
        app.router.add_post(app[RECEIVER].settings.path, handle_inbox_delivery)
