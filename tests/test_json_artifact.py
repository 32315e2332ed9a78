"""The json_artifact sink, the run schema, and end-to-end scans of the fake Bitbucket.

Every artifact written here is validated against ``schemas/run.schema.json``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml

from rcingest.artifact import ARTIFACT_SCHEMA_COPY, run_schema
from rcingest.config import load_pipeline
from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.json_artifact import JsonArtifactConfig, JsonArtifactSink
from rcingest.errors import RunFailed
from rcingest.interfaces import Batch, RunContext, Window
from rcingest.pipeline import Runner
from rcingest.plugins import Manager, Registry, make_plugin_manager
from rcingest.records import (
    Commit,
    FileChange,
    PullRequest,
    Repository,
    StoryKey,
    WebhookDelivery,
)
from rcingest.runtime import make_context
from rcingest.schema import dumps

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "run.schema.json").read_text(encoding="utf-8"))
PHOENIX = ZoneInfo("America/Phoenix")
T0 = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)  # 10:00 in Phoenix
TOKEN = "bbtoken-Zq81xV0c"
WEBHOOK_SECRET = "whsec-9fK2LpQ"


def validate(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    return data


def context(tmp_path: Path, **kw: Any) -> RunContext:
    fields: dict[str, Any] = {
        "run_id": "20261120T170000Z-abc123",
        "pipeline_name": "scan",
        "timezone": PHOENIX,
        "started_at": T0,
        "base_dir": tmp_path,
        "source_id": "scan:src",
        "git_sha": "a" * 40,
    }
    fields.update(kw)
    return RunContext(**fields)


def commit(n: int, **kw: Any) -> Commit:
    fields: dict[str, Any] = {
        "hash": f"{n:040x}",
        "repository": "acme/api",
        "date": T0 + timedelta(minutes=n),
        "branches": ["main"],
        "author_raw": "Ada <ada@example.com>",
        "author_name": "Ada",
        "message": f"REL-{n} change {n}\n\nbody",
        "files": [FileChange(f"f{n}.py", "added"), FileChange(f"g{n}.py", "modified")],
        "story_keys": [StoryKey(f"REL-{n}", ("message",))],
    }
    fields.update(kw)
    return Commit(**fields)


# -- the schema ----------------------------------------------------------------------------------


def test_schema_files_are_generated_and_identical() -> None:
    expected = dumps(run_schema())
    assert (ROOT / "schemas" / "run.schema.json").read_text(encoding="utf-8") == expected, (
        "schemas/run.schema.json is stale: run `rcingest schema run > schemas/run.schema.json`"
    )
    assert (ROOT / ARTIFACT_SCHEMA_COPY).read_text(encoding="utf-8") == expected
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


# -- run mode ------------------------------------------------------------------------------------


async def test_scan_artifact_contents(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.source_info = {
        "type": "bitbucket_rest",
        "workspace": "acme",
        "repositories": ["acme/api", "acme/web"],
        "branches": ["main"],
        "base_url": "https://api.bitbucket.org/2.0",
    }
    sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path / "out")), ctx)
    async with sink:
        ctx.window = Window(T0 - timedelta(hours=4), T0)
        await sink.write(Batch([Repository(full_name="acme/api"), commit(1), commit(2)]))
        pr = PullRequest(
            id=1,
            repository="acme/web",
            title="OPS-1",
            state="OPEN",
            source_branch="b",
            destination_branch="main",
            created_on=T0,
            updated_on=T0,
            story_keys=[StoryKey("OPS-1", ("pr_title",))],
        )
        # Commit 1 again, now on two branches and without files: merged, files kept.
        again = commit(1, branches=["main", "dev"], files=None)
        await sink.write(Batch([pr, again, commit(3, files=[])]))
        ctx.stats.incr("http.requests", 12)
        ctx.stats.incr("http.retries", 2)
        ctx.status = "succeeded"
    (path,) = sink.written
    assert path == tmp_path / "out" / "scan_20261120T170000Z-abc123.json"
    data = validate(path)
    assert {
        k: data[k] for k in ("kind", "run_id", "pipeline", "git_sha", "timezone", "status")
    } == {
        "kind": "scan",
        "run_id": "20261120T170000Z-abc123",
        "pipeline": "scan",
        "git_sha": "a" * 40,
        "timezone": "America/Phoenix",
        "status": "succeeded",
    }
    assert data["window"] == {
        "start": "2026-11-20T06:00:00-07:00",
        "end": "2026-11-20T10:00:00-07:00",
    }
    assert data["generated_at"].endswith("-07:00")
    assert data["source"] == {
        "type": "bitbucket_rest",
        "workspace": "acme",
        "repositories": ["acme/api", "acme/web"],
        "branches": ["main"],
        "extra": {"base_url": "https://api.bitbucket.org/2.0"},
    }
    assert data["counts"] == {
        "repositories": 2,
        "commits": 3,
        "files": 4,  # commit 1's and commit 2's two files (commit 1's stay known)
        "keys": 4,
        "pull_requests": 1,
        "deliveries": 0,
        "requests": 12,
        "retries": 2,
    }
    assert [p["hash"][-1] for p in data["payload"]] == ["2", "1", "3"]
    first = data["payload"][1]
    assert first == {
        "hash": f"{1:040x}",
        "repository": "acme/api",
        "branches": ["main", "dev"],
        "author": {"raw": "Ada <ada@example.com>", "name": "Ada", "account_id": None},
        "date": "2026-11-20T10:01:00-07:00",
        "summary": "REL-1 change 1",
        "files_changed": 2,
        "files": [
            {"path": f, "status": st, "old_path": None, "lines_added": 0, "lines_removed": 0}
            for f, st in (("f1.py", "added"), ("g1.py", "modified"))
        ],
        "story_keys": [{"key": "REL-1", "origins": ["message"]}],
    }
    assert data["payload"][2]["files_changed"] == 0
    assert data["payload"][2]["files"] == []
    assert data["payload"][0]["files"] == [
        {
            "path": "f2.py",
            "status": "added",
            "old_path": None,
            "lines_added": 0,
            "lines_removed": 0,
        },
        {
            "path": "g2.py",
            "status": "modified",
            "old_path": None,
            "lines_added": 0,
            "lines_removed": 0,
        },
    ]
    assert not list((tmp_path / "out").glob(".*.tmp"))


async def test_failed_run_writes_status_failed_without_payload(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    sink = JsonArtifactSink(
        JsonArtifactConfig(artifacts_dir=str(tmp_path), include_payload=False), ctx
    )
    with pytest.raises(RuntimeError):
        async with sink:
            await sink.write(Batch([commit(1), commit(2)]))
            ctx.status = "failed"
            raise RuntimeError("source broke")
    data = validate(sink.written[0])
    assert data["status"] == "failed"
    assert data["payload"] == []
    assert data["window"] is None
    assert data["counts"]["commits"] == 2 and data["counts"]["files"] == 4


async def test_runner_failure_still_writes_the_artifact(
    manager: Manager, write_yaml: Any, tmp_path: Path
) -> None:
    path = write_yaml(
        f"""
        name: broken
        timezone: America/Phoenix
        source: {{type: test_counter, config: {{count: 10, fail_after: 4}}}}
        enrichers: [{{type: story_keys}}]
        sinks:
          - {{type: json_artifact, config: {{artifacts_dir: "{tmp_path / "art"}"}}}}
        """
    )
    pipeline = load_pipeline(path, Registry(manager))
    ctx = make_context(pipeline)
    with pytest.raises(RunFailed):
        await Runner(pipeline, ctx).run()
    (artifact,) = (tmp_path / "art").glob("scan_*.json")
    data = validate(artifact)
    assert data["status"] == "failed"
    assert data["counts"]["commits"] == 4
    assert data["payload"][0]["story_keys"] == [{"key": "REL-1", "origins": ["message"]}]


# -- serve mode ----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def delivery(uuid: str) -> WebhookDelivery:
    return WebhookDelivery(
        request_uuid=uuid, event="repo:push", received_at=T0, repository="acme/api"
    )


async def test_serve_mode_rolls_one_artifact_per_hour(tmp_path: Path) -> None:
    ctx = context(tmp_path, mode="serve")
    ctx.source_info = {"type": "bitbucket_webhook", "host": "127.0.0.1", "port": 8080}
    clock = Clock(T0 + timedelta(minutes=59))  # 10:59 in Phoenix
    sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path)), ctx)
    sink.clock = clock
    async with sink:
        ctx.stats.incr("http.requests", 3)
        await sink.write(Batch([commit(1), delivery("d1")]))
        ctx.stats.incr("http.requests", 2)
        clock.now = T0 + timedelta(minutes=61)  # 11:01
        await sink.write(Batch([commit(2), delivery("d2"), delivery("d3")]))
        ctx.stats.incr("http.requests", 1)
        ctx.status = "succeeded"
    names = [p.name for p in sink.written]
    assert names == ["webhook_20261120T10.json", "webhook_20261120T11.json"]
    ten, eleven = (validate(p) for p in sink.written)
    assert ten["kind"] == "webhook" and ten["status"] == "succeeded"
    assert ten["window"] == {
        "start": "2026-11-20T10:00:00-07:00",
        "end": "2026-11-20T11:00:00-07:00",
    }
    assert eleven["window"]["start"] == "2026-11-20T11:00:00-07:00"
    assert [p["hash"][-1] for p in ten["payload"]] == ["1"]
    assert [p["hash"][-1] for p in eleven["payload"]] == ["2"]
    assert (ten["counts"]["deliveries"], eleven["counts"]["deliveries"]) == (1, 2)
    # Stats before the hour closed belong to it (3 + 2), the rest to the next.
    assert (ten["counts"]["requests"], eleven["counts"]["requests"]) == (5, 1)
    assert ten["source"]["extra"] == {"host": "127.0.0.1", "port": 8080}

    # A restarted daemon continues the same hour's file instead of losing it.
    ctx2 = context(tmp_path, mode="serve", run_id="second")
    sink2 = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path)), ctx2)
    sink2.clock = Clock(T0 + timedelta(minutes=90))
    async with sink2:
        await sink2.write(Batch([commit(3), commit(2), delivery("d4")]))
        ctx2.status = "interrupted"
    continued = validate(tmp_path / "webhook_20261120T11.json")
    assert continued["status"] == "interrupted"
    assert [p["hash"][-1] for p in continued["payload"]] == ["3", "2"]
    assert continued["counts"]["deliveries"] == 3
    assert continued["counts"]["commits"] == 2


@pytest.mark.parametrize("mode", ["run", "serve"])
@pytest.mark.parametrize("include_payload", [True, False])
async def test_a_commit_seen_again_is_merged_not_replaced(
    tmp_path: Path, mode: str, include_payload: bool
) -> None:
    """A push to a feature branch, then the fast-forward push to main listing it again.

    The second sighting knows neither the branch nor its key nor the files:
    the artifact keeps all three, as the database does.
    """
    ctx = context(tmp_path, mode=mode)
    sink = JsonArtifactSink(
        JsonArtifactConfig(artifacts_dir=str(tmp_path / "a"), include_payload=include_payload),
        ctx,
    )
    sink.clock = Clock(T0 + timedelta(minutes=10))
    first = commit(
        1,
        branches=["feature/OPS-7-fix"],
        story_keys=[StoryKey("OPS-7", ("branch",)), StoryKey("REL-1", ("pr_title",))],
    )
    again = commit(
        1,
        branches=["main", "feature/OPS-7-fix"],
        author_name=None,
        files=None,
        story_keys=[StoryKey("REL-1", ("message",))],
    )
    async with sink:
        await sink.write(Batch([first, commit(2)]))
        await sink.write(Batch([again]))
        ctx.status = "succeeded"
    (path,) = sink.written
    data = validate(path)
    assert data["counts"]["commits"] == 2
    assert data["counts"]["files"] == 4  # commit 1's two files are still known
    assert data["counts"]["keys"] == 3
    if not include_payload:
        assert data["payload"] == []
        return
    assert [p["hash"][-1] for p in data["payload"]] == ["2", "1"]
    merged = data["payload"][1]
    assert merged["branches"] == ["feature/OPS-7-fix", "main"]
    assert merged["story_keys"] == [
        {"key": "OPS-7", "origins": ["branch"]},
        {"key": "REL-1", "origins": ["message", "pr_title"]},
    ]
    assert merged["files_changed"] == 2 and [f["path"] for f in merged["files"]] == [
        "f1.py",
        "g1.py",
    ]
    assert merged["author"]["name"] == "Ada"
    if mode == "serve":
        # A restarted daemon merges into the summaries of the hour's file too.
        ctx2 = context(tmp_path, mode="serve", run_id="second")
        sink2 = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path / "a")), ctx2)
        sink2.clock = Clock(T0 + timedelta(minutes=20))
        async with sink2:
            await sink2.write(Batch([commit(1, branches=["release"], files=None, story_keys=[])]))
            ctx2.status = "succeeded"
        cont = validate(path)
        (one,) = [p for p in cont["payload"] if p["hash"].endswith("1")]
        assert one["branches"] == ["feature/OPS-7-fix", "main", "release"]
        assert one["files_changed"] == 2 and len(one["story_keys"]) == 2
        assert cont["counts"]["files"] == 4


async def test_a_forks_copy_of_a_commit_is_its_own_summary(tmp_path: Path) -> None:
    """Same hash in an upstream and its fork: one summary each, counted once."""
    ctx = context(tmp_path)
    sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path / "a")), ctx)
    upstream = commit(1, branches=["main"])
    fork = commit(1, repository="ada/api-fork", branches=["main", "feature/REL-1"], files=None)
    async with sink:
        await sink.write(Batch([upstream, fork]))
        ctx.status = "succeeded"
    (path,) = sink.written
    data = validate(path)
    assert [(p["repository"], p["branches"]) for p in data["payload"]] == [
        (upstream.repository, ["main"]),
        ("ada/api-fork", ["main", "feature/REL-1"]),
    ]
    assert data["counts"]["commits"] == 1
    assert data["counts"]["files"] == 2  # the commit's files, once
    assert data["counts"]["repositories"] == 2


async def test_serve_mode_rolls_on_the_hour_without_traffic(tmp_path: Path) -> None:
    ctx = context(tmp_path, mode="serve")
    clock = Clock(T0 + timedelta(minutes=30))
    sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path)), ctx)
    sink.clock = clock
    async with sink:
        await sink.write(Batch([commit(1)]))
        clock.now = T0 + timedelta(hours=1, minutes=5)
        await sink._roll()  # what the background task does at the hour
        assert [p.name for p in sink.written] == ["webhook_20261120T10.json"]
        ctx.status = "succeeded"
    assert len(sink.written) == 1  # nothing arrived in the next hour: no empty file


# -- secrets -------------------------------------------------------------------------------------


async def test_secrets_never_reach_artifact_database_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = context(tmp_path, secrets=frozenset({TOKEN, WEBHOOK_SECRET}))
    ctx.source_info = {
        "type": "bitbucket_rest",
        "workspace": "acme",
        "base_url": f"https://bot:{TOKEN}@api.example.org/2.0",
    }
    leaky = commit(
        1,
        message=f"oops, pasted {TOKEN} and {WEBHOOK_SECRET} (clone https://me:pw-123@host/x)",
        branches=[f"fix/{WEBHOOK_SECRET}"],
        author_raw=f"Bot {TOKEN} <bot@example.com>",
        author_name=f"Bot {TOKEN}",
        author_account_id=f"acct-{TOKEN}",
        files=[FileChange(f"keys/{TOKEN}.txt", "renamed", f"old/{WEBHOOK_SECRET}.txt")],
    )
    # Every other column that holds text, in every table: one secret each.
    in_repo = f"acme/{WEBHOOK_SECRET}"
    others: list[Any] = [
        commit(2, repository=in_repo, parents=[TOKEN]),
        Repository(
            full_name=f"acme/r-{TOKEN}",
            uuid=TOKEN,
            name=TOKEN,
            workspace=TOKEN,
            mainbranch=TOKEN,
            language=TOKEN,
        ),
        PullRequest(
            id=9,
            repository=in_repo,
            title=f"REL-1 {TOKEN}",
            state="OPEN",
            source_branch=TOKEN,
            destination_branch=WEBHOOK_SECRET,
            created_on=T0,
            updated_on=T0,
            description=TOKEN,
            author_name=TOKEN,
            author_account_id=TOKEN,
            merge_commit=TOKEN,
            commit_hashes=[f"{1:040x}"],
            story_keys=[StoryKey("REL-1", ("pr_title",))],
        ),
        WebhookDelivery(
            request_uuid=f"r-{TOKEN}",
            event="repo:push",
            received_at=T0,
            hook_uuid=TOKEN,
            repository=in_repo,
            content_key=f"{in_repo}|push|branch:feature/{WEBHOOK_SECRET}:abc",
        ),
    ]
    db_path = tmp_path / "db" / "c.db"
    art = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path / "a")), ctx)
    db = DatabaseSink(DatabaseConfig(database=str(db_path)), ctx)
    async with art, db:
        for sink in (art, db):
            await sink.write(Batch([leaky, *others]))
        ctx.status = "succeeded"
    text = art.written[0].read_text(encoding="utf-8")
    data = validate(art.written[0])
    assert (
        data["payload"][0]["summary"] == "oops, pasted *** and *** (clone https://***:***@host/x)"
    )
    assert data["source"]["extra"]["base_url"] == "https://***:***@api.example.org/2.0"
    con = sqlite3.connect(db_path)
    everything = "\n".join(con.iterdump())
    con.close()
    for secret in (TOKEN, WEBHOOK_SECRET):
        assert secret not in text
        assert secret not in everything
        assert secret not in caplog.text


# -- end to end: a scan of the fake Bitbucket, twice, into SQLite and PostgreSQL -------------------


def scan_pipeline(tmp_path: Path, base_url: str, database: str, artifacts: Path) -> Path:
    data = {
        "name": "fake-scan",
        "timezone": "America/Phoenix",
        "source": {
            "type": "bitbucket_rest",
            "config": {
                "base_url": base_url,
                "workspace": "acme",
                "auth": {"access_token": "${BITBUCKET_TOKEN}"},
                "since": "2026-11-19T00:00:00",
                "until": "2026-11-20T12:00:00",
            },
        },
        "enrichers": [{"type": "story_keys"}],
        "sinks": [
            {"type": "database", "config": {"database": database}},
            {"type": "json_artifact", "config": {"artifacts_dir": str(artifacts)}},
        ],
    }
    path = tmp_path / f"scan-{abs(hash(database))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


async def test_fake_scan_twice_sqlite_and_postgres(
    database_spec: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rcingest.testing import FakeBitbucket, GenSpec
    from tests.test_database_sink import TABLES, dump, without

    caplog.set_level(logging.DEBUG)
    spec = GenSpec(
        repositories=2, branches=2, commits=40, end=datetime(2026, 11, 20, 18, tzinfo=UTC)
    )
    artifacts = tmp_path / "artifacts"
    environ = {"BITBUCKET_TOKEN": TOKEN}
    async with FakeBitbucket(spec, expected_auth=f"Bearer {TOKEN}") as fake:
        path = scan_pipeline(tmp_path, fake.base_url, database_spec, artifacts)
        dumps_: list[dict[str, Any]] = []
        for _ in range(2):
            pipeline = load_pipeline(path, Registry(make_plugin_manager()), environ=environ)
            assert TOKEN in pipeline.secrets
            ctx = make_context(pipeline)
            result = await Runner(pipeline, ctx).run()
            assert result.status == "succeeded"
            dumps_.append(dump(database_spec, [*TABLES, "runs"]))
    first, second = dumps_
    assert len(first["commits"]) > 20 and len(first["commit_files"]) > len(first["commits"])
    assert first["story_keys"] and first["pull_requests"]
    stamps = ("last_seen_at", "last_synced_at", "updated_at")
    same = [t for t in TABLES if t != "source_cursors"]
    assert without({t: second[t] for t in same}, *stamps) == without(
        {t: first[t] for t in same}, *stamps
    )
    assert [r["status"] for r in second["runs"]] == ["succeeded", "succeeded"]
    written = sorted(artifacts.glob("scan_*.json"))
    assert len(written) == 2
    for artifact in written:
        data = validate(artifact)
        assert data["counts"]["commits"] == len(first["commits"])
        assert data["counts"]["requests"] > 0
        assert data["source"]["type"] == "bitbucket_rest"
        assert data["window"] == {
            "start": "2026-11-19T00:00:00-07:00",
            "end": "2026-11-20T12:00:00-07:00",
        }
        assert TOKEN not in artifact.read_text(encoding="utf-8")
    assert TOKEN not in json.dumps(second, default=str)
    assert TOKEN not in caplog.text


@pytest.mark.postgres
async def test_fake_scan_stores_the_same_rows_in_sqlite_and_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    from rcingest.testing import FakeBitbucket, GenSpec
    from tests.test_database_sink import TABLES, dump, without

    spec = GenSpec(
        repositories=2, branches=2, commits=30, end=datetime(2026, 11, 20, 18, tzinfo=UTC)
    )
    sqlite_path = str(tmp_path / "scan.db")
    async with FakeBitbucket(spec, expected_auth=f"Bearer {TOKEN}") as fake:
        for database in (sqlite_path, postgres_url):
            path = scan_pipeline(tmp_path, fake.base_url, database, tmp_path / "a")
            pipeline = load_pipeline(
                path, Registry(make_plugin_manager()), environ={"BITBUCKET_TOKEN": TOKEN}
            )
            await Runner(pipeline, make_context(pipeline)).run()
    stamps = ("first_seen_at", "last_seen_at", "last_synced_at", "updated_at")
    tables = [t for t in TABLES if t != "source_cursors"]
    from_sqlite, from_postgres = dump(sqlite_path, tables), dump(postgres_url, tables)
    assert from_sqlite["commits"]
    assert without(from_sqlite, *stamps) == without(from_postgres, *stamps)


def test_database_and_artifacts_dir_flags_override(manager: Manager, write_yaml: Any) -> None:
    """``--database`` and ``--artifacts-dir`` reach the sinks' fields of the same names."""
    path = write_yaml(
        """
        source: {type: test_counter}
        sinks:
          - {type: database}
          - {type: json_artifact}
        """
    )
    pipeline = load_pipeline(
        path,
        Registry(manager),
        overrides={"database": "postgresql://u:p@h:5432/db", "artifacts_dir": "out/here"},
    )
    database, artifact = (c.config for c in pipeline.sinks)
    assert isinstance(database, DatabaseConfig) and isinstance(artifact, JsonArtifactConfig)
    assert database.database == "postgresql://u:p@h:5432/db"
    assert artifact.artifacts_dir == "out/here" and artifact.include_payload is True
    defaults = load_pipeline(path, Registry(manager))
    assert defaults.sinks[0].config == DatabaseConfig(database="data/bitbucket/commits.db")
    assert defaults.sinks[1].config == JsonArtifactConfig(
        artifacts_dir="artifacts/issues/wave3/bitbucket"
    )


