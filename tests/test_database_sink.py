"""The database sink against real SQLite files and a real PostgreSQL (never mocked).

Most tests run twice through the ``database_spec`` fixture: once on a fresh
SQLite file, once on a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.database.connect import open_database, redact, url_secrets
from rcingest.default_plugins.database.models import make_models
from rcingest.default_plugins.database.schema import CURRENT_VERSION, SchemaError
from rcingest.errors import ConfigError, RunFailed
from rcingest.interfaces import Batch, RunContext, StateStore, Window
from rcingest.records import (
    Checkpoint,
    Commit,
    FileChange,
    PullRequest,
    PullRequestRef,
    Repository,
    StoryKey,
    WebhookDelivery,
)

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TABLES = [
    "repositories",
    "commits",
    "commit_repositories",
    "commit_branches",
    "commit_files",
    "story_keys",
    "pull_requests",
    "pull_request_commits",
    "pull_request_story_keys",
    "deliveries",
    "source_cursors",
]


def make_context(tmp_path: Path, run_id: str = "run-1", **kw: Any) -> RunContext:
    return RunContext(
        run_id=run_id,
        pipeline_name="test",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="test:src",
        **kw,
    )


def commit(n: int, **kw: Any) -> Commit:
    fields: dict[str, Any] = {
        "hash": f"{n:040x}",
        "repository": "acme/api",
        "date": T0 + timedelta(minutes=n),
        "branches": ["main"],
        "author_raw": "Ada <ada@example.com>",
        "author_name": "Ada",
        "author_account_id": "557058:ada",
        "message": f"REL-{n} change {n}\n\nbody",
        "parents": [f"{n - 1:040x}"],
        "files": [FileChange(f"src/f{n}.py", "modified", None, 3, 1)],
        "story_keys": [StoryKey(f"REL-{n}", ("message",))],
    }
    fields.update(kw)
    return Commit(**fields)


def pull_request(**kw: Any) -> PullRequest:
    fields: dict[str, Any] = {
        "id": 7,
        "repository": "acme/api",
        "title": "REL-1 login",
        "state": "OPEN",
        "source_branch": "feature/REL-1",
        "destination_branch": "main",
        "created_on": T0,
        "updated_on": T0,
        "commit_hashes": [f"{1:040x}"],
        "story_keys": [StoryKey("REL-1", ("pr_title", "pr_branch"))],
    }
    fields.update(kw)
    return PullRequest(**fields)


async def write_run(
    spec: str, tmp_path: Path, batches: list[Batch], run_id: str = "run-1", **kw: Any
) -> RunContext:
    ctx = make_context(tmp_path, run_id)
    sink = DatabaseSink(DatabaseConfig(database=spec, **kw), ctx)
    async with sink:
        for batch in batches:
            await sink.write(batch)
            await sink.flush()
        ctx.window = Window(T0 - timedelta(hours=4), T0)
        ctx.status = "succeeded"
    return ctx


def dump(spec: str, tables: list[str] = TABLES) -> dict[str, list[dict[str, Any]]]:
    """Every row of ``tables``, sorted, read through fresh models (so both databases compare)."""
    db, _ = open_database(spec)
    models = make_models(db)
    by_table = {m._meta.table_name: m for m in models.all()}
    out: dict[str, list[dict[str, Any]]] = {}
    with db.connection_context():
        for table in tables:
            rows = list(by_table[table].select().dicts())
            out[table] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    db.close()
    return out


def without(rows: dict[str, list[dict[str, Any]]], *names: str) -> dict[str, list[dict[str, Any]]]:
    return {
        t: [{k: v for k, v in r.items() if k not in names} for r in rs] for t, rs in rows.items()
    }


# -- upserts and replays ----------------------------------------------------------------------


async def test_replay_changes_only_last_seen_at(database_spec: str, tmp_path: Path) -> None:
    batch = Batch(
        [Repository(full_name="acme/api", mainbranch="main"), commit(1), commit(2), pull_request()],
        [Checkpoint("acme/api:main", {"head": "2"})],
    )
    await write_run(database_spec, tmp_path, [batch], "run-1")
    first = dump(database_spec)
    await asyncio.sleep(0.01)
    await write_run(database_spec, tmp_path, [batch], "run-2")
    second = dump(database_spec)
    assert {t: len(r) for t, r in second.items()} == {
        "repositories": 1,
        "commits": 2,
        "commit_repositories": 2,
        "commit_branches": 2,
        "commit_files": 2,
        "story_keys": 2,
        "pull_requests": 1,
        "pull_request_commits": 1,
        "pull_request_story_keys": 2,
        "deliveries": 0,
        "source_cursors": 1,
    }
    assert without(second, "last_seen_at", "last_synced_at", "updated_at") == without(
        first, "last_seen_at", "last_synced_at", "updated_at"
    )
    for table in ("commits", "commit_repositories", "repositories", "pull_requests"):
        for old, new in zip(first[table], second[table], strict=True):
            assert new["first_seen_at"] == old["first_seen_at"]
            assert new["last_seen_at"] > old["last_seen_at"]
    row = first["commits"][0]
    assert row["committed_at"] == datetime(2026, 11, 20, 12, 1)  # UTC, stored without offset
    assert row["parents"] == f"{0:040x}"
    assert row["files_known"] is True


async def test_replay_adds_branches_files_keys_and_never_erases(
    database_spec: str, tmp_path: Path
) -> None:
    await write_run(database_spec, tmp_path, [Batch([commit(1)])], "run-1")
    before = dump(database_spec, ["commits"])["commits"][0]
    # A webhook delivery of the same commit: a new branch and key, no file
    # list, no linked account. It adds; it must not erase.
    later = commit(
        1,
        branches=["feature/OPS-2"],
        author_name=None,
        author_account_id=None,
        files=None,
        story_keys=[StoryKey("OPS-2", ("branch",)), StoryKey("REL-1", ("branch",))],
        pull_requests=[PullRequestRef(7, "x", "y")],
    )
    await write_run(database_spec, tmp_path, [Batch([later])], "run-2")
    more_files = commit(1, files=[FileChange("src/new.py", "added", None, 9, 0)])
    await write_run(database_spec, tmp_path, [Batch([more_files])], "run-3")
    rows = dump(database_spec)
    (c,) = rows["commits"]
    assert c["author_name"] == "Ada" and c["author_account_id"] == "557058:ada"
    assert c["files_known"] is True
    assert c["first_seen_at"] == before["first_seen_at"]
    assert [(b["branch"]) for b in rows["commit_branches"]] == ["feature/OPS-2", "main"]
    assert sorted(f["path"] for f in rows["commit_files"]) == ["src/f1.py", "src/new.py"]
    assert sorted((k["key"], k["origin"]) for k in rows["story_keys"]) == [
        ("OPS-2", "branch"),
        ("REL-1", "branch"),
        ("REL-1", "message"),
    ]
    assert [(p["pull_request_id"], p["commit_hash"]) for p in rows["pull_request_commits"]] == [
        (7, f"{1:040x}")
    ]


async def test_same_commit_twice_in_one_batch(database_spec: str, tmp_path: Path) -> None:
    """PostgreSQL refuses an upsert touching a row twice; the sink folds duplicates."""
    pushed = commit(3, files=None)
    completed = commit(3, branches=["main", "dev"])
    await write_run(database_spec, tmp_path, [Batch([pushed, completed, pushed])])
    rows = dump(database_spec)
    assert len(rows["commits"]) == 1 and rows["commits"][0]["files_known"] is True
    assert len(rows["commit_branches"]) == 2 and len(rows["commit_files"]) == 1


async def test_pull_request_updates_and_keys(database_spec: str, tmp_path: Path) -> None:
    await write_run(database_spec, tmp_path, [Batch([pull_request()])], "run-1")
    merged = pull_request(
        state="MERGED",
        title="REL-1 login, OPS-3",
        updated_on=T0 + timedelta(hours=1),
        merge_commit="abcdef123456",
        commit_hashes=[f"{1:040x}", f"{2:040x}"],
        story_keys=[StoryKey("REL-1", ("pr_title",)), StoryKey("OPS-3", ("pr_title",))],
    )
    await write_run(database_spec, tmp_path, [Batch([merged])], "run-2")
    rows = dump(database_spec)
    (pr,) = rows["pull_requests"]
    assert (pr["state"], pr["title"], pr["merge_commit"]) == (
        "MERGED",
        "REL-1 login, OPS-3",
        "abcdef123456",
    )
    assert pr["updated_on"] == datetime(2026, 11, 20, 13, 0)
    assert len(rows["pull_request_commits"]) == 2
    assert sorted((k["key"], k["origin"]) for k in rows["pull_request_story_keys"]) == [
        ("OPS-3", "pr_title"),
        ("REL-1", "pr_branch"),
        ("REL-1", "pr_title"),
    ]
    assert [r["full_name"] for r in rows["repositories"]] == ["acme/api"]


@pytest.mark.parametrize("one_batch", [False, True])
async def test_an_older_pull_request_snapshot_never_overwrites_a_newer_one(
    database_spec: str, tmp_path: Path, one_batch: bool
) -> None:
    """A backfill of an earlier delivery (or a replayed scan) lands after the merge."""
    merged = pull_request(
        state="MERGED",
        title="REL-1 login (final)",
        description="final",
        source_branch="feature/REL-1-final",
        updated_on=T0 + timedelta(hours=2),
        merge_commit="abcdef123456",
    )
    stale = pull_request(state="OPEN", title="REL-1 login", description="draft", updated_on=T0)
    same_time = pull_request(
        state="MERGED", title="REL-1 login (final, edited)", updated_on=T0 + timedelta(hours=2)
    )
    if one_batch:
        await write_run(database_spec, tmp_path, [Batch([merged, stale])], "run-1")
    else:
        await write_run(database_spec, tmp_path, [Batch([merged])], "run-1")
        await write_run(database_spec, tmp_path, [Batch([stale])], "run-2")
    (pr,) = dump(database_spec, ["pull_requests"])["pull_requests"]
    assert (pr["state"], pr["title"], pr["description"], pr["source_branch"]) == (
        "MERGED",
        "REL-1 login (final)",
        "final",
        "feature/REL-1-final",
    )
    assert pr["updated_on"] == datetime(2026, 11, 20, 14, 0)
    assert pr["merge_commit"] == "abcdef123456"
    # An equally recent snapshot still updates (an edit without a newer stamp).
    await write_run(database_spec, tmp_path, [Batch([same_time])], "run-3")
    (pr,) = dump(database_spec, ["pull_requests"])["pull_requests"]
    assert pr["title"] == "REL-1 login (final, edited)"
    assert pr["merge_commit"] == "abcdef123456"


async def test_repeated_delivery_changes_only_last_seen_and_attempt(
    database_spec: str, tmp_path: Path
) -> None:
    first = WebhookDelivery(
        request_uuid="req-1",
        event="repo:push",
        received_at=T0,
        hook_uuid="{hook}",
        attempt=1,
        repository="acme/api",
        outcome="stored",
        content_key="k1",
    )
    await write_run(database_spec, tmp_path, [Batch([first])], "run-1")
    (before,) = dump(database_spec, ["deliveries"])["deliveries"]
    retry = msgspec.structs.replace(
        first, attempt=3, received_at=T0 + timedelta(seconds=5), outcome="duplicate"
    )
    await write_run(database_spec, tmp_path, [Batch([retry])], "run-2")
    lower = msgspec.structs.replace(first, attempt=2)
    await write_run(database_spec, tmp_path, [Batch([lower])], "run-3")
    (after,) = dump(database_spec, ["deliveries"])["deliveries"]
    assert after["attempt"] == 3
    assert after["last_seen_at"] > before["last_seen_at"]
    assert {k: v for k, v in after.items() if k not in ("attempt", "last_seen_at")} == {
        k: v for k, v in before.items() if k not in ("attempt", "last_seen_at")
    }
    assert before["received_at"] == datetime(2026, 11, 20, 12, 0)


# -- cursors ------------------------------------------------------------------------------


async def test_cursors_saved_with_rows_and_loaded(database_spec: str, tmp_path: Path) -> None:
    batches = [
        Batch([commit(1)], [Checkpoint("a", {"n": 1}), Checkpoint("ack-only", None)]),
        Batch([commit(2)], [Checkpoint("a", {"n": 2}), Checkpoint("b", {"when": "x"})]),
    ]
    await write_run(database_spec, tmp_path, batches)
    ctx = make_context(tmp_path, "run-2")
    sink = DatabaseSink(DatabaseConfig(database=database_spec), ctx)
    assert isinstance(sink, StateStore)
    async with sink:
        assert await sink.load_cursors("test:src") == {"a": {"n": 2}, "b": {"when": "x"}}
        assert await sink.load_cursors("other") == {}
        await sink.save_cursors("other", [Checkpoint("s", {"k": [1, 2]})])
        assert await sink.load_cursors("other") == {"s": {"k": [1, 2]}}
        ctx.status = "succeeded"


async def test_failed_batch_saves_neither_rows_nor_cursor(
    database_spec: str, tmp_path: Path
) -> None:
    await write_run(database_spec, tmp_path, [Batch([commit(1)], [Checkpoint("a", {"n": 1})])])
    ctx = make_context(tmp_path, "run-2")
    sink = DatabaseSink(DatabaseConfig(database=database_spec), ctx)
    # A commit without a date violates NOT NULL after other rows of the same
    # transaction went in: all of it, cursor included, must roll back.
    broken = commit(3, date=None, repository="acme/other")
    with pytest.raises(RunFailed, match="writing a batch failed"):
        async with sink:
            await sink.write(Batch([commit(2), broken], [Checkpoint("a", {"n": 3})]))
    ctx.status = "failed"
    rows = dump(database_spec)
    assert [c["hash"] for c in rows["commits"]] == [f"{1:040x}"]
    assert [json.loads(c["state"]) for c in rows["source_cursors"]] == [{"n": 1}]


# -- runs ---------------------------------------------------------------------------------


async def test_runs_row_from_enter_to_exit(database_spec: str, tmp_path: Path) -> None:
    ctx = make_context(tmp_path, "run-9", git_sha="f" * 40)
    sink = DatabaseSink(DatabaseConfig(database=database_spec), ctx)
    async with sink:
        (row,) = _runs(database_spec)
        assert row["status"] == "running" and row["finished_at"] is None
        await sink.write(Batch([commit(1), commit(2), pull_request()]))
        (row,) = _runs(database_spec)
        assert json.loads(row["counts"])["commit"] == 2
        ctx.window = Window(T0 - timedelta(hours=4), T0)
        ctx.status = "interrupted"
    (row,) = _runs(database_spec)
    assert row["status"] == "interrupted"
    assert row["finished_at"] is not None
    assert (row["window_start"], row["window_end"]) == (
        datetime(2026, 11, 20, 8, 0),
        datetime(2026, 11, 20, 12, 0),
    )
    assert json.loads(row["counts"]) == {"commit": 2, "pull_request": 1, "rows": 15}
    assert (row["pipeline"], row["source_id"], row["mode"], row["git_sha"]) == (
        "test",
        "test:src",
        "run",
        "f" * 40,
    )


def _runs(spec: str) -> list[dict[str, Any]]:
    db, _ = open_database(spec)
    models = make_models(db)
    with db.connection_context():
        rows = list(models.runs.select().dicts())
    db.close()
    return rows


# -- schema versions ----------------------------------------------------------------------

V0_SQL = [
    "CREATE TABLE commits (hash TEXT PRIMARY KEY, repository TEXT NOT NULL, author TEXT NOT NULL,"
    " date TIMESTAMP NOT NULL, message TEXT NOT NULL, seen_at TIMESTAMP NOT NULL)",
    "CREATE TABLE commit_branches (commit_hash TEXT NOT NULL, branch TEXT NOT NULL,"
    " PRIMARY KEY (commit_hash, branch))",
    "INSERT INTO commits VALUES ('" + "a" * 40 + "', 'acme/old', 'Old <o@example.com>',"
    " '2025-01-02 03:04:05', 'OLD-1 legacy', '2025-01-03 00:00:00')",
    "INSERT INTO commit_branches VALUES ('" + "a" * 40 + "', 'main')",
]


def _execute(spec: str, statements: list[str]) -> None:
    db, _ = open_database(spec)
    with db.connection_context():
        for sql in statements:
            db.execute_sql(sql)
    db.close()


async def test_version_0_database_is_upgraded_in_place(
    database_spec: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-made prototype (version 0) database: upgraded on open, its rows kept."""
    _execute(database_spec, V0_SQL)
    caplog.set_level(logging.INFO, logger="rcingest")
    await write_run(database_spec, tmp_path, [Batch([commit(1)])])
    assert f"schema upgraded from version 0 to {CURRENT_VERSION}" in caplog.text
    rows = dump(database_spec)
    old = next(c for c in rows["commits"] if c["repository"] == "acme/old")
    assert old["author_raw"] == "Old <o@example.com>"
    assert old["committed_at"] == datetime(2025, 1, 2, 3, 4, 5)
    assert old["first_seen_at"] == old["last_seen_at"] == datetime(2025, 1, 3)
    assert len(rows["commits"]) == 2 and len(rows["commit_branches"]) == 2
    assert ("a" * 40, "acme/old", "main") in {
        (b["commit_hash"], b["repository"], b["branch"]) for b in rows["commit_branches"]
    }
    assert ("a" * 40, "acme/old") in {
        (r["commit_hash"], r["repository"]) for r in rows["commit_repositories"]
    }
    db, _ = open_database(database_spec)
    with db.connection_context():
        assert "seen_at" not in {c.name for c in db.get_columns("commits")}
        assert db.execute_sql("SELECT version FROM schema_version").fetchall() == [
            (CURRENT_VERSION,)
        ]
    db.close()
    # Opening again is a no-op.
    await write_run(database_spec, tmp_path, [Batch([commit(1)])], "run-2")


