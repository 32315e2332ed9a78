"""The settings of the ``bitbucket_webhook`` source (``source.config`` of a webhook pipeline).

Kept apart from the source itself so that ``rcingest schema`` and
``rcingest validate`` read them without the daemon's code.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from rcingest.bitbucket.config import ClientConfig
from rcingest.inventory.filters import RepositoryFilters

__all__ = ["WebhookConfig"]


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
    #: acknowledging a burst comes first (0: never wait). Only an in-process
    #: normaliser shares the CPU with the handler; one in its own process never waits.
    inbox_defer: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    #: Where the inbox is normalised: ``in-process`` (this daemon, one core for
    #: both), ``subprocess`` (``rcingest serve`` starts and supervises
    #: ``rcingest normalise``: a core each), ``external`` (you run ``rcingest
    #: normalise`` yourself, e.g. on other machines sharing a PostgreSQL inbox).
    normaliser: Literal["in-process", "subprocess", "external"] = "in-process"
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
        if self.normaliser != "in-process" and self.ack != "inbox":
            raise ValueError(
                f"`normaliser: {self.normaliser}` needs `ack: inbox` (the committed path "
                "has no inbox to normalise)"
            )
