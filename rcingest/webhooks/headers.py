"""Delivery headers, sans-I/O: Bitbucket's identifiers read and held to sane limits.

``decode`` reads them before the body; a missing ``X-Event-Key`` or an
identifier that is not short printable ASCII is a :class:`DecodeError` (400).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

__all__ = [
    "MAX_ATTEMPT",
    "MAX_HEADER_CHARS",
    "MAX_ID",
    "DecodeError",
    "DeliveryHeaders",
    "header_value",
    "read_headers",
]


class DecodeError(Exception):
    """The delivery cannot be decoded; ``status`` and ``reason`` go back to the sender."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class DeliveryHeaders(msgspec.Struct, frozen=True):
    """The Bitbucket delivery headers rcingest uses."""

    event: str
    request_uuid: str | None
    hook_uuid: str | None
    attempt: int


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header's stripped value, case-insensitively even for a plain dict; None if empty."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if value is not None and value.strip() else None


#: Longest accepted X-Event-Key, X-Request-UUID and X-Hook-UUID (Bitbucket's are under 60).
MAX_HEADER_CHARS = 200
#: X-Attempt-Number is clamped to 1..MAX_ATTEMPT (unsigned: it only informs).
MAX_ATTEMPT = 1000
#: Largest id a pull request may have (PostgreSQL ``integer``).
MAX_ID = 2**31 - 1


def _identifier(headers: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` present, refused unless printable ASCII of a sane length."""
    for name in names:
        value = header_value(headers, name)
        if value is None:
            continue
        if len(value) > MAX_HEADER_CHARS:
            raise DecodeError(f"{name} header longer than {MAX_HEADER_CHARS} characters")
        if not (value.isascii() and value.isprintable()):
            raise DecodeError(f"{name} header is not printable ASCII")
        return value
    return None


def read_headers(headers: Mapping[str, str]) -> DeliveryHeaders:
    """The delivery headers; raise :class:`DecodeError` when ``X-Event-Key`` is missing.

    ``X-Event-Key``, ``X-Request-UUID`` (or ``X-Request-Id``) and ``X-Hook-UUID``
    must be printable ASCII of at most :data:`MAX_HEADER_CHARS` characters;
    ``X-Attempt-Number`` is clamped to ``1..MAX_ATTEMPT`` (1 when not a number).
    """
    event = _identifier(headers, "X-Event-Key")
    if event is None:
        raise DecodeError("missing X-Event-Key header")
    attempt_raw = header_value(headers, "X-Attempt-Number")
    attempt = 1
    if attempt_raw and attempt_raw.isascii() and attempt_raw.isdigit():
        # Ten digits or more is past the cap anyway (and int() of a huge string is slow).
        attempt = (
            min(MAX_ATTEMPT, max(1, int(attempt_raw))) if len(attempt_raw) < 10 else MAX_ATTEMPT
        )
    # Bitbucket Data Center names the request id X-Request-Id.
    request_uuid = _identifier(headers, "X-Request-UUID", "X-Request-Id")
    return DeliveryHeaders(event, request_uuid, _identifier(headers, "X-Hook-UUID"), attempt)
