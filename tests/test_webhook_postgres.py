"""Two daemon processes behind a pretend load balancer, one PostgreSQL: no duplicates, no losses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import pytest

from rcingest.webhooks import sign

pytestmark = pytest.mark.postgres

SECRET = "two-daemons-secret-7Hd"
REPO = "acme/shared"
N = 120


def _hash(n: int) -> str:
    return f"{n:040x}"


def body(i: int) -> bytes:
    """Delivery i pushes commits i..i+3: neighbours share commits, so both daemons race on them."""
    commits = [
        {
            "hash": _hash(k),
            "date": f"2026-11-23T12:{k % 60:02d}:00+00:00",
            "author": {"raw": f"Dev <dev{k % 5}@example.com>"},
            "message": f"REL-{k % 7 + 1} change {k}",
            "parents": [{"hash": _hash(k - 1)}] if k else [],
        }
        for k in range(i + 3, i - 1, -1)
    ]
    change = {
        "new": {
            "type": "branch",
            "name": f"feature/REL-{i % 7 + 1}",
            "target": {"hash": _hash(i + 3)},
        },
        "old": {"type": "branch", "name": f"feature/REL-{i % 7 + 1}", "target": {"hash": _hash(i)}},
        "truncated": False,
        "commits": commits,
    }
    payload = {"push": {"changes": [change]}, "repository": {"full_name": REPO, "uuid": "{shared}"}}
    return json.dumps(payload).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    tmp_path: Path, name: str, database: str, inbox: str | None = None, extra: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    """``rcingest serve`` on a free port; ``inbox``: a shared one (else a SQLite file each);
    ``extra``: more lines of the source's config."""
    port = free_port()
    pipeline = tmp_path / f"{name}.yaml"
    pipeline.write_text(
        "name: shared-hooks\n"
        "source:\n  type: bitbucket_webhook\n  config:\n"
        "    secret: ${BITBUCKET_WEBHOOK_SECRET}\n"
        f"    backfill_queue: '{tmp_path}/{name}-backfill.db'\n"
        "    inbox: ${RCINGEST_INBOX_URL}\n"
        f"{extra}"
        "enrichers: [{type: story_keys}]\n"
        "sinks: [{type: database}]\n"
    )
    env = {
        **os.environ,
        "BITBUCKET_WEBHOOK_SECRET": SECRET,
        "RCINGEST_INBOX_URL": inbox or f"{tmp_path}/{name}-inbox.db",
    }
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", str(pipeline)]
    cmd += ["--port", str(port), "--database", database, "-q"]
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"daemon {name} did not start")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


async def send(ports: list[int]) -> dict[str, list[int]]:
    """Every delivery to one daemon, a retry of it to the other, and some to both at once."""
    statuses: dict[str, list[int]] = {}
    sem = asyncio.Semaphore(16)

    async def post(session: aiohttp.ClientSession, port: int, i: int, attempt: int) -> None:
        raw = body(i)
        headers = {
            "X-Event-Key": "repo:push",
            "X-Request-UUID": f"req-{i}",
            "X-Attempt-Number": str(attempt),
            "X-Hub-Signature": sign(raw, SECRET),
        }
        async with (
            sem,
            session.post(
                f"http://127.0.0.1:{port}/webhooks/bitbucket", data=raw, headers=headers
            ) as r,
        ):
            await r.read()
            statuses.setdefault(f"req-{i}", []).append(r.status)

    async with aiohttp.ClientSession() as session:
        jobs: list[Any] = []
        for i in range(N):
            first, other = ports[i % 2], ports[(i + 1) % 2]
            jobs.append(post(session, first, i, 1))
            if i % 3 == 0:
                jobs.append(post(session, other, i, 2))  # the "retry" lands elsewhere, concurrently
        await asyncio.gather(*jobs)
        # Sequential retries after the fact: acknowledged, nothing duplicated.
        for i in range(0, N, 10):
            await post(session, ports[(i + 1) % 2], i, 3)
    return statuses


def test_two_daemons_share_one_postgresql(tmp_path: Path, postgres_url: str) -> None:
    a, port_a = start(tmp_path, "a", postgres_url)
    b, port_b = start(tmp_path, "b", postgres_url)
    try:
        statuses = asyncio.run(send([port_a, port_b]))
    finally:
        codes = (stop(a), stop(b))
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert codes == (0, 0), logs
    assert all(s == 200 for ss in statuses.values() for s in ss), statuses
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT request_uuid, attempt FROM deliveries")
            deliveries = dict(cur.fetchall())
            cur.execute("SELECT COUNT(*), COUNT(DISTINCT hash) FROM commits")
            n_commits, distinct = cur.fetchone()
            cur.execute(
                "SELECT COUNT(*) FROM (SELECT commit_hash, branch FROM commit_branches "
                "GROUP BY commit_hash, branch HAVING COUNT(*) > 1) d"
            )
            dup_branches = cur.fetchone()[0]
    finally:
        conn.close()
    assert set(deliveries) == {f"req-{i}" for i in range(N)}
    assert deliveries["req-0"] == 3 and deliveries["req-3"] == 2  # highest attempt kept
    assert n_commits == distinct == N + 3
    assert dup_branches == 0
    assert SECRET not in logs
