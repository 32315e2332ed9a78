"""One delivery from raw request to verdict, sans-I/O: the whole receiving policy.

The aiohttp daemon and a receiver mounted in FastAPI or Flask call the same
``receive``: size limit, authenticity, decoding, and the status to answer.
A verdict with ``decoded`` set and status 200 means "store these records,
then answer 200"; any other verdict is answered as is, and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from rcingest.webhooks.decode import Decoded, DecodeError, decode, header_value
from rcingest.webhooks.verify import AuthError, authenticate

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Verdict", "receive", "too_large"]

#: Bitbucket's own payload limit (256 KB).
DEFAULT_MAX_BODY_BYTES = 262_144


class Verdict(msgspec.Struct, kw_only=True):
    """What to answer: ``status``, a short ``reason``, and the decoded delivery to store.

    ``outcome`` names the case for metrics and logs: ``accepted`` (store, then
    200), ``ignored``/``unknown_event`` (202), ``bad_signature`` (401),
    ``bad_request`` (400), ``too_large`` (413).
    """

    status: int
    reason: str
    outcome: str
    event: str = ""
    decoded: Decoded | None = None


def too_large(content_length: int | None, limit: int) -> Verdict | None:
    """A 413 verdict when the declared ``Content-Length`` exceeds ``limit``, else None.

    Checked before the body is read, so an oversized body is never buffered.
    """
    if content_length is not None and content_length > limit:
        return Verdict(
            status=413,
            reason=f"body of {content_length} bytes exceeds the limit of {limit} bytes",
            outcome="too_large",
        )
    return None


def receive(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    accept_secret_header: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    received_at: datetime | None = None,
    scan_pull_requests: bool = False,
    compliance_keys: frozenset[str] | None = None,
    inventory: bool = False,
) -> Verdict:
    """Check and decode one delivery; see :class:`Verdict` for what to do next.

    ``secret=None`` accepts unsigned deliveries: only for a receiver configured
    ``insecure`` on purpose.
    """
    if len(body) > max_body_bytes:
        return Verdict(
            status=413,
            reason=f"body exceeds the limit of {max_body_bytes} bytes",
            outcome="too_large",
        )
    event = header_value(headers, "X-Event-Key") or ""
    # Authenticity first, on the raw bytes, before anything is parsed.
    try:
        authenticate(headers, body, secret=secret, accept_secret_header=accept_secret_header)
    except AuthError as exc:
        return Verdict(status=401, reason=exc.reason, outcome="bad_signature", event=event)
    try:
        decoded = decode(
            headers,
            body,
            received_at=received_at or datetime.now(UTC),
            scan_pull_requests=scan_pull_requests,
            compliance_keys=compliance_keys,
            inventory=inventory,
        )
    except DecodeError as exc:
        return Verdict(status=exc.status, reason=exc.reason, outcome="bad_request", event=event)
    outcome = decoded.delivery.outcome
    if outcome in ("ignored", "unknown_event"):
        reason = "event not stored" if outcome == "ignored" else "unknown event key, not stored"
        return Verdict(status=202, reason=reason, outcome=outcome, event=decoded.delivery.event)
    return Verdict(
        status=200,
        reason="stored",
        outcome="accepted",
        event=decoded.delivery.event,
        decoded=decoded,
    )
