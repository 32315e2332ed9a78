"""The shapes of the webhook inbox: what arrives, what is stored, what is listed.

An :class:`Arrival` is a verified delivery as the request path hands it over:
the headers that matter, the raw body, when it came. The inbox stores it
compressed as one row whose ``state`` moves ``pending`` → ``done`` (its
records were committed by the sinks), or ``failed`` (a sink failed: retried
after a delay) and, after ``max_attempts`` failures or at once for a
delivery the decoder refuses, ``parked`` (kept, listed by ``rcingest inbox``,
retried on demand).
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["STATES", "Arrival", "InboxEntry", "InboxFilter", "InboxRow", "State", "WorkerBeat"]

State = Literal["pending", "failed", "done", "parked"]
STATES: tuple[State, ...] = ("pending", "failed", "done", "parked")
#: The states still to normalise: they hold back later deliveries of their repository.
OPEN_STATES: tuple[State, ...] = ("pending", "failed")

#: The request headers kept with a delivery: what the decoder reads, and what
#: says who sent it. Never the signature or a secret header: the inbox must
#: not hold what would let anyone forge or test a guess of the secret.
KEPT_HEADERS = (
    "X-Event-Key",
    "X-Request-UUID",
    "X-Request-Id",
    "X-Hook-UUID",
    "X-Attempt-Number",
    "User-Agent",
    "Content-Type",
)


class Arrival(msgspec.Struct, frozen=True, kw_only=True):
    """A verified delivery to append (the request path's whole output)."""

    request_uuid: str
    event: str
    #: ``workspace/slug`` from the payload ("" for an event without one):
    #: deliveries of one repository are normalised in the order they came.
    repository: str
    #: Seconds since the epoch (UTC).
    received_at: float
    headers: dict[str, str]
    body: bytes


class InboxRow(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery's row without its body: what ``rcingest inbox`` lists."""

    id: int
    request_uuid: str
    event: str
    repository: str
    received_at: float
    state: State
    attempts: int
    #: Why the last attempt failed or the row was parked (None when it did not).
    last_error: str | None
    #: When its records were committed (None until then).
    done_at: float | None
    #: Bytes of the raw body (before compression).
    body_bytes: int
    #: Times the delivery was received (Bitbucket's retries and redeliveries).
    received: int


class InboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A row with its headers and decompressed body: what the normaliser and replay read."""

    row: InboxRow
    headers: dict[str, str]
    body: bytes


class InboxFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which deliveries ``rcingest inbox`` and ``rcingest replay`` work on (all when empty)."""

    states: tuple[State, ...] = ()
    repository: str | None = None
    #: Epoch seconds, inclusive lower and exclusive upper bound of ``received_at``.
    since: float | None = None
    until: float | None = None
    request_uuids: tuple[str, ...] = ()
    limit: int | None = None


class WorkerBeat(msgspec.Struct, frozen=True, kw_only=True):
    """What a normaliser running in a process of its own last reported.

    ``rcingest normalise`` (on its own, or started by ``rcingest serve`` with
    ``normaliser: subprocess``) writes one every few seconds, so that the
    receiving daemon's ``/readyz`` can say whether anything normalises.
    """

    #: ``host:pid``.
    worker: str
    started_at: float
    beat_at: float
    #: False while its normaliser or backfill worker is failing.
    healthy: bool
    last_error: str = ""
    #: Deliveries it settled since it started (done, failed or parked).
    normalised: int = 0