# Version 1, made from a fresh database: branches without a repository, no
# commit_repositories (the statements run on SQLite and PostgreSQL alike).
TO_V1_SQL = [
    "DROP TABLE commit_repositories",
    "DROP TABLE commit_branches",
    "CREATE TABLE commit_branches (commit_hash TEXT NOT NULL, branch TEXT NOT NULL,"
    " first_seen_at TIMESTAMP, PRIMARY KEY (commit_hash, branch))",
    "INSERT INTO commit_branches VALUES ('" + f"{1:040x}" + "', 'main', '2026-11-20 12:00:00')",
    "UPDATE schema_version SET version = 1",
]


async def test_version_1_database_gets_repositories_per_commit_and_branch(
    database_spec: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 1 → 2 keeps every row; then a fork's copy of a commit is recorded beside it."""
    await write_run(database_spec, tmp_path, [Batch([commit(1)])])
    _execute(database_spec, TO_V1_SQL)
    caplog.set_level(logging.INFO, logger="rcingest")
    fork = commit(1, repository="ada/api-fork", branches=["main", "feature/REL-1"])
    await write_run(database_spec, tmp_path, [Batch([fork])], "run-2")
    assert f"schema upgraded from version 1 to {CURRENT_VERSION}" in caplog.text
    rows = dump(database_spec)
    (c,) = rows["commits"]
    assert c["repository"] == "acme/api"  # where it was first seen
    assert sorted((r["repository"]) for r in rows["commit_repositories"]) == [
        "acme/api",
        "ada/api-fork",
    ]
    assert sorted((b["repository"], b["branch"]) for b in rows["commit_branches"]) == [
        ("acme/api", "main"),
        ("ada/api-fork", "feature/REL-1"),
        ("ada/api-fork", "main"),
    ]


# Version 2, made from a fresh database: story_keys without the lending branch,
# pull_requests without source_repository (SQLite and PostgreSQL alike).
TO_V2_SQL = [
    "DROP TABLE story_keys",
    "CREATE TABLE story_keys (commit_hash TEXT NOT NULL, key TEXT NOT NULL,"
    " origin TEXT NOT NULL, PRIMARY KEY (commit_hash, key, origin))",
    "CREATE INDEX story_keys_key ON story_keys (key)",
    "INSERT INTO story_keys VALUES ('" + f"{1:040x}" + "', 'REL-1', 'message')",
    "INSERT INTO story_keys VALUES ('" + f"{1:040x}" + "', 'OLD-9', 'branch')",
    "ALTER TABLE pull_requests DROP COLUMN source_repository",
    "UPDATE schema_version SET version = 2",
]


async def test_version_2_database_gets_key_evidence_and_pr_source(
    database_spec: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 2 → 3 keeps every key row (branch ''), then stores the lending branch."""
    await write_run(database_spec, tmp_path, [Batch([commit(1), pull_request()])])
    _execute(database_spec, TO_V2_SQL)
    caplog.set_level(logging.INFO, logger="rcingest")
    lent = commit(
        1,
        new_on=["feature/REL-1-login"],
        story_keys=[StoryKey("REL-1", ("message", "branch"), ("feature/REL-1-login",))],
    )
    fork_pr = pull_request(source_repository="ada/api-fork")
    await write_run(database_spec, tmp_path, [Batch([lent, fork_pr])], "run-2")
    assert f"schema upgraded from version 2 to {CURRENT_VERSION}" in caplog.text
    rows = dump(database_spec)
    assert sorted((k["key"], k["origin"], k["branch"]) for k in rows["story_keys"]) == [
        ("OLD-9", "branch", ""),  # from version 2: kept, marked as without evidence
        ("REL-1", "branch", "feature/REL-1-login"),
        ("REL-1", "message", ""),
    ]
    (pr,) = rows["pull_requests"]
    assert pr["source_repository"] == "ada/api-fork"
    unproven = _doc_queries()["branch-keys-without-evidence"]
    db, _ = open_database(database_spec)
    with db.connection_context():
        found = db.execute_sql(unproven).fetchall()
    db.close()
    assert [(r[0], r[1]) for r in found] == [(f"{1:040x}", "OLD-9")]


async def test_a_commit_in_two_repositories_is_listed_in_both(
    database_spec: str, tmp_path: Path
) -> None:
    # Same hash, same branch name, two repositories (an upstream and its fork).
    batch = Batch([commit(2), commit(2, repository="ada/api-fork")])
    await write_run(database_spec, tmp_path, [batch])
    await write_run(database_spec, tmp_path, [batch], "run-2")  # a replay adds nothing
    rows = dump(database_spec)
    assert len(rows["commits"]) == 1
    assert sorted((b["repository"], b["branch"]) for b in rows["commit_branches"]) == [
        ("acme/api", "main"),
        ("ada/api-fork", "main"),
    ]
    assert len(rows["commit_repositories"]) == 2


async def test_newer_schema_is_refused_untouched(database_spec: str, tmp_path: Path) -> None:
    await write_run(database_spec, tmp_path, [Batch([commit(1)])])
    _execute(database_spec, [f"UPDATE schema_version SET version = {CURRENT_VERSION + 1}"])
    before = dump(database_spec)
    ctx = make_context(tmp_path, "run-2")
    sink = DatabaseSink(DatabaseConfig(database=database_spec), ctx)
    with pytest.raises(SchemaError) as info:
        async with sink:
            pass
    message = str(info.value)
    assert f"schema version {CURRENT_VERSION + 1}, written by a newer rcingest" in message
    assert "Upgrade rcingest" in message
    assert redact(database_spec) in message
    assert dump(database_spec) == before
    assert [r["id"] for r in _runs(database_spec)] == ["run-1"]


def test_fresh_database_has_current_version(database_spec: str, tmp_path: Path) -> None:
    asyncio.run(write_run(database_spec, tmp_path, []))
    db, _ = open_database(database_spec)
    with db.connection_context():
        assert db.execute_sql("SELECT version FROM schema_version").fetchall() == [
            (CURRENT_VERSION,)
        ]
        assert set(TABLES) | {"runs", "schema_version"} <= set(db.get_tables())
    db.close()


# -- SQLite specifics, PostgreSQL specifics, both at once ----------------------------------------


async def test_sqlite_wal_busy_timeout_and_folders(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "commits.db"
    await write_run(str(path), tmp_path, [Batch([commit(1)])], busy_timeout_ms=1234)
    assert path.exists()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()
    db, _ = open_database(str(path), busy_timeout_ms=1234, synchronous="FULL")
    with db.connection_context():
        assert db.execute_sql("PRAGMA busy_timeout").fetchone() == (1234,)
        assert db.execute_sql("PRAGMA synchronous").fetchone() == (2,)  # FULL
    db.close()


def test_bad_database_settings_are_clear(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    with pytest.raises(ConfigError, match="unsupported URL scheme"):
        DatabaseSink(DatabaseConfig(database="mysql://u:hunter2@h/db"), ctx)
    with pytest.raises(ConfigError) as info:
        DatabaseSink(DatabaseConfig(database="postgresql://u:hunter2@h:5432/"), ctx)
    assert "names no database" in str(info.value) and "hunter2" not in str(info.value)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create folder"):
        DatabaseSink(DatabaseConfig(database=str(blocker / "sub" / "x.db")), ctx)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"synchronous": "OFF"}, DatabaseConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"busy_timeout_ms": -1}, DatabaseConfig)


@pytest.mark.postgres
async def test_wrong_password_message_is_redacted(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_url)
    wrong = "wrong-pass-s3cret"
    netloc = f"{parts.username}:{wrong}@{parts.hostname}:{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc))
    caplog.set_level(logging.DEBUG)
    ctx = make_context(tmp_path)
    sink = DatabaseSink(DatabaseConfig(database=url), ctx)
    with pytest.raises(RunFailed) as info:
        async with sink:
            pass
    message = str(info.value)
    assert "opening failed" in message and "***" in message
    assert wrong not in message and wrong not in caplog.text
    assert parts.password is not None and parts.password not in message


@pytest.mark.parametrize(
    ("spec", "shown", "password"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://***:***@h:5432/db", "s3cret"),
        ("postgresql://:s3cret@h/db", "postgresql://***:***@h/db", "s3cret"),
        (
            "postgresql://u@h/db?password=s3cret&sslmode=disable",
            "postgresql://u@h/db?password=***&sslmode=disable",
            "s3cret",
        ),
        ("postgresql://u:url-pw@h/db?password=s3cret", None, "s3cret"),
        ("postgres://u:p%40ss@h/db", "postgres://***:***@h/db", "p@ss"),
        ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require", None),
    ],
)
def test_every_form_of_password_is_masked_and_returned_for_scrubbing(
    spec: str, shown: str | None, password: str | None
) -> None:
    # libpq takes the password from the URL's credentials or from ?password=
    # (the query wins); both must be masked and both must be scrubbed.
    if shown is not None:
        assert redact(spec) == shown
    assert "s3cret" not in redact(spec) and "p%40ss" not in redact(spec)
    db, returned = open_database(spec)
    assert returned == password
    assert db.connect_params.get("password") == password


@pytest.mark.parametrize(
    ("spec", "secrets"),
    [
        ("postgresql://u:url-pw-1234@h/db", {"url-pw-1234"}),
        ("postgres://u:p%40ss-1234@h/db", {"p%40ss-1234", "p@ss-1234"}),
        ("postgresql://u:url-pw-1234@h/db?password=s3cret-9876", {"url-pw-1234", "s3cret-9876"}),
        ("postgresql://u@h/db?sslmode=require", set()),
        ("data/commits.db", set()),
        ("postgresql://u:pw@[bad/db", set()),  # not a URL urlsplit accepts
    ],
)
def test_url_secrets_are_every_form_of_the_password(spec: str, secrets: set[str]) -> None:
    # The inbox and replay commands and the PostgreSQL schedule store mask these.
    assert url_secrets(spec) == secrets


async def test_a_query_string_password_stays_out_of_errors_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pw = "q-s3cret-in-query"
    # Port 1: nothing listens; the driver's error may echo the connection string.
    sink = DatabaseSink(
        DatabaseConfig(database=f"postgresql://rc@127.0.0.1:1/db?password={pw}"),
        make_context(tmp_path),
    )
    assert pw not in sink.where and "password=***" in sink.where
    assert pw in sink._secrets
    with pytest.raises(RunFailed) as info:
        async with sink:
            pass
    assert pw not in str(info.value) and pw not in caplog.text


@pytest.mark.postgres
async def test_query_string_password_is_scrubbed_from_rows(
    postgres_url: str, tmp_path: Path
) -> None:
    """The password given as ?password= is a secret like any other: never in a row."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(postgres_url)
    assert parts.password
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc, query=f"password={quote(parts.password)}"))
    leaked = commit(1, message=f"REL-1 oops, pasted {parts.password} here")
    await write_run(url, tmp_path, [Batch([leaked])])
    (row,) = dump(postgres_url, ["commits"])["commits"]
    assert parts.password not in row["message"] and "***" in row["message"]


