"""The aiohttp.web application of the webhook daemon: thin I/O around the sans-I/O core.

``create_app`` is the factory: typed ``AppKey`` state, a cleanup context that
owns the backfill store, the REST client and the backfill worker, and the
routes ``POST <path>``, ``GET /healthz``, ``GET /readyz`` and ``GET /metrics``.
The handler streams the body under a cap, runs :func:`receive` (size,
signature, decoding), records backfill jobs durably, hands the records to
the pipeline and answers 2xx only once the pipeline acknowledged them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from rcingest.bitbucket.client import BitbucketClient, ClientConfig
from rcingest.compliance.gather import Gatherer
from rcingest.interfaces import Stats
from rcingest.records import Record
from rcingest.webhooks.backfill import BackfillStore, BackfillWorker, fetch_job
from rcingest.webhooks.compliance import ComplianceChecks
from rcingest.webhooks.intake import PROBE_STREAM, Closed, Intake, RecentDeliveries
from rcingest.webhooks.inventory import fetch_repository
from rcingest.webhooks.metrics import CONTENT_TYPE_LATEST, WebhookMetrics
from rcingest.webhooks.prscan import PullRequestScans
from rcingest.webhooks.receive import Verdict, receive, too_large

__all__ = ["BACKFILL", "RECEIVER", "BackfillSettings", "Receiver", "ReceiverSettings", "create_app"]

log = logging.getLogger("rcingest.webhooks")
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class ReceiverSettings:
    """What the handler needs to know (from the source's Config)."""

    path: str = "/webhooks/bitbucket"
    secret: str | None = None
    accept_secret_header: bool = False
    max_body_bytes: int = 262_144
    #: Seconds a delivery waits for the database before 503 (Bitbucket gives 10).
    ack_timeout: float = 9.0
    #: Seconds /readyz waits for its probe to come back through the pipeline.
    ready_timeout: float = 2.0
    #: Queue a ``pr_scan`` job for each created/updated open pull request.
    scan_pull_requests: bool = False
    #: The compliance status keys when a policy is set (None: no compliance jobs).
    compliance_keys: frozenset[str] | None = None
    #: Repository events update the inventory (``repo_sync`` jobs).
    inventory: bool = False
    #: A pipeline consumes in this process (False: a receiver whose normaliser
    #: runs in another process; readiness then probes the inbox only).
    pipeline: bool = True


@dataclass(frozen=True)
class BackfillSettings:
    """How the backfill worker reaches Bitbucket and where it keeps its queue."""

    client: ClientConfig
    store: BackfillStore
    max_commits: int = 1000
    max_attempts: int = 8
    retry_delay: float = 5.0
    poll_interval: float = 5.0
    secrets: frozenset[str] = frozenset()
    #: The pipeline's scanners: ``pr_scan`` jobs run them (none: no scans are queued).
    scanners: Sequence[Any] = ()
    max_diff_bytes: int = 10 * 1024 * 1024
    #: ``compliance`` jobs: the policy (None: none are queued), its status key, and
    #: the story_keys enricher's (mode, projects).
    policy: Any = None
    compliance_key: str = "rcingest-compliance"
    story: tuple[str, list[str] | None] = ("strict", None)
    #: ``repo_sync`` jobs: the inventory filters applied to what they read.
    inventory_filters: Any = None


@dataclass
class Receiver:
    """The daemon's shared state: settings, the intake, metrics and counters."""

    settings: ReceiverSettings
    intake: Intake
    metrics: WebhookMetrics
    stats: Stats
    logger: logging.Logger = log
    redact: Callable[[str], str] = lambda s: s
    recent: RecentDeliveries = field(default_factory=RecentDeliveries)
    backfill: BackfillWorker | None = None
    backfill_task: asyncio.Task[None] | None = None
    #: Set when the daemon starts stopping: new requests get 503 at once.
    closing: bool = False
    #: Handlers between "accepted the request" and "handed over or answered".
    entering: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    _probe: asyncio.Future[bool] | None = None
    _probe_at: float = 0.0
    _probe_ok: bool = False
    #: When a delivery's commit last failed (None: the last one went in).
    _failed_at: float | None = None
    #: More reasons not to be ready (the inbox's normaliser); each gives None when fine.
    checks: list[Callable[[], str | None]] = field(default_factory=list)
    #: Extra fields for the /readyz body (the inbox's lag), read at each call.
    notes: Callable[[], Awaitable[dict[str, Any]]] | None = None
    #: More write probes for /readyz (the inbox's); each True when it committed.
    probes: list[Callable[[], Awaitable[bool]]] = field(default_factory=list)
    #: Run by ``stop`` before the intake closes (the normaliser finishing its batch).
    stop_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Set in a normaliser process when the daemon that started it is gone.
    parent_gone: asyncio.Event = field(default_factory=asyncio.Event)

    def note_write(self, ok: bool) -> None:
        """A delivery was committed (``ok``) or not: /readyz follows at once.

        Without this a cached probe answered 200 for up to a second and a
        half after deliveries began to get 503 (issue 15, defect 7).
        """
        if ok:
            self._failed_at = None
        elif self._failed_at is None:
            self._failed_at = time.monotonic()
            self._probe_at = 0.0  # the next /readyz probes afresh

    async def deliver(self, records: list[Record]) -> bool:
        """Hand ``records`` to the pipeline and wait until committed (False when not)."""
        try:
            sub = self.intake.submit(records)
        except Closed:
            return False
        return await sub.future

    async def commit(self, records: list[Record]) -> str | None:
        """Hand ``records`` to the pipeline; None once committed, else why not."""
        try:
            sub = self.intake.submit(records)
        except Closed as exc:
            return str(exc)
        if await sub.future:
            return None
        error = sub.error
        return "a sink did not commit it" if error is None else self.redact(f"{error}")

    async def ready(self) -> tuple[bool, str]:
        """Readiness: a probe checkpoint was committed by the sinks and came back.

        The probe carries a state, so the cursor-storing sink (the database)
        saves it as the ``webhook.readyz`` cursor in a real transaction: the
        answer means "the database is reachable and writable right now".
        """
        if self.closing or self.intake.closed:
            return False, "stopping"
        if self.settings.pipeline and not self.intake.consuming:
            return False, "the pipeline is not consuming deliveries"
        for check in (self.backfill_failure, *self.checks):
            failing = check()
            if failing is not None:
                return False, failing
        now = time.monotonic()
        if self._probe is None and now - self._probe_at > 1.0:
            # One probe at a time, its answer reused for a second: a load
            # balancer polling hard must not turn into a write storm.
            self._probe = asyncio.ensure_future(self._run_probe())
        if self._failed_at is not None:
            # Not waiting: the probe started above clears this once the
            # database commits again.
            return False, "the last database write failed"
        if self._probe is not None:
            await asyncio.shield(self._probe)
        if self._probe_ok:
            return True, "ready"
        where = "database" if self.settings.pipeline else "inbox"
        return False, f"the {where} did not commit a probe"

    def backfill_failure(self) -> str | None:
        """Why the backfill worker is not doing its work, or None when it is (or there is none)."""
        if self.backfill is None:
            return None
        task = self.backfill_task
        if task is not None and task.done() and not self.closing:
            return "the backfill worker stopped"
        if not self.backfill.healthy:
            return f"the backfill queue is failing: {self.backfill.last_error}"
        return None

    async def _run_probe(self) -> bool:
        started = time.monotonic()
        try:
            ok = True
            if self.settings.pipeline:
                state = {"probed_at": datetime.now(UTC).isoformat()}
                sub = self.intake.submit([], stream=PROBE_STREAM, state=state)
                ok = await asyncio.wait_for(asyncio.shield(sub.future), self.settings.ready_timeout)
            for probe in self.probes:  # the inbox: a real write transaction too
                ok = ok and await asyncio.wait_for(probe(), self.settings.ready_timeout)
        except (Closed, TimeoutError):
            ok = False
        except Exception:
            ok = False  # the probe could not write: that is the answer
        self._probe_ok, self._probe_at, self._probe = ok, time.monotonic(), None
        if ok and self._failed_at is not None and self._failed_at <= started:
            self._failed_at = None  # committed after the failure: writable again
        return ok


RECEIVER = web.AppKey("receiver", Receiver)
BACKFILL: web.AppKey[BackfillSettings | None] = web.AppKey("backfill")


def _answer(status: int, reason: str, **extra: Any) -> web.Response:
    return web.Response(
        status=status,
        body=_json.encode({"status": status, "reason": reason, **extra}),
        content_type="application/json",
    )


async def _read_capped(request: web.Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` (never buffered whole)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(r: Receiver, verdict: Verdict) -> web.Response:
    r.metrics.delivery(verdict.event or "", verdict.outcome)
    r.stats.incr(f"webhook.{verdict.outcome}")
    if verdict.outcome == "bad_signature":
        r.metrics.signature_failures.inc()
    if verdict.status >= 400:
        r.logger.warning("webhook refused with %d: %s", verdict.status, verdict.reason)
    resp = _answer(verdict.status, verdict.reason)
    if verdict.outcome == "too_large":
        # The rest of the body is not read; the connection cannot be reused.
        resp.force_close()
    return resp


async def read_delivery(r: Receiver, request: web.Request) -> bytes | web.Response:
    """The request's body, or the answer when it must not be read: stopping (503),
    compressed (415), too large (413). Shared by both acknowledgement paths."""
    if r.closing or r.intake.closed:
        r.stats.incr("webhook.unavailable")
        return _answer(503, "stopping; retry")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Bitbucket sends bodies uncompressed and signs what it sends; a
        # compressed body is refused rather than decompressed, so the
        # signature is only ever checked over the bytes on the wire
        # (docs/webhooks.md, "Compressed bodies").
        verdict = Verdict(
            status=415,
            reason=f"Content-Encoding {encoding!r} not accepted; send the body uncompressed",
            outcome="bad_request",
        )
        return _refuse(r, verdict)
    limit = r.settings.max_body_bytes
    early = too_large(request.content_length, limit)
    if early is not None:
        return _refuse(r, early)
    body = await _read_capped(request, limit)
    if body is None:
        return _refuse(r, Verdict(status=413, reason="body too large", outcome="too_large"))
    return body


async def handle_delivery(request: web.Request) -> web.Response:
    """``POST <path>``: verify, decode, store durably, then answer."""
    r = request.app[RECEIVER]
    s = r.settings
    r.entering += 1
    r.idle.clear()
    try:
        body = await read_delivery(r, request)
        if isinstance(body, web.Response):
            return body
        verdict = receive(
            request.headers,
            body,
            secret=s.secret,
            accept_secret_header=s.accept_secret_header,
            max_body_bytes=s.max_body_bytes,
            received_at=datetime.now(UTC),
            scan_pull_requests=s.scan_pull_requests,
            compliance_keys=s.compliance_keys,
            inventory=s.inventory,
        )
        decoded = verdict.decoded
        if decoded is None:
            return _refuse(r, verdict)
        delivery = decoded.delivery
        r.stats.incr("webhook.deliveries")
        repeat = delivery.request_uuid in r.recent
        # A replay carries its records again: the upserts refresh their
        # last_seen_at and duplicate nothing (docs/database.md, "Replays").
        records: list[Record] = [*decoded.records, delivery]
        if not repeat:
            if decoded.truncated:
                r.stats.incr("webhook.truncated", decoded.truncated)
            if decoded.jobs and r.backfill is not None:
                try:
                    await r.backfill.store.add(decoded.jobs)
                except Exception as exc:
                    r.logger.error("backfill queue write failed: %s", r.redact(str(exc)))
                    r.metrics.delivery(delivery.event, "unavailable")
                    return _answer(503, "could not record follow-up work; retry")
            elif decoded.truncated:
                # No credentials: the payload's 5 commits are all we will know.
                delivery.outcome = "truncated"
                r.stats.incr("webhook.truncated_unfilled", decoded.truncated)
        try:
            sub = r.intake.submit(records)
        except Closed as exc:
            r.metrics.delivery(delivery.event, "unavailable")
            return _answer(503, f"{exc}; retry")
    finally:
        r.entering -= 1
        if not r.entering:
            r.idle.set()
    try:
        ok = await asyncio.wait_for(asyncio.shield(sub.future), s.ack_timeout)
    except TimeoutError:
        r.intake.forget(sub)
        ok = False
    r.note_write(ok)
    if not ok:
        r.metrics.delivery(delivery.event, "unavailable")
        r.stats.incr("webhook.rejected")
        return _answer(503, "not stored; retry", request_uuid=delivery.request_uuid)
    r.recent.add(delivery.request_uuid)
    outcome = "duplicate" if repeat else "stored"
    r.metrics.delivery(delivery.event, outcome)
    r.stats.incr(f"webhook.{outcome}")
    if not repeat and decoded.jobs and r.backfill is not None:
        r.backfill.wake()
    return _answer(200, outcome, request_uuid=delivery.request_uuid)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return _answer(200, "alive")


async def readyz(request: web.Request) -> web.Response:
    """Ready: accepting, and the pipeline commits (an empty probe round trip)."""
    r = request.app[RECEIVER]
    ok, reason = await r.ready()
    extra: dict[str, Any] = {}
    if r.notes is not None:
        with contextlib.suppress(Exception):  # a note must never fail the probe
            extra = await r.notes()
    if ok and extra.get("lagging"):
        reason = f"{reason}; {extra['lagging']}"
    return _answer(200 if ok else 503, reason, **extra)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    r = request.app[RECEIVER]
    if r.backfill is not None:
        with contextlib.suppress(Exception):
            r.metrics.backfill_pending.set((await r.backfill.store.counts()).get("pending", 0))
    if r.notes is not None:
        with contextlib.suppress(Exception):
            await r.notes()  # refreshes the inbox gauges
    resp = web.Response(body=r.metrics.render())
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def _backfill_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the backfill store, the REST client and the worker task."""
    settings = app[BACKFILL]
    r = app[RECEIVER]
    if settings is None:
        yield
        return
    settings.store.mask(settings.secrets)
    await settings.store.open()
    try:
        async with BitbucketClient(
            settings.client, r.stats, r.logger, secrets=settings.secrets
        ) as client:
            scans = PullRequestScans(client, settings.scanners, settings.max_diff_bytes)
            checks = None
            if settings.policy is not None:
                checks = ComplianceChecks(
                    Gatherer(
                        client,
                        settings.policy,
                        frozenset({settings.compliance_key}),
                        settings.story,
                    )
                )

            async def fetch(job: Any) -> list[Record]:
                r.metrics.backfill_requests.labels(job.kind, "started").inc()
                if job.kind == "pr_scan":
                    return await scans.fetch(job)
                if job.kind == "compliance":
                    return await checks.fetch(job) if checks is not None else []
                if job.kind == "repo_sync":
                    return await fetch_repository(client, job, settings.inventory_filters)
                return await fetch_job(client, job, settings.max_commits)

            def store_error(exc: Exception) -> None:
                r.metrics.backfill_errors.inc()

            def observe(kind: str, outcome: str) -> None:
                r.metrics.backfill_requests.labels(kind, outcome).inc()
                r.stats.incr(f"webhook.backfill.{outcome}")

            r.backfill = BackfillWorker(
                settings.store,
                fetch,
                r.deliver,
                max_attempts=settings.max_attempts,
                base_delay=settings.retry_delay,
                poll_interval=settings.poll_interval,
                observe=observe,
                logger=r.logger,
                redact=client.redact,
                announce=scans.announce if settings.scanners else None,
                on_error=store_error,
            )
            r.metrics.backfill_healthy.set_function(
                lambda: 0.0 if r.backfill_failure() is not None else 1.0
            )
            r.backfill_task = asyncio.create_task(r.backfill.run(), name="rcingest-backfill")
            try:
                yield
            finally:
                await stop_backfill(r)
    finally:
        await settings.store.close()


#: Seconds shutdown waits for the cancelled worker; past it the daemon stops anyway.
STOP_TIMEOUT = 10.0


async def stop_backfill(r: Receiver) -> None:
    """Cancel the worker and wait for it, bounded; its current job stays pending.

    Never raises: a worker that ended with an error must not stop the
    shutdown half-way (the intake would stay open and SIGTERM would hang).
    """
    task, r.backfill_task = r.backfill_task, None
    if task is None:
        return
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT)
    if not done:
        r.logger.error(
            "backfill worker did not stop within %.0fs; stopping without it", STOP_TIMEOUT
        )
    elif not task.cancelled() and task.exception() is not None:
        r.logger.error("backfill worker had ended: %s", r.redact(repr(task.exception())))


def create_app(
    receiver: Receiver,
    backfill: BackfillSettings | None = None,
    inbox: Any = None,
) -> web.Application:
    """The daemon's application; run it with ``web.AppRunner`` (the source does).

    With ``inbox`` (:class:`rcingest.webhooks.inbox_app.InboxSettings`) a
    delivery is acknowledged once appended to the inbox, and a normaliser
    stores its records behind it; without, once its records are committed.
    """
    # aiohttp decompresses gzip/deflate request bodies by default, before the
    # handler sees them: a signature over the plain body was then accepted for
    # a compressed one (issue 15). Off, the body read is the bytes received.
    app = web.Application(handler_args={"auto_decompress": False})
    app[RECEIVER] = receiver
    app[BACKFILL] = backfill
    receiver.metrics.track_queue(lambda: receiver.intake.depth)
    app.cleanup_ctx.append(_backfill_context)
    if inbox is not None:
        from rcingest.webhooks import inbox_app

        # After the backfill context: the normaliser records jobs in its store,
        # and stops before it (cleanup runs in reverse).
        inbox_app.install(app, inbox)
    else:
        app.router.add_post(receiver.settings.path, handle_delivery)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
