"""Backfill: the durable queue, and truncated pushes / PR commits completed from the fake API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

import rcingest.default_plugins.bitbucket_webhook as webhook_plugin
import rcingest.default_plugins.database as database_plugin
import rcingest.default_plugins.story_keys as story_keys_plugin
from rcingest.config import load_pipeline
from rcingest.interfaces import RunContext
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.app import render_commit, render_pr
from rcingest.testing.fake_bitbucket.data import FakeData
from rcingest.webhooks import sign
from rcingest.webhooks.backfill import BackfillStore
from rcingest.webhooks.decode import BackfillJob

SECRET = "whsec-backfill-Yt3"
TOKEN = "bbat-backfill-token-Q9x7"
REPO = "acme/service-00"


def push_payload(data: FakeData, branch: str, new_commits: int, listed: int = 5) -> bytes:
    """A ``repo:push`` body for the last ``new_commits`` of ``branch``, listing ``listed``."""
    repo = data.repos[REPO]
    history = repo.listing([branch], []) or []
    new, old = history[0], history[new_commits]
    commits = [render_commit(data, repo, c) for c in history[:new_commits][:listed]]
    body = {
        "push": {
            "changes": [
                {
                    "new": {"type": "branch", "name": branch, "target": {"hash": new.hash}},
                    "old": {"type": "branch", "name": branch, "target": {"hash": old.hash}},
                    "created": False,
                    "closed": False,
                    "forced": False,
                    "truncated": new_commits > listed,
                    "commits": commits,
                    # Never followed: the range comes from the hashes, the host from config.
                    "links": {"commits": {"href": "https://evil.example/steal"}},
                }
            ]
        },
        "repository": {"full_name": REPO, "uuid": repo.uuid},
        "actor": {"display_name": "x"},
    }
    return json.dumps(body).encode()


def pr_payload(data: FakeData, pr_id: int) -> bytes:
    repo = data.repos[REPO]
    pr = next(p for p in repo.pull_requests if p.id == pr_id)
    return json.dumps(
        {
            "pullrequest": render_pr(data, repo, pr),
            "repository": {"full_name": REPO, "uuid": repo.uuid},
        }
    ).encode()


def registry() -> Registry:
    return Registry(
        make_plugin_manager(
            load_entrypoints=False,
            extra=[
                ("bitbucket_webhook", webhook_plugin),
                ("database", database_plugin),
                ("story_keys", story_keys_plugin),
            ],
        )
    )


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, base_url: str) -> AsyncIterator[tuple[Runner, str]]:
    pipeline = tmp_path / "webhook.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            name: hooks
            source:
              type: bitbucket_webhook
              config:
                port: 0
                secret: ${{BITBUCKET_WEBHOOK_SECRET}}
                base_url: {base_url}
                auth:
                  access_token: ${{BITBUCKET_ACCESS_TOKEN}}
                max_tries: 1
                backfill_queue: '{tmp_path}/backfill.db'
                inbox: '{tmp_path}/inbox.db'
                backfill_retry_delay: 0.05
            enrichers: [{{type: story_keys}}]
            sinks: [{{type: database, config: {{database: '{tmp_path}/commits.db'}}}}]
            """
        )
    )
    environ = {"BITBUCKET_WEBHOOK_SECRET": SECRET, "BITBUCKET_ACCESS_TOKEN": TOKEN}
    loaded = load_pipeline(pipeline, registry(), environ=environ)
    assert loaded.secrets == {SECRET, TOKEN}
    ctx = RunContext(
        run_id="bf",
        pipeline_name="hooks",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="hooks:src",
        mode="serve",
        secrets=loaded.secrets,
    )
    runner = Runner(loaded, ctx)
    task = asyncio.create_task(runner.run())
    for _ in range(1000):  # bounded: a daemon that failed to start must not hang the suite
        if runner.source.bound_port is not None:  # type: ignore[attr-defined]
            break
        assert not task.done()
        await asyncio.sleep(0.01)
    assert runner.source.bound_port is not None, "the daemon did not start"  # type: ignore[attr-defined]
    try:
        yield runner, f"http://127.0.0.1:{runner.source.bound_port}/webhooks/bitbucket"  # type: ignore[attr-defined]
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 30)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def post(url: str, raw: bytes, event: str, uuid: str) -> int:
    headers = {"X-Event-Key": event, "X-Request-UUID": uuid, "X-Hub-Signature": sign(raw, SECRET)}
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        return r.status


