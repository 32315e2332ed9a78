"""How the Bitbucket client fails and retries: its errors and its backoff waits.

Sans-I/O: the client (``client.py``) raises ``Retryable`` for an attempt worth
repeating and ``BitbucketError`` for a request that failed for good;
``unreachable_kind`` tells a connection failure retrying cannot fix (a
refused port, an unknown host name, an untrusted certificate) from a
transient one; ``wait_gen`` tells ``backoff`` how long to wait before each retry.
"""

from __future__ import annotations

import errno
import random
import socket
import ssl
from collections.abc import Generator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from rcingest.bitbucket.budget import RATE_LIMITED, RETRY, notify_wait
from rcingest.errors import RcingestError

__all__ = [
    "CONNECTION_REFUSED",
    "DNS_FAILED",
    "HOST_UNREACHABLE",
    "NETWORK_UNREACHABLE",
    "TLS_CERTIFICATE",
    "BitbucketError",
    "Retryable",
    "Unreachable",
    "retry_after_seconds",
    "unreachable_detail",
    "unreachable_kind",
    "wait_gen",
]

CONNECTION_REFUSED = "connection refused"
DNS_FAILED = "DNS lookup failed"
HOST_UNREACHABLE = "host unreachable"
NETWORK_UNREACHABLE = "network unreachable"
TLS_CERTIFICATE = "TLS certificate verification failed"

#: What to check, per kind: the message says what the user can do about it.
_HINTS = {
    CONNECTION_REFUSED: "nothing listens there, check base_url and that the server runs",
    DNS_FAILED: "check the host name in base_url and this machine's DNS",
    HOST_UNREACHABLE: "no route to it from here, check base_url, the network or the VPN",
    NETWORK_UNREACHABLE: "no route to it from here, check base_url, the network or the VPN",
    TLS_CERTIFICATE: (
        "its certificate is not valid for this host name or not signed by a trusted CA, "
        "check base_url (or SSL_CERT_FILE when a proxy re-signs TLS)"
    ),
}
_ERRNO_KINDS = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
}


class BitbucketError(RcingestError):
    """A request failed for good; the message names the URL, status and Bitbucket's message."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class Unreachable(BitbucketError):
    """The API host cannot be reached in a way retrying does not fix; ``kind`` says how.

    The message names the origin (``scheme://host:port``, never credentials)
    and what to check; ``target`` is the request's path and query, redacted.
    """

    def __init__(self, kind: str, origin: str, target: str, detail: str = "") -> None:
        extra = f": {detail}" if detail else ""
        super().__init__(
            f"cannot reach {origin}: {kind}{extra} (GET {target}); not retried: {_HINTS[kind]}",
            url=origin + target,
        )
        self.kind = kind
        self.origin = origin


def unreachable_kind(exc: BaseException, *, answered_before: bool) -> str | None:
    """The kind of a connection failure retrying cannot fix, or ``None`` for a transient one.

    A certificate that does not verify stays so for the whole run. A refused
    port, an unknown name or no route is a wrong ``base_url`` or a machine
    offline only while the host never answered: once it did (``answered_before``)
    the same failure is a restart or a blip, worth the usual retries.
    Timeouts, resets, disconnects and other TLS errors (an EOF mid-handshake)
    are always ``None``.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return TLS_CERTIFICATE
    if not isinstance(exc, aiohttp.ClientConnectorError) or answered_before:
        return None
    cause = exc.os_error
    if isinstance(exc, aiohttp.ClientSSLError):
        # Its os_error is an ssl.SSLError, whose errno is an SSL code, not errno's.
        return TLS_CERTIFICATE if isinstance(cause, ssl.SSLCertVerificationError) else None
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(cause, socket.gaierror):
        return DNS_FAILED
    # Several addresses (IPv4 and IPv6) failing alike keep their errno
    # (aiohappyeyeballs); a mix has none and stays transient.
    return _ERRNO_KINDS.get(cause.errno) if cause.errno is not None else None


def unreachable_detail(exc: BaseException) -> str:
    """What the resolver or the certificate check said (``""`` when nothing useful)."""
    cause: BaseException = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # Not os_error: before aiohttp 3.13.4 reading it here raises AttributeError.
        cause = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
    if isinstance(cause, ssl.SSLCertVerificationError):
        return str(cause.verify_message or "")
    if isinstance(cause, socket.gaierror):
        return str(cause.strerror or "")
    return ""


class Retryable(Exception):
    """An attempt failed in a way worth retrying."""

    def __init__(
        self, url: str, status: int | None, message: str, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.message = message
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); ``None`` if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def wait_gen(base: float, cap: float) -> Generator[float | None, Any, None]:
    """backoff wait generator: ``Retry-After`` when the server sent one, else exponential.

    backoff sends each exception in; equal jitter keeps at least half the
    delay so a burst of 429s does not all come back at once. backoff asks
    for a wait only when it will retry (after its give-up checks), so each
    value is a wait about to start: it is told to ``budget.notify_wait``
    (``"429"`` for a rate limit, ``"retry"`` otherwise). backoff may cut the
    last wait short to end at ``max_time``.
    """
    exc = yield None
    n = 0
    while True:
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            value = exc.retry_after
        else:
            step = min(cap, base * (2**n))
            value = step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not crypto
        n += 1
        rate_limited = isinstance(exc, Retryable) and exc.status == 429
        notify_wait(value, RATE_LIMITED if rate_limited else RETRY)
        exc = yield value
