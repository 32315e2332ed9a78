"""The normaliser in a process of its own (``normaliser: subprocess`` / ``external``).

Real ``rcingest serve`` and ``rcingest normalise`` processes on loopback,
real SQLite files: the receiver acknowledges from the inbox without a
pipeline, the normaliser process stores the records, the receiver restarts
it when it dies and stops it when it stops, the normaliser stops when the
receiver is killed, and only one normaliser works on a SQLite inbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rcingest.inbox.db import connect
from rcingest.inbox.lock import NormaliserLock, lock_path
from rcingest.inbox.model import WorkerBeat
from rcingest.webhooks import sign
from tests.test_inbox_kill import body, commits_of

SECRET = "split-test-secret-Zr84q"
CLI = [sys.executable, "-m", "rcingest"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pipeline(tmp_path: Path, normaliser: str, extra: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: split\n"
        "source:\n  type: bitbucket_webhook\n  config:\n"
        "    secret: ${BITBUCKET_WEBHOOK_SECRET}\n"
        f"    backfill_queue: '{tmp_path}/bf.db'\n"
        f"    inbox: '{tmp_path}/inbox.db'\n"
        f"    normaliser: {normaliser}\n"
        "    shutdown_timeout: 5\n"
        f"{extra}"
        "enrichers: [{type: story_keys}]\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path}/commits.db'}}}}]\n"
        f"logging: {{file: '{tmp_path}/logs/rcingest.log'}}\n"
    )
    return path


def env() -> dict[str, str]:
    out = {**os.environ, "BITBUCKET_WEBHOOK_SECRET": SECRET}
    out.pop("RCINGEST_KILL_AT", None)
    return out


def start(cmd: list[str], tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / f"{name}.err").open("ab")
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path)


def serve(tmp_path: Path, port: int, path: Path, *args: str) -> subprocess.Popen[bytes]:
    proc = start([*CLI, "serve", str(path), "--port", str(port), *args], tmp_path, "serve")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "serve.err").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    raise AssertionError("serve did not listen")


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


#: Set by each test: the daemon's stderr, quoted when a wait times out.
LOGS: list[Path] = []


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = "".join(p.read_text()[-3000:] for p in LOGS if p.exists())
    raise AssertionError(f"timed out waiting for {what}; stderr:\n{tail}")


@pytest.fixture(autouse=True)
def _logs(tmp_path: Path) -> Any:
    LOGS[:] = [tmp_path / "serve.err"]
    yield
    LOGS.clear()


def send(port: int, ids: range) -> None:
    async def go() -> None:
        url = f"http://127.0.0.1:{port}/webhooks/bitbucket"
        async with aiohttp.ClientSession() as session:
            for i in ids:
                raw = body(i)
                headers = {
                    "X-Event-Key": "repo:push",
                    "X-Request-UUID": f"s-{i}",
                    "X-Hub-Signature": sign(raw, SECRET),
                }
                async with session.post(url, data=raw, headers=headers) as r:
                    assert r.status == 200, await r.text()

    asyncio.run(go())


def states(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "inbox.db") as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state"))


def stored(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "commits.db") as conn:
        return sorted(r[0] for r in conn.execute("SELECT request_uuid FROM deliveries"))


def normaliser_pids(port_parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(port_parent)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return int(proc.returncode)


# ---- the lock and the reports, without processes ---------------------------------


def test_one_normaliser_lock_per_sqlite_inbox(tmp_path: Path) -> None:
    spec = str(tmp_path / "inbox.db")
    assert lock_path(spec) == tmp_path / "inbox.db.normaliser.lock"
    first, second = NormaliserLock(spec), NormaliserLock(spec)
    assert first.try_acquire() and first.held
    assert not second.try_acquire() and not second.held
    assert second.waited_for == str(os.getpid())  # who holds it, for the warning
    first.release()
    assert second.try_acquire()
    second.release()
    # PostgreSQL needs none: claims skip locked rows.
    assert lock_path("postgresql://u@127.0.0.1/db") is None
    assert NormaliserLock("postgresql://u@127.0.0.1/db").try_acquire()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    spec = str(tmp_path / "inbox.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from rcingest.inbox.lock import NormaliserLock\n"
            f"assert NormaliserLock({spec!r}).try_acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    lock = NormaliserLock(spec)
    assert not lock.try_acquire()
    assert lock.waited_for == str(holder.pid)
    holder.kill()
    holder.wait()
    assert lock.try_acquire()
    lock.release()


def test_worker_reports_are_kept_per_worker(database_spec: str, tmp_path: Path) -> None:
    spec = str(tmp_path / "inbox.db") if "://" not in database_spec else database_spec
    db = connect(spec)
    try:
        db.create()
        now = time.time()
        db.beat(WorkerBeat(worker="h:1", started_at=now - 9, beat_at=now - 5, healthy=True))
        db.beat(WorkerBeat(worker="h:2", started_at=now - 9, beat_at=now - 100, healthy=True))
        db.beat(
            WorkerBeat(
                worker="h:1",
                started_at=now - 9,
                beat_at=now,
                healthy=False,
                last_error="sink down",
                normalised=7,
            )
        )
        recent = db.workers(now - 30)
        assert [(b.worker, b.healthy, b.last_error, b.normalised) for b in recent] == [
            ("h:1", False, "sink down", 7)
        ]
        assert len(db.workers(0)) == 2
        # A worker gone for a day is deleted by the next report of any worker.
        db.beat(WorkerBeat(worker="h:3", started_at=now, beat_at=now + 86_500, healthy=True))
        assert [b.worker for b in db.workers(0)] == ["h:3"]
    finally:
        db.close()


# ---- real processes -------------------------------------------------------------


def test_subprocess_normaliser_stores_what_the_receiver_acknowledged(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(tmp_path, port, pipeline(tmp_path, "subprocess"))
    try:
        kids = wait_for(lambda: normaliser_pids(proc.pid), what="the normaliser process")
        assert len(kids) == 1
        send(port, range(40))
        wait_for(lambda: states(tmp_path) == {"done": 40}, what="40 deliveries done")
        assert stored(tmp_path) == sorted(f"s-{i}" for i in range(40))
        with sqlite3.connect(tmp_path / "commits.db") as conn:
            hashes = sorted(r[0] for r in conn.execute("SELECT hash FROM commits"))
        assert hashes == sorted(h for i in range(40) for h in commits_of(i))
        # The receiver's /readyz lists the normaliser once it reported.
        status, ready = wait_for(
            lambda: (r := readyz(port))[1].get("normalisers") and r, what="a report"
        )
        assert status == 200
        (beat,) = [b for b in ready["normalisers"] if b["worker"].endswith(f":{kids[0]}")]
        assert beat["healthy"] is True
        # Its log goes to a file of its own next to the daemon's.
        wait_for(lambda: (tmp_path / "logs" / "rcingest.normaliser.log").exists(), what="log")
    finally:
        assert stop(proc) == 0
    assert not alive(kids[0]), "the normaliser process outlived the receiver"
    # The receiver opened no sink: no artifact, no second writer of commits.db.
    log = (tmp_path / "logs" / "rcingest.log").read_text()
    assert "normaliser process started" in log


def test_a_killed_normaliser_process_is_restarted(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(tmp_path, port, pipeline(tmp_path, "subprocess"))
    try:
        (first,) = wait_for(lambda: normaliser_pids(proc.pid), what="the normaliser")
        wait_for(lambda: readyz(port)[1].get("normalisers"), what="its first report")
        os.kill(first, signal.SIGKILL)
        _, ready = wait_for(lambda: (r := readyz(port))[0] == 503 and r, timeout=10, what="503")
        assert "normaliser process exited" in ready["reason"]
        (second,) = wait_for(
            lambda: [p for p in normaliser_pids(proc.pid) if p != first], what="a new one"
        )
        send(port, range(10))  # acknowledged while it starts: normalised once it runs
        wait_for(lambda: states(tmp_path) == {"done": 10}, what="10 deliveries done")
        wait_for(lambda: readyz(port)[0] == 200, what="ready again")
    finally:
        assert stop(proc) == 0
    assert not alive(second)


def test_the_normaliser_stops_when_the_receiver_is_killed(tmp_path: Path) -> None:
    port = free_port()
    proc = serve(tmp_path, port, pipeline(tmp_path, "subprocess"))
    (kid,) = wait_for(lambda: normaliser_pids(proc.pid), what="the normaliser")
    send(port, range(5))
    proc.kill()
    proc.wait()
    # Its pipe closed: it finishes its batch and exits (reparented, so not a zombie for long).
    wait_for(lambda: not alive(kid), timeout=30, what="the orphaned normaliser to exit")
    # A restarted daemon carries on where it was.
    proc = serve(tmp_path, port, pipeline(tmp_path, "subprocess"))
    try:
        send(port, range(5, 12))
        wait_for(lambda: states(tmp_path) == {"done": 12}, what="12 deliveries done")
        assert stored(tmp_path) == sorted(f"s-{i}" for i in range(12))
    finally:
        assert stop(proc) == 0


def test_external_normalisers_share_a_sqlite_inbox_one_at_a_time(tmp_path: Path) -> None:
    port = free_port()
    path = pipeline(tmp_path, "external")
    proc = serve(tmp_path, port, path)
    workers = [start([*CLI, "normalise", str(path)], tmp_path, f"n{k}") for k in range(2)]
    try:
        # The receiver starts no normaliser of its own.
        time.sleep(1.0)
        assert normaliser_pids(proc.pid) == []
        send(port, range(30))
        wait_for(lambda: states(tmp_path) == {"done": 30}, what="30 deliveries done")
        assert stored(tmp_path) == sorted(f"s-{i}" for i in range(30))
        log = (tmp_path / "logs" / "rcingest.normaliser.log").read_text()
        assert "another normaliser (pid" in log and "waiting for it to stop" in log
        # The one that waits names the holder; when the holder stops, it takes over.
        holder = next(w for w in workers if f"(pid {w.pid})" in log)
        waiting = next(w for w in workers if w is not holder)
        assert stop(holder) == 0
        wait_for(lambda: "took over" in log_text(tmp_path), what="the take-over")
        send(port, range(30, 35))
        wait_for(lambda: states(tmp_path) == {"done": 35}, what="35 deliveries done")
        ready = readyz(port)[1]
        assert any(b["worker"].endswith(f":{waiting.pid}") for b in ready["normalisers"])
    finally:
        for w in workers:
            stop(w)
        assert stop(proc) == 0
    assert stored(tmp_path) == sorted(f"s-{i}" for i in range(35))


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "rcingest.normaliser.log").read_text()


def test_serve_hands_database_to_the_normaliser_outside_its_command_line(
    tmp_path: Path,
) -> None:
    # A postgresql:// URL given to serve carries a password: the child gets it
    # through RCINGEST_DATABASE_URL, never in its argv (which `ps` shows).
    override = tmp_path / "override-Secr3tMark.db"
    port = free_port()
    proc = serve(tmp_path, port, pipeline(tmp_path, "subprocess"), "--database", str(override))
    try:
        (kid,) = wait_for(lambda: normaliser_pids(proc.pid), what="the normaliser")
        # (Between fork and exec the child still shows the parent's command line.)
        wait_for(lambda: b"normalise" in Path(f"/proc/{kid}/cmdline").read_bytes(), what="exec")
        argv = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:4] == [b"-m", b"rcingest", b"normalise"] and b"--supervised" in argv
        assert not any(b"Secr3tMark" in a for a in argv)
        environ = Path(f"/proc/{kid}/environ").read_bytes().split(b"\0")
        assert f"RCINGEST_DATABASE_URL={override}".encode() in environ
        wait_for(lambda: readyz(port)[1].get("normalisers"), what="its first report")
        send(port, range(3))
        wait_for(lambda: states(tmp_path) == {"done": 3}, what="3 deliveries done")
    finally:
        assert stop(proc) == 0
    with sqlite3.connect(override) as conn:
        assert conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 3
    assert not (tmp_path / "commits.db").exists()  # the pipeline's own database, overridden


@pytest.mark.parametrize("normaliser", ["subprocess", "external"])
def test_validate_refuses_a_normaliser_without_the_inbox(tmp_path: Path, normaliser: str) -> None:
    path = pipeline(tmp_path, normaliser, extra="    ack: committed\n")
    result = subprocess.run(
        [*CLI, "validate", str(path)], env=env(), capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2
    out = result.stderr + result.stdout
    assert "$.source.config" in out and f"normaliser: {normaliser}" in out and "ack: inbox" in out


def test_normalise_refuses_a_pipeline_without_an_inbox(tmp_path: Path) -> None:
    scan = tmp_path / "scan.yaml"
    scan.write_text(
        "name: scan\nsource:\n  type: bitbucket_rest\n  config:\n    workspace: acme\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path}/c.db'}}}}]\n"
    )
    result = subprocess.run(
        [*CLI, "normalise", str(scan)], env=env(), capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "$.source.type" in result.stderr and "inbox" in result.stderr
    committed = pipeline(tmp_path, "in-process", extra="    ack: committed\n")
    result = subprocess.run(
        [*CLI, "normalise", str(committed)], env=env(), capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert "ack: committed" in result.stderr
