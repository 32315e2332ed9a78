"""The ``bitbucket_webhook`` source: Bitbucket Cloud webhook deliveries as records.

Started by ``rcingest serve``: ``__aenter__`` binds the aiohttp site,
``records()`` yields what the HTTP handlers (and the backfill worker) hand
over, each delivery followed by a ``Checkpoint(stream="webhook")``; the
runner writes the batch to every sink and then acknowledges, and only then
does the handler answer 2xx. ``docs/webhooks.md`` describes the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from rcingest.bitbucket.auth import auth_header, auth_secrets
from rcingest.bitbucket.config import ClientConfig, client_settings
from rcingest.errors import ConfigError
from rcingest.hookspecs import RegisterSource, hookimpl
from rcingest.interfaces import RunContext, Source
from rcingest.inventory.filters import RepositoryFilters
from rcingest.records import Checkpoint, Record, record_type
from rcingest.runtime import redact, weak_secret
from rcingest.webhooks.intake import STREAM, STREAMS, Intake

# The HTTP server (aiohttp), the metrics (prometheus-client) and the backfill
# client are imported when the source is built for `serve`, not when plugins
# are discovered or another pipeline is validated (issue 11: start-up).
if TYPE_CHECKING:
    from aiohttp import web

    from rcingest.webhooks.app import Receiver
    from rcingest.webhooks.metrics import WebhookMetrics

__all__ = ["BitbucketWebhookSource", "WebhookConfig"]


class WebhookConfig(ClientConfig):
    """Settings of the webhook daemon; the REST client settings are for backfill."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    path: str = "/webhooks/bitbucket"
    #: The hook's secret (``${BITBUCKET_WEBHOOK_SECRET}``); ``X-Hub-Signature`` is verified.
    secret: str | None = None
    #: Also accept the runbook's ``X-Webhook-Secret: <secret>`` header.
    accept_secret_header: bool = False
    #: Run without a secret (every delivery accepted); must be said explicitly.
    insecure: bool = False
    #: Bitbucket's own payload limit is 256 KB; larger bodies get 413.
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 262_144
    #: Seconds a delivery waits for the database before 503 (Bitbucket times out at 10).
    ack_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 9.0
    #: Seconds ``stop`` waits for in-flight requests and the HTTP server to finish.
    shutdown_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: Seconds a connection may take to send its request headers, and may stay
    #: idle between requests; then it is closed (a slow-header client cannot
    #: hold a connection for ever).
    header_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    #: Complete truncated pushes and fetch PR commits through the REST client
    #: (only when ``auth`` holds credentials).
    backfill: bool = True
    #: SQLite file of the durable backfill queue (relative to the working directory).
    backfill_queue: str = "data/bitbucket/webhook-backfill.db"
    #: ``FULL`` survives power loss; ``NORMAL`` (WAL) survives a killed process.
    backfill_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: Commits one backfill job lists at most (a created branch has no lower bound).
    backfill_max_commits: Annotated[int, msgspec.Meta(ge=1)] = 1000
    backfill_max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 8
    #: Seconds before a failed job's first retry; doubles per attempt, at most 15 minutes.
    backfill_retry_delay: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    #: ``rcingest run`` with ``scanners:``: scan the open pull requests of these
    #: repositories (``workspace/slug``) once, instead of serving.
    scan_repositories: list[str] = []
    #: When a delivery is answered 200: ``inbox`` once its raw body is durably in
    #: the inbox (its records follow, normalised behind it), ``committed`` once
    #: its records are committed (the path before the inbox; slower).
    ack: Literal["inbox", "committed"] = "inbox"
    #: The inbox: a SQLite file, or a ``postgresql://`` URL that several daemons
    #: share (``${RCINGEST_INBOX_URL}`` keeps the password out of the file).
    inbox: str = "data/bitbucket/webhook-inbox.db"
    #: ``FULL`` survives power loss; ``NORMAL`` (WAL) survives a killed process.
    inbox_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: Days a normalised delivery's raw body is kept (parked ones are kept until retried).
    inbox_retention_days: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: Failed normalisations (a sink did not commit) before a delivery is parked.
    inbox_max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 8
    #: Seconds before a failed delivery's first retry; doubles per attempt, at most 15 minutes.
    inbox_retry_delay: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    #: Deliveries the normaliser claims at once.
    inbox_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 256
    #: Normalisation lag (seconds) past which /readyz says so (0: never).
    inbox_lag_threshold: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    #: Seconds the normaliser may wait while deliveries keep arriving, so that
    #: acknowledging a burst comes first (0: never wait).
    inbox_defer: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    #: Repository events (created, updated, transfer, fork, deleted, push) keep the
    #: inventory current: ``Repository`` records and ``repo_sync`` jobs.
    inventory: bool = False
    #: The inventory's filters, applied to what ``repo_sync`` jobs read.
    inventory_filters: RepositoryFilters = msgspec.field(default_factory=RepositoryFilters)

    def __post_init__(self) -> None:
        if self.secret == "":
            # ``${BITBUCKET_WEBHOOK_SECRET:-}`` left empty means no secret.
            self.secret = None
        if self.secret is not None and len(self.secret) > 128:
            raise ValueError("`secret` is longer than Bitbucket's 128 characters")
        if not self.path.startswith("/"):
            raise ValueError(f"`path` must start with '/', got {self.path!r}")


