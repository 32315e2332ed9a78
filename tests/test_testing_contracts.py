"""rcingest.testing.contracts: built-ins pass the contract checks, broken components fail them."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

import rcingest
from rcingest import testing
from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.files import RecordsFileConfig, RecordsFileSource
from rcingest.default_plugins.json_artifact import JsonArtifactConfig, JsonArtifactSink
from rcingest.default_plugins.story_keys import StoryKeysConfig, StoryKeysEnricher
from rcingest.interfaces import EmptyConfig
from rcingest.records import Commit, Record, record_type
from rcingest.testing import (
    CONTRACT_SECRET,
    check_enricher_contract,
    check_sink_contract,
    check_source_contract,
    make_test_context,
    record_key,
    sample_records,
)

# --- the helpers themselves ----------------------------------------------------------


def test_make_test_context_defaults_and_overrides(tmp_path: Path) -> None:
    ctx = make_test_context(tmp_path)
    assert str(ctx.timezone) == "America/Phoenix" and ctx.mode == "run"
    assert ctx.base_dir == tmp_path and ctx.started_at.tzinfo is not None
    serve = make_test_context(tmp_path, mode="serve", run_id="r-2")
    assert serve.mode == "serve" and serve.run_id == "r-2"


def test_sample_records_cover_every_type_and_are_deterministic() -> None:
    records = sample_records()
    assert {record_type(r) for r in records} == {
        "repository",
        "commit",
        "pull_request",
        "webhook_delivery",
    }
    commits = [r for r in records if isinstance(r, Commit)]
    assert any(c.files and c.branches and c.story_keys for c in commits)
    assert {None, 0} <= {None if c.files is None else len(c.files) for c in commits}
    assert msgspec.to_builtins(records) == msgspec.to_builtins(sample_records())
    assert records[1] is not sample_records()[1]  # fresh objects: a test may change its own


# --- built-ins and the example plugin pass -------------------------------------------


def _artifact_commits(path: Path) -> list[Record]:
    payload = json.loads(path.read_text())["payload"]
    return [
        Commit(
            hash=s["hash"],
            repository=s["repository"],
            date=datetime.fromisoformat(s["date"]),
            message=s["summary"],
        )
        for s in payload
    ]


async def test_json_artifact_sink_passes(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    # Every file it writes under tmp_path is searched for the planted secrets; outputs=
    # also fails the test if the artifact is not where the docs say.
    await check_sink_contract(
        lambda ctx: JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(out)), ctx),
        tmp_path=tmp_path,
        outputs=["artifacts/scan_contract-run-1.json"],
    )
    # Its payload holds commits: those are read back, exactly once after the replay.
    commits = [r for r in sample_records() if isinstance(r, Commit)]
    await check_sink_contract(
        lambda ctx: JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(out)), ctx),
        tmp_path=tmp_path,
        records=commits,
        read_back=lambda: _artifact_commits(out / "scan_contract-run-1.json"),
    )


def _database_rows(path: Path) -> list[Record | str]:
    queries = {
        "repository {}": "SELECT full_name FROM repositories",
        "pull_request {}#{}": "SELECT repository, id FROM pull_requests",
        "webhook_delivery {}": "SELECT request_uuid FROM deliveries",
    }
    with sqlite3.connect(path) as db:
        # Commits come back as records, so the secret rule sees their stored messages.
        rows = db.execute("SELECT hash, repository, committed_at, message FROM commits")
        stored: list[Record | str] = [
            Commit(hash=h, repository=r, date=datetime.fromisoformat(d), message=m)
            for h, r, d, m in rows
        ]
        for key, sql in queries.items():
            stored += [key.format(*row) for row in db.execute(sql)]
    return stored


async def test_database_sink_passes_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "db" / "commits.db"
    await check_sink_contract(
        lambda ctx: DatabaseSink(DatabaseConfig(database=str(db)), ctx),
        tmp_path=tmp_path,
        read_back=lambda: _database_rows(db),
        outputs=["db/commits.db"],  # searched raw, its WAL while it exists, table by table
    )


async def test_story_keys_enricher_passes(tmp_path: Path) -> None:
    for config in (StoryKeysConfig(), StoryKeysConfig(mode="lenient", projects=["REL"])):
        check_enricher_contract(StoryKeysEnricher(config, make_test_context(tmp_path)))


async def test_records_file_source_passes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in sample_records()))
    config = RecordsFileConfig(path=str(path), checkpoint_every=2)
    await check_source_contract(lambda ctx: RecordsFileSource(config, ctx), tmp_path=tmp_path)
    # Resuming from a cursor of an earlier run, and stopping at a limit mid-file.
    await check_source_contract(
        lambda ctx: RecordsFileSource(config, ctx),
        tmp_path=tmp_path,
        cursors={"file:in.jsonl": {"line": 3}},
    )
    await check_source_contract(
        lambda ctx: RecordsFileSource(config, ctx), tmp_path=tmp_path, limit=2
    )


class ServerSource(rcingest.Source[EmptyConfig]):
    """Like a webhook receiver: yields a little, then waits for deliveries forever."""

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[rcingest.Record | rcingest.Checkpoint]:
        yield sample_records()[0]
        yield rcingest.Checkpoint("deliveries")
        await asyncio.Event().wait()


async def test_a_never_ending_source_is_bounded_by_the_time_limit(tmp_path: Path) -> None:
    await check_source_contract(
        lambda ctx: ServerSource(EmptyConfig(), ctx), tmp_path=tmp_path, time_limit=0.2
    )


# --- broken components fail, naming the component and the rule ------------------------


class ListConfig(rcingest.ComponentConfig):
    fail: str = ""


STORED: list[Record] = []


class ListSink(rcingest.Sink[ListConfig]):
    """Appends to STORED; ``fail`` picks one way to break the contract."""

    Config = ListConfig

    def __init__(self, config: ListConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        self.seen: set[str] = set()

    async def write(self, batch: rcingest.Batch) -> None:
        mode = self.config.fail
        if mode == "empty" and not batch.records:
            raise ValueError("nothing to write")
        keys = {record_key(r) for r in batch.records}
        if mode == "replay" and keys & self.seen:
            raise KeyError("duplicate key")
        self.seen |= keys
        for record in batch.records:
            if mode == "mutate" and isinstance(record, Commit):
                record.branches.append("stored")
            if isinstance(record, Commit) and mode != "secret":
                masked = record.message
                for secret in self.context.secrets:
                    masked = masked.replace(secret, "***")
                record = msgspec.structs.replace(record, message=masked)
            if mode == "duplicates" or record_key(record) not in {record_key(r) for r in STORED}:
                STORED.append(record)


def list_sink(fail: str) -> Any:
    STORED.clear()
    return lambda ctx: ListSink(ListConfig(fail=fail), ctx)


async def test_list_sink_without_faults_passes(tmp_path: Path) -> None:
    await check_sink_contract(list_sink(""), tmp_path=tmp_path, read_back=lambda: STORED)


@pytest.mark.parametrize(
    ("fail", "message"),
    [
        (
            "mutate",
            r"^sink 'ListSink': write\(\) mutated the records it was given "
            r"\(commit a1a1a1a1a1a1: field 'branches'\)$",
        ),
        ("empty", r"^sink 'ListSink': write\(\) of an empty batch raised ValueError"),
        (
            "replay",
            r"^sink 'ListSink': write\(\) of the same batch again \(a replay\) raised KeyError",
        ),
        ("duplicates", r"^sink 'ListSink': repository acme/api is stored 2 times"),
    ],
)
async def test_broken_sink_fails(tmp_path: Path, fail: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        await check_sink_contract(list_sink(fail), tmp_path=tmp_path, read_back=lambda: STORED)


async def test_a_sink_that_stores_a_secret_fails(tmp_path: Path) -> None:
    # "secret" stores every record even on the replay; read back deduplicated, so only
    # the secret rule can fail.
    def read_back() -> list[Record]:
        return list({record_key(r): r for r in STORED}.values())

    assert CONTRACT_SECRET in json.dumps(msgspec.to_builtins(sample_records()))
    with pytest.raises(AssertionError) as failed:
        await check_sink_contract(list_sink("secret"), tmp_path=tmp_path, read_back=read_back)
    assert re.match(
        r"^sink 'ListSink': wrote a value of context\.secrets \('s3cr…' \(26 chars\)\) "
        r"to what read_back\(\) returned \(plain, at byte \d+\), found after close: "
        r"secrets must be written masked",
        str(failed.value),
    )
    assert CONTRACT_SECRET not in str(failed.value)


async def test_a_sink_that_stores_nowhere_the_check_can_search_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"^sink 'ListSink': wrote no file under tmp_path"):
        await check_sink_contract(list_sink(""), tmp_path=tmp_path)


class LooseConfig(rcingest.ComponentConfig, forbid_unknown_fields=False):
    pass


class LooseSink(rcingest.Sink[LooseConfig]):
    Config = LooseConfig

    async def write(self, batch: rcingest.Batch) -> None:
        return None


async def test_a_config_that_accepts_unknown_fields_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"^sink 'LooseSink': Config accepts unknown fields"):
        await check_sink_contract(lambda ctx: LooseSink(LooseConfig(), ctx), tmp_path=tmp_path)


class TagEnricher(rcingest.Enricher[EmptyConfig]):
    """Appends a tag each time: not idempotent."""

    def enrich(self, record: rcingest.Record) -> rcingest.Record:
        if isinstance(record, Commit):
            return msgspec.structs.replace(record, message=record.message + " [tagged]")
        return record


class InPlaceEnricher(rcingest.Enricher[EmptyConfig]):
    """Changes its input instead of returning a copy."""

    def enrich(self, record: rcingest.Record) -> rcingest.Record:
        if isinstance(record, Commit) and "checked" not in record.branches:
            record.branches.append("checked")
        return record


class WrongTypeEnricher(rcingest.Enricher[EmptyConfig]):
    def enrich(self, record: rcingest.Record) -> rcingest.Record:
        return rcingest.Repository(full_name="acme/api")


@pytest.mark.parametrize(
    ("enricher", "message"),
    [
        (
            TagEnricher,
            r"^enricher 'TagEnricher': enrich\(commit a1a1a1a1a1a1\) is not idempotent: "
            r"enriching twice changed \['message'\]$",
        ),
        (
            InPlaceEnricher,
            r"^enricher 'InPlaceEnricher': enrich\(\) mutated the records it was given "
            r"\(commit a1a1a1a1a1a1: field 'branches'\)$",
        ),
        (
            WrongTypeEnricher,
            r"^enricher 'WrongTypeEnricher': enrich\(commit a1a1a1a1a1a1\) returned a "
            r"Repository, not a Commit$",
        ),
    ],
)
def test_broken_enricher_fails(tmp_path: Path, enricher: Any, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_enricher_contract(enricher(EmptyConfig(), make_test_context(tmp_path)))


class ChattySource(rcingest.Source[EmptyConfig]):
    async def records(self, cursors: Mapping[str, dict[str, Any]]) -> AsyncIterator[Any]:
        yield sample_records()[0]
        yield "hello"


class NaiveSource(rcingest.Source[EmptyConfig]):
    async def records(self, cursors: Mapping[str, dict[str, Any]]) -> AsyncIterator[Any]:
        yield Commit(hash="d" * 40, repository="acme/api", date=datetime(2026, 11, 20))


class ResumeBreaksSource(rcingest.Source[EmptyConfig]):
    """Saves a cursor it cannot read back once it went through JSON."""

    async def records(self, cursors: Mapping[str, dict[str, Any]]) -> AsyncIterator[Any]:
        if cursors:
            raise RuntimeError("cannot resume")
        yield rcingest.Checkpoint("main", {"next": 2})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            ChattySource,
            r"^source 'ChattySource': records\(\) yielded a str \(item 2\), "
            r"not a Record or Checkpoint$",
        ),
        (NaiveSource, r"^source 'NaiveSource': records\(\) gave commit dddddddddddd a naive"),
        (
            ResumeBreaksSource,
            r"^source 'ResumeBreaksSource': records\(saved cursors\) raised RuntimeError",
        ),
    ],
)
async def test_broken_source_fails(tmp_path: Path, source: Any, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        await check_source_contract(lambda ctx: source(EmptyConfig(), ctx), tmp_path=tmp_path)


# --- the docs stay in sync -------------------------------------------------------------


def _plain_signature(func: Any) -> str:
    """``name(a, *, b=None)``: the signature as the docs write it, without annotations."""
    parts: list[str] = []
    for param in inspect.signature(func).parameters.values():
        if param.kind is param.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        default = "" if param.default is param.empty else f"={param.default!r}"
        parts.append(param.name + default)
    return f"{func.__name__}({', '.join(parts)})"


ROOT = Path(__file__).resolve().parent.parent


def _block(doc: str, heading: str, language: str) -> str:
    """The first fenced ``language`` block under ``heading``."""
    section = doc.split(f"\n{heading}\n", 1)[1]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_writing_plugins_shows_the_example_plugins_files_verbatim() -> None:
    doc = (ROOT / "docs" / "writing-plugins.md").read_text(encoding="utf-8")
    plugin = ROOT / "plugins" / "rcingest-jsonl"
    heading = "## 2. `pyproject.toml`: the entry point is the whole integration"
    assert _block(doc, heading, "toml") == (plugin / "pyproject.toml").read_text()
    heading = "## A complete pipeline against the fake Bitbucket"
    assert _block(doc, heading, "python") == (plugin / "tests" / "test_pipeline.py").read_text()


def test_writing_plugins_documents_the_checks() -> None:
    doc = (ROOT / "docs" / "writing-plugins.md").read_text()
    section = doc.split("\n## Testing your plugin against the contracts\n", 1)[1]
    for func in (check_sink_contract, check_source_contract, check_enricher_contract):
        assert f"`{_plain_signature(func)}`" in section
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    compile(example, "writing-plugins.md", "exec")
    imported = re.search(r"from rcingest\.testing import \(([^)]*)\)", example)
    assert imported is not None
    for name in imported.group(1).replace(",", " ").split():
        assert hasattr(testing, name), name
