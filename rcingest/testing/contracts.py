"""Ready-made contract checks for plugin authors' own pytest tests.

Each check exercises a component the way ``rcingest.pipeline.Runner`` really
drives it, and fails with one ``AssertionError`` naming the component and the
rule it broke::

    async def test_my_sink(tmp_path):
        out = tmp_path / "out" / "x.csv"
        await check_sink_contract(lambda ctx: MySink(MySink.Config(path=str(out)), ctx),
                                  tmp_path=tmp_path)

The sink check also searches every byte the sink wrote for the secrets it
planted (``leaks.py``): reading back what a sink stored is not enough.

Only rules the runner relies on or the interface docstrings state are checked.
Deliberately not checked: that ``write`` fails before ``__aenter__`` or after
``__aexit__`` (no doc promises it, and ``json_artifact`` accepts both).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from rcingest.interfaces import (
    Batch,
    ComponentConfig,
    Enricher,
    RunContext,
    Sink,
    Source,
    StateStore,
    Window,
)
from rcingest.records import (
    Checkpoint,
    Commit,
    PullRequest,
    Record,
    Repository,
    WebhookDelivery,
)
from rcingest.testing.leaks import Dump, OutputScan
from rcingest.testing.samples import (
    CONTRACT_SECRETS,
    make_test_context,
    record_key,
    sample_records,
)

# The sample data they run on is in samples.py (rcingest.testing exports both).
__all__ = ["check_enricher_contract", "check_sink_contract", "check_source_contract"]

#: No single call of a well-behaved component takes this long on a test machine;
#: a hang becomes a named failure instead of a stuck test run.
CALL_TIMEOUT = 30.0
_RECORD_TYPES = (Repository, Commit, PullRequest, WebhookDelivery)
_decode_record = msgspec.json.Decoder(Record).decode

T = TypeVar("T")
SinkFactory = Callable[[RunContext], Sink[Any]]
SourceFactory = Callable[[RunContext], Source[Any]]
ReadBack = Callable[[], Iterable[Record | str] | Awaitable[Iterable[Record | str]]]


def _describe(record: Record) -> str:
    """Short name for messages: ``commit a1a1a1a1a1a1``, ``pull_request acme/api#7``."""
    if isinstance(record, Commit):
        return f"commit {record.hash[:12]}"
    return record_key(record)


