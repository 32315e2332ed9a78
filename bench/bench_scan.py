"""Scan benchmark: the bitbucket_rest source vs a minimal hand-written aiohttp loop.

Both fetch the same data from the fake Bitbucket, which runs in its own
process on 127.0.0.1 with 30 ms latency per request, at 16 requests in flight:
5 repositories x 2 branches x 300 commits, a window holding 100 commits per
branch (1,000 commits, about 10,000 file rows). Then the same scan with every
50th request answered 429 (Retry-After: 1), and a large scan for peak RSS and
cost per commit. Each measurement runs in a fresh child process (clean peak
RSS) against a fresh server (clean counters); everything is bounded in time.

    python bench/bench_scan.py                      # all scenarios
    python bench/bench_scan.py --large-commits 20000 # a smaller large scan
    python bench/bench_scan.py --skip-large
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

END = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STEP_MINUTES = 10.0
TIMEOUT = 900  # seconds, per child


def window_for(in_window: int) -> tuple[datetime, datetime]:
    """A window holding the newest ``in_window`` commits of every branch."""
    until = END + timedelta(minutes=1)
    return until - timedelta(minutes=STEP_MINUTES * in_window - 1), until


# --- children ---------------------------------------------------------------------


async def child_rcingest(base_url: str, in_window: int) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    from rcingest.default_plugins.bitbucket_rest import BitbucketRestConfig, BitbucketRestSource
    from rcingest.interfaces import RunContext
    from rcingest.records import Commit

    since, until = window_for(in_window)
    ctx = RunContext(
        run_id="bench",
        pipeline_name="bench",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=until,
        base_dir=Path.cwd(),
        source_id="bench:src",
    )
    cfg = BitbucketRestConfig(
        workspace="acme",
        base_url=base_url,
        concurrency=16,
        requests_per_hour=1_000_000,  # the budget code runs, but never paces here
        default_branches=["main", "feature/OPS-311-timeout"],
        parallel_repositories=int(os.environ.get("BENCH_PARALLEL", "4")),
        since=since,
        until=until,
    )
    commits = files = records = 0
    source = BitbucketRestSource(cfg, ctx)
    async with source:
        async for item in source.records({}):
            records += 1
            if isinstance(item, Commit):
                commits += 1
                files += len(item.files or [])
    return {"commits": commits, "files": files, "records": records, "stats": ctx.stats.snapshot()}


async def child_hand(base_url: str, in_window: int) -> dict[str, Any]:
    """The practical limit: one session, a semaphore, the same requests, no framework."""
    import aiohttp

    since, until = window_for(in_window)
    slots = asyncio.Semaphore(16)
    counts = {"commits": 0, "files": 0, "requests": 0}
    repos = [f"acme/service-{i:02d}" for i in range(int(os.environ["BENCH_REPOS"]))]

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

        async def get(url: str, params: dict[str, Any] | None = None) -> Any:
            async with slots:
                counts["requests"] += 1
                async with session.get(url, params=params) as resp:
                    resp.raise_for_status()
                    return await resp.json()

        async def diffstat(repo: str, sha: str) -> None:
            page = await get(f"{base_url}/repositories/{repo}/diffstat/{sha}", {"pagelen": 1000})
            counts["files"] += len(page["values"])

        async def branch(
            repo: str, name: str, tasks: list[asyncio.Task[None]], seen: set[str]
        ) -> None:
            url: str | None = f"{base_url}/repositories/{repo}/commits?include={name}&pagelen=100"
            while url:
                page = await get(url)
                inside = 0
                for c in page["values"]:
                    date = datetime.fromisoformat(c["date"])
                    if since <= date < until:
                        inside += 1
                        if c["hash"] not in seen:
                            seen.add(c["hash"])
                            counts["commits"] += 1
                            tasks.append(asyncio.create_task(diffstat(repo, c["hash"])))
                url = page.get("next") if inside else None

        async def prs(repo: str) -> None:
            q = f"updated_on >= {since.isoformat()} AND updated_on < {until.isoformat()}"
            params = [("q", q), ("pagelen", "50")] + [
                ("state", s) for s in ("OPEN", "MERGED", "DECLINED", "SUPERSEDED")
            ]
            async with slots:
                counts["requests"] += 1
                async with session.get(
                    f"{base_url}/repositories/{repo}/pullrequests", params=params
                ) as r:
                    listing = await r.json()
            for pr in listing["values"]:
                await get(
                    f"{base_url}/repositories/{repo}/pullrequests/{pr['id']}/commits",
                    {"pagelen": 100},
                )

        async def repo_scan(repo: str) -> None:
            await get(f"{base_url}/repositories/{repo}")
            tasks: list[asyncio.Task[None]] = []
            seen: set[str] = set()
            await asyncio.gather(
                branch(repo, "main", tasks, seen),
                branch(repo, "feature/OPS-311-timeout", tasks, seen),
                prs(repo),
            )
            await asyncio.gather(*tasks)

        await asyncio.gather(*(repo_scan(r) for r in repos))
    return counts


def run_child(kind: str, base_url: str, in_window: int) -> dict[str, Any]:
    fn = child_rcingest if kind == "rcingest" else child_hand
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = asyncio.run(fn(base_url, in_window))
    out["wall_s"] = round(time.perf_counter() - wall0, 3)
    out["cpu_s"] = round(time.process_time() - cpu0, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


# --- the driver -------------------------------------------------------------------


def start_server(
    repos: int, commits: int, own: int, extra: list[str]
) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable, "-m", "rcingest.testing.fake_bitbucket",
        "--repositories", str(repos), "--branches", "2", "--commits", str(commits),
        "--own-commits", str(own), "--step-minutes", str(STEP_MINUTES),
        "--end", END.isoformat(), "--latency", "0.03", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY ") or proc.poll() is not None:
            break
    if not line.startswith("READY "):
        proc.terminate()
        raise SystemExit(f"fake Bitbucket did not start: {line!r}")
    return proc, line.split()[1]


def scenario(
    name: str, kind: str, repos: int, commits: int, own: int, extra: list[str]
) -> dict[str, Any]:
    proc, base_url = start_server(repos, commits, own, extra)
    try:
        env = {**os.environ, "BENCH_REPOS": str(repos)}
        cmd = [sys.executable, __file__, "--child", kind, "--base-url", base_url]
        cmd += ["--in-window", str(own)]
        child = subprocess.run(
            cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
        )
        if child.returncode != 0:
            raise SystemExit(f"{name}: child failed:\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        origin = base_url.rsplit("/2.0", 1)[0]
        # The fake's counters, on loopback.
        with urllib.request.urlopen(f"{origin}/_fake/stats", timeout=10) as resp:
            server = json.loads(resp.read())
    finally:
        proc.terminate()  # the server we started, by its handle
        proc.wait(timeout=30)
    result.update(
        name=name,
        requests=server["total"],
        peak_in_flight=server["peak_in_flight"],
        statuses=server["statuses"],
        req_per_s=round(server["total"] / result["wall_s"], 1),
        routes=server["routes"],
    )
    return result


def row(r: dict[str, Any]) -> str:
    return (
        f"{r['name']:<28} {r['wall_s']:>8.2f} {r['requests']:>8} {r['req_per_s']:>8.1f} "
        f"{r['cpu_s']:>7.2f} {r['peak_rss_mb']:>8.1f} {r['commits']:>7} {r['files']:>7} "
        f"{r['peak_in_flight']:>5}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=["rcingest", "hand"])
    p.add_argument("--base-url")
    p.add_argument("--in-window", type=int, default=100)
    p.add_argument("--large-commits", type=int, default=100_000)
    p.add_argument("--skip-large", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.base_url, args.in_window)))
        return

    results = [
        scenario("hand-written aiohttp loop", "hand", 5, 300, 100, []),
        scenario("rcingest bitbucket_rest", "rcingest", 5, 300, 100, []),
        scenario("rcingest, 429 every 50th", "rcingest", 5, 300, 100,
                 ["--rate-limit-every", "50", "--retry-after", "1"]),
        scenario("rcingest, 429 by count only", "rcingest", 5, 300, 100,
                 ["--rate-limit-every", "50", "--retry-after", "1", "--no-honour-retries"]),
    ]  # fmt: skip
    if not args.skip_large:
        # Same shape, more repositories: 2 branches x `per_branch` in the window each.
        per_branch = 1000
        repos = max(1, args.large_commits // (2 * per_branch))
        results.append(
            scenario(f"rcingest, {repos * 2 * per_branch} commits", "rcingest", repos,
                     3 * per_branch, per_branch, [])
        )  # fmt: skip
    print(f"{'scenario':<28} {'wall s':>8} {'requests':>8} {'req/s':>8} {'CPU s':>7} "
          f"{'RSS MB':>8} {'commits':>7} {'files':>7} {'peak':>5}")  # fmt: skip
    for r in results:
        print(row(r))
    hand, ours, limited = results[0], results[1], results[2]
    ratio = ours["wall_s"] / hand["wall_s"]
    print(f"wall ratio rcingest / hand-written: {ratio:.3f} (target <= 1.15)")
    print(f"requests: rcingest {ours['requests']}, hand-written {hand['requests']}")
    extra = limited["wall_s"] - ours["wall_s"]
    refused = limited["statuses"].get("429", 0)
    print(f"429 variant: +{extra:.2f} s over no 429s (target <= 1.5 s), {refused} answered 429")
    strict = results[3]
    extra = strict["wall_s"] - ours["wall_s"]
    print(f"429 by count only (a retry can be 429'd again): +{extra:.2f} s")
    if len(results) > 4:
        large = results[4]
        per_small = ours["wall_s"] / ours["commits"] * 1000
        per_large = large["wall_s"] / large["commits"] * 1000
        cpu_small = ours["cpu_s"] / ours["commits"] * 1000
        cpu_large = large["cpu_s"] / large["commits"] * 1000
        print(
            f"large scan: peak RSS {large['peak_rss_mb']} MB (target < 200); wall per commit "
            f"{per_large:.3f} ms vs {per_small:.3f} ms ({per_large / per_small - 1:+.1%}); "
            f"CPU per commit {cpu_large:.3f} ms vs {cpu_small:.3f} ms "
            f"({cpu_large / cpu_small - 1:+.1%})"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
