"""The embedded receiver under real servers on 127.0.0.1: uvicorn, Werkzeug, aiohttp.

Every test here runs once per framework, with the runbook's two lines
(``CommitStorage(...)``, ``register_bitbucket_webhook(app, ...)``) and a
real SQLite file; deliveries are real fixtures, signed as Bitbucket signs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcingest.embed import CommitStorage, register_bitbucket_webhook
from rcingest.webhooks import sign

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
SECRET = "super-secret-PLANTED-7Qx"
HASH = "141977fedf5cf35aa290ac87d4b5177ac4cd9de1"
FRAMEWORKS = ["fastapi", "flask", "aiohttp"]


def push_body(message: str = "REL-7 Update README") -> bytes:
    """The single-commit push fixture, its commit message naming a story key."""
    raw = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
    new = json.dumps({"message": message + "\n"})[1:-1].encode()
    return raw.replace(b'"message": "Update README\\n"', new)


def headers(body: bytes, uuid: str, event: str = "repo:push", **extra: str) -> dict[str, str]:
    return {
        "X-Event-Key": event,
        "X-Request-UUID": uuid,
        "X-Hub-Signature": sign(body, SECRET),
        "Content-Type": "application/json",
        **extra,
    }


def post(url: str, body: bytes, hdrs: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"raw": text.decode("utf-8", "replace")}


def make_app(framework: str) -> Any:
    if framework == "fastapi":
        import fastapi

        return fastapi.FastAPI()
    if framework == "flask":
        import flask

        return flask.Flask("embed_test")
    from aiohttp import web

    return web.Application()


@contextlib.contextmanager
def running(framework: str, app: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 with the framework's real server; yield its base URL."""
    if framework == "fastapi":
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(10)
    elif framework == "flask":
        from werkzeug.serving import make_server

        wsgi = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{wsgi.server_port}"
        finally:
            wsgi.shutdown()
            thread.join(10)
    else:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()

        async def start() -> web.AppRunner:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return runner

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@contextlib.contextmanager
def receiver(framework: str, db: Path | str, **options: Any) -> Iterator[tuple[str, CommitStorage]]:
    """The runbook's lines on a fresh app, served; the storage is closed on the way out."""
    app = make_app(framework)
    storage = CommitStorage(str(db))
    register_bitbucket_webhook(app, storage=storage, secret=SECRET, **options)
    try:
        with running(framework, app) as base:
            yield f"{base}{options.get('path', '/webhooks/bitbucket')}", storage
    finally:
        storage.close()


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_signed_delivery_is_stored_with_story_keys(framework: str, tmp_path: Path) -> None:
    db = tmp_path / "data" / "bitbucket" / "commits.db"
    body = push_body()
    with receiver(framework, db) as (url, storage):
        status, answer = post(url, body, headers(body, "d-1"))
        assert (status, answer["reason"]) == (200, "stored"), answer
        # The read API sees it at once: the answer came after the commit.
        commit = storage.commit(HASH)
        assert commit is not None and commit.message == "REL-7 Update README\n"
        assert [(b.repository, b.branch) for b in commit.branches] == [("brydzewski/foo", "master")]
        assert [(k.key, k.origin) for k in storage.story_keys(HASH)] == [("REL-7", "message")]
        assert storage.files(HASH) == []  # a push payload lists no files
        assert storage.commit("0" * 40) is None
    assert rows(db, "SELECT key, origin FROM story_keys") == [("REL-7", "message")]
    assert rows(db, "SELECT request_uuid, event, outcome FROM deliveries") == [
        ("d-1", "repo:push", "stored")
    ]
    # The same runs row the daemon keeps, finished by close().
    [(mode, status_, finished)] = rows(db, "SELECT mode, status, finished_at FROM runs")
    assert (mode, status_) == ("serve", "succeeded") and finished is not None


def test_statuses_match_the_daemon(framework: str, tmp_path: Path) -> None:
    db = tmp_path / "commits.db"
    body = push_body()
    with receiver(framework, db) as (url, storage):
        storage.open()  # the schema exists: the counts below are of real, empty tables
        bad = {**headers(body, "d-2"), "X-Hub-Signature": sign(body + b"!", SECRET)}
        assert post(url, body, bad)[0] == 401
        unsigned = {k: v for k, v in headers(body, "d-2").items() if k != "X-Hub-Signature"}
        assert post(url, body, unsigned)[0] == 401
        assert post(url, body, {**unsigned, "X-Webhook-Secret": "wrong"})[0] == 401
        assert post(url, b"{oops", headers(b"{oops", "d-3"))[0] == 400
        assert post(url, body, headers(body, "d-4", event="repo:fork"))[0] == 202
        big = b"x" * 300_000
        assert post(url, big, headers(big, "d-5"))[0] == 413
        assert rows(db, "SELECT COUNT(*) FROM deliveries") == [(0,)]
        # The runbook's header alone is enough.
        status, answer = post(url, body, {**unsigned, "X-Webhook-Secret": SECRET})
        assert (status, answer["reason"]) == (200, "stored")
    assert rows(db, "SELECT request_uuid FROM deliveries") == [("d-2",)]