@pytest.mark.postgres
async def test_sqlite_and_postgres_sinks_side_by_side(postgres_url: str, tmp_path: Path) -> None:
    """Two sinks in one process and one loop, each with its own database and models."""
    sqlite_path = str(tmp_path / "side.db")
    ctx_a, ctx_b = make_context(tmp_path, "a"), make_context(tmp_path, "b")
    a = DatabaseSink(DatabaseConfig(database=sqlite_path), ctx_a)
    b = DatabaseSink(DatabaseConfig(database=postgres_url), ctx_b)
    async with a, b:
        await asyncio.gather(
            a.write(Batch([commit(1)], [Checkpoint("s", {"x": "a"})])),
            b.write(Batch([commit(2), commit(3)], [Checkpoint("s", {"x": "b"})])),
        )
        assert await a.load_cursors("test:src") == {"s": {"x": "a"}}
        assert await b.load_cursors("test:src") == {"s": {"x": "b"}}
        ctx_a.status = ctx_b.status = "succeeded"
    assert [c["hash"] for c in dump(sqlite_path)["commits"]] == [f"{1:040x}"]
    assert len(dump(postgres_url)["commits"]) == 2


@pytest.mark.postgres
async def test_sqlite_and_postgres_store_the_same_rows(postgres_url: str, tmp_path: Path) -> None:
    sqlite_path = str(tmp_path / "same.db")
    delivery = WebhookDelivery(request_uuid="r", event="repo:push", received_at=T0)
    batch = Batch(
        [Repository(full_name="acme/api", is_private=True), commit(1), pull_request(), delivery],
        [Checkpoint("a", {"n": 1})],
    )
    for spec in (sqlite_path, postgres_url):
        await write_run(spec, tmp_path, [batch])
    stamps = ("first_seen_at", "last_seen_at", "last_synced_at", "updated_at")
    assert without(dump(sqlite_path), *stamps) == without(dump(postgres_url), *stamps)


