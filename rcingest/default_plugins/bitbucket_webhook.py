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
from typing import TYPE_CHECKING, Any, Literal

from rcingest.bitbucket.auth import auth_header, auth_secrets
from rcingest.bitbucket.config import client_settings
from rcingest.default_plugins.webhook_config import WebhookConfig
from rcingest.errors import ConfigError
from rcingest.hookspecs import RegisterSource, hookimpl
from rcingest.interfaces import RunContext, Source
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
        #: ``all``: receive and normalise; ``receiver``: only receive (the
        #: normaliser runs in another process); ``normaliser``: only normalise
        #: (``rcingest normalise``). See docs/webhooks.md, "Scaling out".
        self.role: Literal["all", "receiver", "normaliser"] = "all"
        if context.worker:
            if config.ack != "inbox":
                raise ConfigError(
                    "ack: rcingest normalise works on the inbox; this pipeline has `ack: "
                    "committed`, whose deliveries are normalised as they arrive"
                )
            self.role = "normaliser"
        elif context.mode == "serve" and config.normaliser != "in-process":
            self.role = "receiver"
        #: ``normaliser: subprocess``: the command line (and environment) of the
        #: normaliser process, set by ``rcingest serve`` (it knows the flags).
        self.normaliser_command: tuple[str, ...] | None = None
        self.normaliser_env: dict[str, str] | None = None
        #: ``rcingest normalise --supervised``: our stdin is the receiver's pipe.
        self.supervised = False
        self._stopped = asyncio.Event()
        self._watch: asyncio.Task[Any] | None = None
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
                pipeline=self.role != "receiver",
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
        if self.role == "receiver":
            pass  # the normaliser process runs the backfill worker
        elif self.backfill_enabled:
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
        if cfg.secret is None and self.role != "normaliser":
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
                # Deferring shares the CPU with the handler: pointless in a
                # process that only normalises.
                defer=cfg.inbox_defer if self.role == "all" else 0.0,
                drain_timeout=cfg.shutdown_timeout,
                role=self.role,
                spawn=self.normaliser_command if cfg.normaliser == "subprocess" else None,
                spawn_env=self.normaliser_env,
                supervised=self.supervised,
            )
            if inbox.spawn is None and cfg.normaliser == "subprocess" and self.role == "receiver":
                raise ConfigError(
                    "normaliser: subprocess: the command to start it is unknown "
                    "(rcingest serve sets it)"
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
        if self.role == "normaliser":
            return self._enter_normaliser()
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

    def _enter_normaliser(self) -> BitbucketWebhookSource:
        """``rcingest normalise``: the app's contexts run, nothing listens."""
        self.context.source_info = {
            "type": "bitbucket_webhook",
            "inbox": self._redact(self.config.inbox),
            "role": "normaliser",
            "backfill": self.backfill_enabled,
        }
        if self.supervised:
            gone = asyncio.create_task(self.receiver.parent_gone.wait())
            gone.add_done_callback(lambda _: asyncio.ensure_future(self.stop()))
            self._watch = gone
        self.receiver.logger.info("normalising the inbox (role: normaliser)")
        return self

    async def serve_until_stopped(self) -> None:
        """``receiver`` role: serve without a pipeline until :meth:`stop`."""
        async with self:
            await self._stopped.wait()

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
        if self._watch is not None:
            self._watch.cancel()
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
        # The normaliser finishes its batch while the pipeline still consumes
        # (or, for a receiver, its normaliser process drains and exits).
        for hook in self.receiver.stop_hooks:
            await hook()
        self.intake.close()
        self._stopped.set()


@hookimpl
def register_sources(register: RegisterSource) -> None:
    """Register the ``bitbucket_webhook`` source."""
    register("bitbucket_webhook", BitbucketWebhookSource)