class _Checker:
    """Names the component once, so every failure message has the same shape."""

    def __init__(self, kind: str, component: object) -> None:
        self.name = f"{kind} {type(component).__name__!r}"

    def fail(self, rule: str) -> AssertionError:
        return AssertionError(f"{self.name}: {rule}")

    async def call(self, what: str, awaitable: Awaitable[Any]) -> Any:
        deadline = asyncio.timeout(CALL_TIMEOUT)
        try:
            async with deadline:
                return await awaitable
        except Exception as exc:
            # A TimeoutError of the component's own (a network call) is its error, not a hang.
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise self.fail(f"{what} did not return within {CALL_TIMEOUT:g}s") from None
            raise self.fail(f"{what} raised {type(exc).__name__}: {exc}") from exc

    def config(self, component: object) -> None:
        """The runner converts YAML into ``Config``; ``rcingest schema`` documents it."""
        cfg = getattr(type(component), "Config", None)
        if not (isinstance(cfg, type) and issubclass(cfg, ComponentConfig)):
            raise self.fail(f"Config must be a msgspec Struct deriving ComponentConfig, not {cfg}")
        if not cfg.__struct_config__.forbid_unknown_fields:
            raise self.fail("Config accepts unknown fields (a typo in a pipeline would pass)")
        try:
            msgspec.json.schema(cfg)
        except Exception as exc:
            raise self.fail(f"Config has no JSON schema (rcingest schema needs it): {exc}") from exc
        if not isinstance(getattr(component, "config", None), cfg):
            raise self.fail("self.config is not an instance of its Config class")

    def unchanged(self, what: str, before: list[Any], after: Sequence[Record]) -> None:
        """Records are shared: the runner hands the same objects to every sink in turn."""
        now = msgspec.to_builtins(list(after))
        if len(now) != len(before):
            raise self.fail(f"{what} added or removed records of the batch it was given")
        for old, new, record in zip(before, now, after, strict=True):
            changed = [k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
            if changed:
                fields = ", ".join(repr(k) for k in changed)
                raise self.fail(
                    f"{what} mutated the records it was given ({_describe(record)}: field {fields})"
                )

    def valid(self, what: str, record: Record) -> None:
        """A record must survive the JSON round trip every sink and replay relies on."""
        try:
            _decode_record(msgspec.json.encode(record))
        except (msgspec.ValidationError, msgspec.DecodeError, TypeError) as exc:
            raise self.fail(f"{what} gave an invalid {_describe(record)}: {exc}") from exc
        stamps = [getattr(record, f, None) for f in ("date", "created_on", "updated_on")]
        stamps.append(getattr(record, "received_at", None))
        if any(isinstance(s, datetime) and s.tzinfo is None for s in stamps):
            raise self.fail(f"{what} gave {_describe(record)} a naive timestamp")


def _build(
    kind: str, factory: Callable[[RunContext], T], ctx: RunContext, awaited: tuple[str, ...]
) -> tuple[T, _Checker]:
    """The component ``factory`` builds, checked for its Config and its ``awaited`` methods."""
    try:
        component = factory(ctx)
    except Exception as exc:
        raise AssertionError(f"{kind} factory raised {type(exc).__name__}: {exc}") from exc
    check = _Checker(kind, component)
    check.config(component)
    for name in awaited:
        if not inspect.iscoroutinefunction(getattr(component, name, None)):
            raise check.fail(f"{name}() must be an async method (the runner awaits it)")
    return component, check


async def check_sink_contract(
    factory: SinkFactory,
    *,
    tmp_path: Path,
    records: Sequence[Record] | None = None,
    read_back: ReadBack | None = None,
    outputs: Sequence[str | Path] = (),
    dump: Dump | None = None,
) -> None:
    """Drive a sink through one run the way the runner does, replays included.

    ``factory(context)`` builds the sink; point its paths under ``tmp_path``.
    No secret of ``CONTRACT_SECRETS`` may appear, plain or encoded, in any file
    the run created or changed under ``tmp_path``, in the files ``outputs``
    names (paths, folders or globs, relative to ``tmp_path``), or in what
    ``dump()`` (sync or async) returns: the bytes a sink stored on a server.
    ``read_back()`` (optional, sync or async) returns what the sink stored
    after it closed, as records or ``record_key`` strings: each record written
    must be there exactly once.
    """
    given = list(sample_records() if records is None else records)
    # Listed before the sink exists: what is under tmp_path already is the test's own.
    scan = OutputScan(tmp_path, CONTRACT_SECRETS, outputs)
    ctx = make_test_context(tmp_path, secrets=CONTRACT_SECRETS)
    sink, check = _build("sink", factory, ctx, ("__aenter__", "__aexit__", "write", "flush"))
    streams = [Checkpoint("contract:main", {"page": 1, "cursor": "a1"}), Checkpoint("ack-only")]
    batch = Batch(records=given, checkpoints=streams)
    snapshot: list[Any] = msgspec.to_builtins(given)

    async def flush(what: str) -> None:
        await check.call(what, sink.flush())
        # A SQLite WAL or journal may hold a secret now and be gone after close.
        if leak := scan.during(f"after {what}"):
            raise check.fail(leak)

    async def write(what: str, b: Batch) -> None:
        # The runner writes then flushes each batch before it acknowledges anything.
        before_cps = list(b.checkpoints)
        await check.call(what, sink.write(b))
        check.unchanged(what, snapshot if b.records else [], b.records)
        if b.checkpoints != before_cps:
            raise check.fail(f"{what} changed the checkpoints of the batch it was given")
        await flush(f"flush() after {what}")

    # Like the runner: a sink that is a StateStore keeps the cursors and is asked for them.
    store = sink if isinstance(sink, StateStore) else None
    await check.call("__aenter__()", sink.__aenter__())
    try:
        if store is not None:
            first = await check.call("load_cursors()", store.load_cursors(ctx.source_id))
            if not isinstance(first, Mapping):
                raise check.fail("load_cursors() must return a mapping of stream to state")
        await flush("flush() before any write")
        # A source fills in the window and its description while streaming.
        dates = [r.date for r in given if isinstance(r, Commit)]
        if dates:
            ctx.window = Window(min(dates), max(dates) + timedelta(minutes=1))
        ctx.source_info = {"type": "contract", "repositories": ["acme/api"]}
        await write("write()", batch)
        await write("write() of an empty batch", Batch(records=[], checkpoints=[]))
        await write("write() of checkpoints only", Batch([], [Checkpoint("contract:main", None)]))
        # At-least-once: after a failure the runner (or a rerun) writes the same batch again.
        await write("write() of the same batch again (a replay)", batch)
        await flush("a second flush()")
        if store is not None:
            saved = await check.call("load_cursors()", store.load_cursors(ctx.source_id))
            if dict(saved).get("contract:main") != {"page": 1, "cursor": "a1"}:
                raise check.fail(
                    "load_cursors() does not return the checkpoint written with the batch "
                    f"(stream 'contract:main': {dict(saved).get('contract:main')!r})"
                )
    except BaseException as exc:
        ctx.status = "failed"
        await _quiet_exit(sink, exc)
        raise
    ctx.status = "succeeded"  # the runner sets it before it closes the sinks
    await check.call("__aexit__()", sink.__aexit__(None, None, None))
    check.unchanged("__aexit__()", snapshot, given)
    dumped = None if dump is None else await check.call("dump()", _awaited(dump))
    if leak := scan.after_close(dumped):
        raise check.fail(leak)
    if read_back is not None:
        await _check_read_back(check, scan, read_back, given)
    elif not scan.searched and dump is None:
        raise check.fail(
            f"wrote no file under tmp_path ({tmp_path}) and declares no outputs= or dump=, "
            "so nothing it stored could be searched for secrets"
        )


async def _awaited(produce: Callable[[], Any]) -> Any:
    got = produce()
    return await got if inspect.isawaitable(got) else got


async def _quiet_exit(component: Sink[Any] | Source[Any], exc: BaseException) -> None:
    # The contract failure is the error to report, not what the close says about it.
    try:
        await component.__aexit__(type(exc), exc, exc.__traceback__)
    except Exception:  # noqa: S110
        pass


async def _check_read_back(
    check: _Checker, scan: OutputScan, read_back: ReadBack, given: list[Record]
) -> None:
    """Closing writes the output; a replay stored nothing twice; no secret was stored."""
    stored = list(await check.call("read_back()", _awaited(read_back)))
    keys = [item if isinstance(item, str) else record_key(item) for item in stored]
    for record in given:
        n = keys.count(record_key(record))
        if n != 1:
            raise check.fail(
                f"{_describe(record)} is stored {n} times after close and a replay, not once"
            )
    if leak := scan.search(msgspec.json.encode(stored), "what read_back() returned", "after close"):
        raise check.fail(leak)


async def check_source_contract(
    factory: SourceFactory,
    *,
    tmp_path: Path,
    cursors: Mapping[str, dict[str, Any]] | None = None,
    limit: int = 1000,
    time_limit: float = 10.0,
) -> None:
    """Read at most ``limit`` items for at most ``time_limit`` seconds, acknowledge, stop.

    A source that ended on its own is read a second time with the cursors it
    checkpointed, round-tripped through JSON as every state store does.
    """
    ctx = make_test_context(tmp_path)
    source, check = _build("source", factory, ctx, ("acknowledge", "reject", "stop"))
    await check.call("__aenter__()", source.__aenter__())
    try:
        checkpoints, ended = await _read(check, source, dict(cursors or {}), limit, time_limit)
        # The runner acknowledges in order; serve mode may reject a failed batch's checkpoint.
        for cp in checkpoints[:-1]:
            await check.call("acknowledge()", source.acknowledge(cp))
        if checkpoints:
            await check.call("reject()", source.reject(checkpoints[-1], RuntimeError("contract")))
        await check.call("stop()", source.stop())
        if ended and checkpoints:
            # Streams not checkpointed again keep their old state, as in a state store.
            states = {
                **(cursors or {}),
                **{c.stream: c.state for c in checkpoints if c.state is not None},
            }
            resumed = msgspec.json.decode(msgspec.json.encode(states))
            await _read(check, source, resumed, limit, time_limit, "records(saved cursors)")
    except BaseException as exc:
        await _quiet_exit(source, exc)
        raise
    await check.call("__aexit__()", source.__aexit__(None, None, None))


async def _read(
    check: _Checker,
    source: Source[Any],
    cursors: dict[str, Any],
    limit: int,
    time_limit: float,
    what: str = "records()",
) -> tuple[list[Checkpoint], bool]:
    """The checkpoints read, and whether the source ended by itself (not limit or timeout)."""
    try:
        items = source.records(cursors)
    except Exception as exc:
        raise check.fail(f"{what} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(items, AsyncIterator):
        raise check.fail(f"{what} must return an async iterator, not {type(items).__name__}")
    checkpoints: list[Checkpoint] = []
    ended = False
    try:
        # A server never ends on its own: the timeout just stops reading.
        async with asyncio.timeout(time_limit):
            for n in range(1, limit + 1):
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    ended = True
                    break
                except Exception as exc:
                    raise check.fail(f"{what} raised {type(exc).__name__}: {exc}") from exc
                if isinstance(item, Checkpoint):
                    _checkpoint_ok(check, item, what)
                    checkpoints.append(item)
                elif isinstance(item, _RECORD_TYPES):
                    check.valid(what, item)
                else:
                    raise check.fail(
                        f"{what} yielded a {type(item).__name__} (item {n}), "
                        "not a Record or Checkpoint"
                    )
    except TimeoutError:
        pass
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await check.call(f"closing {what}", aclose())
    return checkpoints, ended


def _checkpoint_ok(check: _Checker, cp: Checkpoint, what: str) -> None:
    """Cursors are saved per stream as JSON (a state file or a database column)."""
    if not isinstance(cp.stream, str) or not cp.stream:
        raise check.fail(f"{what} yielded a checkpoint without a stream name")
    if cp.state is not None and not isinstance(cp.state, dict):
        raise check.fail(f"{what} yielded checkpoint {cp.stream!r} whose state is not a dict")
    try:
        msgspec.json.encode(cp.state)
    except TypeError as exc:
        raise check.fail(f"checkpoint {cp.stream!r} state is not JSON-encodable: {exc}") from exc


def check_enricher_contract(
    enricher: Enricher[Any], records: Sequence[Record] | None = None
) -> None:
    """``enrich`` is synchronous, pure, type-preserving and idempotent on every record."""
    check = _Checker("enricher", enricher)
    check.config(enricher)
    for record in sample_records() if records is None else records:
        before = msgspec.to_builtins([record])
        what = f"enrich({_describe(record)})"
        out = _enrich(check, enricher, record, what)
        check.unchanged("enrich()", before, [record])
        if type(out) is not type(record):
            got, want = type(out).__name__, type(record).__name__
            raise check.fail(f"{what} returned a {got}, not a {want}")
        check.valid("enrich()", out)
        # Pure: the same input gives the same output (enrichers run on replays too).
        if msgspec.to_builtins(_enrich(check, enricher, record, what)) != msgspec.to_builtins(out):
            raise check.fail(f"{what} is not deterministic: a second call gave another result")
        # Idempotent: a record replayed through a pipeline is enriched again.
        again = _enrich(check, enricher, out, what)
        if msgspec.to_builtins(again) != msgspec.to_builtins(out):
            diff = [k for k in out.__struct_fields__ if getattr(again, k) != getattr(out, k)]
            raise check.fail(f"{what} is not idempotent: enriching twice changed {diff}")


def _enrich(check: _Checker, enricher: Enricher[Any], record: Record, what: str) -> Record:
    try:
        out = enricher.enrich(record)
    except Exception as exc:
        raise check.fail(f"{what} raised {type(exc).__name__}: {exc}") from exc
    if inspect.isawaitable(out):
        if inspect.iscoroutine(out):
            out.close()  # never awaited: close it so no "never awaited" warning follows
        raise check.fail(f"{what} returned an awaitable: enrich must be synchronous")
    return out
