"""The runner, end to end from a YAML file: streaming, batching, cursors, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
from click.testing import CliRunner

import rcingest
from rcingest.cli import cli
from rcingest.config import load_pipeline
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.runtime import make_context
from tests.conftest import TestComponents

PIPELINE = """
name: e2e
timezone: America/Phoenix
source:
  type: test_counter
  config: {{count: {count}, checkpoint_every: 10{extra}}}
enrichers:
  - type: test_suffix
sinks:
  - type: jsonl
    config: {{path: '{out}'}}
  - type: test_memory
    config: {{key: mem{fail}}}
batch: {{size: 10, linger: 0}}
"""


def _pipeline(tmp_path: Path, count: int = 95, fail: str = "", extra: str = "") -> Path:
    path = tmp_path / "e2e.yaml"
    out = tmp_path / "out" / "records.jsonl"
    path.write_text(PIPELINE.format(count=count, out=out, fail=fail, extra=extra))
    return path


def _jsonl(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _cursor(tmp_path: Path) -> int:
    state = json.loads((tmp_path / "e2e.state.json").read_text())
    return int(state["e2e:test_counter"]["counter"]["next"])


def test_every_record_arrives_once_in_every_sink(manager: Any, memory: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(_pipeline(tmp_path)), "--json"], obj=manager)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stderr holds the log lines
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0
    assert summary["records"] == {"commit": 95}
    assert summary["sinks"] == {"jsonl": {"commit": 95}, "test_memory": {"commit": 95}}
    rows = _jsonl(tmp_path)
    hashes = [r["hash"] for r in rows]
    assert len(hashes) == len(set(hashes)) == 95
    assert all(r["message"].endswith(" [seen]") for r in rows)  # the enricher ran
    assert [c.hash for c in memory["mem"]] == hashes  # same order in both sinks
    assert memory["mem:status"] == ["succeeded"]
    assert _cursor(tmp_path) == 95


def test_text_summary(manager: Any, memory: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--config", str(_pipeline(tmp_path, 12))], obj=manager)
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output and "exit 0" in result.output
    assert "records: commit 12" in result.output
    assert "sink jsonl: records handed: commit 12" in result.output
    assert "window:  [2026-10-31T17:00:00-07:00" in result.output  # shown in the pipeline's zone
    quiet = CliRunner().invoke(cli, ["run", str(_pipeline(tmp_path, 12)), "-q"], obj=manager)
    assert quiet.exit_code == 0 and quiet.output == ""


def test_sink_crash_leaves_cursor_before_the_failed_batch(
    manager: Any, memory: Any, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli, ["run", str(_pipeline(tmp_path, fail=", fail_on_batch: 4"))], obj=manager
    )
    assert result.exit_code == 1
    assert "sink 'test_memory' failed: OSError: disk full (injected)" in result.output
    assert memory["mem:status"] == ["failed"]
    # Batches 1-3 (30 records) reached every sink; batch 4 did not reach test_memory.
    assert _cursor(tmp_path) == 30
    assert len(memory["mem"]) == 30
    # The re-run resumes at the cursor: work is repeated, never skipped.
    memory.clear()
    result = CliRunner().invoke(cli, ["run", str(_pipeline(tmp_path))], obj=manager)
    assert result.exit_code == 0, result.output
    assert [c.hash for c in memory["mem"]] == [f"{i:040x}" for i in range(30, 95)]
    assert {r["hash"] for r in _jsonl(tmp_path)} == {f"{i:040x}" for i in range(95)}


def test_source_failure_keeps_what_came_before(manager: Any, memory: Any, tmp_path: Path) -> None:
    path = _pipeline(tmp_path, extra=", fail_after: 25")
    result = CliRunner().invoke(cli, ["run", str(path)], obj=manager)
    assert result.exit_code == 1
    assert "source 'test_counter' failed: source broke at 25" in result.output
    assert len(memory["mem"]) == 25
    assert _cursor(tmp_path) == 20


def test_dry_run_writes_nothing(manager: Any, memory: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", str(_pipeline(tmp_path)), "--dry-run"], obj=manager)
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "records: commit 95" in result.output
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "e2e.state.json").exists()
    assert "mem" not in memory


class AheadConfig(rcingest.ComponentConfig):
    count: int = 3000


PROGRESS = {"yielded": 0, "max_ahead": 0}


class AheadSource(rcingest.Source[AheadConfig]):
    Config = AheadConfig

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[rcingest.Record | rcingest.Checkpoint]:
        for i in range(self.config.count):
            PROGRESS["yielded"] += 1
            yield rcingest.Repository(full_name=f"ws/r{i}")


class SlowSink(rcingest.Sink[rcingest.ComponentConfig]):
    written = 0

    async def write(self, batch: rcingest.Batch) -> None:
        await asyncio.sleep(0.001)
        SlowSink.written += len(batch.records)
        ahead = PROGRESS["yielded"] - SlowSink.written
        PROGRESS["max_ahead"] = max(PROGRESS["max_ahead"], ahead)


class Ahead:
    @rcingest.hookimpl
    def register_sources(self, register: Any) -> None:
        register("ahead", AheadSource)

    @rcingest.hookimpl
    def register_sinks(self, register: Any) -> None:
        register("slow", SlowSink)


async def test_bounded_queue_applies_backpressure(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "source: {type: ahead}\nsinks: [{type: slow}]\nbatch: {size: 50, queue: 100, linger: 0}\n"
    )
    registry = Registry(make_plugin_manager(load_entrypoints=False, extra=[("a", Ahead())]))
    pipeline = load_pipeline(path, registry)
    result = await Runner(pipeline, make_context(pipeline)).run()
    assert result.records == {"repository": 3000}
    # Never more than the queue plus one batch plus the item in hand in flight.
    assert PROGRESS["max_ahead"] <= 100 + 50 + 1


class ServeConfig(rcingest.ComponentConfig):
    #: Records per submission; each submission is followed by its checkpoint.
    per_submission: int = 1
    submissions: int = 3
    pause: float = 0.0


class ServeSource(rcingest.Source[ServeConfig]):
    Config = ServeConfig
    low_latency = True
    acked: list[int] = []
    rejected: list[int] = []

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[rcingest.Record | rcingest.Checkpoint]:
        for i in range(self.config.submissions):
            for j in range(self.config.per_submission):
                yield rcingest.Repository(full_name=f"ws/r{i}.{j}")
            yield rcingest.Checkpoint("webhook", None, token=i)
            await asyncio.sleep(self.config.pause)

    async def acknowledge(self, checkpoint: rcingest.Checkpoint) -> None:
        ServeSource.acked.append(checkpoint.token)

    async def reject(self, checkpoint: rcingest.Checkpoint, error: BaseException) -> None:
        ServeSource.rejected.append(checkpoint.token)


class Serve:
    @rcingest.hookimpl
    def register_sources(self, register: Any) -> None:
        register("serve_test", ServeSource)


async def _serve(tmp_path: Path, source: str, sink: str, batch: str = "{}") -> Any:
    ServeSource.acked, ServeSource.rejected = [], []
    path = tmp_path / "s.yaml"
    path.write_text(
        f"source: {{type: serve_test, config: {source}}}\n"
        f"sinks: [{{type: test_memory, config: {sink}}}]\nbatch: {batch}\n"
    )
    extra = [("s", Serve()), ("t", TestComponents())]
    pipeline = load_pipeline(
        path, Registry(make_plugin_manager(load_entrypoints=False, extra=extra))
    )
    return await Runner(pipeline, make_context(pipeline, mode="serve")).run()


async def test_serve_mode_retries_a_failed_batch_per_submission(
    tmp_path: Path, memory: Any
) -> None:
    # All three submissions arrive together (one batch); the middle one cannot be stored.
    result = await _serve(tmp_path, "{submissions: 3}", "{poison: ws/r1.0}")
    assert result.status == "succeeded"
    assert sorted(ServeSource.acked) == [0, 2] and ServeSource.rejected == [1]
    assert result.stats["pipeline.failed_batches"] == 1
    assert result.stats["pipeline.rejected"] == 1
    assert sorted(r.full_name for r in memory["default"]) == ["ws/r0.0", "ws/r2.0"]


async def test_serve_mode_transient_failure_is_retried_once(tmp_path: Path, memory: Any) -> None:
    result = await _serve(tmp_path, "{submissions: 3, pause: 0.05}", "{fail_on_batch: 2}")
    assert ServeSource.acked == [0, 1, 2] and ServeSource.rejected == []
    assert result.stats["pipeline.failed_batches"] == 1


async def test_serve_mode_never_acknowledges_half_a_submission(tmp_path: Path, memory: Any) -> None:
    # Submissions of 6 records with batches of 1: a batch is cut inside a
    # submission only at the hard cap (4 x size). The first part cannot be
    # stored, so the submission's checkpoint, in a later batch, is rejected
    # although the rest of its records were written.
    result = await _serve(
        tmp_path,
        "{submissions: 2, per_submission: 6}",
        "{poison: ws/r0.1}",
        "{size: 1}",
    )
    assert ServeSource.rejected == [0] and ServeSource.acked == [1]
    assert result.stats["pipeline.rejected"] == 1


def test_records_file_replays_jsonl_output(manager: Any, memory: Any, tmp_path: Path) -> None:
    CliRunner().invoke(cli, ["run", str(_pipeline(tmp_path, 7))], obj=manager)
    replay = tmp_path / "replay.yaml"
    records = tmp_path / "out" / "records.jsonl"
    replay.write_text(
        f"source: {{type: records_file, config: {{path: '{records}'}}}}\n"
        "sinks: [{type: test_memory, config: {key: replayed}}]\n"
    )
    result = CliRunner().invoke(cli, ["run", str(replay)], obj=manager)
    assert result.exit_code == 0, result.output
    assert len(memory["replayed"]) == 7
    first = memory["replayed"][0]
    assert isinstance(first, rcingest.Commit)
    assert msgspec.json.decode(msgspec.json.encode(first), type=rcingest.Commit) == first
    # A second replay resumes after the last line: nothing new.
    memory.clear()
    CliRunner().invoke(cli, ["run", str(replay)], obj=manager)
    assert memory.get("replayed", []) == []


class PickyConfig(rcingest.ComponentConfig):
    token: str = ""


class PickySource(rcingest.Source[PickyConfig]):
    Config = PickyConfig

    def __init__(self, config: PickyConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        if not config.token:
            from rcingest.errors import ConfigError

            raise ConfigError("no token: set MY_TOKEN")


class Picky:
    @rcingest.hookimpl
    def register_sources(self, register: Any) -> None:
        register("picky", PickySource)


def test_a_component_refusing_its_config_is_a_config_error(tmp_path: Path, memory: Any) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("source: {type: picky}\nsinks: [{type: test_memory}]\n")
    manager = make_plugin_manager(extra=[("p", Picky()), ("t", TestComponents())])
    for command in ("run", "serve"):
        result = CliRunner().invoke(cli, [command, str(path)], obj=manager)
        assert result.exit_code == 2, result.output
        assert f"{path}: $.source (picky): no token: set MY_TOKEN" in result.output
        assert "Traceback" not in result.output
    assert "default" not in memory


class EndlessSource(rcingest.Source[rcingest.ComponentConfig]):
    """A scan that never ends by itself (a hung API): only a signal stops it."""

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[rcingest.Record | rcingest.Checkpoint]:
        for i in range(5):
            yield rcingest.Repository(full_name=f"ws/r{i}")
        yield rcingest.Checkpoint("endless", {"done": 5})
        await asyncio.sleep(3600)
        yield rcingest.Repository(full_name="ws/never")


class Endless:
    @rcingest.hookimpl
    def register_sources(self, register: Any) -> None:
        register("endless", EndlessSource)


async def test_stop_cuts_a_scan_short_and_keeps_what_was_produced(
    tmp_path: Path, memory: Any
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("source: {type: endless}\nsinks: [{type: test_memory}]\n")
    extra = [("e", Endless()), ("t", TestComponents())]
    pipeline = load_pipeline(path, Registry(make_plugin_manager(extra=extra)))
    runner = Runner(pipeline, make_context(pipeline))
    task = asyncio.create_task(runner.run())
    for _ in range(1000):  # bounded, so a stuck runner fails instead of hanging
        if len(memory.get("default", [])) >= 5:
            break
        await asyncio.sleep(0.01)
    assert len(memory.get("default", [])) >= 5
    await asyncio.wait_for(runner.stop(), 5)
    result = await asyncio.wait_for(task, 5)
    assert result.status == "interrupted"
    assert [r.full_name for r in memory["default"]] == [f"ws/r{i}" for i in range(5)]
    state = json.loads((tmp_path / "p.state.json").read_text())
    assert state[f"{pipeline.config.name}:endless"]["endless"] == {"done": 5}
