"""Shared by the webhook benchmark and kill test: payloads, the bare server, the daemon.

Not a benchmark by itself. Every delivery is a signed ``repo:push`` of 3-5
commits with unique hashes and request UUIDs, shaped like Bitbucket's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rcingest.webhooks import sign

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-webhook-secret-4Kq"
PATH = "/webhooks/bitbucket"


def _h(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()


def delivery(i: int, seed: int = 1) -> tuple[str, bytes]:
    """(request uuid, body) of the i-th delivery: a push of 3-5 new commits to one branch."""
    rnd = random.Random(seed * 1_000_003 + i)
    n = rnd.randint(3, 5)
    repo = f"acme/service-{i % 8:02d}"
    branch = f"feature/REL-{100 + i % 50}-load"
    base = datetime(2026, 11, 23, 12, tzinfo=UTC) + timedelta(seconds=i * 10)
    hashes = [_h(seed, i, k) for k in range(n + 1)]  # hashes[0] is the old head
    commits = []
    for k in range(n, 0, -1):  # newest first, like Bitbucket
        commits.append(
            {
                "type": "commit",
                "hash": hashes[k],
                "date": (base + timedelta(seconds=k)).isoformat(),
                "author": {
                    "type": "author",
                    "raw": f"Dev {i % 17} <dev{i % 17}@example.com>",
                    "user": {
                        "type": "user",
                        "display_name": f"Dev {i % 17}",
                        "account_id": f"5570:{i % 17}",
                    },
                },
                "message": f"REL-{100 + i % 50} change {k} of push {i}\n\n"
                f"Details for OPS-{i % 9 + 1}.",
                "parents": [{"type": "commit", "hash": hashes[k - 1]}],
                "links": {
                    "self": {
                        "href": f"https://api.bitbucket.org/2.0/repositories/{repo}/commit/{hashes[k]}"
                    }
                },
            }
        )
    body = {
        "push": {
            "changes": [
                {
                    "new": {
                        "type": "branch",
                        "name": branch,
                        "target": {"type": "commit", "hash": hashes[n]},
                    },
                    "old": {
                        "type": "branch",
                        "name": branch,
                        "target": {"type": "commit", "hash": hashes[0]},
                    },
                    "created": False,
                    "closed": False,
                    "forced": False,
                    "truncated": False,
                    "commits": commits,
                    "links": {
                        "commits": {
                            "href": f"https://api.bitbucket.org/2.0/repositories/{repo}/commits"
                            f"?include={hashes[n]}&exclude={hashes[0]}"
                        }
                    },
                }
            ]
        },
        "repository": {
            "type": "repository",
            "full_name": repo,
            "uuid": "{" + _h("repo", repo)[:32] + "}",
        },
        "actor": {"type": "user", "display_name": "Dev", "account_id": "5570:1"},
    }
    uuid = "{" + _h(seed, "req", i)[:32] + "}"
    return uuid, json.dumps(body, separators=(",", ":")).encode()


def commits_of(body: bytes) -> list[str]:
    return [c["hash"] for c in json.loads(body)["push"]["changes"][0]["commits"]]


def write_wrk_data(path: Path, count: int, seed: int = 1) -> None:
    """One line per delivery: uuid, signature, body (tab-separated; bodies are one line)."""
    with path.open("wb") as fh:
        for i in range(count):
            uuid, body = delivery(i, seed)
            fh.write(f"{uuid}\t{sign(body, SECRET)}\t".encode() + body + b"\n")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (nan when there are none)."""
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


# rcingest serve with an extra sink type that discards batches: the daemon's
# own cost (HTTP, signature, decoding, story keys, runner) without a database.
NULL_SINK_MAIN = """
import sys
import rcingest
from rcingest.cli import build_cli
from rcingest.plugins import make_plugin_manager

class DiscardSink(rcingest.Sink[rcingest.ComponentConfig]):
    async def write(self, batch):
        pass

class Plugin:
    @rcingest.hookimpl
    def register_sinks(self, register):
        register("bench_discard", DiscardSink)

manager = make_plugin_manager(extra=[("bench", Plugin())])
build_cli(manager).main(sys.argv[1:], obj=manager, prog_name="rcingest")
"""


