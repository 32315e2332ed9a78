"""An inbox entry to what the pipeline stores, sans-I/O: the normaliser's and replay's core.

The entry's stored headers and raw body go through the same decoder as the
direct path, with the time it was *received* (not the time it is
normalised), so a delivery normalised late, or replayed a month later,
gives the records it gave, or would have given, on arrival.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from rcingest.inbox.model import InboxEntry
from rcingest.records import Record
from rcingest.webhooks.decode import BackfillJob, DecodeError, decode

__all__ = ["DecodeSettings", "Derived", "derive"]


class DecodeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The decoder's switches, as the daemon (or the replayed pipeline) sets them."""

    scan_pull_requests: bool = False
    compliance_keys: frozenset[str] | None = None
    inventory: bool = False
    #: Whether backfill jobs can run (REST credentials): without, a truncated
    #: push is marked ``truncated`` on its delivery row, as on the direct path.
    backfill: bool = True


class Derived(msgspec.Struct, kw_only=True):
    """The records to store (the delivery row last), the jobs to queue, or why not."""

    records: list[Record] = []
    jobs: list[BackfillJob] = []
    truncated: int = 0
    #: Set when the decoder refused the entry: it is parked with this reason.
    error: str | None = None


def derive(entry: InboxEntry, settings: DecodeSettings) -> Derived:
    """Decode ``entry`` as it was received; never raises for a bad payload."""
    try:
        decoded = decode(
            entry.headers,
            entry.body,
            received_at=datetime.fromtimestamp(entry.row.received_at, UTC),
            scan_pull_requests=settings.scan_pull_requests,
            compliance_keys=settings.compliance_keys,
            inventory=settings.inventory,
        )
    except DecodeError as exc:
        return Derived(error=f"the decoder refused it ({exc.status}): {exc.reason}")
    delivery = decoded.delivery
    if delivery.outcome in ("ignored", "unknown_event"):
        # Stored under other settings (inventory or compliance since turned off).
        return Derived()
    jobs = decoded.jobs if settings.backfill else []
    if decoded.truncated and not settings.backfill:
        delivery.outcome = "truncated"  # the payload's 5 commits are all we know
    return Derived(records=[*decoded.records, delivery], jobs=jobs, truncated=decoded.truncated)
