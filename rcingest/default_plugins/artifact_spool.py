"""The making of a JSON artifact: the spooled commit summaries of one period.

A period is the whole run, or one hour of a daemon. Commit summaries go to a
temporary JSON Lines spool as they arrive, so memory stays bounded; a commit
seen twice has one summary, its two sightings merged; the final file is
streamed from the spool and replaced atomically. The sink that drives this is
``rcingest.default_plugins.json_artifact``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from rcingest.artifact import (
    ArtifactCounts,
    ArtifactScan,
    ArtifactWindow,
    CommitAuthor,
    CommitSummary,
    RunArtifact,
    SummaryStoryKey,
    run_schema,
)
from rcingest.records import StoryKeyOrigin
from rcingest.schema_text import dumps
from rcingest.state import atomic_write
from rcingest.storykeys import ordered_origins

#: The schema copy's name beside the artifacts (``rcingest schema run``).
SCHEMA_COPY_NAME = "run.schema.json"

_encode = msgspec.json.Encoder().encode
_decode_summary = msgspec.json.Decoder(CommitSummary).decode


def merge_summaries(old: CommitSummary, new: CommitSummary) -> CommitSummary:
    """One commit's two summaries as one, as the database merges its rows.

    Branches and story keys (with their origins) are united; a known file
    list stays known; an author name or account the new sighting lacks is
    kept; the rest (message, date) is the new sighting's.
    """
    branches = old.branches + [b for b in new.branches if b not in old.branches]
    keys: dict[str, list[StoryKeyOrigin]] = {}
    lent: dict[str, list[str]] = {}
    for sk in (*old.story_keys, *new.story_keys):
        keys[sk.key] = list(ordered_origins(keys.get(sk.key, ()), sk.origins))
        names = lent.setdefault(sk.key, [])
        names.extend(b for b in sk.branches if b not in names)
    author = CommitAuthor(
        raw=new.author.raw or old.author.raw,
        name=new.author.name if new.author.name is not None else old.author.name,
        account_id=new.author.account_id
        if new.author.account_id is not None
        else old.author.account_id,
    )
    known = new.files is not None or new.files_changed is not None
    return msgspec.structs.replace(
        new,
        branches=branches,
        author=author,
        summary=new.summary or old.summary,
        files_changed=new.files_changed if known else old.files_changed,
        files=new.files if known else old.files,
        story_keys=[SummaryStoryKey(key, origins, lent[key]) for key, origins in keys.items()],
    )


class Period:
    """One artifact in the making: the whole run, or one hour of a daemon."""

    def __init__(self, name: str, window: ArtifactWindow | None, stats: dict[str, int]) -> None:
        self.name = name
        self.window = window
        self.spool: IO[bytes] = tempfile.TemporaryFile(prefix="rcingest-artifact-")
        self.lines = 0
        # (repository, hash) -> (line number, byte offset of the line or -1, files
        # changed). Per repository: a fork's copy of a commit is its own summary,
        # with the fork's branches, as in the database's commit_branches.
        self.latest: dict[tuple[str, str], tuple[int, int, int | None]] = {}
        self.superseded: set[int] = set()
        self.repositories: set[str] = set()
        self.keys: set[str] = set()
        self.pull_requests: set[tuple[str, int]] = set()
        self.deliveries: set[str] = set()
        #: (repository, PR, head) -> its latest scan (few per run: kept in memory).
        self.scans: dict[tuple[str, int, str], ArtifactScan] = {}
        # Stats are per process; a period reports the difference since it began
        # (plus what an earlier process wrote into the same hour's file).
        self.base = {k: -v for k, v in stats.items()}

    def _spooled(self, offset: int) -> CommitSummary:
        """The summary spooled at ``offset`` (the spool is left positioned at its end)."""
        self.spool.seek(offset)
        line = self.spool.readline()
        self.spool.seek(0, os.SEEK_END)
        return _decode_summary(line)

    def add_summary(self, summary: CommitSummary, spool: bool) -> None:
        """Count ``summary`` and, when ``spool``, keep it for the payload.

        A commit seen before is merged into its earlier summary (see
        :func:`merge_summaries`), so a later sighting (the push to main of a
        commit first pushed to a feature branch) adds to what is known and
        never erases it. The merged summary takes the later position.
        """
        key = (summary.repository, summary.hash)
        previous = self.latest.get(key)
        files_changed = summary.files_changed
        if previous is not None:
            if previous[1] >= 0:
                self.superseded.add(previous[0])
                summary = merge_summaries(self._spooled(previous[1]), summary)
            if files_changed is None:
                files_changed = previous[2]
        index = offset = -1
        if spool:
            index = self.lines
            offset = self.spool.tell()
            self.spool.write(_encode(summary) + b"\n")
            self.lines += 1
        self.latest[key] = (index, offset, files_changed)
        self.repositories.add(summary.repository)
        self.keys.update(k.key for k in summary.story_keys)

    def continue_from(self, old: RunArtifact) -> None:
        """Carry an earlier process's file for the same hour into this period.

        Its commits and pull-request scans come back; what only its counts know
        (pull requests, deliveries, requests, retries) is added as a base.
        """
        for summary in old.payload:
            self.add_summary(summary, True)
        for scan in old.pull_request_scans:
            self.scans.setdefault((scan.repository, scan.pull_request_id, scan.head), scan)
        for field in ("repositories", "pull_requests", "deliveries"):
            self.base[field] = getattr(old.counts, field)
        for stat, field in (("http.requests", "requests"), ("http.retries", "retries")):
            self.base[stat] = self.base.get(stat, 0) + getattr(old.counts, field)

    def counts(self, stats: dict[str, int]) -> ArtifactCounts:
        """The counts of this period, given the run's current stats."""
        # Counted per commit, not per repository holding it.
        changed: dict[str, int | None] = {}
        for (_repository, commit_hash), (_line, _offset, n) in self.latest.items():
            if changed.get(commit_hash) is None:
                changed[commit_hash] = n
        files = sum(n or 0 for n in changed.values())
        return ArtifactCounts(
            # A continued hour knows only the old number of repositories.
            repositories=max(len(self.repositories), self.base.get("repositories", 0)),
            commits=len(changed),
            files=files,
            keys=len(self.keys),
            pull_requests=len(self.pull_requests) + self.base.get("pull_requests", 0),
            deliveries=len(self.deliveries) + self.base.get("deliveries", 0),
            requests=max(0, stats.get("http.requests", 0) + self.base.get("http.requests", 0)),
            retries=max(0, stats.get("http.retries", 0) + self.base.get("http.retries", 0)),
        )

    def payload_lines(self) -> Iterable[bytes]:
        """The spooled summaries, each commit's last one only, in arrival order."""
        self.spool.seek(0)
        for i, line in enumerate(self.spool):
            if i not in self.superseded:
                yield line.rstrip(b"\n")

    def close(self) -> None:
        self.spool.close()


def write_streamed(path: Path, header: RunArtifact, payload: Iterable[bytes]) -> None:
    """Write ``header`` with ``payload`` (encoded summaries) as its last field, atomically."""
    head = msgspec.json.format(_encode(header), indent=2)
    tail = b'"payload": []\n}'
    if not head.endswith(tail):  # pragma: no cover - guarded by RunArtifact's field order
        raise RuntimeError("RunArtifact.payload must be its last field")

    def chunks() -> Iterator[bytes]:
        yield head[: -len(tail)] + b'"payload": ['
        first = True
        for line in payload:
            yield b"\n    " + line if first else b",\n    " + line
            first = False
        yield b"\n  ]\n}\n" if not first else b"]\n}\n"

    atomic_write(path, chunks())


def refresh_schema_copy(directory: Path) -> bool:
    """Write ``run.schema.json`` beside the artifacts unless an identical copy is there.

    The runbook points auditors at ``<artifacts>/run.schema.json``, wherever the
    artifacts go; it is ``rcingest schema run``. True when the file was (re)written.
    """
    content = dumps(run_schema()).encode("utf-8")
    path = directory / SCHEMA_COPY_NAME
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, content)
    return True
