"""Full and incremental inventory sync, sans-I/O: listed repositories and state in, records out.

The state is the source's cursor (saved only after every sink flushed): each
known repository by UUID (by name when Bitbucket gave none) with its name,
``updated_on``, the main-branch head last scanned and its state.

* A **full** sync lists everything. A known repository not listed is gone: a
  tombstone (``state: deleted``) is emitted once. A known UUID under a new
  name is a rename: the old name gets a tombstone with ``renamed_to`` and the
  new name carries on with the same scan history.
* An **incremental** sync lists only what changed since the last sync
  (``updated_on >= ...``): nothing can be tombstoned from it, so deletions
  wait for the next full sync or a ``repo:deleted`` delivery.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from rcingest.records import Repository

__all__ = ["InventoryState", "Known", "key_of", "needs_scan", "sync"]


class Known(msgspec.Struct, kw_only=True, omit_defaults=True):
    full_name: str
    uuid: str | None = None
    updated_on: datetime | None = None
    #: Main-branch head of the last scan that concluded (findings or clean).
    head: str | None = None
    state: str = "active"


class InventoryState(msgspec.Struct, kw_only=True):
    known: dict[str, Known] = {}
    last_full_sync: datetime | None = None
    last_sync: datetime | None = None

    def to_cursor(self) -> dict[str, Any]:
        value: dict[str, Any] = msgspec.to_builtins(self)
        return value

    @classmethod
    def from_cursor(cls, cursor: dict[str, Any] | None) -> InventoryState:
        if not cursor:
            return cls()
        try:
            return msgspec.convert(cursor, cls)
        except msgspec.ValidationError:
            # A cursor of another version: start over (a full sync rebuilds it).
            return cls()


def key_of(repo: Repository) -> str:
    """The inventory key: the UUID survives renames and transfers; the name when absent."""
    return repo.uuid or repo.full_name.lower()


def tombstone(prev: Known, reason: str, renamed_to: str | None = None) -> Repository:
    return Repository(
        full_name=prev.full_name,
        uuid=prev.uuid,
        state="deleted",
        state_reason=reason,
        renamed_to=renamed_to,
    )


def sync(
    state: InventoryState,
    listed: Iterable[Repository],
    *,
    full: bool,
    now: datetime,
) -> tuple[list[Repository], InventoryState]:
    """The records a sync emits (tombstones included) and the state after it."""
    known = dict(state.known)
    out: list[Repository] = []
    seen: set[str] = set()
    for repo in listed:
        key = key_of(repo)
        seen.add(key)
        prev = known.get(key)
        if prev is not None and prev.full_name != repo.full_name and prev.state != "deleted":
            out.append(tombstone(prev, f"renamed to {repo.full_name}", repo.full_name))
        out.append(repo)
        known[key] = Known(
            full_name=repo.full_name,
            uuid=repo.uuid,
            updated_on=repo.updated_on,
            head=prev.head if prev is not None else None,
            state=repo.state,
        )
    if full:
        for key, prev in state.known.items():
            if key not in seen and prev.state != "deleted":
                out.append(tombstone(prev, "no longer listed"))
                known[key] = msgspec.structs.replace(prev, state="deleted")
    new = InventoryState(
        known=known,
        last_full_sync=now if full else state.last_full_sync,
        last_sync=now,
    )
    return out, new


def needs_scan(state: InventoryState, repo: Repository) -> bool:
    """An active repository changed since its last concluded scan (or never scanned)."""
    if repo.state != "active" or not repo.mainbranch:
        return False
    prev = state.known.get(key_of(repo))
    return prev is None or prev.head is None or prev.updated_on != repo.updated_on


def forget_deleted(state: InventoryState, key: str, repo: Repository) -> None:
    """A repository found gone while scanning (404): tombstoned, its state updated."""
    prev = state.known.get(key)
    state.known[key] = Known(
        full_name=repo.full_name, uuid=repo.uuid, head=prev.head if prev else None, state="deleted"
    )
