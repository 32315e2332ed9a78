"""``rcingest replay`` (issue 15): the inbox re-derived equals a fresh ingest.

A real daemon (aiohttp on 127.0.0.1:0, the inbox, the runner, the database
sink) ingests the fixtures; the command then replays its inbox through the
pipeline into real SQLite files and a real PostgreSQL, and every table is
compared (``*_seen_at`` columns and the runs' bookkeeping aside).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.config import load_pipeline
from rcingest.inbox.db import connect
from rcingest.inbox.model import Arrival
from rcingest.interfaces import RunContext
from rcingest.pipeline import Runner
from rcingest.plugins import make_plugin_manager
from tests.test_webhook_daemon import _DAEMONS, EVENTS, FIX, SECRET, Daemon, post, registry, signed

DAY_ONE = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
#: Bookkeeping of runs, not what was ingested: never compared.
SKIPPED_TABLES = {"runs", "source_cursors", "schema_version"}
OLD_GRAMMAR: list[dict[str, Any]] = [{"type": "story_keys"}]  # strict, every project
NEW_GRAMMAR: list[dict[str, Any]] = [
    {"type": "story_keys", "config": {"mode": "lenient", "projects": ["OPS"]}}
]


# -- deliveries ----------------------------------------------------------------------------


def _keyed(raw: bytes, old: str, new: str) -> bytes:
    """``raw`` with ``old`` replaced by ``new`` in every string (story keys in the texts)."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(old, new)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return json.dumps(walk(json.loads(raw))).encode()


def deliveries() -> list[tuple[bytes, str, str]]:
    """(body, event, request uuid): every fixture, then a push and a PR that carry keys.

    Strict mode finds ABC-12/ABC-3; lenient with ``projects: [OPS]`` finds
    ops-7/ops-9 (upper-cased) and drops the ABC keys.
    """
    out = [((FIX / name).read_bytes(), event, f"fix-{i}") for i, (name, event) in enumerate(EVENTS)]
    push = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
    out.append((_keyed(push, "Update README", "ABC-12 Update README, ops-7"), "repo:push", "k-1"))
    pr = (FIX / "webhook_pullrequest-updated_go-scm-2018.json").read_bytes()
    out.append(
        (_keyed(pr, "Awesome new feature", "ABC-3 new feature ops-9"), "pullrequest:updated", "k-2")
    )
    return out


# -- a daemon with a chosen grammar ----------------------------------------------------------


def write_pipeline(
    folder: Path,
    enrichers: list[dict[str, Any]],
    database: str,
    inbox: str | None = None,
    **extra: Any,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        **extra,
        "name": "hooks",
        "source": {
            "type": "bitbucket_webhook",
            "config": {
                "port": 0,
                "secret": SECRET,
                "backfill_queue": f"{folder}/backfill.db",
                "inbox": inbox or f"{folder}/inbox.db",
            },
        },
        "enrichers": enrichers,
        "sinks": [{"type": "database", "config": {"database": database}}],
    }
    path = folder / "webhook.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@contextlib.asynccontextmanager
async def hooks(pipeline: Path) -> AsyncIterator[Daemon]:
    """``rcingest serve`` of ``pipeline`` (as tests/test_webhook_daemon.py's ``daemon``)."""
    loaded = load_pipeline(pipeline, registry())
    context = RunContext(
        run_id=f"serve-{time.monotonic_ns()}",
        pipeline_name="hooks",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=pipeline.parent,
        source_id="hooks:bitbucket_webhook",
        mode="serve",
        secrets=loaded.secrets | {SECRET},
    )
    runner = Runner(loaded, context)
    task = asyncio.create_task(runner.run())
    for _ in range(500):
        if runner.source.bound_port is not None or task.done():  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    if task.done():
        await task
    d = Daemon(runner, pipeline.parent / "commits.db")
    _DAEMONS[d.url] = d  # post() waits until what it posted is normalised
    try:
        yield d
    finally:
        _DAEMONS.pop(d.url, None)
        await runner.stop()
        assert (await asyncio.wait_for(task, 30)).status == "succeeded"


