"""CommitStorage on its own: one loop thread, draining on close and at exit, refusals."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import subprocess
import sys
import textwrap
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from rcingest.embed import Closed, CommitStorage, register_bitbucket_webhook
from rcingest.webhooks import receive
from tests.test_embed_servers import SECRET, headers, make_app, post, push_body, running

ROOT = Path(__file__).resolve().parents[1]


def decoded(uuid: str) -> Any:
    body = push_body()
    verdict = receive(headers(body, uuid), body, secret=SECRET)
    assert verdict.decoded is not None, verdict.reason
    return verdict.decoded


def count(db: Path, sql: str) -> Any:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchone()[0]


def test_close_waits_for_submitted_writes(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    storage = CommitStorage(db)
    futures = [storage.submit(decoded(f"u-{i}")) for i in range(40)]
    storage.close()  # not one of them awaited
    assert all(f.done() for f in futures)
    assert count(db, "SELECT COUNT(*) FROM deliveries") == 40
    with pytest.raises(Closed):
        storage.submit(decoded("late"))
    storage.close()  # idempotent


def test_pending_writes_are_drained_at_interpreter_exit(tmp_path: Path) -> None:
    db = tmp_path / "exit.db"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_embed_storage import decoded
        from rcingest.embed import CommitStorage
        storage = CommitStorage({str(db)!r})
        for i in range(25):
            storage.submit(decoded(f"x-{{i}}"))
        # No close(): the process ends with writes still queued.
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert count(db, "SELECT COUNT(*) FROM deliveries") == 25
    assert count(db, "SELECT status FROM runs") == "succeeded"


def test_one_loop_thread_for_many_concurrent_requests(tmp_path: Path) -> None:
    app = make_app("flask")
    storage = CommitStorage(tmp_path / "c.db")
    register_bitbucket_webhook(app, storage=storage, secret=SECRET)
    body = push_body()
    with running("flask", app) as base, concurrent.futures.ThreadPoolExecutor(16) as pool:
        url = f"{base}/webhooks/bitbucket"
        answers = list(pool.map(lambda i: post(url, body, headers(body, f"c-{i}"))[0], range(48)))
        loops = [t for t in threading.enumerate() if t.name == "rcingest-embed"]
        assert answers == [200] * 48
        assert len(loops) == 1
        storage.close()
        # A closed storage refuses, and the sender is told to retry.
        status, answer = post(url, body, headers(body, "after-close"))
        assert status == 503 and "retry" in answer["reason"]
    assert count(tmp_path / "c.db", "SELECT COUNT(*) FROM deliveries") == 48


def test_unreachable_database_names_it_without_its_password() -> None:
    storage = CommitStorage("postgresql://ingest:hunter2-pw@127.0.0.1:9/commits")
    with pytest.raises(Exception) as info:
        storage.open()
    assert "hunter2-pw" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_unreachable_database_is_503(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app("flask")
    storage = CommitStorage("postgresql://ingest:hunter2-pw@127.0.0.1:9/commits")
    register_bitbucket_webhook(app, storage=storage, secret=SECRET)
    body = push_body()
    with running("flask", app) as base:
        status, answer = post(f"{base}/webhooks/bitbucket", body, headers(body, "down-1"))
    assert (status, answer["reason"]) == (503, "not stored; retry")
    assert "not stored" in caplog.text and "hunter2-pw" not in caplog.text
    storage.close()


def test_refusals(tmp_path: Path) -> None:
    storage = CommitStorage(tmp_path / "c.db")
    with pytest.raises(TypeError, match="FastAPI"):
        register_bitbucket_webhook(object(), storage=storage, secret=SECRET)
    with pytest.raises(ValueError, match="insecure=True"):
        register_bitbucket_webhook(make_app("flask"), storage=storage, secret=None)
    with pytest.raises(ValueError, match="path"):
        register_bitbucket_webhook(make_app("flask"), storage=storage, secret=SECRET, path="x")


def test_insecure_accepts_unsigned(tmp_path: Path) -> None:
    app = make_app("aiohttp")
    storage = CommitStorage(tmp_path / "c.db")
    register_bitbucket_webhook(app, storage=storage, secret=None, insecure=True)
    body = push_body()
    try:
        with running("aiohttp", app) as base:
            hdrs = {"X-Event-Key": "repo:push", "X-Request-UUID": "open-1"}
            assert post(f"{base}/webhooks/bitbucket", body, hdrs)[0] == 200
    finally:
        storage.close()


def test_importable_without_fastapi_or_flask() -> None:
    script = textwrap.dedent(
        """
        import sys
        for name in ("fastapi", "starlette", "flask", "werkzeug", "uvicorn"):
            sys.modules[name] = None  # import fails, as when not installed
        import rcingest
        from rcingest.embed import CommitStorage, register_bitbucket_webhook
        from aiohttp import web
        storage = CommitStorage(sys.argv[1])
        register_bitbucket_webhook(web.Application(), storage=storage, secret="any-8-or-more")
        storage.close()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, ":memory:"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
