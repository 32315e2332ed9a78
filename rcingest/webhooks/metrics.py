"""Prometheus metrics of one webhook daemon, in a registry of its own.

A registry per app (not the process-global default) so that two apps in one
process, as in the tests, never collide, and ``/metrics`` shows only this
daemon's series.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from rcingest.webhooks.events import KNOWN_EVENTS

__all__ = ["CONTENT_TYPE_LATEST", "WebhookMetrics"]

# Milliseconds matter here: Bitbucket gives a receiver 10 s, the target p99 is 30 ms.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class WebhookMetrics:
    """The daemon's series; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.deliveries = Counter(
            "rcingest_webhook_deliveries",
            "Webhook deliveries by event key and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.signature_failures = Counter(
            "rcingest_webhook_signature_failures",
            "Deliveries refused for a missing or wrong signature",
            registry=r,
        )
        self.records_written = Counter(
            "rcingest_webhook_records_written",
            "Records committed by the pipeline for webhook deliveries and backfill",
            ["type"],
            registry=r,
        )
        self.write_latency = Histogram(
            "rcingest_webhook_write_latency_seconds",
            "From a delivery's hand-over to the pipeline to its durable acknowledgement",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "rcingest_webhook_queue_depth",
            "Deliveries handed to the pipeline and not yet acknowledged",
            registry=r,
        )
        self.backfill_requests = Counter(
            "rcingest_webhook_backfill_requests",
            "Backfill jobs (truncated pushes, PR commits) by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.backfill_pending = Gauge(
            "rcingest_webhook_backfill_pending",
            "Backfill jobs waiting in the durable queue",
            registry=r,
        )
        self.backfill_errors = Counter(
            "rcingest_webhook_backfill_errors",
            "Errors of the backfill queue store seen by the worker (it backs off and retries)",
            registry=r,
        )
        self.backfill_healthy = Gauge(
            "rcingest_webhook_backfill_healthy",
            "1 while the backfill worker runs and its queue store works, else 0",
            registry=r,
        )
        self.inbox_pending = Gauge(
            "rcingest_webhook_inbox_pending",
            "Deliveries acknowledged and not yet normalised (pending or failed, to retry)",
            registry=r,
        )
        self.inbox_parked = Gauge(
            "rcingest_webhook_inbox_parked",
            "Deliveries the normaliser gave up on (listed by `rcingest inbox --state parked`)",
            registry=r,
        )
        self.normalisation_lag = Gauge(
            "rcingest_webhook_normalisation_lag_seconds",
            "Age of the oldest delivery not yet normalised (0 when none)",
            registry=r,
        )
        self.normalisation_delay = Histogram(
            "rcingest_webhook_normalisation_delay_seconds",
            "From a delivery's arrival to its records' commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.inbox_normalised = Counter(
            "rcingest_webhook_inbox_normalised",
            "Inbox rows settled by the normaliser, by outcome (done, failed, parked)",
            ["outcome"],
            registry=r,
        )
        self.normaliser_healthy = Gauge(
            "rcingest_webhook_normaliser_healthy",
            "1 while the normaliser runs and its inbox works, else 0",
            registry=r,
        )
        # Labelled children, looked up once: ``labels()`` takes a lock and
        # builds a key on every call, which adds up on the request path.
        self._deliveries: dict[tuple[str, str], Any] = {}
        self._written: dict[str, Any] = {}

    def delivery(self, event: str, outcome: str) -> None:
        """Count one delivery; unknown event keys share one label value (bounded cardinality)."""
        key = (event if event in KNOWN_EVENTS else "other", outcome)
        child = self._deliveries.get(key)
        if child is None:
            child = self._deliveries[key] = self.deliveries.labels(*key)
        child.inc()

    def written(self, record_type: str, n: int) -> None:
        """Count ``n`` committed records of ``record_type``."""
        child = self._written.get(record_type)
        if child is None:
            child = self._written[record_type] = self.records_written.labels(record_type)
        child.inc(n)

    def track_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from ``depth`` at every scrape."""
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return bytes(generate_latest(self.registry))
