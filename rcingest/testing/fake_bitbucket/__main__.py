"""Run the fake Bitbucket as a process: ``python -m rcingest.testing.fake_bitbucket``.

Prints ``READY <base_url>`` once it listens (on 127.0.0.1, port 0 by default)
and serves until SIGTERM or SIGINT. The benchmark runs it this way so that the
server does not share a core with the client it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import datetime, timedelta

from rcingest.testing.fake_bitbucket import FakeBitbucket, Faults, GenSpec


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rcingest.testing.fake_bitbucket")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--workspace", default="acme")
    p.add_argument("--repositories", type=int, default=3)
    p.add_argument("--branches", type=int, default=3)
    p.add_argument("--commits", type=int, default=60)
    p.add_argument("--own-commits", type=int, default=None)
    p.add_argument("--step-minutes", type=float, default=30.0)
    p.add_argument("--end", type=datetime.fromisoformat, default=None, help="ISO 8601, aware")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--rate-limit-every", type=int, default=0)
    p.add_argument("--retry-after", type=float, default=None)
    p.add_argument(
        "--no-honour-retries",
        action="store_true",
        help="429 purely by count, even a request repeated after its Retry-After",
    )
    p.add_argument(
        "--expect-auth-env",
        metavar="VAR",
        help="answer 401 unless the Authorization header equals $VAR "
        "(an environment variable, so the credential stays out of the process list)",
    )
    p.add_argument("--error-every", type=int, default=0)
    p.add_argument("--diffstat-timeout-every", type=int, default=0)
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    spec = GenSpec(
        workspace=args.workspace,
        repositories=args.repositories,
        branches=args.branches,
        commits=args.commits,
        own_commits=args.own_commits,
        step=timedelta(minutes=args.step_minutes),
        end=args.end,
        seed=args.seed,
    )
    faults = Faults(
        latency=args.latency,
        rate_limit_every=args.rate_limit_every,
        retry_after=args.retry_after,
        honour_retries=not args.no_honour_retries,
        error_every=args.error_every,
        diffstat_timeout_every=args.diffstat_timeout_every,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    expected = os.environ[args.expect_auth_env] if args.expect_auth_env else None
    async with FakeBitbucket(spec, faults, port=args.port, expected_auth=expected) as fake:
        print(f"READY {fake.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m rcingest.testing.fake_bitbucket``."""
    asyncio.run(_serve(_parse(argv)))
    sys.exit(0)


if __name__ == "__main__":
    main()
