"""The framework-neutral part of an embedded receiver: a request in, an answer out.

Each adapter (one module per framework) reads the body under the cap and
calls :func:`begin`; a refused delivery gets its answer at once, an accepted
one a :class:`Pending` write on the storage, whose outcome :func:`finish`
turns into the answer. The policy (size, ``X-Webhook-Secret``,
``X-Hub-Signature``, decoding, statuses) is :func:`rcingest.webhooks.receive`,
the one ``rcingest serve`` applies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from rcingest.embed.storage import Closed, CommitStorage
from rcingest.webhooks.receive import DEFAULT_MAX_BODY_BYTES, Verdict, receive, too_large

__all__ = ["Answer", "Pending", "Settings", "begin", "complete", "early", "finish", "too_big"]

_json = msgspec.json.Encoder()
_log = logging.getLogger("rcingest.embed")


@dataclass(frozen=True)
class Settings:
    """One mounted receiver: where, with which secret, and its limits."""

    storage: CommitStorage
    secret: str | None
    path: str = "/webhooks/bitbucket"
    #: The runbook's ``X-Webhook-Secret: <secret>`` header is accepted by default.
    accept_secret_header: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Seconds a delivery waits for the database before 503 (Bitbucket gives 10).
    ack_timeout: float = 9.0
    logger: logging.Logger = _log


@dataclass(frozen=True)
class Answer:
    """What to send back: a status and a small JSON body."""

    status: int
    body: bytes
    #: The body was not read to its end: the connection cannot be reused.
    close: bool = False
    content_type: str = "application/json"


@dataclass(frozen=True)
class Pending:
    """An accepted delivery being written; its outcome is ``future``'s."""

    future: concurrent.futures.Future[str]
    request_uuid: str
    event: str


def _answer(status: int, reason: str, **extra: Any) -> Answer:
    body = _json.encode({"status": status, "reason": reason, **extra})
    return Answer(status=status, body=body, close=status == 413)


def _refuse(s: Settings, verdict: Verdict) -> Answer:
    if verdict.status >= 400:
        # reason never holds a secret or a received signature (verify.py).
        s.logger.warning("webhook refused with %d: %s", verdict.status, verdict.reason)
    return _answer(verdict.status, verdict.reason)


def early(s: Settings, content_length: int | None) -> Answer | None:
    """413 when the declared length is over the cap: answered before reading the body."""
    verdict = too_large(content_length, s.max_body_bytes)
    return None if verdict is None else _refuse(s, verdict)


def too_big(s: Settings) -> Answer:
    """413 for a body that grew past the cap while being read (no length declared)."""
    return _refuse(s, Verdict(status=413, reason="body too large", outcome="too_large"))


def begin(s: Settings, headers: Mapping[str, str], body: bytes) -> Answer | Pending:
    """Verify and decode; an answer when refused, else the write handed to the storage."""
    verdict = receive(
        headers,
        body,
        secret=s.secret,
        accept_secret_header=s.accept_secret_header,
        max_body_bytes=s.max_body_bytes,
        received_at=datetime.now(UTC),
    )
    decoded = verdict.decoded
    if decoded is None:
        return _refuse(s, verdict)
    delivery = decoded.delivery
    try:
        future = s.storage.submit(decoded)
    except Closed as exc:
        return _answer(503, f"{exc}; retry", request_uuid=delivery.request_uuid)
    except Exception as exc:
        # Opening the database failed (unreachable server): retried by the next delivery.
        s.logger.error(
            "webhook %s not stored: %s", delivery.request_uuid, s.storage.scrub(str(exc))
        )
        return _answer(503, "not stored; retry", request_uuid=delivery.request_uuid)
    return Pending(future=future, request_uuid=delivery.request_uuid, event=delivery.event)


def finish(s: Settings, pending: Pending, outcome: str | BaseException) -> Answer:
    """200 ``stored``/``duplicate`` once durable; 503 when the write failed or timed out."""
    if isinstance(outcome, BaseException):
        if isinstance(outcome, TimeoutError):
            reason = f"no answer from the database within {s.ack_timeout:g} s"
        else:
            # The sink's errors name the database and never its password.
            reason = s.storage.scrub(str(outcome) or type(outcome).__name__)
        s.logger.error("webhook %s not stored: %s", pending.request_uuid, reason)
        return _answer(503, "not stored; retry", request_uuid=pending.request_uuid)
    return _answer(200, outcome, request_uuid=pending.request_uuid)


async def complete(s: Settings, pending: Pending) -> Answer:
    """Await the write on the caller's loop; the outcome (or the failure) as an answer.

    Shielded: a timeout answers 503 without cancelling a write that may
    still commit (Bitbucket's retry is then a duplicate, stored once).
    """
    outcome: str | BaseException
    try:
        outcome = await asyncio.wait_for(
            asyncio.shield(asyncio.wrap_future(pending.future)), s.ack_timeout
        )
    except Exception as exc:  # the sink's error, or the timeout: both are a 503
        outcome = exc
    return finish(s, pending, outcome)
