"""How one request is made (``Call``), its bounded body read, and page sizes.

Kept apart from ``client.py`` so the client holds policy (retries, pacing,
redirects) and this module the small facts it applies.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import aiohttp

from rcingest.bitbucket.retry import BitbucketError

__all__ = ["GET", "Call", "ResponseTooLarge", "page_size", "read_body"]


class Call(NamedTuple):
    """How to make one request: method, JSON body, what to accept, bounds, retry policy."""

    method: str = "GET"
    body: bytes | None = None
    accept: str = "application/json"
    #: Refuse a body longer than this (``ResponseTooLarge``), read in chunks.
    max_bytes: int | None = None
    #: Retry 5xx and connection errors (429 is always retried).
    retry: bool = True
    #: 5xx statuses that are answers, not blips (not retried).
    final: frozenset[int] = frozenset()


GET = Call()


class ResponseTooLarge(BitbucketError):
    """A body over the caller's bound: nothing past the bound was read."""


async def read_body(resp: aiohttp.ClientResponse, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        return await resp.read()
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        raise ResponseTooLarge(f"{declared} bytes, over the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def page_size(path: str) -> int:
    """The largest ``pagelen`` the endpoint accepts (pull requests 50, diffstat 1000, else 100)."""
    if "/diffstat/" in path:
        return 1000
    if re.search(r"/pullrequests/?$", path):
        return 50
    return 100
