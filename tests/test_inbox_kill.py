"""``kill -9`` of the daemon at the three dangerous instants loses and duplicates nothing.

The daemon (a real ``rcingest serve``) kills itself with SIGKILL at the n-th
time it reaches a point (``RCINGEST_KILL_AT``, rcingest/faults.py): an inbox
batch inserted but not committed (``append``), a normalised batch committed by
the sinks but its inbox rows not yet marked done (``normalise``), a WAL
checkpoint of the database under way (``checkpoint``). Senders behave like
Bitbucket but keep retrying until they get a 2xx; the daemon is restarted
without the fault. At the end every delivery is stored exactly once with all
its commits, and every inbox row is done. bench/kill_test.py does the same
at benchmark scale.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from rcingest.webhooks import sign

SECRET = "kill-test-secret-Qv71x"


def commits_of(i: int) -> list[str]:
    return [hashlib.sha1(f"{i}:{k}".encode()).hexdigest() for k in range(3)]


def body(i: int) -> bytes:
    hashes = commits_of(i)
    commits = [
        {
            "hash": h,
            "date": "2026-12-03T09:00:00+00:00",
            "author": {"raw": "Dev <dev@example.com>"},
            "message": f"REL-{i % 9 + 1} change {k} of {i}\n\n" + "detail " * 40,
            "parents": [],
        }
        for k, h in enumerate(hashes)
    ]
    change = {
        "new": {"type": "branch", "name": "main", "target": {"hash": hashes[0]}},
        "old": None,
        "created": True,
        "commits": commits,
    }
    repo = f"acme/svc-{i % 6}"
    return json.dumps({"push": {"changes": [change]}, "repository": {"full_name": repo}}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    tmp_path: Path, port: int, kill_at: str | None, extra: str = ""
) -> subprocess.Popen[bytes]:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "name: kill\n"
        "source:\n  type: bitbucket_webhook\n  config:\n"
        "    secret: ${BITBUCKET_WEBHOOK_SECRET}\n"
        f"    backfill_queue: '{tmp_path}/bf.db'\n"
        f"    inbox: '{tmp_path}/inbox.db'\n"
        "    inbox_batch: 16\n"
        # The normaliser must run while the senders send (the kill is under
        # load), and this load is shorter than the default wait for a burst.
        "    inbox_defer: 0\n"
        f"{extra}"
        "enrichers: [{type: story_keys}]\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path}/commits.db'}}}}]\n"
    )
    env = {**os.environ, "BITBUCKET_WEBHOOK_SECRET": SECRET}
    env.pop("RCINGEST_KILL_AT", None)
    env["RCINGEST_KILL_ONCE"] = str(tmp_path / "fired")
    if kill_at:
        env["RCINGEST_KILL_AT"] = kill_at
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", str(pipeline)]
    cmd += ["--port", str(port), "-q"]
    log = (tmp_path / "serve.log").open("ab")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)


async def deliver_all(port: int, n: int, acked: set[str], deadline: float) -> None:
    """Every delivery until a 2xx, 16 in flight, retrying errors and refused connections."""
    sem = asyncio.Semaphore(16)
    url = f"http://127.0.0.1:{port}/webhooks/bitbucket"
    timeout = aiohttp.ClientTimeout(total=5)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        raw = body(i)
        headers = {
            "X-Event-Key": "repo:push",
            "X-Request-UUID": f"k-{i}",
            "X-Hub-Signature": sign(raw, SECRET),
        }
        async with sem:
            while time.monotonic() < deadline:
                try:
                    async with session.post(url, data=raw, headers=headers) as r:
                        await r.read()
                        if r.status == 200:
                            acked.add(f"k-{i}")
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, i) for i in range(n)))


# The database's checkpointer runs every 0.5 s: the load must outlast the first.
@pytest.mark.parametrize(
    ("point", "n"), [("append:5", 240), ("normalise:4", 240), ("checkpoint:1", 2400)]
)
def test_kill_at_each_point_loses_and_duplicates_nothing(
    tmp_path: Path, point: str, n: int
) -> None:
    run_kill_test(tmp_path, point, n)


# With the normaliser in a process of its own, "append" kills the receiver
# (its normaliser sees the pipe close and stops; the restarted receiver starts
# a new one, which waits for the old one's lock), "normalise" and "checkpoint"
# kill the normaliser process, which the receiver restarts.
@pytest.mark.parametrize(
    ("point", "n"), [("append:5", 240), ("normalise:4", 240), ("checkpoint:1", 2400)]
)
def test_kill_with_the_normaliser_in_its_own_process(tmp_path: Path, point: str, n: int) -> None:
    run_kill_test(tmp_path, point, n, extra="    normaliser: subprocess\n")


def run_kill_test(tmp_path: Path, point: str, n: int, extra: str = "") -> None:
    receiver_dies = not extra or point.startswith("append")
    port = free_port()
    proc = serve(tmp_path, port, point, extra)
    acked: set[str] = set()
    deadline = time.monotonic() + 120
    restarts = 0

    async def load() -> None:
        task = asyncio.create_task(deliver_all(port, n, acked, deadline))
        nonlocal proc, restarts
        while not task.done():
            await asyncio.sleep(0.05)
            if proc.poll() is not None:
                assert proc.returncode == -9, (tmp_path / "serve.log").read_text()
                restarts += 1
                proc = serve(tmp_path, port, None, extra)  # the senders carry on retrying
        await task

    try:
        asyncio.run(load())
        assert len(acked) == n
        # Wait for the normaliser to finish what was acknowledged.
        while time.monotonic() < deadline:
            with sqlite3.connect(tmp_path / "inbox.db") as conn:
                left = conn.execute(
                    "SELECT COUNT(*) FROM webhook_inbox WHERE state <> 'done'"
                ).fetchone()[0]
            if not left:
                break
            time.sleep(0.1)
        # (A normaliser process may reach its point after the senders are done.)
        assert (tmp_path / "fired").exists(), f"the fault {point} never fired"
        assert restarts == int(receiver_dies)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
    with sqlite3.connect(tmp_path / "inbox.db") as conn:
        assert conn.execute(
            "SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state"
        ).fetchall() == [("done", n)]
    with sqlite3.connect(tmp_path / "commits.db") as conn:
        deliveries = [r[0] for r in conn.execute("SELECT request_uuid FROM deliveries")]
        assert sorted(deliveries) == sorted(acked)  # each once
        hashes = [r[0] for r in conn.execute("SELECT hash FROM commits")]
        assert sorted(hashes) == sorted(h for i in range(n) for h in commits_of(i))
        for table, key in (
            ("commit_branches", "commit_hash, repository, branch"),
            ("commit_repositories", "commit_hash, repository"),
            ("story_keys", "commit_hash, key, origin, branch"),
        ):
            dup = conn.execute(
                f"SELECT COUNT(*) FROM (SELECT {key} FROM {table} "
                f"GROUP BY {key} HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            assert dup == 0, table
