"""PR security bot end to end: a ``pullrequest:updated`` delivery to the report on the pull request.

``rcingest serve config/pr-security.example.yaml`` runs as a real subprocess
(only its API host, port and repositories changed, as in
tests/test_pr_security_example.py); the fake Bitbucket runs in this script's
event loop with 30 ms latency on every request and records every write.
Each of ``--prs`` repositories has one open pull request, with a planted diff
holding a fresh secret. For each, the clock runs from just before the signed
POST to the moment the fake holds all of it for that source head: the final
build status (``FAILED``, not ``INPROGRESS``), the Code Insights report with
its annotations, and the summary comment (polled every 5 ms). Two passes,
each on its own daemon and fake, so the second does not see heads the first
scanned:

* sequential: one delivery at a time, the next after the previous is reported;
* burst: every delivery posted back to back, each timed from its own POST.

Bounded: ``--prs`` deliveries per pass, ``--timeout`` seconds per pull request.

    python bench/bench_pr_bot.py
    python bench/bench_pr_bot.py --prs 40 --latency 0.03
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan_corpus import KINDS

from rcingest.testing import FakeBitbucket, Faults, GenSpec
from rcingest.testing.fake_bitbucket.app import render_pr
from rcingest.webhooks import sign

ROOT = Path(__file__).resolve().parents[1]
HOOK_SECRET = "bench-prbot-whsec-Q8m2Lx7V"
API_TOKEN = "bench-prbot-api-token-Zk81"
KEY = "rcingest-secrets"
POLL = 0.005


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_pipeline(workdir: Path, base_url: str, port: int, repos: list[str]) -> Path:
    text = (ROOT / "config" / "pr-security.example.yaml").read_text()
    text = text.replace("https://api.bitbucket.org/2.0", base_url)
    text = text.replace("port: 8080", f"port: {port}")
    text = text.replace("scan_repositories: [acme/api, acme/web]", f"scan_repositories: {repos}")
    path = workdir / "pr-security.yaml"
    path.write_text(text)
    return path


def planted_diff(rng: random.Random, n: int) -> tuple[str, list[str]]:
    """A config change adding two fresh secrets (two rule kinds) at lines 3 and 5."""
    rules = rng.sample(sorted(KINDS), 2)
    values, lines = [], []
    for rule in rules:
        value, line = KINDS[rule](rng)
        values.append(value)
        lines.append(line)
    body = f" # service {n}\n LOG_LEVEL=info\n+{lines[0]}\n TIMEOUT=30\n+{lines[1]}\n"
    diff = (
        f"diff --git a/deploy/app{n}.env b/deploy/app{n}.env\n"
        "index 1111111..2222222 100644\n"
        f"--- a/deploy/app{n}.env\n+++ b/deploy/app{n}.env\n"
        f"@@ -1,3 +1,5 @@\n{body}"
    )
    return diff, values


def reported(fake: FakeBitbucket, repo: str, pr_id: int, head: str) -> bool:
    w = fake.writes
    status = w.statuses.get((repo, head), {}).get(KEY, {})
    return (
        status.get("state") == "FAILED"
        and KEY in w.reports.get((repo, head), {})
        and bool(w.annotations.get((repo, head, KEY)))
        and bool(w.live_comments(repo, pr_id))
    )


async def wait_port(proc: asyncio.subprocess.Process, port: int) -> None:
    for _ in range(600):  # 30 s
        if proc.returncode is not None:
            raise RuntimeError(f"rcingest serve exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError("rcingest serve did not listen within 30 s")


async def one_pass(burst: bool, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    rng = random.Random(args.seed)
    async with FakeBitbucket(GenSpec(repositories=args.prs), Faults(latency=args.latency)) as fake:
        targets: list[tuple[str, int, str, bytes]] = []
        secrets: list[str] = []
        for n, name in enumerate(sorted(fake.data.repos)):
            repo = fake.data.repos[name]
            pr = next(p for p in repo.pull_requests if p.state == "OPEN")
            diff, values = planted_diff(rng, n)
            secrets += values
            fake.writes.plant_diff(name, pr.id, diff)
            body = json.dumps(
                {"pullrequest": render_pr(fake.data, repo, pr), "repository": {"full_name": name}}
            ).encode()
            targets.append((name, pr.id, pr.commits[0], body))
        port = free_port()
        path = write_pipeline(workdir, fake.base_url, port, [t[0] for t in targets])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
        env.update(
            BITBUCKET_WEBHOOK_SECRET=HOOK_SECRET,
            BITBUCKET_EMAIL="bot@example.com",
            BITBUCKET_API_TOKEN=API_TOKEN,
        )
        cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", str(path)]
        cmd += ["--log-file", str(workdir / "serve.log")]
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=workdir, env=env, stderr=asyncio.subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}/webhooks/bitbucket"
        latencies: list[float] = []
        failures = 0
        requests_before = fake.counters.total
        try:
            await wait_port(proc, port)
            async with aiohttp.ClientSession() as session:

                async def deliver(i: int, target: tuple[str, int, str, bytes]) -> float:
                    name, pr_id, head, body = target
                    headers = {
                        "X-Event-Key": "pullrequest:updated",
                        "X-Request-UUID": f"bench-{'b' if burst else 's'}-{i}",
                        "X-Hub-Signature": sign(body, HOOK_SECRET),
                    }
                    start = time.perf_counter()
                    async with session.post(url, data=body, headers=headers) as resp:
                        if resp.status != 200:
                            raise RuntimeError(f"delivery {i}: HTTP {resp.status}")
                    deadline = start + args.timeout
                    while not reported(fake, name, pr_id, head):
                        if time.perf_counter() > deadline:
                            raise TimeoutError(
                                f"{name} PR {pr_id}: not reported in {args.timeout}s"
                            )
                        await asyncio.sleep(POLL)
                    return time.perf_counter() - start

                if burst:
                    results = await asyncio.gather(
                        *(deliver(i, t) for i, t in enumerate(targets)), return_exceptions=True
                    )
                else:
                    results = []
                    for i, t in enumerate(targets):
                        try:
                            results.append(await deliver(i, t))
                        except (RuntimeError, TimeoutError) as exc:
                            results.append(exc)
                for r in results:
                    if isinstance(r, BaseException):
                        failures += 1
                        print(f"  failed: {r}")
                    else:
                        latencies.append(r)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        received = fake.writes.received_text()
        leaked = sum(1 for s in secrets if s in received or s[:10] in received)
        log = (workdir / "serve.log").read_text(errors="replace")
        leaked += sum(1 for s in secrets if s in log)
        return {
            "latencies": latencies,
            "failures": failures,
            "requests_per_pr": (fake.counters.total - requests_before) / max(1, len(targets)),
            "writes_per_pr": len(fake.writes.received) / max(1, len(targets)),
            "leaked": leaked,
            "exit": proc.returncode,
        }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]  # nearest rank


async def main_async(args: argparse.Namespace) -> int:
    status = 0
    for burst in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-prbot-") as tmp:
            r = await one_pass(burst, args, Path(tmp))
        lat = r["latencies"]
        assert isinstance(lat, list)
        name = "burst" if burst else "sequential"
        if lat:
            print(
                f"{name:10} n={len(lat)} p50 {1000 * statistics.median(lat):.0f} ms  "
                f"p99 {1000 * percentile(lat, 99):.0f} ms  min {1000 * min(lat):.0f} ms  "
                f"max {1000 * max(lat):.0f} ms  fake requests/PR {r['requests_per_pr']:.1f}  "
                f"writes/PR {r['writes_per_pr']:.1f}  failures {r['failures']}  "
                f"secrets seen in API bodies or log: {r['leaked']}  daemon exit {r['exit']}"
            )
        if r["failures"] or r["leaked"] or not lat:
            status = 1
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prs", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.03, help="fake's seconds per request")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per pull request")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    print(f"{args.prs} pull requests, fake Bitbucket latency {1000 * args.latency:.0f} ms/request")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
