"""Burst benchmark of the webhook inbox (issue 15): rcingest serve vs two baselines, same wrk.

5,000 signed ``repo:push`` deliveries of 3-5 commits, 32 in flight, one wrk
thread on loopback (bench/webhook.lua: pre-signed bodies, stops after
``--count`` responses, ``-d`` bounds time). Each round starts every server
fresh, in turn (interleaved, so that the machine's noise hits them alike):

* ``bare``: an aiohttp handler that only reads the body (the ceiling);
* ``fastapi``: bench/fastapi_receiver.py, a textbook FastAPI + SQLite
  receiver under uvicorn (verify, insert, commit per request);
* ``fastapi_wal`` (only with ``--kinds``): the same receiver on WAL with
  synchronous=NORMAL, the durability setting rcingest runs with;
* ``committed``: ``rcingest serve`` acknowledging after the rows are
  committed (``ack: committed``; today's path), SQLite WAL, synchronous=NORMAL;
* ``inbox``: ``rcingest serve`` acknowledging once the raw delivery is in the
  inbox (``ack: inbox``), normalising behind it; only when this checkout has
  the inbox. After wrk stops, the run waits (bounded) until the inbox is
  drained and then checks every 2xx delivery is in ``deliveries``;
* ``split`` (only with ``--kinds``): ``inbox`` with ``normaliser:
  subprocess``, the normaliser in a process of its own (its CPU is counted
  with the server's).

The rate is acknowledged deliveries per second (2xx answers from the first
request to the ``--count``-th response); the CPU seconds of the server and of
wrk over the run tell which one was the limit.

    python bench/bench_inbox.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import (
    ROOT,
    cpu_seconds,
    free_port,
    inbox_supported,
    percentile,
    run_wrk,
    scrape,
    start_bare,
    start_daemon,
    start_fastapi,
    stop,
    wait_normaliser,
    write_pipeline,
    write_wrk_data,
)

LUA = ROOT / "bench" / "webhook.lua"


def wait_drained(port: int, inbox: Path, deadline_s: float) -> float | None:
    """Seconds until the inbox has nothing pending (from /metrics), None if not in time."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        try:
            pending = scrape(port).get("rcingest_webhook_inbox_pending")
        except OSError:
            pending = None
        if pending is None:  # no gauge: ask the inbox itself
            with sqlite3.connect(inbox, timeout=5) as conn:
                pending = conn.execute(
                    "SELECT COUNT(*) FROM webhook_inbox WHERE state IN ('pending', 'failed')"
                ).fetchone()[0]
        if pending == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def one_round(kind: str, workdir: Path, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    log = workdir / f"{kind}.log"
    db = workdir / f"{kind}-{port}.db"
    inbox = workdir / f"inbox-{port}.db"
    if kind == "bare":
        proc = start_bare(port)
    elif kind in ("fastapi", "fastapi_wal"):
        proc = start_fastapi(port, db, log, wal=kind == "fastapi_wal")
    else:
        ack = ("inbox" if kind == "split" else kind) if inbox_supported() else None
        pipeline = write_pipeline(
            workdir,
            str(db),
            args.synchronous,
            ack=ack,
            inbox=str(inbox) if ack else None,
            inbox_defer=args.inbox_defer if kind == "inbox" else None,
            normaliser="subprocess" if kind == "split" else None,
        )
        proc = start_daemon(pipeline, port, log)
        if kind == "split":
            wait_normaliser(port)
    r: dict[str, Any] = {}
    try:
        cpu0 = cpu_seconds(proc.pid)
        r = run_wrk(LUA, port, [str(data), str(args.count)], args.connections, args.seconds)
        r["server_cpu_s"] = cpu_seconds(proc.pid) - cpu0
        if kind in ("inbox", "split"):
            r["drain_s"] = wait_drained(port, inbox, args.drain)
    finally:
        r["exit_code"] = stop(proc)
    if r["elapsed_s"] <= 0:
        raise RuntimeError(f"{kind}: wrk did not reach {args.count} responses: {r}")
    r["acked"] = r["requests"] - r["non2xx"]
    r["rps"] = r["acked"] / r["elapsed_s"]
    if kind != "bare":
        r["stored"] = count_rows(db, "deliveries")
        r["commits"] = count_rows(db, "commits")
        # wrk may have more requests in flight than it counts once it stops:
        # every 2xx it counted must be stored; extra stored rows are those.
        if r["stored"] < r["acked"]:
            raise RuntimeError(f"{kind}: {r['acked']} acknowledged, {r['stored']} stored")
    if kind in ("inbox", "split"):
        with sqlite3.connect(inbox) as conn:
            r["inbox_states"] = dict(
                conn.execute("SELECT state, COUNT(*) FROM webhook_inbox GROUP BY state")
            )
            # Received to normalised, per delivery: the lag the burst built up,
            # and the end-to-end time until the last one's rows were committed.
            spans = [
                done - received
                for received, done in conn.execute(
                    "SELECT received_at, done_at FROM webhook_inbox WHERE done_at IS NOT NULL"
                )
            ]
            first, last = conn.execute(
                "SELECT MIN(received_at), MAX(done_at) FROM webhook_inbox"
            ).fetchone()
        if spans:
            r["delay_p50_s"] = percentile(spans, 50)
            r["delay_p99_s"] = percentile(spans, 99)
            r["end_to_end_s"] = last - first
    return r


def describe(kind: str, r: dict[str, Any]) -> str:
    s = (
        f"{kind:9s}: {r['acked']:.0f} acked, {r['rps']:7.0f} deliveries/s, "
        f"p50 {r['p50_us'] / 1000:5.1f} ms, p99 {r['p99_us'] / 1000:5.1f} ms, "
        f"non-2xx {r['non2xx']:.0f}; CPU server {r['server_cpu_s']:.1f} s / "
        f"wrk {r['wrk_cpu_s']:.1f} s in {r['elapsed_s']:.2f} s"
    )
    if "stored" in r:
        s += f"; stored {r['stored']} deliveries / {r['commits']} commits"
    if kind in ("inbox", "split"):
        drain = r["drain_s"]
        s += f"; drained {'NOT in time' if drain is None else f'{drain:.2f} s'} after wrk"
        s += f"; inbox {r['inbox_states']}"
        if "end_to_end_s" in r:
            s += (
                f"; received to normalised p50 {r['delay_p50_s']:.2f} s, p99 "
                f"{r['delay_p99_s']:.2f} s; all normalised {r['end_to_end_s']:.2f} s after "
                "the first arrived"
            )
    return s


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=30, help="time bound per wrk run")
    parser.add_argument("--drain", type=float, default=30.0, help="bound on the inbox drain")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--kinds", default="bare,fastapi,committed,inbox")
    parser.add_argument(
        "--inbox-defer", type=float, help="the inbox's inbox_defer (default: the daemon's)"
    )
    parser.add_argument("--json", type=Path, help="also write every round here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    kinds = [k for k in args.kinds.split(",") if k not in ("inbox", "split") or inbox_supported()]
    if len(kinds) < len(args.kinds.split(",")):
        print("this checkout has no inbox (no `ack` key): inbox runs skipped", flush=True)
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="rcingest-bench-inbox-") as tmp:
        workdir = Path(tmp)
        data = workdir / "deliveries.tsv"
        # Unique deliveries for the count plus whatever is in flight when wrk stops.
        write_wrk_data(data, args.count + args.connections * 2)
        for n in range(args.rounds):
            for kind in kinds:
                r = one_round(kind, workdir, data, args)
                results[kind].append(r)
                print(f"round {n + 1} {describe(kind, r)}", flush=True)
    summary = summarise(results)
    print_table(summary)
    print(json.dumps({"summary": summary}, sort_keys=True))
    if args.json:
        args.json.write_text(json.dumps({"rounds": results, "summary": summary}, indent=1))


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, rounds in results.items():
        out[kind] = {
            "rps": statistics.median(r["rps"] for r in rounds),
            "p50_ms": statistics.median(r["p50_us"] for r in rounds) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in rounds) / 1000,
            "rounds_rps": [round(r["rps"]) for r in rounds],
            "rounds_p99_ms": [r["p99_us"] / 1000 for r in rounds],
        }
        if all("end_to_end_s" in r for r in rounds):
            out[kind]["end_to_end_s"] = statistics.median(r["end_to_end_s"] for r in rounds)
            out[kind]["delay_p99_s"] = statistics.median(r["delay_p99_s"] for r in rounds)
    bare = out.get("bare", {}).get("rps")
    fastapi = out.get("fastapi", {}).get("rps")
    for kind in ("committed", "inbox", "split"):
        if kind in out:
            if bare:
                out[kind]["x_bare"] = out[kind]["rps"] / bare
            if fastapi:
                out[kind]["x_fastapi"] = out[kind]["rps"] / fastapi
    return out