# -- docs/database.md stays true ------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "database.md"


def _doc_queries() -> dict[str, str]:
    import re

    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n-- query: (\S+)\n(.*?)```", text, flags=re.S)
    return {name: sql.strip().rstrip(";") for name, sql in blocks}


def test_every_column_is_documented(tmp_path: Path) -> None:
    import re

    text = DOC.read_text(encoding="utf-8")
    db, _ = open_database(str(tmp_path / "x.db"))
    for model in make_models(db).all():
        table = model._meta.table_name
        section = re.search(rf"### `{table}`\n(.*?)(?=\n### |\n## |\Z)", text, flags=re.S)
        assert section, f"docs/database.md has no section for table {table}"
        documented = set(re.findall(r"^\| `(\w+)` \|", section.group(1), flags=re.M))
        assert documented == set(model._meta.columns), table


async def test_ready_queries_run(database_spec: str, tmp_path: Path) -> None:
    queries = _doc_queries()
    assert {"commits-per-key", "commits-without-key", "files-per-key"} <= set(queries)
    day = datetime(2026, 11, 20, 7, tzinfo=UTC)  # midnight in Phoenix
    keyed = commit(
        1,
        date=day + timedelta(hours=2),
        story_keys=[StoryKey("REL-1", ("message", "branch"))],
        files=[FileChange("a.py", "modified", None, 5, 2), FileChange("b.py", "added", None, 1)],
    )
    other = commit(2, date=day + timedelta(hours=3), story_keys=[StoryKey("REL-1", ("message",))])
    keyless = commit(3, date=day + timedelta(hours=4), story_keys=[], message="tidy")
    outside = commit(4, date=day - timedelta(minutes=1), story_keys=[], message="late")
    await write_run(database_spec, tmp_path, [Batch([keyed, other, keyless, outside])])
    db, _ = open_database(database_spec)
    results = {}
    with db.connection_context():
        for name, sql in queries.items():
            results[name] = [tuple(r) for r in db.execute_sql(sql).fetchall()]
    db.close()
    assert results["commits-per-key"] == [("REL-1", 2)]
    assert [r[1] for r in results["commits-without-key"]] == [f"{3:040x}"]
    assert results["files-per-key"] == [
        ("REL-1", "a.py", 1, 5, 2),
        ("REL-1", "b.py", 1, 1, 0),
        ("REL-1", "src/f2.py", 1, 3, 1),
    ]
    assert results["authors-per-key"] == [("REL-1", "Ada <ada@example.com>", 2)]
    assert [r[0] for r in results["last-runs"]] == ["run-1"]


@pytest.mark.postgres
async def test_postgres_connection_lost_is_reopened(postgres_url: str, tmp_path: Path) -> None:
    """A daemon outlives a PostgreSQL restart: a dead connection is reopened on the next write."""
    import psycopg2

    ctx = make_context(tmp_path)
    sink = DatabaseSink(DatabaseConfig(database=postgres_url), ctx)
    async with sink:
        await sink.write(Batch([commit(1)]))
        name = postgres_url.rsplit("/", 1)[1]
        admin = psycopg2.connect(postgres_url.rsplit("/", 1)[0] + "/postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        admin.close()
        await sink.write(Batch([commit(2)]))
        ctx.status = "succeeded"
    assert len(dump(postgres_url)["commits"]) == 2


async def test_two_writers_on_one_database(database_spec: str, tmp_path: Path) -> None:
    """Two sinks writing overlapping batches at once: no error, no duplicate.

    SQLite: the second writer waits for the lock (BEGIN IMMEDIATE + busy
    timeout). PostgreSQL: rows go in key order, so the writers cannot deadlock.
    """
    await write_run(database_spec, tmp_path, [])  # create the schema once
    ctx_a, ctx_b = make_context(tmp_path, "a"), make_context(tmp_path, "b")
    a = DatabaseSink(DatabaseConfig(database=database_spec), ctx_a)
    b = DatabaseSink(DatabaseConfig(database=database_spec), ctx_b)

    async def writer(sink: DatabaseSink, order: list[int]) -> None:
        for start in order:
            await sink.write(Batch([commit(n) for n in range(start, start + 40)]))

    async with a, b:
        await asyncio.gather(writer(a, [0, 40, 80, 120]), writer(b, [120, 80, 40, 0]))
        ctx_a.status = ctx_b.status = "succeeded"
    rows = dump(database_spec)
    assert len(rows["commits"]) == 160
    assert len(rows["commit_files"]) == 160 and len(rows["story_keys"]) == 160
    assert sorted(r["id"] for r in _runs(database_spec)) == ["a", "b", "run-1"]