class BitbucketWebhookSource(Source[WebhookConfig]):
    """Serves Bitbucket webhooks; yields each delivery's records once they may be stored."""

    Config = WebhookConfig
    low_latency = True

    def __init__(self, config: WebhookConfig, context: RunContext) -> None:
        from rcingest.webhooks.app import Receiver, ReceiverSettings
        from rcingest.webhooks.metrics import WebhookMetrics

        super().__init__(config, context)
        weak = weak_secret(config.secret) if config.secret is not None else None
        if weak is not None:
            # Guessable secrets make signatures forgeable, and a short one
            # would be masked by substring in every log line (docs/webhooks.md).
            # "secret: ..." puts the problem under $.source.config.secret.
            raise ConfigError(f"secret: the webhook secret {weak}")
        if config.secret is None and not config.insecure and context.mode == "serve":
            # (Under `rcingest run` nothing is served: the one-shot scan needs no secret.)
            # A rule of the component, not of its Config's shape: `rcingest validate`
            # reaches it by building the component as serve does (preflight.py).
            raise ConfigError(
                "no webhook secret: set BITBUCKET_WEBHOOK_SECRET (source.config.secret) "
                "or `insecure: true` to accept unsigned deliveries"
            )
        self._compliance_key = str(
            getattr(context.compliance, "status_key", None) or "rcingest-compliance"
        )
        self.intake = Intake()
        self.metrics: WebhookMetrics = WebhookMetrics()
        secrets = set(context.secrets) | set(auth_secrets(config.auth))
        if config.secret:
            secrets.add(config.secret)
        self._secrets = frozenset(secrets)
        self.receiver: Receiver = Receiver(
            settings=ReceiverSettings(
                path=config.path,
                secret=config.secret,
                accept_secret_header=config.accept_secret_header,
                max_body_bytes=config.max_body_bytes,
                ack_timeout=config.ack_timeout,
                scan_pull_requests=bool(context.scanners),
                inventory=config.inventory,
                compliance_keys=(
                    frozenset({self._compliance_key}) if context.policy is not None else None
                ),
            ),
            intake=self.intake,
            metrics=self.metrics,
            stats=context.stats,
            logger=context.logger.getChild("webhooks"),
            redact=self._redact,
        )
        self.backfill_enabled = config.backfill and auth_header(config.auth) is not None
        if context.scanners and not self.backfill_enabled:
            # Scanning reads each pull request's diff through the REST API.
            raise ConfigError(
                "scanners need the REST client: set credentials in `auth` (with read access "
                "to pull requests) and keep `backfill: true`, or remove `scanners:`"
            )
        if context.policy is not None and not self.backfill_enabled:
            # Each evaluation reads the pull request, its statuses and reviewers.
            raise ConfigError(
                "compliance needs the REST client: set credentials in `auth` (with read "
                "access to pull requests) and keep `backfill: true`, or remove `compliance:`"
            )
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.bound_port: int | None = None
        # `rcingest run` (one-shot scan of open pull requests) only.
        self._client: Any = None
        self._store: Any = None

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def __aenter__(self) -> BitbucketWebhookSource:
        if self.context.mode == "run":
            return await self._enter_run()
        from aiohttp import web

        from rcingest.webhooks.app import BackfillSettings, create_app
        from rcingest.webhooks.backfill import BackfillStore

        cfg, log = self.config, self.receiver.logger
        backfill = None
        if self.backfill_enabled:
            backfill = BackfillSettings(
                client=client_settings(cfg),
                store=BackfillStore(Path(cfg.backfill_queue), cfg.backfill_synchronous),
                max_commits=cfg.backfill_max_commits,
                max_attempts=cfg.backfill_max_attempts,
                retry_delay=cfg.backfill_retry_delay,
                secrets=self._secrets,
                scanners=list(self.context.scanners),
                max_diff_bytes=getattr(self.context.scanning, "max_diff_bytes", 10 * 1024 * 1024),
                policy=self.context.policy,
                compliance_key=self._compliance_key,
                story=self.context.story_keys,
                inventory_filters=cfg.inventory_filters,
            )
        elif cfg.backfill:
            log.warning(
                "backfill is off: no REST credentials in `auth`; truncated pushes are stored "
                "with the payload's commits only, pull requests without their commits, and "
                "branch names lend no story keys (which commits a branch brought needs the API)"
            )
        if cfg.secret is None:
            log.warning(
                "insecure: true: accepting UNSIGNED webhook deliveries on %s:%d", cfg.host, cfg.port
            )
        inbox = None
        if cfg.ack == "inbox":
            from rcingest.webhooks.inbox_app import InboxSettings

            inbox = InboxSettings(
                spec=cfg.inbox,
                synchronous=cfg.inbox_synchronous,
                secrets=self._secrets,
                backfill=backfill is not None,
                batch=cfg.inbox_batch,
                max_attempts=cfg.inbox_max_attempts,
                retry_delay=cfg.inbox_retry_delay,
                retention_days=cfg.inbox_retention_days,
                lag_threshold=cfg.inbox_lag_threshold,
                defer=cfg.inbox_defer,
                drain_timeout=cfg.shutdown_timeout,
            )
        self.app = create_app(self.receiver, backfill, inbox)
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=cfg.shutdown_timeout,
            # aiohttp's keep-alive timer runs from the connection's start and
            # after each response, and closes a connection still waiting for a
            # complete request line and headers: the header timeout (issue 15,
            # defect 9). Its default (3630 s) let slow-header clients stay.
            keepalive_timeout=cfg.header_timeout,
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, cfg.host, cfg.port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
        addresses = self._runner.addresses
        self.bound_port = int(addresses[0][1]) if addresses else cfg.port
        self.context.source_info = {
            "type": "bitbucket_webhook",
            "host": cfg.host,
            "port": self.bound_port,
            "path": cfg.path,
            "backfill": self.backfill_enabled,
            "ack": cfg.ack,
        }
        log.info("listening on http://%s:%d%s", cfg.host, self.bound_port, cfg.path)
        return self

    async def _enter_run(self) -> BitbucketWebhookSource:
        """``rcingest run``: no server; a REST client and the queue for a one-shot scan."""
        from rcingest.bitbucket.client import BitbucketClient
        from rcingest.webhooks.backfill import BackfillStore

        cfg = self.config
        scans = bool(self.context.scanners and cfg.scan_repositories)
        if not scans and not self._compliance_repositories():
            raise ConfigError(
                "under rcingest run a bitbucket_webhook source scans the open pull requests "
                "of `scan_repositories` with the pipeline's `scanners:`, or evaluates those of "
                "`compliance.repositories` against the policy; set one pair, or use "
                "rcingest serve"
            )
        self._store = BackfillStore(Path(cfg.backfill_queue), cfg.backfill_synchronous)
        self._store.mask(self._secrets)  # as the daemon's queue: no secret in the file
        await self._store.open()
        client = BitbucketClient(
            cfg, self.context.stats, self.receiver.logger, secrets=self._secrets
        )
        self._client = await client.__aenter__()
        self.context.source_info = {
            "type": "bitbucket_webhook",
            "repositories": sorted({*cfg.scan_repositories, *self._compliance_repositories()}),
            "mode": "open pull requests, once",
        }
        return self

    def _compliance_repositories(self) -> list[str]:
        """``compliance.repositories`` (else ``scan_repositories``) when a policy is set."""
        if self.context.policy is None:
            return []
        named = list(getattr(self.context.compliance, "repositories", None) or [])
        return named or list(self.config.scan_repositories)

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.context.mode == "run":
            if self._client is not None:
                await self._client.close()
            if self._store is not None:
                await self._store.close()
            return
        self.intake.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[Record | Checkpoint]:
        """Deliveries' records, each delivery followed by its checkpoint, until stopped.

        Under ``rcingest run``: the open pull requests' scans, then the end.
        """
        if self.context.mode == "run" and self._client is not None and self._store is not None:
            from rcingest.webhooks.openscan import scan_open_pull_requests
            from rcingest.webhooks.prscan import PullRequestScans

            if self.context.scanners and self.config.scan_repositories:
                scans = PullRequestScans(
                    self._client,
                    list(self.context.scanners),
                    getattr(self.context.scanning, "max_diff_bytes", 10 * 1024 * 1024),
                )
                async for item in scan_open_pull_requests(
                    self._client,
                    self._store,
                    scans,
                    self.config.scan_repositories,
                    self.context.stats,
                ):
                    yield item
            if self.context.policy is not None:
                from rcingest.compliance.gather import Gatherer
                from rcingest.webhooks.openscan import evaluate_open_pull_requests

                gatherer = Gatherer(
                    self._client,
                    self.context.policy,
                    frozenset({self._compliance_key}),
                    self.context.story_keys,
                )
                async for item in evaluate_open_pull_requests(
                    gatherer, self._compliance_repositories(), self.context.stats
                ):
                    yield item
            return
        async for item in self.intake.items():
            yield item

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        """The delivery behind ``checkpoint`` is committed: release its 2xx."""
        if checkpoint.stream not in STREAMS:
            return
        sub = self.intake.acknowledge(checkpoint.token)
        if sub is None or checkpoint.stream != STREAM:
            return  # readiness probes are not deliveries
        self.metrics.write_latency.observe(time.monotonic() - sub.submitted)
        for name, n in Counter(record_type(r) for r in sub.records).items():
            self.metrics.written(name, n)

    async def reject(self, checkpoint: Checkpoint, error: BaseException) -> None:
        """A sink failed on the batch: the delivery's sender gets 503 and retries."""
        if checkpoint.stream in STREAMS:
            self.intake.reject(checkpoint.token, error)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests hand over, then end ``records`` after draining."""
        if self.intake.closed or self.receiver.closing:
            return
        # Requests arriving from now on (keep-alive connections) get 503 and
        # are retried by Bitbucket; those already being read hand over.
        self.receiver.closing = True
        if self._site is not None:
            await self._site.stop()  # no new connections
            self._site = None
        from rcingest.webhooks.app import stop_backfill

        await stop_backfill(self.receiver)
        # Requests already being read get to hand their records over.
        if self.receiver.entering:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.receiver.idle.wait(), self.config.shutdown_timeout)
        # The normaliser finishes its batch while the pipeline still consumes.
        for hook in self.receiver.stop_hooks:
            await hook()
        self.intake.close()


@hookimpl
def register_sources(register: RegisterSource) -> None:
    """Register the ``bitbucket_webhook`` source."""
    register("bitbucket_webhook", BitbucketWebhookSource)