def print_table(summary: dict[str, Any]) -> None:
    print("\n| server | median deliveries/s | p50 ms | p99 ms | x bare | x fastapi | rounds |")
    print("|---|---|---|---|---|---|---|")
    for kind, s in summary.items():
        xb = f"{s['x_bare']:.2f}" if "x_bare" in s else ""
        xf = f"{s['x_fastapi']:.1f}" if "x_fastapi" in s else ""
        rounds = ", ".join(f"{v:,}" for v in s["rounds_rps"])
        print(
            f"| {kind} | {s['rps']:,.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {xb} | {xf} "
            f"| {rounds} |"
        )
    for kind in ("inbox", "split"):
        if kind not in summary:
            continue
        s = summary[kind]
        print(
            f"\ntargets ({kind}): >= 0.4x bare: {s.get('x_bare', 0):.2f}x; >= 6x fastapi: "
            f"{s.get('x_fastapi', 0):.1f}x; p99 < 20 ms: {s['p99_ms']:.1f} ms"
        )
        if "end_to_end_s" in s:
            print(
                f"{kind}: every delivery normalised {s['end_to_end_s']:.2f} s after the first "
                f"arrived (median of rounds); received to normalised p99 {s['delay_p99_s']:.2f} s"
            )


if __name__ == "__main__":
    main()