def ingest(
    folder: Path,
    enrichers: list[dict[str, Any]],
    database: str | None = None,
    picked: Sequence[tuple[bytes, str, str]] | None = None,
    inbox: str | None = None,
) -> Path:
    """A fresh ingest: the deliveries posted to a daemon; the pipeline file's path."""
    pipeline = write_pipeline(folder, enrichers, database or str(folder / "commits.db"), inbox)

    async def go() -> None:
        async with hooks(pipeline) as d:
            for raw, event, uuid in deliveries() if picked is None else picked:
                status, text = await post(d.url, raw, signed(raw, event, uuid=uuid))
                assert status == 200, text

    asyncio.run(go())
    return pipeline


def renormalise(inbox: str, folder: Path, enrichers: list[dict[str, Any]]) -> Path:
    """A fresh ingest of ``inbox``'s deliveries as received: a new daemon normalises a copy.

    (Posting them again would stamp them with a new received time, which
    commits without a date in their payload take as theirs.)
    """
    pipeline = write_pipeline(folder, enrichers, str(folder / "commits.db"))
    src, dst = connect(inbox, must_exist=True), connect(str(folder / "inbox.db"))
    try:
        dst.create()
        dst.append(
            [
                Arrival(
                    request_uuid=e.row.request_uuid,
                    event=e.row.event,
                    repository=e.row.repository,
                    received_at=e.row.received_at,
                    headers=e.headers,
                    body=e.body,
                )
                for e in src.entries()
            ]
        )
    finally:
        src.close()
        dst.close()

    async def go() -> None:
        async with hooks(pipeline) as d:
            await d.settled()

    asyncio.run(go())
    return pipeline


def replay(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["replay", *args], obj=make_plugin_manager(), env=env)
    return result.exit_code, result.stdout, result.stderr


# -- every table, compared ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as both databases can be compared (SQLite keeps datetimes as text)."""
    if isinstance(value, datetime):
        return str(value.replace(tzinfo=None))
    if isinstance(value, bool):
        return int(value)
    return value


