"""How the Bitbucket client fails and retries: its errors and its backoff waits.

Sans-I/O: the client (``client.py``) raises ``Retryable`` for an attempt worth
repeating and ``BitbucketError`` for a request that failed for good;
``wait_gen`` tells ``backoff`` how long to wait before each retry.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from rcingest.errors import RcingestError

__all__ = ["BitbucketError", "Retryable", "retry_after_seconds", "wait_gen"]


class BitbucketError(RcingestError):
    """A request failed for good; the message names the URL, status and Bitbucket's message."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


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
    delay so a burst of 429s does not all come back at once.
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
        exc = yield value
