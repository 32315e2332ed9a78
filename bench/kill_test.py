"""Kill test: ``kill -9`` rcingest serve mid-load, restart it, check nothing 2xx was lost.

2,000 signed ``repo:push`` deliveries, 32 in flight, from a Python sender
that behaves like Bitbucket but keeps retrying (5xx, refused connections,
timeouts) until the daemon is back. Once ``--kill-after`` deliveries were
answered 2xx, the daemon gets SIGKILL (by PID), is restarted on the same
port and the same SQLite database, and the senders carry on. At the end:

* every delivery answered 2xx is in ``deliveries``, with all its commits;
* no delivery, commit, branch or story-key row is duplicated;
* every delivery was eventually answered 2xx.

Bounded: ``--count`` deliveries, ``--deadline`` seconds in all.

    python bench/kill_test.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import (
    PATH,
    SECRET,
    commits_of,
    delivery,
    free_port,
    start_daemon,
    stop,
    write_pipeline,
)

from rcingest.webhooks import sign


class Load:
    def __init__(self, count: int) -> None:
        self.todo: asyncio.Queue[int] = asyncio.Queue()
        for i in range(count):
            self.todo.put_nowait(i)
        self.acked: dict[str, float] = {}  # uuid -> time of its first 2xx
        self.attempts = 0
        self.failures = 0
        self.first_2xx_after_kill: float | None = None
        self.killed_at: float | None = None
        self.kill_now = asyncio.Event()


async def sender(
    load: Load, url: str, session: aiohttp.ClientSession, deadline: float, kill_after: int
) -> None:
    while not load.todo.empty():
        i = load.todo.get_nowait()
        uuid, body = delivery(i)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            load.attempts += 1
            headers = {
                "X-Event-Key": "repo:push",
                "X-Request-UUID": uuid,
                "X-Hook-UUID": "{kill-test}",
                "X-Attempt-Number": str(attempt),
                "X-Hub-Signature": sign(body, SECRET),
                "Content-Type": "application/json",
            }
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if 200 <= status < 300:
                now = time.monotonic()
                load.acked.setdefault(uuid, now)
                if load.killed_at is not None and load.first_2xx_after_kill is None:
                    load.first_2xx_after_kill = now
                if len(load.acked) >= kill_after:
                    load.kill_now.set()
                break
            load.failures += 1
            # Bitbucket retries at once, twice; this sender keeps going until
            # the daemon is back, so the test can check nothing is lost.
            await asyncio.sleep(0.05 if attempt < 3 else 0.2)


def check(db: Path, acked: set[str], count: int) -> list[str]:
    problems: list[str] = []
    with sqlite3.connect(db) as conn:
        stored = {u for (u,) in conn.execute("SELECT request_uuid FROM deliveries")}
        commits = {h for (h,) in conn.execute("SELECT hash FROM commits")}
        for table, key in (
            ("deliveries", "request_uuid"),
            ("commits", "hash"),
            ("commit_branches", "commit_hash, repository, branch"),
            ("commit_repositories", "commit_hash, repository"),
            ("story_keys", "commit_hash, key, origin"),
        ):
            dup = conn.execute(
                f"SELECT COUNT(*) FROM (SELECT {key} FROM {table} "
                f"GROUP BY {key} HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            if dup:
                problems.append(f"{dup} duplicated keys in {table}")
        n_deliveries = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
        if n_deliveries != len(stored):
            problems.append("delivery rows are not unique")
    lost = acked - stored
    if lost:
        problems.append(f"{len(lost)} deliveries answered 2xx are not in the database")
    for i in range(count):
        uuid, body = delivery(i)
        if uuid in stored:
            missing = [h for h in commits_of(body) if h not in commits]
            if missing:
                problems.append(f"delivery {uuid} stored without {len(missing)} of its commits")
                break
    return problems


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rcingest-kill-test-"))
    db = workdir / "commits.db"
    pipeline = write_pipeline(workdir, str(db), args.synchronous)
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    log = workdir / "daemon.log"
    proc = start_daemon(pipeline, port, log)
    load = Load(args.count)
    problems_early: list[str] = []
    deadline = time.monotonic() + args.deadline
    timeout = aiohttp.ClientTimeout(total=10)
    started = time.monotonic()
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=args.connections)
    ) as session:
        senders = [
            asyncio.create_task(sender(load, url, session, deadline, args.kill_after))
            for _ in range(args.connections)
        ]
        await asyncio.wait_for(load.kill_now.wait(), args.deadline)
        before_kill = len(load.acked)
        sig = signal.SIGKILL if args.signal == "KILL" else signal.SIGTERM
        os.kill(proc.pid, sig)  # the PID of the daemon this script started
        proc.wait()
        if sig == signal.SIGTERM and proc.returncode != 0:
            problems_early.append(f"daemon exited {proc.returncode} after SIGTERM mid-load")
        load.killed_at = time.monotonic()
        print(
            f"sent SIG{args.signal} to daemon pid {proc.pid} (exit {proc.returncode}) "
            f"after {before_kill} deliveries answered 2xx",
            flush=True,
        )
        await asyncio.sleep(args.downtime)
        proc = start_daemon(pipeline, port, log)
        print(
            f"restarted as pid {proc.pid} after {time.monotonic() - load.killed_at:.2f}s",
            flush=True,
        )
        await asyncio.gather(*senders)
    elapsed = time.monotonic() - started
    code = stop(proc)
    acked = set(load.acked)
    problems = problems_early + check(db, acked, args.count)
    if len(acked) != args.count:
        problems.append(f"only {len(acked)} of {args.count} deliveries were ever answered 2xx")
    with sqlite3.connect(db) as conn:
        n_deliveries, retried = conn.execute(
            "SELECT COUNT(*), SUM(attempt > 1) FROM deliveries"
        ).fetchone()
        n_commits = conn.execute("SELECT COUNT(*) FROM commits").fetchone()[0]
    expected_commits = sum(len(commits_of(delivery(i)[1])) for i in range(args.count))
    if n_commits != expected_commits:
        problems.append(f"{n_commits} commits stored, {expected_commits} expected")
    print(
        f"{args.count} deliveries in {elapsed:.1f}s: {len(acked)} answered 2xx "
        f"({before_kill} before the kill), "
        f"{load.attempts} requests ({load.failures} failed or refused, retried); database: "
        f"{n_deliveries} deliveries ({retried} stored on a retry), {n_commits} commits "
        f"(expected {expected_commits}); daemon exit {code} after SIGTERM"
    )
    for p in problems:
        print("PROBLEM:", p)
    verdict = "FAILED" if problems else "passed: nothing answered 2xx was lost, nothing duplicated"
    print(f"kill test (SIG{args.signal})", verdict)
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--kill-after", type=int, default=700, help="2xx answers before kill -9")
    parser.add_argument("--downtime", type=float, default=1.0, help="seconds before the restart")
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument(
        "--signal", choices=["KILL", "TERM"], default="KILL", help="TERM: a graceful stop mid-load"
    )
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
