"""Embedded backfill against the fake Bitbucket: truncated pushes and PR commits completed.

The receiver runs under aiohttp's real server on its own thread; the fake
Bitbucket runs on the test's loop, so every blocking call here goes through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from rcingest.bitbucket.auth import AuthConfig
from rcingest.bitbucket.client import ClientConfig
from rcingest.embed import CommitStorage, register_bitbucket_webhook
from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.data import FakeData
from rcingest.webhooks import sign
from tests.test_embed_servers import make_app, post, running
from tests.test_webhook_backfill import REPO, SECRET, TOKEN, pr_payload, push_payload


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def storage_for(tmp_path: Path, base_url: str) -> CommitStorage:
    api = ClientConfig(base_url=base_url, auth=AuthConfig(access_token=TOKEN), max_tries=1)
    return CommitStorage(
        tmp_path / "commits.db",
        api=api,
        backfill_queue=tmp_path / "backfill.db",
        backfill_retry_delay=0.05,
    )


async def deliver(url: str, raw: bytes, event: str, uuid: str) -> int:
    hdrs = {"X-Event-Key": event, "X-Request-UUID": uuid, "X-Hub-Signature": sign(raw, SECRET)}
    status, _ = await asyncio.to_thread(post, url, raw, hdrs)
    return status


async def test_truncated_push_and_pr_commits_are_completed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = FakeData(GenSpec(repositories=1, branches=2, commits=40))
    pr = data.repos[REPO].pull_requests[0]
    db = tmp_path / "commits.db"
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        app = make_app("aiohttp")
        storage = storage_for(tmp_path, fake.base_url)
        register_bitbucket_webhook(app, storage=storage, secret=SECRET)
        try:
            with running("aiohttp", app) as base:
                url = f"{base}/webhooks/bitbucket"
                raw = push_payload(data, "main", new_commits=12)
                assert await deliver(url, raw, "repo:push", "push-1") == 200
                # The answer carried the payload's 5 commits; the worker adds the other 7.
                await eventually(lambda: rows(db, "SELECT COUNT(*) FROM commits")[0][0] == 12)
                body = pr_payload(data, pr.id)
                assert await deliver(url, body, "pullrequest:created", "pr-1") == 200
                await eventually(
                    lambda: (
                        rows(db, "SELECT COUNT(*) FROM pull_request_commits")[0][0]
                        == len(pr.commits)
                    )
                )
                await eventually(
                    lambda: (
                        rows(tmp_path / "backfill.db", "SELECT state FROM backfill_jobs")
                        == [("done",), ("done",)]
                    )
                )
        finally:
            await asyncio.to_thread(storage.close)
    assert rows(db, "SELECT outcome FROM deliveries ORDER BY request_uuid") == [
        ("stored",),
        ("stored",),
    ]
    title_key = pr.title.split(":")[0]
    keyed = rows(
        db, f"SELECT DISTINCT commit_hash FROM story_keys WHERE key = '{title_key}'"
    )  # the PR title lent its key to the fetched commits
    assert {h for (h,) in keyed} >= set(pr.commits)
    assert fake.counters.routes["commits"] >= 1
    assert TOKEN not in caplog.text and SECRET not in caplog.text
    for path in tmp_path.iterdir():
        assert TOKEN.encode() not in path.read_bytes(), path


async def test_without_credentials_a_truncated_push_is_marked(tmp_path: Path) -> None:
    data = FakeData(GenSpec(repositories=1, branches=2, commits=20))
    raw = push_payload(data, "main", new_commits=12)
    app = make_app("flask")
    storage = CommitStorage(tmp_path / "commits.db", api=ClientConfig())  # anonymous: no backfill
    register_bitbucket_webhook(app, storage=storage, secret=SECRET)
    try:
        with running("flask", app) as base:
            assert await deliver(f"{base}/webhooks/bitbucket", raw, "repo:push", "t-1") == 200
    finally:
        await asyncio.to_thread(storage.close)
    db = tmp_path / "commits.db"
    assert rows(db, "SELECT outcome FROM deliveries") == [("truncated",)]
    assert rows(db, "SELECT COUNT(*) FROM commits") == [(5,)]
    assert not (tmp_path / "backfill.db").exists()
