"""Two daemon processes share one PostgreSQL inbox: the normalisation spreads over both.

Each daemon appends what it receives to the same ``webhook_inbox`` table and
claims rows with ``FOR UPDATE SKIP LOCKED``; the deliveries are sent to
either daemon at random (a load balancer), over eight repositories. At the
end every delivery is stored once, every inbox row is done, and each daemon
normalised a share of them (its own /metrics say how many).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psycopg2
import pytest

from rcingest.webhooks import sign
from tests.test_webhook_postgres import SECRET, _hash, start, stop

pytestmark = pytest.mark.postgres

N = 400
REPOS = [f"acme/svc-{k}" for k in range(8)]


def body(i: int) -> bytes:
    repo = REPOS[i % len(REPOS)]
    commits = [
        {
            "hash": _hash(10_000 + i * 4 + k),
            "date": "2026-12-03T09:00:00+00:00",
            "author": {"raw": "Dev <dev@example.com>"},
            "message": f"REL-{i % 9 + 1} change {k} of {i}",
            "parents": [],
        }
        for k in range(3)
    ]
    change = {
        "new": {"type": "branch", "name": "main", "target": {"hash": commits[0]["hash"]}},
        "old": {"type": "branch", "name": "main", "target": {"hash": _hash(1)}},
        "commits": commits,
    }
    return json.dumps({"push": {"changes": [change]}, "repository": {"full_name": repo}}).encode()


async def send(ports: list[int]) -> list[int]:
    rnd = random.Random(15)
    sem = asyncio.Semaphore(16)
    statuses: list[int] = []

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        raw = body(i)
        headers = {
            "X-Event-Key": "repo:push",
            "X-Request-UUID": f"shared-{i}",
            "X-Hub-Signature": sign(raw, SECRET),
        }
        url = f"http://127.0.0.1:{rnd.choice(ports)}/webhooks/bitbucket"
        async with sem, session.post(url, data=raw, headers=headers) as r:
            await r.read()
            statuses.append(r.status)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, i) for i in range(N)))
    return statuses


def normalised(port: int) -> int:
    async def scrape() -> str:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{port}/metrics") as r,
        ):
            return await r.text()

    text = asyncio.run(scrape())
    found = re.search(r'rcingest_webhook_inbox_normalised_total\{outcome="done"\} ([0-9.]+)', text)
    return int(float(found.group(1))) if found else 0


def open_rows(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM webhook_inbox WHERE state <> 'done'")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_two_daemons_share_one_postgresql_inbox(tmp_path: Path, postgres_url: str) -> None:
    # Both normalise while the deliveries arrive (not after: this load is
    # shorter than the default wait for a burst to end), in small claims.
    extra = "    inbox_defer: 0\n    inbox_batch: 32\n"
    a, port_a = start(tmp_path, "a", postgres_url, inbox=postgres_url, extra=extra)
    b, port_b = start(tmp_path, "b", postgres_url, inbox=postgres_url, extra=extra)
    try:
        statuses = asyncio.run(send([port_a, port_b]))
        deadline = time.monotonic() + 60
        while open_rows(postgres_url) and time.monotonic() < deadline:
            time.sleep(0.1)
        shares = (normalised(port_a), normalised(port_b))
    finally:
        codes = (stop(a), stop(b))
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert codes == (0, 0), logs
    assert statuses == [200] * N
    assert sum(shares) == N and min(shares) > 0, shares  # both did part of the work
    conn = psycopg2.connect(postgres_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state")
            assert dict(cur.fetchall()) == {"done": N}
            cur.execute("SELECT COUNT(*), COUNT(DISTINCT request_uuid) FROM deliveries")
            assert cur.fetchone() == (N, N)
            cur.execute("SELECT COUNT(*), COUNT(DISTINCT hash) FROM commits")
            assert cur.fetchone() == (3 * N, 3 * N)
            cur.execute("SELECT COUNT(*) FROM story_keys")
            assert cur.fetchone()[0] == 3 * N  # one message key per commit, none twice
    finally:
        conn.close()
    assert SECRET not in logs
    password = urlsplit(postgres_url).password
    assert not password or password not in logs
