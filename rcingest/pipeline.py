"""The runner: source → enrichers → sinks, streamed through a bounded queue.

Guarantees (at-least-once with idempotent sinks):

* every sink gets every record, in source order, in batches by size and time;
* a checkpoint is saved and acknowledged only after *every* sink has written
  and flushed all records before it, so a crash repeats work, never skips it;
* a sink error fails the run naming the sink, and nothing after it is marked
  done; a source error still stores what came before it, then fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from rcingest.config import Component, Pipeline, story_key_defaults
from rcingest.errors import ConfigError, RunFailed, SinkError
from rcingest.interfaces import Batch, Enricher, RunContext, Sink, Source, StateStore, Window
from rcingest.records import Checkpoint, Record, record_type
from rcingest.state import FileStateStore


@dataclass
class RunResult:
    """What a run did; the CLI prints it as the summary."""

    run_id: str
    status: str
    duration: float
    records: dict[str, int] = field(default_factory=dict)
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)
    checkpoints: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    window: Window | None = None
    error: str | None = None
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "window"}
        out["window"] = msgspec.to_builtins(self.window) if self.window else None
        return out


class _End:
    """Queue sentinel: the source finished (``error`` set if it failed)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


#: Told the run's counts and its context once the source and sinks are open,
#: then after every batch written. It runs on the event loop: it must be quick
#: (the terminal display, ``rcingest.progress``, only stores what it is given).
Progress = Callable[[RunResult, RunContext], None]


def state_file_for(pipeline: Pipeline) -> Path:
    if pipeline.config.state_file:
        return (pipeline.path.parent / pipeline.config.state_file).resolve()
    return pipeline.path.with_name(pipeline.path.stem + ".state.json")


