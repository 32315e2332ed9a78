"""``rcingest check --all-open`` over 500 open pull requests (issue 13 benchmark).

The fake Bitbucket runs in this script's event loop with 30 ms latency on
every request. ``--repositories`` repositories get ``--branches`` branches,
which gives one pull request per branch, a quarter of them open. Each
repository has two default reviewers, each open pull request one approval and
a build status from another tool. ``rcingest check`` runs as a real
subprocess with the policy of ``config/compliance.example.yaml``, which
needs every read an evaluation can make except the commits.

It reports:

* the requests the fake answered, per route and per pull request (target:
  at most 3 on average);
* the wall time, and the floor of 16 requests in flight: the requests times
  the latency, divided by 16.

Bounded: one run per ``--concurrency`` value, each under ``--timeout`` seconds.

    python bench/bench_compliance.py
    python bench/bench_compliance.py --concurrency 16 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from rcingest.testing import FakeBitbucket, Faults, GenSpec

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-compliance-token-Lm40"


def pipeline(folder: Path, base_url: str, repos: list[str], concurrency: int) -> Path:
    text = (ROOT / "config" / "compliance.example.yaml").read_text()
    text = text.replace("https://api.bitbucket.org/2.0", base_url)
    text = text.replace("repositories: [acme/api, acme/web]", f"repositories: [{', '.join(repos)}]")
    # The REST client's own bound on requests in flight follows --concurrency,
    # and its hourly budget (1,000 by default, Bitbucket's for a user's token)
    # is lifted: 500 pull requests need about 1,050 requests.
    text = text.replace(
        "    backfill_queue: data/bitbucket/webhook-backfill.db",
        "    backfill_queue: data/bitbucket/webhook-backfill.db\n"
        f"    concurrency: {concurrency}\n    requests_per_hour: 0",
    )
    path = folder / "compliance.yaml"
    path.write_text(text)
    return path


async def one_run(args: argparse.Namespace, concurrency: int) -> dict[str, float]:
    spec = GenSpec(repositories=args.repositories, branches=args.branches, commits=8)
    async with FakeBitbucket(spec, Faults(latency=args.latency)) as fake:
        review = fake.review
        names = sorted(fake.data.repos)
        open_prs = 0
        for name in names:
            review.set_default_reviewers(name, [review.user("lead"), review.user("qa")])
            for pr in fake.data.repos[name].pull_requests:
                if pr.state == "OPEN" and pr.commits:
                    open_prs += 1
                    review.approve(name, pr.id, review.user("lead"))
                    review.add_status(name, pr.commits[0], "ci-build", "SUCCESSFUL")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            path = pipeline(folder, fake.base_url, names, concurrency)
            env = {k: v for k, v in os.environ.items() if not k.startswith("BITBUCKET_")}
            env.update(BITBUCKET_EMAIL="bench@example.com", BITBUCKET_API_TOKEN=TOKEN)
            env["BITBUCKET_WEBHOOK_SECRET"] = "unused-by-check"
            cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "check"]
            cmd += ["--config", str(path), "--all-open", "--json"]
            cmd += ["--concurrency", str(concurrency)]
            before = fake.counters.total
            routes_before = dict(fake.counters.routes)
            start = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                cwd=folder,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, err = await asyncio.wait_for(proc.communicate(), args.timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise SystemExit(f"check did not finish in {args.timeout} s") from None
            wall = time.perf_counter() - start
            if proc.returncode not in (0, 1):
                raise SystemExit(f"check failed ({proc.returncode}): {err.decode()[-2000:]}")
        requests = fake.counters.total - before
        routes = {
            k: v - routes_before.get(k, 0)
            for k, v in fake.counters.routes.items()
            if v - routes_before.get(k, 0)
        }
    floor = requests * args.latency / concurrency
    print(f"concurrency {concurrency}: {open_prs} open pull requests in {len(names)} repositories")
    print(f"  requests {requests} = {requests / open_prs:.2f} per pull request (target <= 3)")
    for route, n in sorted(routes.items(), key=lambda kv: -kv[1]):
        print(f"    {route:32s} {n:6d}")
    print(
        f"  wall {wall:.2f} s (startup included); floor at {concurrency} in flight"
        f" {floor:.2f} s; ratio {wall / floor:.2f}"
    )
    print(f"  {err.decode().strip().splitlines()[-1]}")
    return {"requests": requests, "per_pr": requests / open_prs, "wall": wall, "floor": floor}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repositories", type=int, default=10)
    parser.add_argument("--branches", type=int, default=201, help="per repository")
    parser.add_argument("--latency", type=float, default=0.03, help="fake's seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    print(f"fake Bitbucket latency {1000 * args.latency:.0f} ms/request")
    for concurrency in args.concurrency:
        await one_run(args, concurrency)


if __name__ == "__main__":
    asyncio.run(main())