def test_duplicate_request_uuid_stores_nothing_twice(framework: str, tmp_path: Path) -> None:
    db = tmp_path / "commits.db"
    body = push_body()
    with receiver(framework, db) as (url, _):
        assert post(url, body, headers(body, "dup"))[1]["reason"] == "stored"
        status, answer = post(url, body, headers(body, "dup", **{"X-Attempt-Number": "2"}))
        assert (status, answer["reason"]) == (200, "duplicate")
    assert rows(db, "SELECT request_uuid, attempt FROM deliveries") == [("dup", 2)]
    assert rows(db, "SELECT COUNT(*) FROM commits") == [(1,)]
    assert rows(db, "SELECT COUNT(*) FROM story_keys") == [(1,)]


def test_restart_between_deliveries_loses_and_duplicates_nothing(
    framework: str, tmp_path: Path
) -> None:
    db = tmp_path / "commits.db"
    first = push_body()
    second = (FIX / "webhook_repo-push_branch-create-2-commits_go-scm-2018.json").read_bytes()
    with receiver(framework, db) as (url, _):
        assert post(url, first, headers(first, "r-1"))[0] == 200
    # A new server process would start this way: a new app, a new storage, the same file.
    with receiver(framework, db) as (url, storage):
        assert post(url, second, headers(second, "r-2"))[0] == 200
        # Bitbucket's retry of the first one after the restart: stored once still.
        assert post(url, first, headers(first, "r-1"))[0] == 200
        commit = storage.commit(HASH)
        assert commit is not None
        assert {b.branch for b in commit.branches} == {"master", "develop"}
    assert rows(db, "SELECT request_uuid FROM deliveries ORDER BY 1") == [("r-1",), ("r-2",)]
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT hash) FROM commits") == [(2, 2)]
    assert rows(db, "SELECT key, origin FROM story_keys") == [("REL-7", "message")]
    assert rows(db, "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'") == [(2,)]


def test_failed_write_is_503_and_the_retry_stores(framework: str, tmp_path: Path) -> None:
    db = tmp_path / "commits.db"
    body = push_body()
    with receiver(framework, db) as (url, storage):
        storage.open()
        # A real database refusing writes (as a full disk would), not a mock.
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON deliveries "
                "BEGIN SELECT RAISE(ABORT, 'refused (injected)'); END"
            )
        status, answer = post(url, body, headers(body, "f-1"))
        assert (status, answer["reason"]) == (503, "not stored; retry")
        assert rows(db, "SELECT COUNT(*) FROM commits") == [(0,)]  # one transaction: all or none
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("DROP TRIGGER refuse")
        assert post(url, body, headers(body, "f-1", **{"X-Attempt-Number": "2"}))[0] == 200
    assert rows(db, "SELECT request_uuid FROM deliveries") == [("f-1",)]


def test_configurable_path(framework: str, tmp_path: Path) -> None:
    body = push_body()
    with receiver(framework, tmp_path / "c.db", path="/hooks/bb") as (url, _):
        assert url.endswith("/hooks/bb")
        assert post(url, body, headers(body, "p-1"))[0] == 200
        assert post(url.replace("/hooks/bb", "/webhooks/bitbucket"), body, headers(body, "p-2"))[
            0
        ] in (404, 405)


def test_secret_never_in_logs_or_database(
    framework: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    db = tmp_path / "commits.db"
    # A developer pasted the hook's secret into a commit message.
    body = push_body(f"REL-7 rotate {SECRET} today")
    with receiver(framework, db) as (url, storage):
        plain = {k: v for k, v in headers(body, "s-1").items() if k != "X-Hub-Signature"}
        assert post(url, body, {**plain, "X-Webhook-Secret": SECRET + "x"})[0] == 401
        assert post(url, body, headers(body, "s-1"))[0] == 200
        commit = storage.commit(HASH)
        assert commit is not None and commit.message == "REL-7 rotate *** today\n"
    assert SECRET not in caplog.text
    assert "webhook refused with 401" in caplog.text
    for path in tmp_path.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path


def test_slow_database_is_503_then_stored_once(framework: str, tmp_path: Path) -> None:
    db = tmp_path / "commits.db"
    body = push_body()
    with receiver(framework, db, ack_timeout=0.5) as (url, storage):
        storage.open()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock (busy_timeout 5 s)
        try:
            status, answer = post(url, body, headers(body, "slow-1"))
            assert (status, answer["reason"]) == (503, "not stored; retry")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # Not cancelled by the timeout: the write commits once the lock is free.
        status, _ = post(url, body, headers(body, "slow-1", **{"X-Attempt-Number": "2"}))
        assert status == 200
    assert rows(db, "SELECT request_uuid FROM deliveries") == [("slow-1",)]