class Runner:
    """Runs one pipeline once (``run``) or until stopped (``serve``)."""

    def __init__(
        self,
        pipeline: Pipeline,
        context: RunContext,
        progress: Progress | None = None,
        source: Source[Any] | None = None,
    ):
        """``source``, when given, replaces the pipeline's own (``rcingest replay``
        feeds the pipeline's enrichers and sinks from the inbox)."""
        self.pipeline = pipeline
        self.context = context
        self.progress = progress
        # Scanners first: the source that scans finds them in the context.
        context.scanning = pipeline.config.scanning
        context.compliance = pipeline.config.compliance
        context.policy = pipeline.policy
        context.story_keys = story_key_defaults(pipeline)
        context.scanners = [self._build(c) for c in pipeline.scanners]
        for scanner, component in zip(context.scanners, pipeline.scanners, strict=True):
            scanner.name = component.label
        self.source: Source[Any] = source if source is not None else self._build(pipeline.source)
        self.enrichers: list[Enricher[Any]] = [self._build(c) for c in pipeline.enrichers]
        # A dry run fetches and enriches but builds no sink: nothing can be written.
        chosen = [] if context.dry_run else pipeline.sinks
        self.sink_labels = [c.label for c in chosen]
        self.sinks: list[Sink[Any]] = [self._build(c) for c in chosen]
        # The sink that stores cursors is written last: it commits checkpoints
        # with its rows, which must not happen before every other sink flushed.
        self._write_order = sorted(
            zip(self.sink_labels, self.sinks, strict=True),
            key=lambda pair: isinstance(pair[1], StateStore),
        )
        self.result = RunResult(context.run_id, "running", 0.0, dry_run=context.dry_run)
        self._stopping = asyncio.Event()
        self._carry: Record | Checkpoint | _End | None = None
        self._producer: asyncio.Task[None] | None = None
        self._consumed = False
        #: Serve mode: the error of records that failed after the last checkpoint.
        self._failed_tail: SinkError | None = None

    def _build(self, component: Component) -> Any:
        where = f"{self.pipeline.path}: {component.path} ({component.label})"
        try:
            return component.registered.component(component.config, self.context)
        except ConfigError as exc:
            # A setting the component refuses (a missing secret): bad config, exit 2.
            raise ConfigError(f"{where}: {exc}") from exc
        except Exception as exc:
            raise RunFailed(f"{where}: cannot start: {exc}") from exc

    def _state_store(self) -> tuple[StateStore, bool]:
        """The cursor store, and whether a sink saves checkpoints itself in its transaction."""
        for sink in self.sinks:
            if isinstance(sink, StateStore):
                return sink, True
        return FileStateStore(state_file_for(self.pipeline)), False

    async def stop(self) -> None:
        """Stop on a signal: what the source already produced is still written.

        A server-like source (serve mode) is asked to stop accepting and drain.
        A scan is cut short: its producer task is cancelled, the records and
        checkpoints already queued are written, and the run ends "interrupted"
        with its cursors where the last complete checkpoint left them.
        """
        self._stopping.set()
        await self.source.stop()
        # (A replay is cut short like a scan: only a server drains.)
        if self.context.mode != "serve" and self._producer is not None:
            self._producer.cancel()

    async def run(self) -> RunResult:
        started = time.monotonic()
        ctx = self.context
        try:
            async with contextlib.AsyncExitStack() as stack:
                for label, sink in zip(self.sink_labels, self.sinks, strict=True):
                    try:
                        await stack.enter_async_context(sink)
                    except Exception as exc:
                        raise SinkError(f"sink {label!r} failed to open: {exc}") from exc
                await stack.enter_async_context(self.source)
                try:
                    await self._stream()
                    ctx.status = (
                        "interrupted"
                        if self._stopping.is_set() and ctx.mode != "serve"
                        else "succeeded"
                    )
                except BaseException:
                    ctx.status = "failed"
                    raise
        except RunFailed as exc:  # SinkError included
            # A sink or the source that failed to open never set a status.
            if ctx.status == "running":
                ctx.status = "failed"
            self.result.error = str(exc)
            raise
        except Exception as exc:
            # A sink's close (the artifact write, the final commit) failed.
            self.result.error = f"{type(exc).__name__}: {exc}"
            ctx.status = "failed"
            raise RunFailed(self.result.error) from exc
        finally:
            self._finish(started)
        return self.result

    def _finish(self, started: float) -> None:
        self.result.status = self.context.status
        self.result.duration = round(time.monotonic() - started, 3)
        self.result.stats = self.context.stats.snapshot()
        self.result.window = self.context.window

    async def _stream(self) -> None:
        batch_cfg = self.pipeline.config.batch
        queue: asyncio.Queue[Record | Checkpoint | _End] = asyncio.Queue(maxsize=batch_cfg.queue)
        store, sink_saves = self._state_store()
        cursors = await store.load_cursors(self.context.source_id)
        if self.progress is not None:
            self.progress(self.result, self.context)
        producer = asyncio.create_task(self._produce(queue, cursors), name="rcingest-source")
        self._producer = producer
        try:
            await self._consume(queue, store, sink_saves)
        finally:
            self._consumed = True
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer

    async def _produce(
        self, queue: asyncio.Queue[Record | Checkpoint | _End], cursors: dict[str, Any]
    ) -> None:
        try:
            async for item in self.source.records(cursors):
                if not isinstance(item, Checkpoint):
                    for enricher in self.enrichers:
                        item = enricher.enrich(item)
                await queue.put(item)
        except asyncio.CancelledError:
            if not self._stopping.is_set() or self._consumed:
                raise
            # Cancelled by stop(): end the stream so the consumer writes what is queued.
            await queue.put(_End())
            return
        except Exception as exc:
            await queue.put(_End(exc))
            return
        await queue.put(_End())

    async def _next_batch(
        self, queue: asyncio.Queue[Record | Checkpoint | _End]
    ) -> tuple[Batch, list[Record | Checkpoint], _End | None]:
        """The next batch, its items in arrival order, and the end marker if the source ended."""
        cfg = self.pipeline.config.batch
        low_latency = self.source.low_latency
        linger = 0.0 if low_latency else cfg.linger
        batch = Batch(records=[], checkpoints=[])
        items: list[Record | Checkpoint] = []
        item = self._carry if self._carry is not None else await queue.get()
        self._carry = None
        deadline = time.monotonic() + linger
        while True:
            if isinstance(item, _End):
                return batch, items, item
            if isinstance(item, Checkpoint):
                batch.checkpoints.append(item)
                items.append(item)
            elif len(batch.records) >= cfg.size and (
                # A server's submission (records, then its checkpoint) is not
                # split across batches, up to a hard cap, so one failed write
                # never leaves half a delivery stored and half acknowledged.
                not low_latency
                or isinstance(items[-1], Checkpoint)
                or len(batch.records) >= 4 * cfg.size
            ):
                # Full: this record opens the next batch. Checkpoints that
                # directly follow a full batch still ride with it, so the
                # cursor advances as far as the data written.
                self._carry = item
                return batch, items, None
            else:
                batch.records.append(item)
                items.append(item)
            try:
                item = queue.get_nowait()
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return batch, items, None
            try:
                item = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                return batch, items, None

    async def _consume(
        self,
        queue: asyncio.Queue[Record | Checkpoint | _End],
        store: StateStore,
        sink_saves: bool,
    ) -> None:
        while True:
            batch, items, end = await self._next_batch(queue)
            if items:
                if self._failed_tail is not None and self.context.mode == "serve":
                    await self._salvage(items, store, sink_saves)
                else:
                    try:
                        await self._deliver(batch, store, sink_saves)
                    except SinkError as exc:
                        if self.context.mode != "serve":
                            raise
                        # A daemon outlives a failed write: it retries the batch
                        # one submission at a time, so one bad delivery cannot
                        # take the others down with it.
                        self.context.stats.incr("pipeline.failed_batches")
                        self.context.logger.error("%s", exc)
                        await self._salvage(items, store, sink_saves)
            if end is not None:
                if end.error is not None:
                    raise RunFailed(
                        f"source {self.pipeline.source.label!r} failed: {end.error}"
                    ) from end.error
                return

    async def _salvage(
        self, items: list[Record | Checkpoint], store: StateStore, sink_saves: bool
    ) -> None:
        """Serve mode: write ``items`` segment by segment (records up to a checkpoint).

        A segment that stores is acknowledged; one that fails is rejected (its
        sender gets 503 and retries). Records after the last checkpoint that
        fail poison the next checkpoint, which covers them: it is rejected too,
        whatever becomes of the rest of its segment.
        """
        segment: list[Record] = []
        for item in [*items, None]:
            if isinstance(item, Checkpoint) or item is None:
                earlier = self._failed_tail
                checkpoints = [item] if item is not None and earlier is None else []
                error: SinkError | None = None
                if segment or checkpoints:
                    try:
                        await self._deliver(Batch(segment, checkpoints), store, sink_saves)
                    except SinkError as exc:
                        error = exc
                        self.context.logger.error("%s", exc)
                if item is None:
                    if error is not None:
                        self._failed_tail = error
                    return
                self._failed_tail = None
                reason = error if error is not None else earlier
                if reason is not None:
                    self.context.stats.incr("pipeline.rejected")
                    await self.source.reject(item, reason)
                segment = []
            else:
                segment.append(item)

    async def _deliver(self, batch: Batch, store: StateStore, sink_saves: bool) -> None:
        # Checkpoints may sit between records; a checkpoint covers only what
        # precedes it, but a batch is written whole before any of its
        # checkpoints is acknowledged, so acknowledging all of them is safe.
        types = Counter(record_type(r) for r in batch.records)
        for label, sink in self._write_order:
            try:
                await sink.write(batch)
                await sink.flush()
            except Exception as exc:
                raise SinkError(f"sink {label!r} failed: {type(exc).__name__}: {exc}") from exc
            per_sink = self.result.sinks.setdefault(label, defaultdict(int))
            for name, n in types.items():
                per_sink[name] += n
        if not self.context.dry_run:
            if not sink_saves:
                await store.save_cursors(self.context.source_id, batch.checkpoints)
            for checkpoint in batch.checkpoints:
                await self.source.acknowledge(checkpoint)
        for name, n in types.items():
            self.result.records[name] = self.result.records.get(name, 0) + n
        self.result.checkpoints += len(batch.checkpoints)
        if self.progress is not None:
            self.progress(self.result, self.context)
