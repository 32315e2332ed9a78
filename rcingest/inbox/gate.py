"""The inbox's request path, sans-I/O: is this delivery to be stored, refused, or let go?

``admit`` does only what answering requires: the size limit, the signature
over the raw bytes, the delivery headers, and the minimum parse that tells
a payload of the wrong shape (400) from one to store (200 once appended) or
an event rcingest does not store (202). It builds no record and looks up no
story key: the normaliser behind the inbox does that with the full decoder,
which refuses exactly what this refuses (both call
:mod:`rcingest.webhooks.shapes`), so a stored delivery is never one the
decoder would have refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec

from rcingest.inbox.model import KEPT_HEADERS, Arrival
from rcingest.webhooks import shapes
from rcingest.webhooks.decode import DecodeError, decode, header_value, read_headers
from rcingest.webhooks.events import PR_EVENTS, PUSH
from rcingest.webhooks.receive import Verdict
from rcingest.webhooks.verify import AuthError, authenticate

__all__ = ["Admission", "admit", "kept_headers"]


class Admission(msgspec.Struct, kw_only=True):
    """What to answer (``verdict``) and, when it is to be stored, the arrival to append."""

    verdict: Verdict
    arrival: Arrival | None = None


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers stored with a delivery (``KEPT_HEADERS``; never a signature or secret)."""
    kept: dict[str, str] = {}
    for name in KEPT_HEADERS:
        value = header_value(headers, name)
        if value is not None:
            kept[name] = value
    return kept


def _refused(status: int, reason: str, outcome: str, event: str) -> Admission:
    return Admission(verdict=Verdict(status=status, reason=reason, outcome=outcome, event=event))


def admit(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    accept_secret_header: bool = False,
    max_body_bytes: int = 262_144,
    received_at: float,
    scan_pull_requests: bool = False,
    compliance_keys: frozenset[str] | None = None,
    inventory: bool = False,
) -> Admission:
    """Check one delivery; an :class:`Admission` with ``arrival`` set means "append, then 200".

    The statuses are those of :func:`rcingest.webhooks.receive.receive` (the
    direct path), for the same inputs.
    """
    if len(body) > max_body_bytes:
        return _refused(413, f"body exceeds the limit of {max_body_bytes} bytes", "too_large", "")
    event = header_value(headers, "X-Event-Key") or ""
    try:
        authenticate(headers, body, secret=secret, accept_secret_header=accept_secret_header)
    except AuthError as exc:
        return _refused(401, exc.reason, "bad_signature", event)
    try:
        head = read_headers(headers)
        if head.event == PUSH:
            repository = shapes.checked_push(body, head).repository.full_name
        elif head.event in PR_EVENTS:
            repository = shapes.checked_pull_request(body, head).repository.full_name
        else:
            # Review, status and repository events: rare, so the full decoder
            # decides (what it stores depends on the compliance and inventory
            # settings); its records are thrown away and rebuilt later.
            decoded = decode(
                headers,
                body,
                received_at=datetime.fromtimestamp(received_at, UTC),
                scan_pull_requests=scan_pull_requests,
                compliance_keys=compliance_keys,
                inventory=inventory,
            )
            outcome = decoded.delivery.outcome
            if outcome in ("ignored", "unknown_event"):
                reason = (
                    "event not stored" if outcome == "ignored" else "unknown event key, not stored"
                )
                return _refused(202, reason, outcome, head.event)
            repository = decoded.delivery.repository or ""
    except DecodeError as exc:
        return _refused(exc.status, exc.reason, "bad_request", event)
    except RecursionError:
        return _refused(400, "body is not valid JSON: nested too deeply", "bad_request", event)
    arrival = Arrival(
        # Retries of one delivery must map to one row even without X-Request-UUID.
        request_uuid=head.request_uuid or "sha256:" + hashlib.sha256(body).hexdigest(),
        event=head.event,
        repository=repository,
        received_at=received_at,
        headers=kept_headers(headers),
        body=body,
    )
    verdict = Verdict(status=200, reason="stored", outcome="accepted", event=head.event)
    return Admission(verdict=verdict, arrival=arrival)
