"""The component contracts: what a Source, an Enricher and a Sink are.

Plugins subclass these bases (or satisfy the same shape); each component class
declares a strict msgspec ``Config`` Struct that its YAML ``config:`` block is
converted into. Components are built as ``cls(config, context)``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar
from zoneinfo import ZoneInfo

import msgspec

from rcingest.records import Checkpoint, Record
from rcingest.scanning.model import DiffFile, Finding

__all__ = [
    "Batch",
    "ComponentConfig",
    "Enricher",
    "RunContext",
    "Scanner",
    "Sink",
    "Source",
    "StateStore",
    "Stats",
    "Window",
]


class ComponentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for component ``Config`` Structs: unknown fields are errors (typos must not pass)."""


class EmptyConfig(ComponentConfig):
    """For components that take no settings."""


C = TypeVar("C", bound=ComponentConfig)


class Window(msgspec.Struct, frozen=True):
    """A half-open time window ``[start, end)``, both timezone-aware."""

    start: datetime
    end: datetime

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end


class Stats:
    """Thread-safe named counters that any component may add to.

    Names are dotted, ``<area>.<what>`` (``http.requests``, ``http.retries``,
    ``http.rate_limited``); the run summary and the JSON artifact read them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


@dataclass
class RunContext:
    """What every component of one run shares.

    ``window`` and ``source_info`` are filled in by the source once it knows
    them (the window it scans; its type, workspace, repositories, branches) so
    that sinks such as the JSON artifact can report them. ``status`` is set by
    the runner before the sinks are closed.
    """

    run_id: str
    pipeline_name: str
    timezone: ZoneInfo
    started_at: datetime
    base_dir: Path
    source_id: str = ""
    mode: Literal["run", "serve", "replay"] = "run"
    #: ``rcingest normalise``: a server source's pipeline runs without serving
    #: (the webhook daemon's normaliser in a process of its own).
    worker: bool = False
    dry_run: bool = False
    git_sha: str | None = None
    stats: Stats = field(default_factory=Stats)
    window: Window | None = None
    source_info: dict[str, Any] = field(default_factory=dict)
    status: Literal["running", "succeeded", "failed", "interrupted"] = "running"
    secrets: frozenset[str] = frozenset()
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("rcingest"))
    #: The pipeline's scanners (``scanners:``), built by the runner before the
    #: source, for the sources that scan pull requests or repositories.
    scanners: list[Scanner[Any]] = field(default_factory=list)
    #: Settings shared by those sources (``scanning:``); see ``rcingest.scanning.settings``.
    scanning: Any = None
    #: The pipeline's ``compliance:`` section and its resolved policy (None without).
    compliance: Any = None
    policy: Any = None
    #: (mode, projects) of the pipeline's story_keys enricher, for the policy's story_key rules.
    story_keys: tuple[str, list[str] | None] = ("strict", None)
    #: The fingerprint key once loaded (``Scanner.fingerprint_key``); never logged.
    fingerprint_key: bytes | None = field(default=None, repr=False)

    def local(self, moment: datetime) -> datetime:
        """``moment`` converted to the pipeline's timezone."""
        return moment.astimezone(self.timezone)


class Batch(msgspec.Struct):
    """Records and the checkpoints that follow them, in arrival order.

    Each checkpoint covers every record before it in this batch and in earlier
    batches. A sink that stores cursors saves ``checkpoints`` in the same
    transaction as ``records``.
    """

    records: list[Record]
    checkpoints: list[Checkpoint] = []


class _Component(Generic[C]):
    """What every component shares: its ``Config`` Struct, and how it is built.

    The runner builds a component as ``cls(config, context)``, with ``config``
    already converted into ``cls.Config``; constructors do no I/O.
    """

    Config: ClassVar[type[ComponentConfig]] = EmptyConfig

    def __init__(self, config: C, context: RunContext) -> None:
        self.config: C = config
        self.context: RunContext = context


class _AsyncComponent(_Component[C]):
    """A component that is also an async context manager: I/O opens in ``__aenter__``."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Source(_AsyncComponent[C]):
    """Produces records, and checkpoints that say what is complete.

    ``records`` is an async generator. ``cursors`` maps each stream a source
    checkpointed in an earlier run to the last state it saved, so a source can
    resume. ``acknowledge`` is called, in order, once every sink has flushed
    everything before a checkpoint.
    """

    #: A server-like source (webhooks) wants small, immediate batches.
    low_latency: ClassVar[bool] = False

    def records(self, cursors: Mapping[str, dict[str, Any]]) -> AsyncIterator[Record | Checkpoint]:
        raise NotImplementedError

    async def acknowledge(self, checkpoint: Checkpoint) -> None:
        """Everything before ``checkpoint`` is durably stored by every sink."""
        return None

    async def reject(self, checkpoint: Checkpoint, error: BaseException) -> None:
        """Serve mode: a sink failed to store the batch before ``checkpoint``.

        The daemon keeps running; a webhook source answers 503 so the sender
        retries. In run mode a sink failure ends the run instead.
        """
        return None

    async def stop(self) -> None:
        """Serve mode: stop accepting new work and end ``records`` after draining."""
        return None


class Enricher(_Component[C]):
    """A synchronous, pure function of one record: returns the record or a changed copy."""

    def enrich(self, record: Record) -> Record:
        raise NotImplementedError


class Sink(_AsyncComponent[C]):
    """An async context manager that writes batches.

    ``write`` may buffer; ``flush`` makes everything written so far durable.
    The runner calls ``flush`` after every batch before it acknowledges the
    batch's checkpoints. ``__aexit__`` sees ``context.status`` already set.
    """

    async def write(self, batch: Batch) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        return None


class Scanner(_Component[C]):
    """Finds secrets in the lines a change adds; returns findings without the secret.

    ``scan`` gets the files of one diff, or of a repository's content (every
    line then counts as added), and returns ``Finding``s whose fingerprint is
    ``fingerprint(key, rule_id, secret)`` with ``key`` from ``fingerprint_key``
    and whose excerpt shows at most four characters of the secret
    (``rcingest.scanning.model.redact_secret``). ``allowed`` says whether the
    scanner's own allowlist allows a finding (then it is recorded as allowed,
    not reported). Constructors do no I/O; a scanner that needs to (a process,
    a rule file) does it in ``scan``.
    """

    #: Set by the runner to the pipeline's label for this scanner (``secrets``).
    name: str = ""

    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]:
        raise NotImplementedError

    def allowed(self, finding: Finding) -> bool:
        return False

    @property
    def fingerprint_key(self) -> bytes:
        """The installation's fingerprint key (``scanning.fingerprint_key`` or its key file)."""
        from rcingest.scanning.keys import DEFAULT_KEY_FILE, load_fingerprint_key

        if self.context.fingerprint_key is None:
            settings = self.context.scanning
            self.context.fingerprint_key = load_fingerprint_key(
                getattr(settings, "fingerprint_key", None),
                getattr(settings, "key_file", DEFAULT_KEY_FILE),
            )
        return self.context.fingerprint_key


class StateStore:
    """A place where source cursors live between runs.

    A sink may also be a ``StateStore`` (the database sink is): the runner then
    loads cursors from it, and the sink saves ``Batch.checkpoints`` together
    with the rows. Otherwise the runner keeps cursors in a JSON file beside the
    pipeline.
    """

    async def load_cursors(self, source_id: str) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    async def save_cursors(self, source_id: str, checkpoints: Sequence[Checkpoint]) -> None:
        raise NotImplementedError
