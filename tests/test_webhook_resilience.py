"""Issue 15: the daemon under failure: a failing backfill queue, a full disk,
secrets in the queue, slow-header connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.data import FakeData
from rcingest.webhooks.decode import BackfillJob
from tests.test_webhook_backfill import (
    REPO,
    SECRET,
    TOKEN,
    daemon,
    post,
    pr_payload,
    push_payload,
    rows,
    wait_for,
)


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def down_api(data: FakeData) -> str:
    """The base URL of a fake Bitbucket that is not running: every job fails and retries."""
    fake = FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}")
    await fake.start()
    port = fake.port
    await fake.stop()
    return f"http://127.0.0.1:{port}/2.0"


async def test_backfill_worker_survives_a_locked_queue(tmp_path: Path) -> None:
    """A lock held past the busy timeout: the worker lives, /readyz says why, and recovers."""
    data = FakeData(GenSpec(repositories=1, branches=2, commits=40))
    raw = push_payload(data, "main", new_commits=9)
    queue = tmp_path / "backfill.db"
    locker = sqlite3.connect(queue, isolation_level=None)
    async with daemon(tmp_path, await down_api(data)) as (runner, url):
        receiver = runner.source.receiver  # type: ignore[attr-defined]
        worker = receiver.backfill
        # The real 5 s busy timeout, shortened so the test does not wait for it.
        await worker.store._run(lambda db: db.execute("PRAGMA busy_timeout=50"))
        base = url.rsplit("/webhooks", 1)[0]
        assert await post(url, raw, "repo:push", "push-lock") == 200
        await wait_for(lambda: runner.context.stats.get("webhook.backfill.retry") >= 1)
        assert (await get(base + "/readyz"))[0] == 200

        # Another process takes the queue's write lock and keeps it: the
        # worker's retry() fails with "database is locked".
        locker.execute("BEGIN EXCLUSIVE")
        await wait_for(lambda: not worker.healthy)
        status, body = await get(base + "/readyz")
        assert status == 503 and "backfill queue is failing" in body, body
        assert "database is locked" in body
        _, text = await get(base + "/metrics")
        assert "rcingest_webhook_backfill_healthy 0.0" in text
        errors = [
            ln for ln in text.splitlines() if ln.startswith("rcingest_webhook_backfill_errors")
        ]
        assert errors and float(errors[0].split()[-1]) >= 1
        await asyncio.sleep(1.0)  # a few backoff rounds: the task is still there
        assert not receiver.backfill_task.done()

        locker.execute("ROLLBACK")
        await eventually(lambda: _status_is(base + "/readyz", 200))
        _, text = await get(base + "/metrics")
        assert "rcingest_webhook_backfill_healthy 1.0" in text

        # Failing again, then SIGTERM's path: the daemon stops within a bound.
        locker.execute("BEGIN EXCLUSIVE")
        await wait_for(lambda: not worker.healthy)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 10
    locker.execute("ROLLBACK")
    locker.close()


async def _status_is(url: str, status: int) -> bool:
    return (await get(url))[0] == status


async def test_queue_keeps_no_secret_from_a_pull_request(tmp_path: Path) -> None:
    """A token pasted into a PR title and description is masked in the queue file too."""
    data = FakeData(GenSpec(repositories=1, branches=2, commits=30))
    pr = data.repos[REPO].pull_requests[0]
    body = json.loads(pr_payload(data, pr.id))
    body["pullrequest"]["title"] = f"ABC-1 leaked {TOKEN} and {SECRET}"
    body["pullrequest"]["description"] = f"token: {TOKEN}"
    async with daemon(tmp_path, await down_api(data)) as (runner, url):
        raw = json.dumps(body).encode()
        assert await post(url, raw, "pullrequest:created", "pr-secret") == 200
        await wait_for(lambda: runner.context.stats.get("webhook.backfill.retry") >= 1)
    queue = tmp_path / "backfill.db"
    for path in tmp_path.glob("backfill.db*"):
        assert TOKEN.encode() not in path.read_bytes(), path
        assert SECRET.encode() not in path.read_bytes(), path
    # The job still runs: what builds its API path is untouched.
    (stored,) = rows(queue, "SELECT job FROM backfill_jobs WHERE state = 'pending'")
    job = msgspec.json.decode(stored[0], type=BackfillJob)
    assert job.kind == "pr_commits" and job.repository == REPO
    assert job.pull_request is not None and job.pull_request.id == pr.id
    assert job.pull_request.title == "ABC-1 leaked *** and ***"


async def test_slow_header_connection_is_closed(tmp_path: Path) -> None:
    """A client that never finishes its request line is disconnected within header_timeout."""
    import textwrap

    import rcingest.default_plugins.bitbucket_webhook as webhook_plugin  # noqa: F401
    from rcingest.config import load_pipeline
    from rcingest.pipeline import Runner
    from tests.test_webhook_backfill import registry

    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            name: slow
            source:
              type: bitbucket_webhook
              config: {{port: 0, secret: '{SECRET}', header_timeout: 0.5}}
            sinks: [{{type: database, config: {{database: '{tmp_path}/commits.db'}}}}]
            """
        )
    )
    loaded = load_pipeline(pipeline, registry(), environ={})
    runner = Runner(loaded, _context(tmp_path))
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(lambda: runner.source.bound_port is not None)  # type: ignore[attr-defined]
        port = runner.source.bound_port  # type: ignore[attr-defined]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"POST /webhooks/bitbucket HTTP/1.1\r\nHost: x\r\nX-Event")
        await writer.drain()
        # Trickle bytes: data arriving must not keep a header-less connection alive.
        for _ in range(3):
            await asyncio.sleep(0.1)
            with contextlib.suppress(ConnectionError):
                writer.write(b"-")
        rest = await asyncio.wait_for(reader.read(), 5)  # EOF once the server closes
        assert time.monotonic() - started < 2.0
        assert b"200" not in rest
        writer.close()
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 30)


