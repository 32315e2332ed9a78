"""Webhook authenticity checks, sans-I/O: headers and raw bytes in, a verdict out.

Bitbucket Cloud signs a delivery with ``X-Hub-Signature: sha256=<hex>``, the
HMAC-SHA256 of the raw request body keyed with the hook's secret. The check
runs on the raw bytes before any parsing, and compares digests in constant
time. The runbook's shared-secret header (``X-Webhook-Secret``) is accepted
only when enabled, also compared in constant time. Nothing here ever puts a
secret, or a signature received, into a message.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "SECRET_HEADER",
    "SIGNATURE_HEADER",
    "AuthError",
    "authenticate",
    "sign",
    "verify_secret_header",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Hub-Signature"
SECRET_HEADER = "X-Webhook-Secret"  # noqa: S105 - a header name, not a secret

# Bitbucket Cloud only sends sha256 today; the others are accepted defensively,
# as the Jenkins plugins do, because the header format names its algorithm.
_ALGORITHMS = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


class AuthError(Exception):
    """The delivery is not authentic; ``reason`` is safe to return to the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(body: bytes, secret: str, algorithm: str = "sha256") -> str:
    """The ``X-Hub-Signature`` value Bitbucket would send for ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, _ALGORITHMS[algorithm]).hexdigest()
    return f"{algorithm}={digest}"


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """True when ``header`` is a valid ``<alg>=<hex>`` HMAC of ``body`` under ``secret``.

    The hex value is decoded (either case is accepted) and compared as bytes
    with :func:`hmac.compare_digest`, so the time taken does not depend on how
    many leading characters match.
    """
    if not header:
        return False
    method, sep, value = header.strip().partition("=")
    factory = _ALGORITHMS.get(method.strip().lower())
    if not sep or factory is None:
        return False
    try:
        received = binascii.unhexlify(value.strip())
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(secret.encode("utf-8"), body, factory).digest()
    return hmac.compare_digest(expected, received)


def verify_secret_header(header: str | None, secret: str) -> bool:
    """True when the shared-secret header equals ``secret`` (constant-time comparison)."""
    if header is None:
        return False
    try:
        # A header with bytes that are not UTF-8 arrives with surrogates: no match.
        received = header.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(received, secret.encode("utf-8"))


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    # Plain dicts (a framework adapter, a test) may not fold header case.
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def authenticate(
    headers: Mapping[str, str],
    body: bytes,
    *,
    secret: str | None,
    accept_secret_header: bool = False,
) -> None:
    """Raise :class:`AuthError` unless the delivery is authentic.

    With no ``secret`` every delivery passes: the caller must have been
    configured ``insecure`` explicitly. With a secret, a valid
    ``X-Hub-Signature`` passes; so does a matching ``X-Webhook-Secret`` when
    ``accept_secret_header`` is set.
    """
    if secret is None:
        return
    signature = _get(headers, SIGNATURE_HEADER)
    if signature is not None:
        if verify_signature(body, signature, secret):
            return
        raise AuthError(f"invalid {SIGNATURE_HEADER} signature")
    if accept_secret_header:
        shared = _get(headers, SECRET_HEADER)
        if shared is not None:
            if verify_secret_header(shared, secret):
                return
            raise AuthError(f"invalid {SECRET_HEADER}")
        raise AuthError(f"missing {SIGNATURE_HEADER} (or {SECRET_HEADER}) header")
    raise AuthError(f"missing {SIGNATURE_HEADER} header")
