"""The daemon on the inbox path (the default): real aiohttp server, runner, SQLite files.

A 200 means the verified raw delivery is in the inbox; these tests show what
happens behind it: a failing sink (failed, retried, done), a sink that keeps
failing (parked, then retried on demand), a stored delivery the decoder
refuses (parked at once, not holding anything back), a full database disk,
the lag in /readyz, a stop with deliveries still to normalise, and that no
secret reaches the inbox.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

from rcingest.inbox.db import connect
from rcingest.inbox.model import Arrival, InboxFilter
from rcingest.webhooks.inbox_app import _SLOT as INBOX_SLOT
from tests.test_webhook_daemon import PUSH, SECRET, FlakySink, daemon, post, signed

FAST = {"inbox_retry_delay": 0.05}


def inbox_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "inbox.db") as conn:
        return conn.execute(
            "SELECT request_uuid, state, attempts, last_error FROM webhook_inbox ORDER BY id"
        ).fetchall()


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, json.loads(await r.text())


async def until(check: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_failing_sink_gets_200_then_the_delivery_is_retried_until_stored(
    tmp_path: Path,
) -> None:
    raw = PUSH.read_bytes()
    async with daemon(tmp_path, FAST, sinks=[{"type": "test_flaky"}]) as d:
        FlakySink.failing = True
        try:
            status, text = await post(d.url, raw, signed(raw, uuid="later-1"))
            assert status == 200 and "stored" in text  # durable in the inbox
            await until(lambda: inbox_rows(tmp_path)[0][1] == "failed")
            (_, _state, attempts, error) = inbox_rows(tmp_path)[0]
            assert attempts >= 1 and "sink" in error
            assert d.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
        finally:
            FlakySink.failing = False
        await until(lambda: inbox_rows(tmp_path)[0][1] == "done")
        assert d.rows("SELECT request_uuid FROM deliveries") == [("later-1",)]
        assert d.rows("SELECT COUNT(*) FROM commits") == [(1,)]


async def test_a_sink_that_keeps_failing_parks_the_delivery_until_retried(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    config = {**FAST, "inbox_max_attempts": 2}
    async with daemon(tmp_path, config, sinks=[{"type": "test_flaky"}]) as d:
        FlakySink.failing = True
        try:
            assert (await post(d.url, raw, signed(raw, uuid="park-1")))[0] == 200
            await until(lambda: inbox_rows(tmp_path)[0][1] == "parked")
        finally:
            FlakySink.failing = False
        (_, _, attempts, error) = inbox_rows(tmp_path)[0]
        assert attempts == 2 and error.startswith("after 2 attempts")
        async with aiohttp.ClientSession() as s, s.get(d.base + "/metrics") as r:
            metrics = await r.text()
        assert "rcingest_webhook_inbox_parked 1.0" in metrics
        assert 'rcingest_webhook_inbox_normalised_total{outcome="parked"} 1.0' in metrics
        db = connect(str(tmp_path / "inbox.db"))
        assert db.retry(InboxFilter(states=("parked",))) == 1  # what `rcingest inbox retry` does
        db.close()
        await until(lambda: inbox_rows(tmp_path)[0][1] == "done")
        assert d.rows("SELECT request_uuid FROM deliveries") == [("park-1",)]


async def test_a_stored_delivery_the_decoder_refuses_is_parked_and_holds_nothing_back(
    tmp_path: Path,
) -> None:
    raw = PUSH.read_bytes()
    async with daemon(tmp_path) as d:
        # As if an older version had stored it: a push without its changes.
        db = connect(str(tmp_path / "inbox.db"))
        bad = json.dumps({"repository": {"full_name": "gogits/go-gogs-client"}}).encode()
        db.append(
            [
                Arrival(
                    request_uuid="bad-1",
                    event="repo:push",
                    repository="gogits/go-gogs-client",
                    received_at=0.0,
                    headers={"X-Event-Key": "repo:push", "X-Request-UUID": "bad-1"},
                    body=bad,
                )
            ]
        )
        db.close()
        assert (await post(d.url, raw, signed(raw, uuid="good-1")))[0] == 200
        rows = {r[0]: r for r in inbox_rows(tmp_path)}
        assert rows["bad-1"][1] == "parked" and "decoder refused" in rows["bad-1"][3]
        assert rows["good-1"][1] == "done"
        assert d.rows("SELECT request_uuid FROM deliveries") == [("good-1",)]


async def test_a_full_database_disk_keeps_acknowledging_and_loses_nothing(tmp_path: Path) -> None:
    payload = json.loads(PUSH.read_bytes())
    payload["push"]["changes"][0]["commits"][0]["message"] = "x" * 150_000
    big = json.dumps(payload).encode()
    async with daemon(tmp_path, FAST) as d:
        sink = d.runner.sinks[-1]
        call, db = sink._call, sink.db  # type: ignore[attr-defined]
        pages = await call("limit", lambda: db.execute_sql("PRAGMA page_count").fetchone()[0])
        await call("limit", lambda: db.execute_sql(f"PRAGMA max_page_count={pages}"))
        status, _ = await post(d.url, big, signed(big, uuid="full-1"))
        assert status == 200  # the inbox is another file, with room
        await until(lambda: inbox_rows(tmp_path)[0][1] == "failed")
        assert "full" in inbox_rows(tmp_path)[0][3]
        # Still acknowledging safely; /readyz tells what is failing behind.
        _, body = await get(d.base + "/readyz")
        assert body["inbox"]["failed"] == 1 and "full" in body["inbox"]["last_failure"], body
        await call("limit", lambda: db.execute_sql("PRAGMA max_page_count=1073741823"))
        await until(lambda: inbox_rows(tmp_path)[0][1] == "done")
        assert d.rows("SELECT request_uuid FROM deliveries") == [("full-1",)]


async def test_readyz_shows_the_lag_past_its_threshold(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    config = {**FAST, "inbox_lag_threshold": 0.2, "inbox_retry_delay": 30}
    async with daemon(tmp_path, config, sinks=[{"type": "test_flaky"}]) as d:
        _ready, body = await get(d.base + "/readyz")
        assert body["inbox"]["lag_seconds"] == 0.0 and "lagging" not in body
        FlakySink.failing = True
        try:
            assert (await post(d.url, raw, signed(raw, uuid="lag-1")))[0] == 200
            await asyncio.sleep(0.4)
            _, body = await get(d.base + "/readyz")
        finally:
            FlakySink.failing = False
        assert body["inbox"]["lag_seconds"] >= 0.2
        assert "normalisation lag" in body["lagging"] and body["inbox"]["failed"] == 1
        async with aiohttp.ClientSession() as s, s.get(d.base + "/metrics") as r:
            metrics = await r.text()
        lag = next(
            line for line in metrics.splitlines()
            if line.startswith("rcingest_webhook_normalisation_lag_seconds ")
        )  # fmt: skip
        assert float(lag.split()[1]) >= 0.2


async def test_stop_normalises_what_was_acknowledged(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    FlakySink.sizes, FlakySink.first_delay = [], 0.3
    try:
        async with daemon(tmp_path, sinks=[{"type": "test_flaky"}]) as d:
            async with aiohttp.ClientSession() as s:

                async def one(i: int) -> int:
                    headers = signed(raw, uuid=f"stop-{i}")
                    async with s.post(d.url, data=raw, headers=headers) as r:
                        return r.status

                statuses = await asyncio.gather(*(one(i) for i in range(32)))
            assert statuses == [200] * 32
            # Leaving the block stops the daemon at once, the first batch still slow.
    finally:
        FlakySink.first_delay = 0.0
    assert {r[1] for r in inbox_rows(tmp_path)} == {"done"}
    with sqlite3.connect(tmp_path / "commits.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone() == (32,)


async def test_no_secret_reaches_the_inbox(tmp_path: Path) -> None:
    payload = json.loads(PUSH.read_bytes())
    payload["push"]["changes"][0]["commits"][0]["message"] = f"leaked {SECRET} here"
    raw = json.dumps(payload).encode()
    async with daemon(tmp_path, {"accept_secret_header": True}) as d:
        headers = {
            "X-Event-Key": "repo:push",
            "X-Request-UUID": "sec-1",
            "X-Webhook-Secret": SECRET,
        }
        assert (await post(d.url, raw, headers))[0] == 200
        assert (await post(d.url, raw, signed(raw, uuid="sec-2")))[0] == 200
    data = b"".join(p.read_bytes() for p in tmp_path.glob("inbox.db*"))
    assert SECRET.encode() not in data
    with sqlite3.connect(tmp_path / "inbox.db") as conn:
        stored = conn.execute("SELECT headers, body FROM webhook_inbox").fetchall()
    assert len(stored) == 2
    for headers_json, body in stored:
        assert SECRET not in headers_json and "Signature" not in headers_json
        assert SECRET.encode() not in zlib.decompress(
            body
        ) and b"leaked *** here" in zlib.decompress(body)


async def test_refused_and_ignored_deliveries_are_not_stored(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    async with daemon(tmp_path) as d:
        bad_sig = {**signed(raw, uuid="x-1"), "X-Hub-Signature": "sha256=" + "0" * 64}
        assert (await post(d.url, raw, bad_sig))[0] == 401
        not_json = b"{not json"
        assert (await post(d.url, not_json, signed(not_json, uuid="x-2")))[0] == 400
        wrong = b'{"push": {"changes": "nope"}, "repository": {"full_name": "a/b"}}'
        assert (await post(d.url, wrong, signed(wrong, uuid="x-3")))[0] == 400
        bad_hash = json.loads(raw)
        bad_hash["push"]["changes"][0]["commits"][0]["hash"] = "z" * 1000
        bh = json.dumps(bad_hash).encode()
        assert (await post(d.url, bh, signed(bh, uuid="x-4")))[0] == 400
        fork = b'{"repository": {"full_name": "a/b"}}'
        assert (await post(d.url, fork, signed(fork, "repo:fork", uuid="x-5")))[0] == 202
    assert inbox_rows(tmp_path) == []


async def test_a_full_inbox_answers_503_and_readyz_follows_until_it_can_write(
    tmp_path: Path,
) -> None:
    payload = json.loads(PUSH.read_bytes())
    payload["push"]["changes"][0]["commits"][0]["message"] = "".join(
        f"{i:08x}" for i in range(40_000)
    )  # incompressible enough to need new pages
    big = json.dumps(payload).encode()
    async with daemon(tmp_path, {"max_body_bytes": 1_000_000}) as d:
        state = d.runner.source.app[INBOX_SLOT].state  # type: ignore[attr-defined]
        writer = state.inbox._writer
        pages = await writer.call(lambda db: db.conn.execute("PRAGMA page_count").fetchone()[0])
        await writer.call(lambda db: db.conn.execute(f"PRAGMA max_page_count={pages}"))
        status, text = await post(d.url, big, signed(big, uuid="full-inbox"))
        assert status == 503 and "retry" in text
        ready, body = await get(d.base + "/readyz")
        assert ready == 503 and "write failed" in body["reason"], body
        await writer.call(lambda db: db.conn.execute("PRAGMA max_page_count=1073741823"))
        await until_async(lambda: get(d.base + "/readyz"), lambda got: got[0] == 200)
        assert (await post(d.url, big, signed(big, uuid="full-inbox")))[0] == 200
        assert d.rows("SELECT request_uuid FROM deliveries") == [("full-inbox",)]


async def until_async(fetch: Any, check: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check(await fetch()):
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_the_server_has_no_route_to_the_inbox(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        app = d.runner.source.app  # type: ignore[attr-defined]
        routes = {(r.method, r.resource.canonical) for r in app.router.routes()}
        assert routes == {
            ("POST", "/webhooks/bitbucket"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("HEAD", "/healthz"),
            ("HEAD", "/readyz"),
            ("GET", "/metrics"),
            ("HEAD", "/metrics"),
        }


async def test_retention_deletes_old_normalised_deliveries_at_start(tmp_path: Path) -> None:
    db = connect(str(tmp_path / "inbox.db"))
    db.create()
    old = time.time() - 31 * 86_400

    def arrival(uuid: str, at: float) -> Arrival:
        return Arrival(
            request_uuid=uuid,
            event="repo:push",
            repository="a/b",
            received_at=at,
            headers={"X-Event-Key": "repo:push"},
            body=PUSH.read_bytes(),
        )

    db.append([arrival("old", old), arrival("recent", time.time() - 86_400)])
    db.settle(done=[e.row.id for e in db.claim(10)])
    db.close()
    async with daemon(tmp_path, {"inbox_retention_days": 30}):
        await until(lambda: [r[0] for r in inbox_rows(tmp_path)] == ["recent"])