def dump(spec: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted, without ``*_seen_at`` columns or run bookkeeping."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    if spec.startswith("postgresql://"):
        import psycopg2

        conn: Any = psycopg2.connect(spec)
        tables_sql = (
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        columns_sql = (
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position"
        )
    else:
        conn = sqlite3.connect(spec)
        tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        columns_sql = "SELECT name FROM pragma_table_info(?)"
    with contextlib.closing(conn):
        cur = conn.cursor()
        cur.execute(tables_sql)
        for (table,) in sorted(cur.fetchall()):
            if table in SKIPPED_TABLES or table.startswith("sqlite_"):
                continue
            cur.execute(columns_sql, (table,))
            kept = [c for (c,) in cur.fetchall() if not c.endswith("_seen_at")]
            cur.execute(f"SELECT {', '.join(kept)} FROM {table}")
            rows = [tuple(_plain(v) for v in row) for row in cur.fetchall()]
            out[table] = sorted(rows, key=lambda row: tuple(map(str, row)))
    return out


def story_keys(spec: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    tables = dump(spec)
    return tables["story_keys"], tables["pull_request_story_keys"]


# -- the tests -------------------------------------------------------------------------------


def test_replay_of_everything_equals_the_daemons_ingest(tmp_path: Path) -> None:
    pipeline = ingest(tmp_path / "live", OLD_GRAMMAR)
    fresh = tmp_path / "replayed.db"
    code, out, err = replay(str(pipeline), "--all", "--database", str(fresh))
    assert code == 0, err
    selected = len(deliveries())
    assert f"replayed {selected} of {selected} selected deliveries" in out
    assert "0 refused by the decoder" in out
    live = dump(str(tmp_path / "live" / "commits.db"))
    assert live["commits"] and live["deliveries"] and live["story_keys"]
    assert dump(str(fresh)) == live
    # Replay never changes the inbox: every row is still done, attempted once.
    db = connect(str(tmp_path / "live" / "inbox.db"), must_exist=True)
    try:
        assert {(r.state, r.attempts) for r in db.rows()} == {("done", 1)}
    finally:
        db.close()


def test_replay_after_a_grammar_change_gives_the_new_grammars_keys_only(tmp_path: Path) -> None:
    old = ingest(tmp_path / "old", OLD_GRAMMAR)
    database = str(tmp_path / "old" / "commits.db")
    commit_keys, pr_keys = story_keys(database)
    assert {row[1] for row in commit_keys} >= {"ABC-12"}
    assert {row[2] for row in pr_keys} == {"ABC-3"}
    # The grammar changes in the pipeline; the same deliveries are replayed.
    write_pipeline(tmp_path / "old", NEW_GRAMMAR, database)
    code, _, err = replay(str(old), "--all")
    assert code == 0, err
    # A daemon under the new grammar, fed the same deliveries from scratch.
    renormalise(str(tmp_path / "old" / "inbox.db"), tmp_path / "new", NEW_GRAMMAR)
    expected = dump(str(tmp_path / "new" / "commits.db"))
    assert {row[1] for row in expected["story_keys"]} == {"OPS-7"}
    assert {row[2] for row in expected["pull_request_story_keys"]} == {"OPS-9"}
    assert dump(database) == expected  # no ABC key left over, nothing else changed


def test_replaying_twice_equals_replaying_once(tmp_path: Path) -> None:
    pipeline = ingest(tmp_path / "live", OLD_GRAMMAR)
    fresh = str(tmp_path / "replayed.db")
    assert replay(str(pipeline), "--all", "--database", fresh)[0] == 0
    once = dump(fresh)
    assert replay(str(pipeline), "--all", "--database", fresh)[0] == 0
    assert dump(fresh) == once
    with contextlib.closing(sqlite3.connect(fresh)) as conn:
        modes = conn.execute("SELECT mode, status FROM runs").fetchall()
    assert modes == [("replay", "succeeded")] * 2


def test_a_commit_keeps_the_keys_of_two_deliveries_of_one_replay(tmp_path: Path) -> None:
    # The same commit, in two pushes whose messages differ (an edit of history
    # is impossible, but two derivations may lend different keys): both stay.
    push = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
    picked = [
        (_keyed(push, "Update README", "ABC-1 Update README"), "repo:push", "a-1"),
        (_keyed(push, "Update README", "ABC-2 Update README"), "repo:push", "a-2"),
    ]
    pipeline = ingest(tmp_path / "live", OLD_GRAMMAR, picked=picked)
    live = dump(str(tmp_path / "live" / "commits.db"))
    assert {row[1] for row in live["story_keys"]} == {"ABC-1", "ABC-2"}
    # One record per batch: the second delivery's commit comes in a later batch.
    write_pipeline(
        tmp_path / "live", OLD_GRAMMAR, str(tmp_path / "live" / "commits.db"), batch={"size": 1}
    )
    fresh = str(tmp_path / "replayed.db")
    assert replay(str(pipeline), "--all", "--database", fresh)[0] == 0
    assert dump(fresh) == live
    # Into the live database, too: the first write replaces, the second adds.
    assert replay(str(pipeline), "--all")[0] == 0
    assert dump(str(tmp_path / "live" / "commits.db")) == live


# -- selectors -------------------------------------------------------------------------------


def _repository_of(raw: bytes) -> str:
    return str(json.loads(raw)["repository"]["full_name"])


def inbox_of(folder: Path, received: dict[str, float]) -> Path:
    """A pipeline whose inbox holds the deliveries with these uuids, received then."""
    pipeline = write_pipeline(folder, OLD_GRAMMAR, str(folder / "commits.db"))
    db = connect(str(folder / "inbox.db"))
    db.create()
    arrivals = [
        Arrival(
            request_uuid=uuid,
            event=event,
            repository=_repository_of(raw),
            received_at=received[uuid],
            headers={"X-Event-Key": event, "X-Request-UUID": uuid, "X-Hook-UUID": "{hook}"},
            body=raw,
        )
        for raw, event, uuid in deliveries()
        if uuid in received
    ]
    db.append(arrivals)
    db.close()
    return pipeline


def replayed_uuids(database: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return {r[0] for r in conn.execute("SELECT request_uuid FROM deliveries")}


def test_selectors_replay_only_what_they_select(tmp_path: Path) -> None:
    every = {uuid: DAY_ONE + 3600 * i for i, (_, _, uuid) in enumerate(deliveries())}
    pipeline = inbox_of(tmp_path, every)
    repos = {uuid: _repository_of(raw) for raw, _, uuid in deliveries()}
    some_repo = repos["fix-0"]

    def picked(*args: str) -> set[str]:
        target = tmp_path / f"r{len(list(tmp_path.glob('r*.db')))}.db"
        code, _, err = replay(str(pipeline), *args, "--database", str(target))
        assert code == 0, err
        return replayed_uuids(target) if target.exists() else set()

    assert picked("--repository", some_repo) == {u for u, r in repos.items() if r == some_repo}
    assert picked("--uuid", "fix-3", "--uuid", "k-2") == {"fix-3", "k-2"}
    # [01:00, 03:00) UTC: the second and third deliveries.
    assert picked("--since", "2026-11-02T01:00Z", "--until", "2026-11-02T03:00Z") == {
        "fix-1",
        "fix-2",
    }
    # A naive time is in the pipeline's zone (UTC here) unless --timezone names one.
    assert picked("--since", "2026-11-02T00:00", "--until", "2026-11-02T01:00") == {"fix-0"}
    in_phoenix = ("--since", "2026-11-01T17:00", "--until", "2026-11-01T18:00")
    assert picked(*in_phoenix, "--timezone", "America/Phoenix") == {"fix-0"}
    # Selectors combine: all must hold.
    assert picked("--repository", some_repo, "--uuid", "k-1") == (
        {"k-1"} if repos["k-1"] == some_repo else set()
    )


def test_a_bare_replay_is_refused(tmp_path: Path) -> None:
    pipeline = inbox_of(tmp_path, {"fix-0": time.time()})
    code, _, err = replay(str(pipeline))
    assert code == 2
    assert "pass --all to replay everything" in err
    assert not (tmp_path / "commits.db").exists()  # nothing was written
    code, _, err = replay(str(pipeline), "--all", "--uuid", "fix-0")
    assert code == 2 and "--all replays everything" in err


def test_a_missing_inbox_and_a_refused_delivery(tmp_path: Path) -> None:
    pipeline = write_pipeline(tmp_path, OLD_GRAMMAR, str(tmp_path / "commits.db"))
    code, _, err = replay(str(pipeline), "--all")
    assert code == 2 and f"no inbox at {tmp_path}/inbox.db" in err
    assert not (tmp_path / "inbox.db").exists()  # never created
    pipeline = inbox_of(tmp_path, {"fix-1": time.time()})
    db = connect(str(tmp_path / "inbox.db"))
    bad = b'{"not": "a push"}'
    headers = {"X-Event-Key": "repo:push", "X-Request-UUID": "bad-1"}
    refused = Arrival(
        request_uuid="bad-1",
        event="repo:push",
        repository="",
        received_at=1.0,
        headers=headers,
        body=bad,
    )
    db.append([refused])
    db.close()
    code, out, err = replay(str(pipeline), "--all")
    assert code == 0, err
    assert "replayed 1 of 2 selected deliveries" in out and "1 refused by the decoder" in out
    assert "refused: bad-1: the decoder refused it" in err
    assert replayed_uuids(tmp_path / "commits.db") == {"fix-1"}


def test_a_failed_run_exits_1(tmp_path: Path) -> None:
    pipeline = inbox_of(tmp_path, {"fix-1": time.time()})
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a SQLite database, whatever its name says" * 100)
    code, _, err = replay(str(pipeline), "--all", "--database", str(broken))
    assert code == 1
    assert "error: " in err and "broken.db" in err


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    pipeline = inbox_of(tmp_path, {"fix-1": time.time(), "k-1": time.time()})
    code, out, err = replay(str(pipeline), "--all", "--dry-run")
    assert code == 0, err
    assert "would replay 2 of 2 selected deliveries" in out
    assert not (tmp_path / "commits.db").exists()


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_replay_on_postgresql_replaces_keys_idempotently(tmp_path: Path, postgres_url: str) -> None:
    # The daemon's inbox and database both in PostgreSQL (one database holds both).
    old = ingest(tmp_path / "old", OLD_GRAMMAR, database=postgres_url, inbox=postgres_url)
    assert {row[1] for row in story_keys(postgres_url)[0]} >= {"ABC-12"}
    write_pipeline(tmp_path / "old", NEW_GRAMMAR, postgres_url, postgres_url)
    # The URLs (with their password) from the environment, as the docs say.
    env = {"RCINGEST_DATABASE_URL": postgres_url, "RCINGEST_INBOX_URL": postgres_url}
    code, out, err = replay(str(old), "--all", env=env)
    assert code == 0, err
    selected = len(deliveries())
    assert f"replayed {selected} of {selected} selected deliveries" in out
    password = postgres_url.split("@")[0].rsplit(":", 1)[1]
    assert password not in out + err
    once = dump(postgres_url)
    # A fresh SQLite ingest of the same deliveries under the new grammar.
    renormalise(postgres_url, tmp_path / "new", NEW_GRAMMAR)
    expected = dump(str(tmp_path / "new" / "commits.db"))
    assert {row[1] for row in expected["story_keys"]} == {"OPS-7"}
    for table in ("story_keys", "pull_request_story_keys", "commit_branches", "pull_requests"):
        assert once[table] == expected[table], table
    assert replay(str(old), "--all", env=env)[0] == 0
    assert dump(postgres_url) == once


# -- the runner under replay -------------------------------------------------------------------


async def test_a_replay_stopped_midway_ends_interrupted(tmp_path: Path) -> None:
    from rcingest.inbox.derive import DecodeSettings
    from rcingest.inbox.model import InboxFilter
    from rcingest.inbox.replay import ReplaySource

    # One record per batch, one in the queue: the replay is still going when it is stopped.
    batch = {"size": 1, "queue": 1}
    pipeline = write_pipeline(tmp_path, OLD_GRAMMAR, str(tmp_path / "commits.db"), batch=batch)
    push = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
    db = connect(str(tmp_path / "inbox.db"))
    db.create()
    headers = {"X-Event-Key": "repo:push"}
    db.append(
        [
            Arrival(
                request_uuid=f"p-{i}",
                event="repo:push",
                repository=_repository_of(push),
                received_at=DAY_ONE + i,
                headers={**headers, "X-Request-UUID": f"p-{i}"},
                body=push,
            )
            for i in range(500)
        ]
    )
    db.close()
    loaded = load_pipeline(pipeline, registry(), mode="serve")
    context = RunContext(
        run_id="replay-1",
        pipeline_name="hooks",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="hooks:bitbucket_webhook",
        mode="replay",
    )
    source = ReplaySource(
        context,
        spec=str(tmp_path / "inbox.db"),
        selection=InboxFilter(),
        settings=DecodeSettings(backfill=False),
    )
    runner = Runner(loaded, context, source=source)  # the pipeline's own source is not built
    assert runner.source is source
    task = asyncio.create_task(runner.run())
    while not source.counts.replayed and not task.done():
        await asyncio.sleep(0.001)
    await runner.stop()  # as on Ctrl-C: the producer is cancelled, what is queued is written
    result = await asyncio.wait_for(task, 30)
    assert result.status == "interrupted"
    done = source.counts.replayed
    assert 0 < done < 500
    # Oldest first; the delivery cut short by the stop may be written without
    # its checkpoint (then it is not counted as replayed).
    stored = replayed_uuids(tmp_path / "commits.db")
    assert stored in ({f"p-{i}" for i in range(done)}, {f"p-{i}" for i in range(done + 1)})
