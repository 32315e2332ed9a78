"""Issue 15, defects 3, 6 and 10: deep JSON, NUL characters and malformed identifiers.

Defect 3: JSON nested past msgspec's limit is a 400, never an exception.
Defect 6: a NUL in a message, branch or title is removed (``rcingest.nul``),
so the delivery is stored and answered 200 on SQLite and PostgreSQL alike.
Defect 10: commit hashes and repository names of the wrong shape are a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

import rcingest.default_plugins.bitbucket_webhook as webhook_plugin
import rcingest.default_plugins.database as database_plugin
from rcingest.bitbucket.parse import commit_from_api, pull_request_from_api
from rcingest.config import load_pipeline
from rcingest.interfaces import RunContext
from rcingest.nul import strip_nul
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.records import Commit
from rcingest.webhooks import receive, sign
from rcingest.webhooks.decode import decode

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
SECRET = "whsec-Hardening-15-q7Lm"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
H1, H2 = "a" * 40, "b" * 40


def push_payload(**commit: Any) -> dict[str, Any]:
    c = {
        "hash": H2,
        "date": "2026-11-30T10:00:00+00:00",
        "author": {"raw": "Ada <ada@example.com>"},
        "message": "REL-7 change",
        "parents": [{"hash": H1}],
        **commit,
    }
    change = {
        "new": {"type": "branch", "name": "main", "target": {"hash": H2}},
        "old": {"type": "branch", "name": "main", "target": {"hash": H1}},
        "commits": [c],
    }
    return {"push": {"changes": [change]}, "repository": {"full_name": "acme/app"}}


def pr_payload() -> dict[str, Any]:
    return json.loads((FIX / "webhook_pullrequest-created_go-scm-2018.json").read_bytes())


def verdict(event: str, data: Any, **kw: Any) -> tuple[int, str]:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    v = receive({"X-Event-Key": event}, raw, secret=None, received_at=NOW, **kw)
    return v.status, v.reason


# ---- defect 3: deep nesting ---------------------------------------------------

DEEP = b"[" * 1000 + b"]" * 1000
ALL = {"compliance_keys": frozenset({"rcingest"}), "inventory": True}


@pytest.mark.parametrize(
    "event",
    [
        "repo:push",
        "pullrequest:created",
        "pullrequest:approved",
        "repo:commit_status_updated",
        "repo:fork",
        "issue:created",  # documented, not stored: still must be JSON
        "no:such-event",
    ],
)
@pytest.mark.parametrize("where", ["top", "unknown field", "inside a known field"])
def test_json_nested_too_deeply_is_400(event: str, where: str) -> None:
    raw = {
        "top": DEEP,
        "unknown field": b'{"x": ' + DEEP + b', "repository": {"full_name": "a/b"}}',
        "inside a known field": b'{"repository": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001,
    }[where]
    status, reason = verdict(event, raw, **ALL)
    assert status == 400
    if where != "top":  # a top-level array is of the wrong shape before it is deep
        assert "nested too deeply" in reason or "wrong shape" in reason


def test_deep_nesting_reason_is_clear() -> None:
    status, reason = verdict("repo:push", b'{"x": ' + DEEP + b"}")
    assert (status, reason) == (400, "body is not valid JSON: nested too deeply")


def test_moderate_nesting_in_ignored_fields_is_still_accepted() -> None:
    data = push_payload()
    data["extra"] = json.loads("[" * 50 + "]" * 50)
    assert verdict("repo:push", data)[0] == 200


# ---- defect 10: identifiers ---------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "abc", "A" * 40, "g" * 40, "a" * 41, "a" * 1000, " " + "a" * 39, "a" * 12 + "\n"]
)
def test_bad_commit_hash_is_400(bad: str) -> None:
    status, reason = verdict("repo:push", push_payload(hash=bad))
    assert status == 400
    assert "commit hash" in reason and "7 to 40 lowercase hex" in reason
    assert len(reason) < 200  # a 1,000-character hash is not echoed back whole


@pytest.mark.parametrize("good", ["abcdef1", "a" * 12, "0123456789abcdef0123456789abcdef01234567"])
def test_good_commit_hashes_are_accepted(good: str) -> None:
    status, _ = verdict("repo:push", push_payload(hash=good))
    assert status == 200


@pytest.mark.parametrize("where", ["parent", "new", "old"])
def test_bad_parent_or_target_hash_is_400(where: str) -> None:
    data = push_payload()
    change = data["push"]["changes"][0]
    if where == "parent":
        change["commits"][0]["parents"] = [{"hash": ""}]
    else:
        change[where]["target"]["hash"] = "x" * 1000
    status, reason = verdict("repo:push", data)
    assert status == 400 and "7 to 40 lowercase hex" in reason


@pytest.mark.parametrize("field", ["source", "destination", "merge_commit"])
def test_bad_pull_request_hash_is_400(field: str) -> None:
    data = pr_payload()
    if field == "merge_commit":
        data["pullrequest"]["merge_commit"] = {"hash": ""}
    else:
        data["pullrequest"][field]["commit"] = {"hash": "Z" * 12}
    status, reason = verdict("pullrequest:created", data)
    assert status == 400 and f"pullrequest.{field}" in reason


@pytest.mark.parametrize(
    "name", ["", "acme", "/app", "acme/", "acme app/x", "acme/a\tb", "a/b\x00", "a/" + "b" * 300]
)
@pytest.mark.parametrize(
    "event", ["repo:push", "pullrequest:created", "pullrequest:approved", "repo:updated"]
)
def test_bad_full_name_is_400(event: str, name: str) -> None:
    if event == "repo:push":
        data = push_payload()
    elif event == "repo:updated":
        data = {"repository": {"full_name": "a/b", "name": "b"}}
    else:
        data = pr_payload()
    data["repository"]["full_name"] = name
    status, reason = verdict(event, data, **ALL)
    assert status == 400
    assert "full_name is workspace/slug" in reason


def test_good_full_names_are_accepted() -> None:
    for name in ("acme/app", "a.b_c-d/x.y-z", "{uuid}/repo"):
        data = push_payload()
        data["repository"]["full_name"] = name
        assert verdict("repo:push", data)[0] == 200, name


# ---- defect 6: NUL characters -------------------------------------------------


def test_strip_nul_walks_records_and_leaves_clean_ones_alone() -> None:
    clean = commit_from_api(
        {
            "hash": H1,
            "date": "2026-11-30T10:00:00+00:00",
            "author": {"raw": "A <a@x>"},
            "message": "ok",
        },
        "acme/app",
        ["main"],
    )
    assert strip_nul(clean) is clean
    assert strip_nul({"a\x00": ("b\x00", ["c\x00"])}) == {"a": ("b", ["c"])}


def test_rest_parse_path_strips_nul() -> None:
    commit = commit_from_api(
        {
            "hash": H1,
            "date": "2026-11-30T10:00:00+00:00",
            "author": {"raw": "A\x00da <a@x>"},
            "message": "fix\x00 it",
        },
        "acme/app",
        ["feat\x00ure"],
    )
    assert (commit.message, commit.author_raw, commit.branches) == (
        "fix it",
        "Ada <a@x>",
        ["feature"],
    )
    data = pr_payload()["pullrequest"]
    data["title"] = "REL-1\u0000 title"
    data["source"]["branch"]["name"] = "fe\u0000at"
    pr = pull_request_from_api(data, "acme/app", [])
    assert (pr.title, pr.source_branch) == ("REL-1 title", "feat")


def test_decoded_push_has_no_nul_anywhere() -> None:
    data = push_payload(message="one\u0000two")
    data["push"]["changes"][0]["new"]["name"] = "REL-9\u0000-x"
    raw = json.dumps(data).encode()
    assert b"\\u0000" in raw
    d = decode({"X-Event-Key": "repo:push"}, raw, received_at=NOW)
    (commit,) = d.records
    assert isinstance(commit, Commit)
    assert commit.message == "onetwo" and commit.branches == ["REL-9-x"]
    assert "\x00" not in (d.delivery.content_key or "")
    assert all("\x00" not in (j.branch or "") + j.key for j in d.jobs)


def registry() -> Registry:
    return Registry(
        make_plugin_manager(
            load_entrypoints=False,
            extra=[("bitbucket_webhook", webhook_plugin), ("database", database_plugin)],
        )
    )


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, database: str) -> AsyncIterator[str]:
    """The real daemon (aiohttp, runner, database sink) on 127.0.0.1; yields its URL."""
    pipeline = tmp_path / "hooks.yaml"
    config = {
        "port": 0,
        "secret": SECRET,
        "backfill_queue": f"{tmp_path}/backfill.db",
        "inbox": f"{tmp_path}/inbox.db",
    }
    spec = {
        "name": "hooks",
        "source": {"type": "bitbucket_webhook", "config": config},
        "sinks": [{"type": "database", "config": {"database": database}}],
    }
    pipeline.write_text(json.dumps(spec))
    loaded = load_pipeline(pipeline, registry())
    context = RunContext(
        run_id="serve-1",
        pipeline_name="hooks",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
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
    try:
        yield f"http://127.0.0.1:{runner.source.bound_port}/webhooks/bitbucket"  # type: ignore[attr-defined]
    finally:
        await runner.stop()
        result = await asyncio.wait_for(task, 30)
        assert result.status == "succeeded"


def rows(database: str, sql: str) -> list[tuple[Any, ...]]:
    if database.startswith("postgresql"):
        import psycopg2

        conn = psycopg2.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute(sql).fetchall()


async def test_nul_delivery_is_stored_on_both_databases(tmp_path: Path, database_spec: str) -> None:
    push = push_payload(message="REL-7\u0000 change", author={"raw": "A\u0000da <ada@x>"})
    push["push"]["changes"][0]["new"]["name"] = "ma\u0000in"
    pr = pr_payload()
    pr["pullrequest"]["title"] = "REL-8 ti\u0000tle"
    pr["pullrequest"]["description"] = "\u0000"
    deliveries = [("repo:push", push), ("pullrequest:created", pr)]
    async with daemon(tmp_path, database_spec) as url, aiohttp.ClientSession() as session:
        for i, (event, data) in enumerate(deliveries):
            raw = json.dumps(data).encode()
            headers = {
                "X-Event-Key": event,
                "X-Request-UUID": f"nul-{i}",
                "X-Hub-Signature": sign(raw, SECRET),
            }
            async with session.post(url, data=raw, headers=headers) as r:
                assert r.status == 200, await r.text()
    assert rows(database_spec, "SELECT message, author_raw FROM commits") == [
        ("REL-7 change", "Ada <ada@x>")
    ]
    assert rows(database_spec, "SELECT branch FROM commit_branches") == [("main",)]
    assert rows(database_spec, "SELECT title, description FROM pull_requests") == [
        ("REL-8 title", "")
    ]
    got = rows(database_spec, "SELECT request_uuid FROM deliveries ORDER BY request_uuid")
    assert got == [("nul-0",), ("nul-1",)]