async def test_store_is_durable_and_deduplicates(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    job = BackfillJob(kind="push_range", repository=REPO, key="k1", include=["a" * 40])
    store = BackfillStore(path)
    await store.open()
    assert await store.add([job, job]) == 1
    stored = await store.next_due()
    assert stored is not None and stored.job == job
    await store.retry(stored.id, "boom", 60, give_up=False)
    assert await store.next_due() is None  # not due yet
    await store.close()
    again = BackfillStore(path, "FULL")
    await again.open()
    assert await again.counts() == {"pending": 1}
    assert await again.add([job]) == 0
    await again.close()


async def test_truncated_push_is_completed_from_the_api(tmp_path: Path) -> None:
    data = FakeData(GenSpec(repositories=1, branches=2, commits=40))
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        raw = push_payload(data, "main", new_commits=12)
        async with daemon(tmp_path, fake.base_url) as (runner, url):
            assert await post(url, raw, "repo:push", "push-1") == 200
            db = tmp_path / "commits.db"
            # The acknowledgement carried the payload's 5 commits; backfill adds the rest.
            await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM commits")[0][0] == 12)
            await wait_for(
                lambda: (
                    rows(tmp_path / "backfill.db", "SELECT state FROM backfill_jobs") == [("done",)]
                )
            )
        branches = rows(db, "SELECT DISTINCT branch FROM commit_branches")
        assert branches == [("main",)]
        assert fake.counters.routes["commits"] >= 1
        # Every request went to the configured host, none to the payload's link.
        assert runner.context.stats.get("http.requests") == sum(fake.counters.routes.values())
        assert rows(db, "SELECT outcome FROM deliveries") == [("stored",)]


async def test_pull_request_commits_get_pr_title_keys(tmp_path: Path) -> None:
    data = FakeData(GenSpec(repositories=1, branches=2, commits=30))
    pr = data.repos[REPO].pull_requests[0]
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        async with daemon(tmp_path, fake.base_url) as (_runner, url):
            assert await post(url, pr_payload(data, pr.id), "pullrequest:created", "pr-1") == 200
            db = tmp_path / "commits.db"
            await wait_for(
                lambda: (
                    rows(db, "SELECT COUNT(*) FROM pull_request_commits")[0][0] == len(pr.commits)
                )
            )
    title_key = pr.title.split(":")[0]
    keyed = rows(
        db,
        "SELECT DISTINCT commit_hash FROM story_keys"
        f" WHERE key = '{title_key}' AND origin = 'pr_title'",
    )
    assert {h for (h,) in keyed} == set(pr.commits)


async def test_pull_request_from_a_fork_puts_its_commits_in_the_fork(tmp_path: Path) -> None:
    """The commits of a pull request from a fork are on the fork's branch until merged."""
    data = FakeData(GenSpec(repositories=1, branches=2, commits=30))
    pr = data.repos[REPO].pull_requests[0]
    body = json.loads(pr_payload(data, pr.id))
    fork = "ada/" + REPO.split("/")[1] + "-fork"
    body["pullrequest"]["source"]["repository"] = {"full_name": fork}
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        async with daemon(tmp_path, fake.base_url) as (_runner, url):
            raw = json.dumps(body).encode()
            assert await post(url, raw, "pullrequest:created", "pr-fork-1") == 200
            db = tmp_path / "commits.db"
            await wait_for(
                lambda: (
                    rows(db, "SELECT COUNT(*) FROM pull_request_commits")[0][0] == len(pr.commits)
                )
            )
    assert set(rows(db, "SELECT DISTINCT repository, branch FROM commit_branches")) == {
        (fork, pr.source_branch)
    }
    assert {r for (r,) in rows(db, "SELECT DISTINCT repository FROM commit_repositories")} == {fork}
    # The pull request itself belongs to the repository it targets.
    assert rows(db, "SELECT repository FROM pull_requests") == [(REPO,)]


async def test_backfill_survives_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data = FakeData(GenSpec(repositories=1, branches=2, commits=40))
    raw = push_payload(data, "main", new_commits=9)
    fake = FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}")
    await fake.start()
    port = fake.port
    await fake.stop()  # the API is down while the delivery arrives
    down = f"http://127.0.0.1:{port}/2.0"
    async with daemon(tmp_path, down) as (runner, url):
        assert await post(url, raw, "repo:push", "push-r") == 200
        await wait_for(lambda: runner.context.stats.get("webhook.backfill.retry") >= 1)
    db = tmp_path / "commits.db"
    assert rows(db, "SELECT COUNT(*) FROM commits") == [(5,)]
    assert rows(tmp_path / "backfill.db", "SELECT state FROM backfill_jobs") == [("pending",)]
    # Restart with the API back: the job from the durable queue completes.
    fake = FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}", port=port)
    async with fake, daemon(tmp_path, fake.base_url):
        await wait_for(lambda: rows(db, "SELECT COUNT(*) FROM commits") == [(9,)])
    # The token was used, and never written anywhere.
    for path in tmp_path.iterdir():
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
            assert SECRET.encode() not in path.read_bytes(), path
    assert TOKEN not in caplog.text and SECRET not in caplog.text


async def test_job_given_up_after_max_attempts(tmp_path: Path) -> None:
    from rcingest.webhooks.backfill import BackfillWorker

    store = BackfillStore(tmp_path / "q.db")
    await store.open()
    await store.add([BackfillJob(kind="push_range", repository=REPO, key="k", include=["b" * 40])])
    seen: list[tuple[str, str]] = []

    async def fetch(job: BackfillJob) -> list[Any]:
        raise RuntimeError(f"nope {TOKEN}")

    async def deliver(records: list[Any]) -> bool:
        return True

    worker = BackfillWorker(
        store,
        fetch,
        deliver,
        max_attempts=2,
        base_delay=0,
        observe=lambda k, o: seen.append((k, o)),
        redact=lambda s: s.replace(TOKEN, "***"),
    )
    for _ in range(2):
        stored = await store.next_due()
        assert stored is not None
        await worker.run_one(stored)
    assert seen == [("push_range", "retry"), ("push_range", "failed")]
    assert await store.counts() == {"failed": 1}
    await store.close()
    assert TOKEN.encode() not in (tmp_path / "q.db").read_bytes()