def _context(tmp_path: Path) -> Any:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from rcingest.interfaces import RunContext

    return RunContext(
        run_id="slow",
        pipeline_name="slow",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="slow:src",
        mode="serve",
        secrets=frozenset({SECRET}),
    )


async def test_full_disk_reports_sqlite_error_not_the_rollback(tmp_path: Path) -> None:
    """SQLite's own "database or disk is full", not peewee's failed rollback after it."""
    from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
    from rcingest.interfaces import Batch
    from tests.test_database_sink import commit, make_context

    sink = DatabaseSink(DatabaseConfig(database=str(tmp_path / "full.db")), make_context(tmp_path))
    with contextlib.suppress(Exception):  # the sink's exit fails too: the disk is full
        async with sink:
            # A real SQLITE_FULL: the file may not grow past its current size.
            pages = await sink._call(
                "limit",
                lambda: sink.db.execute_sql("PRAGMA page_count").fetchone()[0],  # type: ignore[no-untyped-call]
            )
            await sink._call(
                "limit",
                lambda: sink.db.execute_sql(f"PRAGMA max_page_count={pages}"),  # type: ignore[no-untyped-call]
            )
            big = [commit(n, message="x" * 4000) for n in range(1, 200)]
            try:
                await sink.write(Batch(big, []))
            except Exception as exc:
                error = str(exc)
            else:
                raise AssertionError("the write did not fail")
    assert "full" in error, error
    assert "cannot rollback" not in error, error


async def test_compressed_body_is_refused_whatever_it_was_signed_over(tmp_path: Path) -> None:
    """aiohttp would decompress before the signature check; the daemon refuses with 415."""
    import gzip

    from tests.test_webhook_daemon import PUSH, signed
    from tests.test_webhook_daemon import daemon as plain_daemon
    from tests.test_webhook_daemon import post as plain_post

    raw = PUSH.read_bytes()
    packed = gzip.compress(raw)
    async with plain_daemon(tmp_path) as d:
        over_wire = signed(packed, uuid="gz-wire", **{"Content-Encoding": "gzip"})
        over_plain = signed(raw, uuid="gz-plain", **{"Content-Encoding": "gzip"})
        for headers in (over_wire, over_plain):
            status, text = await plain_post(d.url, packed, headers)
            assert status == 415, text
            assert "Content-Encoding" in text
        assert d.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
        # identity is no encoding: stored as usual.
        headers = signed(raw, uuid="id-1", **{"Content-Encoding": "identity"})
        assert (await plain_post(d.url, raw, headers))[0] == 200
        assert d.rows("SELECT request_uuid FROM deliveries") == [("id-1",)]


async def test_readyz_fails_at_once_after_a_failed_commit_until_a_probe_commits(
    tmp_path: Path,
) -> None:
    """A real SQLITE_FULL on a delivery: /readyz 503 at once, 200 after a later probe."""
    from tests.test_webhook_daemon import PUSH, signed
    from tests.test_webhook_daemon import daemon as plain_daemon
    from tests.test_webhook_daemon import post as plain_post

    payload = json.loads(PUSH.read_bytes())
    # A message large enough to need new pages (rows are stored, not truncated).
    payload["push"]["changes"][0]["commits"][0]["message"] = "x" * 150_000
    big = json.dumps(payload).encode()
    # The committed path answers 503; the inbox path's answer is in test_inbox_daemon.py.
    async with plain_daemon(tmp_path, {"ack": "committed"}) as d:
        ready = d.base + "/readyz"
        assert (await get(ready))[0] == 200
        sink = d.runner.sinks[-1]
        limit = sink._call  # type: ignore[attr-defined]
        db = sink.db  # type: ignore[attr-defined]
        pages = await limit("limit", lambda: db.execute_sql("PRAGMA page_count").fetchone()[0])
        await limit("limit", lambda: db.execute_sql(f"PRAGMA max_page_count={pages}"))
        failed_at = time.time()
        status, text = await plain_post(d.url, big, signed(big, uuid="full-1"))
        assert status == 503, text
        # At once, not after the cached probe (issue 15, defect 7).
        status, text = await get(ready)
        assert status == 503 and "the last database write failed" in text, text
        await limit("limit", lambda: db.execute_sql("PRAGMA max_page_count=1073741823"))

        async def ready_again() -> bool:
            return (await get(ready))[0] == 200

        await eventually(ready_again, timeout=10)
        # The 200 came from a probe committed after the failure.
        (state,) = d.rows("SELECT state FROM source_cursors WHERE stream = 'webhook.readyz'")[0]
        probed = datetime.fromisoformat(json.loads(state)["probed_at"]).timestamp()
        assert probed > failed_at
        assert d.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