async def test_the_schema_is_written_beside_the_artifacts_wherever_they_go(
    tmp_path: Path,
) -> None:
    """The runbook's `<artifacts>/run.schema.json` holds outside the checkout too."""
    committed = (ROOT / "schemas" / "run.schema.json").read_bytes()
    out = tmp_path / "elsewhere" / "evidence"
    copy = out / "run.schema.json"

    async def one_run(n: int) -> None:
        ctx = context(tmp_path)
        ctx.run_id = f"schema-{n}"
        async with JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(out)), ctx):
            ctx.window = Window(T0 - timedelta(hours=4), T0)
            ctx.status = "succeeded"

    await one_run(1)
    assert copy.read_bytes() == committed  # what `rcingest schema run` prints
    copy.write_text("{}")
    await one_run(2)
    assert copy.read_bytes() == committed  # a stale copy is refreshed
    stamp = copy.stat().st_mtime_ns
    await one_run(3)
    assert copy.stat().st_mtime_ns == stamp  # an identical copy is left alone
    assert len(list(out.glob("scan_*.json"))) == 3


async def test_pull_request_scans_are_in_the_artifact_without_secrets(tmp_path: Path) -> None:
    """Issue 12: each head's last scan, its findings redacted, the schema still holding."""
    from rcingest.scanning.model import Finding, fingerprint, redact_secret
    from rcingest.scanning.records import PullRequestScan

    secret = "AKIAMNBVCXZLKJHGFDSA"
    finding = Finding(
        path="env.sh",
        line_start=2,
        line_end=2,
        rule_id="np.aws.1",
        rule_name="AWS API Key",
        severity="high",
        fingerprint=fingerprint(b"k" * 16, "np.aws.1", secret),
        excerpt=f"KEY={redact_secret(secret)}",
    )
    when = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)

    def scan(state: str, findings: list[Finding]) -> PullRequestScan:
        return PullRequestScan(
            repository="acme/api",
            pull_request_id=3,
            head="e" * 40,
            state=state,  # type: ignore[arg-type]
            scanned_at=when,
            findings=findings,
        )

    from rcingest.testing import make_test_context

    ctx = make_test_context(tmp_path)
    sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path / "out")), ctx)
    async with sink:
        await sink.write(Batch([scan("scanning", []), scan("findings", [finding])]))
        await sink.write(Batch([scan("scanning", [])]))  # a replayed start hides nothing
        ctx.status = "succeeded"
    (path,) = (tmp_path / "out").glob("scan_*.json")
    doc = json.loads(path.read_text())
    [entry] = doc["pull_request_scans"]
    assert entry["state"] == "findings" and entry["findings"][0]["line_start"] == 2
    assert entry["scanned_at"].endswith("-07:00")
    assert secret not in path.read_text()
    schema = json.loads((tmp_path / "out" / "run.schema.json").read_text())
    jsonschema.validate(doc, schema)
