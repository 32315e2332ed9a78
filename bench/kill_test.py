"""Kill test: ``kill -9`` rcingest serve mid-load, restart it, check nothing 2xx was lost.

2,000 signed ``repo:push`` deliveries, 32 in flight, from a Python sender
that behaves like Bitbucket but keeps retrying (5xx, refused connections,
timeouts) until the daemon is back. The daemon dies mid-load, is restarted
on the same port, database and inbox, and the senders carry on:

* ``--kill-at external`` (default): SIGKILL by PID once ``--kill-after``
  deliveries were answered 2xx;
* ``--kill-at append|normalise|checkpoint``: the daemon kills itself
  (``RCINGEST_KILL_AT=<point>:<n>``, rcingest/faults.py) at the ``--kill-n``-th
  time it reaches that point: an inbox batch inserted before its COMMIT; the
  sinks committed a normalised batch before its inbox rows are marked done;
  a WAL checkpoint running.

``--ack inbox|committed`` picks the daemon's acknowledgement path (default:
the daemon's own default). ``--normaliser subprocess`` runs the inbox's
normaliser in a process of its own: ``append`` then kills the receiver,
``normalise`` and ``checkpoint`` the normaliser process, which the receiver
restarts by itself (``RCINGEST_KILL_ONCE`` keeps the restarted one alive).
With the inbox, the test waits (bounded) after the load until the inbox is
drained. At the end:

* every delivery answered 2xx is in ``deliveries`` (one row per request
  UUID), with all its commits, and exactly the expected commits are stored;
* no table of the database has a duplicated row (by its primary key, or the
  whole row where it has none);
* inbox path: every acknowledged delivery is in the inbox and every inbox row
  ended ``done``;
* every delivery was eventually answered 2xx.

Bounded: ``--count`` deliveries, ``--deadline`` seconds in all.

    python bench/kill_test.py --ack inbox --kill-at normalise
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
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
    inbox_supported,
    scrape,
    start_daemon,
    stop,
    wait_normaliser,
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


# Chosen so that the kill lands mid-load with the default 2,000 deliveries: the first
# checkpoint runs 0.5 s after the sink opens the database.
DEFAULT_KILL_N = {"append": 60, "normalise": 30, "checkpoint": 1}


def duplicated(conn: sqlite3.Connection) -> list[str]:
    """Every table's duplicated rows: by its primary key, or by all columns where it has none."""
    problems = []
    tables = [
        t
        for (t,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        cols = list(conn.execute(f'PRAGMA table_info("{table}")'))
        key = [c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5] > 0] or [c[1] for c in cols]
        keys = ", ".join(f'"{k}"' for k in key)
        dup = conn.execute(
            f'SELECT COUNT(*) FROM (SELECT 1 FROM "{table}" GROUP BY {keys} HAVING COUNT(*) > 1)'
        ).fetchone()[0]
        if dup:
            problems.append(f"{dup} duplicated keys ({keys}) in {table}")
    return problems


def check(db: Path, acked: set[str], count: int) -> list[str]:
    problems: list[str] = []
    with sqlite3.connect(db) as conn:
        stored = {u for (u,) in conn.execute("SELECT request_uuid FROM deliveries")}
        commits = {h for (h,) in conn.execute("SELECT hash FROM commits")}
        problems += duplicated(conn)
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


def check_inbox(inbox: Path, acked: set[str]) -> tuple[list[str], dict[str, int]]:
    with sqlite3.connect(inbox) as conn:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state"))
        uuids = [u for (u,) in conn.execute("SELECT request_uuid FROM webhook_inbox")]
        problems = duplicated(conn)
    not_done = {k: v for k, v in states.items() if k != "done"}
    if not_done:
        problems.append(f"inbox rows not done: {not_done}")
    if len(uuids) != len(set(uuids)):
        problems.append(f"{len(uuids) - len(set(uuids))} request UUIDs twice in the inbox")
    missing = acked - set(uuids)
    if missing:
        problems.append(f"{len(missing)} deliveries answered 2xx are not in the inbox")
    return problems, states


async def wait_drained(port: int, inbox: Path, bound: float) -> float | None:
    """Seconds until the inbox has nothing pending or failed; None if not within ``bound``."""
    start = time.monotonic()
    while time.monotonic() - start < bound:
        try:
            with sqlite3.connect(inbox, timeout=5) as conn:
                open_rows = conn.execute(
                    "SELECT COUNT(*) FROM webhook_inbox WHERE state IN ('pending', 'failed')"
                ).fetchone()[0]
        except sqlite3.Error:
            open_rows = -1
        if open_rows == 0:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


async def died(proc: subprocess.Popen[bytes], marker: Path) -> None:
    """The daemon exited, or (``normaliser: subprocess``) its normaliser process fired."""
    while proc.poll() is None and not marker.exists():
        await asyncio.sleep(0.01)
    # The marker is written just before the SIGKILL: give the process a moment
    # to be gone, so a dead receiver is not taken for a dead normaliser.
    for _ in range(100):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.01)


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rcingest-kill-test-"))
    db = workdir / "commits.db"
    inbox = workdir / "inbox.db"
    ack = args.ack or ("inbox" if inbox_supported() else "committed")
    if ack == "inbox" and not inbox_supported():
        sys.exit("this checkout has no inbox (no `ack` key in the webhook source)")
    if args.kill_at != "external" and ack != "inbox" and args.kill_at != "checkpoint":
        sys.exit(f"--kill-at {args.kill_at} is a point of the inbox path: use --ack inbox")
    pipeline = write_pipeline(
        workdir,
        str(db),
        args.synchronous,
        ack=ack if inbox_supported() else None,
        inbox=str(inbox) if inbox_supported() else None,
        normaliser=args.normaliser,
    )
    split = args.normaliser == "subprocess"
    marker = workdir / "fired"
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    log = workdir / "daemon.log"
    kill_n = args.kill_n or DEFAULT_KILL_N.get(args.kill_at, 0)
    env = {} if args.kill_at == "external" else {"RCINGEST_KILL_AT": f"{args.kill_at}:{kill_n}"}
    env["RCINGEST_KILL_ONCE"] = str(marker)
    proc = start_daemon(pipeline, port, log, env=env)
    if split:
        wait_normaliser(port)
    load = Load(args.count)
    problems_early: list[str] = []
    deadline = time.monotonic() + args.deadline
    timeout = aiohttp.ClientTimeout(total=10)
    started = time.monotonic()
    drain: float | None = None
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=args.connections)
    ) as session:
        senders = [
            asyncio.create_task(sender(load, url, session, deadline, args.kill_after))
            for _ in range(args.connections)
        ]
        all_sent = asyncio.ensure_future(asyncio.gather(*senders))
        if args.kill_at == "external":
            await asyncio.wait_for(load.kill_now.wait(), args.deadline)
            sig = signal.SIGKILL if args.signal == "KILL" else signal.SIGTERM
            os.kill(proc.pid, sig)  # the PID of the daemon this script started
            proc.wait()
            if sig == signal.SIGTERM and proc.returncode != 0:
                problems_early.append(f"daemon exited {proc.returncode} after SIGTERM mid-load")
            how = f"sent SIG{args.signal} to daemon pid {proc.pid}"
        else:
            death = asyncio.ensure_future(died(proc, marker))
            await asyncio.wait({death, all_sent}, return_when=asyncio.FIRST_COMPLETED)
            if not death.done():
                death.cancel()
                problems_early.append(f"{env['RCINGEST_KILL_AT']} never reached under load")
                proc.kill()  # the PID of the daemon this script started
                proc.wait()
            how = f"daemon pid {proc.pid} killed itself at {env['RCINGEST_KILL_AT']}"
            if proc.poll() is None:  # the normaliser process died, the receiver lives
                how = f"the normaliser process killed itself at {env['RCINGEST_KILL_AT']}"
        before_kill = len(load.acked)
        load.killed_at = time.monotonic()
        print(
            f"{how} (exit {proc.returncode}) after {before_kill} deliveries answered 2xx",
            flush=True,
        )
        if proc.poll() is not None:
            await asyncio.sleep(args.downtime)
            proc = start_daemon(pipeline, port, log)
            print(
                f"restarted as pid {proc.pid} after {time.monotonic() - load.killed_at:.2f}s",
                flush=True,
            )
        await all_sent
    elapsed = time.monotonic() - started
    if ack == "inbox":
        drain = await wait_drained(port, inbox, args.drain)
        if drain is None:
            problems_early.append(f"inbox not drained within {args.drain:.0f}s of the load")
        metrics = scrape(port)
    code = stop(proc)
    acked = set(load.acked)
    problems = problems_early + check(db, acked, args.count)
    if ack == "inbox":
        more, states = check_inbox(inbox, acked)
        problems += more
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
        f"ack {ack}: {args.count} deliveries in {elapsed:.1f}s: {len(acked)} answered 2xx "
        f"({before_kill} before the kill), "
        f"{load.attempts} requests ({load.failures} failed or refused, retried); database: "
        f"{n_deliveries} deliveries ({retried} stored on a retry), {n_commits} commits "
        f"(expected {expected_commits}); daemon exit {code} after SIGTERM"
    )
    if ack == "inbox":
        print(
            f"inbox: rows by state {states}, drained {drain and round(drain, 2)}s after the load; "
            f"/metrics pending {metrics.get('rcingest_webhook_inbox_pending')}"
        )
    for p in problems:
        print("PROBLEM:", p)
    verdict = "FAILED" if problems else "passed: nothing answered 2xx was lost, nothing duplicated"
    kind = f"SIG{args.signal}" if args.kill_at == "external" else f"RCINGEST_KILL_AT {kill_n}"
    print(f"kill test (ack {ack}, kill at {args.kill_at}, {kind})", verdict)
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ack", choices=["inbox", "committed"], help="default: the daemon's")
    parser.add_argument(
        "--kill-at", choices=["external", "append", "normalise", "checkpoint"], default="external"
    )
    parser.add_argument("--kill-n", type=int, help="the n of RCINGEST_KILL_AT=<point>:<n>")
    parser.add_argument("--kill-after", type=int, default=700, help="2xx answers before kill -9")
    parser.add_argument("--downtime", type=float, default=1.0, help="seconds before the restart")
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--drain", type=float, default=60.0, help="bound on the inbox drain")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument(
        "--normaliser", choices=["in-process", "subprocess"], help="default: the daemon's"
    )
    parser.add_argument(
        "--signal", choices=["KILL", "TERM"], default="KILL", help="TERM: a graceful stop mid-load"
    )
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
