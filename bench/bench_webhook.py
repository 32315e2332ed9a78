"""Webhook daemon load benchmark: rcingest serve vs a bare aiohttp handler, same wrk, same run.

2,000 signed ``repo:push`` deliveries of 3-5 commits, 32 in flight, on
loopback; bounded in count (the wrk script stops after ``--count``
responses) and time (``-d``). Each round starts a fresh server; rcingest
serve writes to a fresh SQLite database (WAL, synchronous=NORMAL: durable
against a killed process) through the story_keys enricher and the database
sink, and afterwards every 2xx delivery is checked to be in the database.
A third server, "nodb", is rcingest serve with a sink that discards
batches: the daemon's own cost without the database.

    python bench/bench_webhook.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import (
    PATH,
    ROOT,
    free_port,
    start_bare,
    start_daemon,
    stop,
    write_pipeline,
    write_wrk_data,
)

LUA = ROOT / "bench" / "webhook.lua"


def run_wrk(port: int, data: Path, count: int, connections: int, seconds: int) -> dict[str, float]:
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(LUA),
        f"http://127.0.0.1:{port}{PATH}", "--", str(data), str(count),
    ]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    r = json.loads(line)
    if r["elapsed_s"] <= 0:
        raise RuntimeError(f"wrk did not reach {count} responses within {seconds}s: {out}")
    r["rps"] = r["requests"] / r["elapsed_s"]
    return r


def one_round(kind: str, workdir: Path, data: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    if kind == "bare":
        proc = start_bare(port)
    elif kind == "nodb":
        pipeline = write_pipeline(workdir, "")
        proc = start_daemon(pipeline, port, workdir / "daemon.log", database="")
    else:
        db = workdir / f"commits-{port}.db"
        pipeline = write_pipeline(workdir, str(db), args.synchronous)
        proc = start_daemon(pipeline, port, workdir / "daemon.log")
    try:
        result = run_wrk(port, data, args.count, args.connections, args.seconds)
    finally:
        code = stop(proc)
    if kind == "serve":
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
            commits = conn.execute("SELECT COUNT(*) FROM commits").fetchone()[0]
        ok = result["requests"] - result["non2xx"]
        # wrk may have more requests in flight than it counts once it stops:
        # every 2xx it counted must be stored; extra stored rows are those.
        assert stored >= ok, (stored, ok)
        result.update(stored=stored, commits=commits, exit_code=code)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15, help="time bound per wrk run")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="rcingest-bench-webhook-") as tmp:
        workdir = Path(tmp)
        data = workdir / "deliveries.tsv"
        # Unique deliveries for the count plus whatever is in flight when wrk stops.
        write_wrk_data(data, args.count + args.connections * 2)
        results: dict[str, list[dict[str, float]]] = {"bare": [], "nodb": [], "serve": []}
        for n in range(args.rounds):
            for kind in ("bare", "nodb", "serve"):
                r = one_round(kind, workdir, data, args)
                results[kind].append(r)
                print(
                    f"round {n + 1} {kind:5s}: {r['requests']:.0f} requests, {r['rps']:.0f} req/s, "
                    f"p50 {r['p50_us'] / 1000:.1f} ms, p99 {r['p99_us'] / 1000:.1f} ms, "
                    f"non-2xx {r['non2xx']:.0f}"
                    + (
                        f", stored {r['stored']:.0f} deliveries / {r['commits']:.0f} commits"
                        if kind == "serve"
                        else ""
                    ),
                    flush=True,
                )
    bare = statistics.median(r["rps"] for r in results["bare"])
    nodb = statistics.median(r["rps"] for r in results["nodb"])
    serve = statistics.median(r["rps"] for r in results["serve"])
    p50 = statistics.median(r["p50_us"] for r in results["serve"]) / 1000
    p99 = statistics.median(r["p99_us"] for r in results["serve"]) / 1000
    print(
        f"median: bare {bare:.0f} req/s; rcingest serve {serve:.0f} req/s = "
        f"{serve / bare:.2f}x bare "
        f"(target >= 0.5x); serve p50 {p50:.1f} ms, p99 {p99:.1f} ms (target < 30 ms); "
        f"without a database (discarding sink) {nodb:.0f} req/s = {nodb / bare:.2f}x bare"
    )


if __name__ == "__main__":
    main()