def write_pipeline(
    workdir: Path,
    database: str,
    synchronous: str = "NORMAL",
    ack: str | None = None,
    inbox: str | None = None,
    name: str = "webhook.yaml",
    inbox_defer: float | None = None,
    normaliser: str | None = None,
) -> Path:
    """The daemon's pipeline; ``database=""`` discards batches instead of storing them.

    ``ack`` (``"inbox"`` or ``"committed"``) and ``inbox`` (its SQLite file or
    URL) are written only when given, so that a daemon without the inbox keys
    still loads the pipeline.
    """
    path = workdir / name
    extra = ""
    if ack is not None:
        extra += f"\n    ack: {ack}"
    if inbox is not None:
        extra += f"\n    inbox: '{inbox}'"
    if inbox_defer is not None:  # else the daemon's default
        extra += f"\n    inbox_defer: {inbox_defer}"
    if normaliser is not None:  # "subprocess": the normaliser in a process of its own
        extra += f"\n    normaliser: {normaliser}"
    sink = (
        f"type: database\n    config: {{database: '{database}', synchronous: {synchronous}}}"
        if database
        else "type: bench_discard"
    )
    path.write_text(
        f"""name: bench-webhooks
timezone: America/Phoenix
source:
  type: bitbucket_webhook
  config:
    secret: ${{BITBUCKET_WEBHOOK_SECRET}}
    backfill_queue: '{workdir}/backfill.db'{extra}
enrichers:
  - type: story_keys
sinks:
  - {sink}
batch: {{size: 1000, queue: 20000}}
summary_interval: 3600
""",
        encoding="utf-8",
    )
    return path


def start_daemon(
    pipeline: Path,
    port: int,
    log: Path,
    database: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``rcingest serve`` as a subprocess (the real CLI), stderr to ``log``.

    ``database=""`` runs it with the discarding sink (see ``NULL_SINK_MAIN``);
    ``env`` adds variables (e.g. ``RCINGEST_KILL_AT`` for the kill test).
    """
    env = {**os.environ, "BITBUCKET_WEBHOOK_SECRET": SECRET, **(env or {})}
    main = "from rcingest.cli import main; main()" if database != "" else NULL_SINK_MAIN
    cmd = [sys.executable, "-c", main]
    cmd += ["serve", str(pipeline), "--port", str(port), "-q"]
    if database:
        cmd += ["--database", database]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"), cwd=pipeline.parent
    )
    wait_port(port, proc)
    return proc


def wait_normaliser(port: int, timeout: float = 30.0) -> None:
    """Wait until the daemon's /readyz lists a normaliser process that has reported
    (``normaliser: subprocess``: it loads the pipeline after the receiver listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if json.loads(r.read()).get("normalisers"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no normaliser reported on :{port} within {timeout}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


BARE_SERVER = """
import sys
from aiohttp import web

async def handle(request):
    await request.read()
    return web.Response(text="ok")

app = web.Application()
app.router.add_post("/webhooks/bitbucket", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_bare(port: int) -> subprocess.Popen[bytes]:
    """The ceiling: an aiohttp handler that only reads the body and answers 200."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(port)], stdout=subprocess.DEVNULL
    )
    wait_port(port, proc)
    return proc


def start_fastapi(
    port: int, database: Path, log: Path, wal: bool = False
) -> subprocess.Popen[bytes]:
    """bench/fastapi_receiver.py under uvicorn, one worker, writing to ``database``.

    ``wal``: its variant with WAL and synchronous=NORMAL instead of SQLite's defaults.
    """
    env = {**os.environ, "RECEIVER_DB": str(database), "RECEIVER_SECRET": SECRET}
    env["RECEIVER_WAL"] = "1" if wal else "0"
    cmd = [
        sys.executable, "-m", "uvicorn", "fastapi_receiver:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT / "bench", stdout=subprocess.DEVNULL, stderr=log.open("ab")
    )
    wait_port(port, proc)
    return proc


def inbox_supported() -> bool:
    """Whether this checkout's webhook source has the inbox (its ``ack`` key)."""
    from rcingest.default_plugins.bitbucket_webhook import WebhookConfig

    return "ack" in WebhookConfig.__struct_fields__


def scrape(port: int, timeout: float = 2.0) -> dict[str, float]:
    """``GET /metrics`` of the daemon: unlabelled series name -> value (labelled ones summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads) and of its
    running children (the normaliser process of ``normaliser: subprocess``), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for kid in children(pid):
        try:
            total += cpu_seconds(kid)
        except OSError:
            continue  # it just exited
    return total


def children(pid: int) -> list[int]:
    """The pids of the running children of ``pid``."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def run_wrk(
    script: Path, port: int, args: list[str], connections: int, seconds: int
) -> dict[str, object]:
    """One wrk run (one thread) of a script of ours that prints a JSON line; adds wrk's CPU."""
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
        f"http://127.0.0.1:{port}{PATH}", "--", *args,
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    r: dict[str, object] = json.loads(line)
    r["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r
