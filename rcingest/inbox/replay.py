"""The source of ``rcingest replay``: inbox entries re-derived into records.

Each selected entry (in inbox id order) goes through :func:`derive` with the
time it was received, exactly as the daemon's normaliser decodes it, and its
records are yielded, followed by a checkpoint without state (nothing to
save: the replay is counted when the checkpoint is acknowledged, once every
sink committed it). The runner then enriches and writes them as for the
daemon, so story keys follow the pipeline's *current* grammar.

What replay does not do: it runs no backfill job, scan or compliance
evaluation (those read Bitbucket's API), and never changes an inbox row's
state. An entry the decoder refuses is counted and logged, not fatal.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rcingest.inbox.db import InboxDB, connect
from rcingest.inbox.derive import DecodeSettings, derive
from rcingest.inbox.model import InboxEntry, InboxFilter
from rcingest.interfaces import EmptyConfig, RunContext, Source
from rcingest.records import Checkpoint, Record

__all__ = ["STREAM", "ReplayCounts", "ReplaySource"]

#: The stream of replay checkpoints (state is always None: no cursor is saved).
STREAM = "inbox.replay"
#: Entries read from the inbox at a time (their bodies are in memory together).
PAGE = 200


@dataclass
class ReplayCounts:
    """What a replay went through; the CLI prints it."""

    #: Entries the selectors chose.
    selected: int = 0
    #: Entries whose records every sink committed.
    replayed: int = 0
    #: Entries the decoder refused (their request UUIDs in ``refusals``).
    refused: int = 0
    #: Entries that give no record under these settings (an event since ignored).
    empty: int = 0
    #: Records handed to the pipeline.
    records: int = 0


class ReplaySource(Source[EmptyConfig]):
    """Yields the records of the inbox entries ``selection`` picks, oldest first."""

    def __init__(
        self,
        context: RunContext,
        *,
        spec: str,
        selection: InboxFilter,
        settings: DecodeSettings,
    ) -> None:
        super().__init__(EmptyConfig(), context)
        self.spec = spec
        self.selection = selection
        # Jobs are never run by replay: without ``backfill`` the decoder would
        # mark a truncated push ``truncated``, which is not what the daemon stored
        # when it had credentials, so the caller passes the daemon's value.
        self.settings = settings
        self.counts = ReplayCounts()
        self.refusals: list[tuple[str, str]] = []
        self._db: InboxDB | None = None

    async def __aenter__(self) -> ReplaySource:
        # Read-only: a SQLite inbox that is not there is an error, never created.
        self._db = await asyncio.to_thread(connect, self.spec, must_exist=True)
        self.context.source_info = {"type": "inbox_replay", "selection": _shown(self.selection)}
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[Record | Checkpoint]:
        if self._db is None:
            raise RuntimeError("the replay source is not open")
        entries: Iterator[InboxEntry] = self._db.entries(self.selection, page=PAGE)
        while True:
            # The inbox is read on a thread: the sinks keep writing meanwhile.
            page = await asyncio.to_thread(lambda: list(itertools.islice(entries, PAGE)))
            if not page:
                return
            for entry in page:
                self.counts.selected += 1
                derived = derive(entry, self.settings)
                if derived.error is not None:
                    self.counts.refused += 1
                    self.refusals.append((entry.row.request_uuid, derived.error))
                    self.context.logger.warning(
                        "replay: skipped delivery %s (%s): %s",
                        entry.row.request_uuid,
                        entry.row.event,
                        derived.error,
                    )
                    continue
                if not derived.records:
                    self.counts.empty += 1
                    continue
                self.counts.records += len(derived.records)
                for record in derived.records:
                    yield record
                yield Checkpoint(stream=STREAM, token=entry.row.id)

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        if checkpoint.stream == STREAM:
            self.counts.replayed += 1


def _shown(f: InboxFilter) -> dict[str, Any]:
    """The selection as the JSON artifact and the runs table report it."""
    out: dict[str, Any] = {}
    if f.repository is not None:
        out["repository"] = f.repository
    if f.since is not None:
        out["since"] = f.since
    if f.until is not None:
        out["until"] = f.until
    if f.request_uuids:
        out["request_uuids"] = list(f.request_uuids)
    return out or {"all": True}
