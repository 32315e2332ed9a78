"""The normaliser alone (issue 15): how fast ``rcingest normalise`` empties a full inbox.

Each round writes ``--count`` signed-shape ``repo:push`` deliveries (3-5
commits, 8 repositories; the same as the other webhook benchmarks) straight
into a fresh SQLite inbox, then runs the real ``rcingest normalise`` on it
with the database sink (SQLite, WAL, ``synchronous=NORMAL``) and the
story-key enricher, and reads the rate from the inbox itself: deliveries
marked done per second between the first and the last ``done_at`` (the
process's start-up and the first claim are not counted). Nothing else runs, so this is the
ceiling of the end-to-end rate of ``normaliser: subprocess`` on this
machine, whatever the receiver does.

    python bench/bench_normaliser.py --rounds 3 --count 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import SECRET, delivery, write_pipeline

from rcingest.inbox.db import connect
from rcingest.inbox.model import Arrival


def fill(inbox: Path, count: int) -> None:
    db = connect(str(inbox))
    db.create()
    now = time.time()
    for start in range(0, count, 1000):
        batch = []
        for i in range(start, min(count, start + 1000)):
            uuid, body = delivery(i)
            batch.append(
                Arrival(
                    request_uuid=uuid,
                    event="repo:push",
                    repository=json.loads(body)["repository"]["full_name"],
                    received_at=now,
                    headers={"X-Event-Key": "repo:push", "X-Request-UUID": uuid},
                    body=body,
                )
            )
        db.append(batch)
    db.close()


def one_round(workdir: Path, n: int, args: argparse.Namespace) -> dict[str, float]:
    inbox, db = workdir / f"inbox-{n}.db", workdir / f"commits-{n}.db"
    fill(inbox, args.count)
    pipeline = write_pipeline(
        workdir, str(db), "NORMAL", ack="inbox", inbox=str(inbox), name=f"p{n}.yaml"
    )
    if args.batch:
        text = pipeline.read_text().replace(
            "    ack: inbox", f"    ack: inbox\n    inbox_batch: {args.batch}"
        )
        pipeline.write_text(text)
    env = {**os.environ, "BITBUCKET_WEBHOOK_SECRET": SECRET}
    cmd = [sys.executable, "-m", "rcingest", "normalise", str(pipeline), "-q"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stderr=(workdir / "log").open("ab"))
    try:
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            with sqlite3.connect(inbox) as conn:
                left = conn.execute(
                    "SELECT COUNT(*) FROM webhook_inbox WHERE state <> 'done'"
                ).fetchone()[0]
            if not left:
                break
        else:
            raise SystemExit(f"not drained within {args.timeout}s")
        wall = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(60)
    with sqlite3.connect(inbox) as conn:
        span = "SELECT MIN(done_at), MAX(done_at) FROM webhook_inbox"
        first, last = conn.execute(span).fetchone()
        # The first claim's rows are all done at ``first``: the time they took
        # is not in the span, so they are not in the count either.
        ahead = conn.execute(
            "SELECT COUNT(*) FROM webhook_inbox WHERE done_at = ?", (first,)
        ).fetchone()[0]
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    if stored != args.count:
        raise SystemExit(f"{stored} of {args.count} deliveries stored")
    return {"rate": (args.count - ahead) / (last - first), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, help="inbox_batch (default: the daemon's)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    rates = []
    with tempfile.TemporaryDirectory(prefix="rcingest-bench-normaliser-") as tmp:
        for n in range(args.rounds):
            r = one_round(Path(tmp), n, args)
            rates.append(r["rate"])
            print(
                f"round {n + 1}: {r['rate']:,.0f} deliveries/s normalised "
                f"({args.count} in {r['wall_s']:.1f} s with start-up)",
                flush=True,
            )
    print(f"median {statistics.median(rates):,.0f} deliveries/s over {args.rounds} rounds")


if __name__ == "__main__":
    main()
