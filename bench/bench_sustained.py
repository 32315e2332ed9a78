"""Sustained load on the webhook daemon (issue 15): the end-to-end capacity, inbox vs committed.

Three paths: ``committed`` (acknowledged once the records are committed),
``inbox`` (acknowledged on the inbox, normaliser in the same process) and
``split`` (the inbox with ``normaliser: subprocess``: a process of its own).

Each step offers signed ``repo:push`` deliveries (3-5 commits) at a fixed rate
for ``--seconds`` (60) with wrk and bench/webhook_paced.lua: open loop with at
most ``--connections`` in flight, so a server that falls behind shows as the
generator falling behind its schedule ("lateness") and missing the offered
rate. Rates step up (at most 6 steps) until a step is not bounded; every step
starts a fresh daemon on fresh SQLite files (WAL, synchronous=NORMAL). While
it runs, ``/metrics`` is sampled once a second (inbox pending and
normalisation lag; the committed path's queue depth) with the server's CPU.

A step is **bounded** when:

* the generator kept up: at least 97% of the offered rate acknowledged, no
  non-2xx, no socket errors or timeouts, and its lateness over the last 10 s
  below 1 s (answers are not getting slower: on the committed path this is
  "keeps up within its ack timeout, latency not growing");
* inbox path only: the normalisation lag's maximum over the last 10 s of load
  below ``--lag-bound`` (2 s), and the inbox drained (nothing pending) within
  ``--drain`` (10 s) after the load stopped.

The end-to-end capacity of a path is its highest bounded rate; the inbox's is
reported with the p99 of its per-second lag samples. After every step each
2xx delivery is checked to be in ``deliveries``.

    python bench/bench_sustained.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
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
    start_daemon,
    stop,
    wait_normaliser,
    write_pipeline,
    write_wrk_data,
)

LUA = ROOT / "bench" / "webhook_paced.lua"
PENDING = "rcingest_webhook_inbox_pending"
LAG = "rcingest_webhook_normalisation_lag_seconds"
QUEUE = "rcingest_webhook_queue_depth"


class Sampler(threading.Thread):
    """Scrapes /metrics and the server's CPU once a second until stopped."""

    def __init__(self, port: int, pid: int) -> None:
        super().__init__(daemon=True)
        self.port, self.pid = port, pid
        self.samples: list[dict[str, float]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic() - self.t0
            try:
                m = scrape(self.port)
                cpu = cpu_seconds(self.pid)
            except OSError:
                m, cpu = {}, float("nan")
            s = {"t": t, "cpu": cpu}
            for key, name in (("pending", PENDING), ("lag", LAG), ("queue", QUEUE)):
                if name in m:
                    s[key] = m[name]
            self.samples.append(s)
            self.halt.wait(1.0)

    def latest(self) -> dict[str, float]:
        return self.samples[-1] if self.samples else {}


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def one_step(
    path: str, rate: int, workdir: Path, data: Path, args: argparse.Namespace
) -> dict[str, Any]:
    port = free_port()
    db = workdir / f"{path}-{rate}-{port}.db"
    inbox = workdir / f"inbox-{rate}-{port}.db"
    # "split": the inbox path with the normaliser in a process of its own.
    ack = ("inbox" if path == "split" else path) if inbox_supported() else None
    pipeline = write_pipeline(
        workdir,
        str(db),
        "NORMAL",
        ack=ack,
        inbox=str(inbox) if ack else None,
        inbox_defer=args.inbox_defer if path == "inbox" else None,
        normaliser="subprocess" if path == "split" else None,
    )
    proc = start_daemon(pipeline, port, workdir / f"{path}.log")
    if path == "split":
        wait_normaliser(port)
    count = rate * args.seconds
    sampler = Sampler(port, proc.pid)
    r: dict[str, Any] = {"path": path, "offered": rate}
    try:
        sampler.start()
        load_start = time.monotonic() - sampler.t0
        w = run_wrk(
            LUA, port, [str(data), str(rate), str(count)], args.connections, args.seconds + 15
        )
        load_end = time.monotonic() - sampler.t0
        r.update(w)
        drain: float | None = None
        if path != "committed":
            deadline = time.monotonic() + args.drain
            while time.monotonic() < deadline:
                if sampler.latest().get("pending", 1) == 0 and sampler.latest()["t"] > load_end:
                    drain = sampler.latest()["t"] - load_end
                    break
                time.sleep(0.1)
        r["drain_s"] = drain
    finally:
        sampler.halt.set()
        sampler.join()
        r["exit_code"] = stop(proc)
    during = [s for s in sampler.samples if load_start <= s["t"] <= load_end]
    last10 = [s for s in during if s["t"] >= load_end - 10]
    r["acked"] = r["requests"] - r["non2xx"]
    r["achieved"] = r["acked"] / r["elapsed_s"] if r["elapsed_s"] > 0 else 0.0
    late = r["late_ms"]
    r["late_last10_ms"] = max(late[-10:], default=0.0)
    r["late_max_ms"] = max(late, default=0.0)
    # The committed path has no normaliser: its lag gauges (if any) mean nothing.
    inbox_path = path != "committed"
    lags = [s["lag"] for s in during if "lag" in s and inbox_path]
    r["lag_p99_s"] = percentile(lags, 99) if lags else None
    r["lag_max_last10_s"] = max((s["lag"] for s in last10 if "lag" in s), default=None)
    pending = [s["pending"] for s in during if "pending" in s and inbox_path]
    r["pending_max"] = max(pending, default=None)
    r["queue_max"] = max((s["queue"] for s in during if "queue" in s), default=None)
    cpu = [s["cpu"] for s in during if s["cpu"] == s["cpu"]]
    span = during[-1]["t"] - during[0]["t"] if len(during) > 1 else 0
    r["server_cpu_pct"] = 100 * (cpu[-1] - cpu[0]) / span if span else None
    r["wrk_cpu_pct"] = 100 * r["wrk_cpu_s"] / (load_end - load_start)
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    why = []
    if r["achieved"] < 0.97 * rate:
        why.append(f"achieved {r['achieved']:.0f}/s < 97% of offered")
    if r["non2xx"] or errors:
        why.append(f"{r['non2xx']} non-2xx, {errors} socket errors")
    if r["late_last10_ms"] >= 1000:
        why.append(f"sender {r['late_last10_ms'] / 1000:.1f} s behind its schedule")
    if inbox_path:
        if r["lag_max_last10_s"] is None or r["lag_max_last10_s"] >= args.lag_bound:
            why.append(f"lag over the last 10 s up to {fmt(r['lag_max_last10_s'])} s")
        if drain is None:
            why.append(f"not drained within {args.drain:.0f} s")
    r["bounded"] = not why
    r["why"] = why
    with sqlite3.connect(db) as conn:
        r["stored"] = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    if r["stored"] < r["acked"]:
        r["why"].append(f"only {r['stored']} of {r['acked']} acknowledged deliveries stored")
        r["bounded"] = False
    r["samples"] = sampler.samples
    return r


def describe(r: dict[str, Any]) -> str:
    s = (
        f"{r['path']:9s} {r['offered']:5d}/s offered: {r['achieved']:6.0f}/s acked, "
        f"p50 {r['p50_us'] / 1000:.1f} ms p99 {r['p99_us'] / 1000:.1f} ms, "
        f"sender late max {r['late_max_ms']:.0f} ms (last 10 s {r['late_last10_ms']:.0f}), "
        f"CPU server {r['server_cpu_pct'] or 0:.0f}% wrk {r['wrk_cpu_pct']:.0f}%"
    )
    if r["path"] != "committed":
        drain = r["drain_s"]
        s += (
            f", lag p99 {fmt(r['lag_p99_s'])} s (last 10 s max {fmt(r['lag_max_last10_s'])}), "
            f"pending max {r['pending_max']}, drained {'no' if drain is None else f'{drain:.1f} s'}"
        )
    elif r["queue_max"] is not None:
        s += f", queue max {r['queue_max']:.0f}"
    return s + (" -> bounded" if r["bounded"] else f" -> NOT bounded ({'; '.join(r['why'])})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000")
    parser.add_argument("--seconds", type=int, default=60, help="length of each step")
    parser.add_argument("--connections", type=int, default=64, help="bound on in flight")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--paths",
        default="committed,inbox,split",
        help="committed, inbox (normaliser in-process) and split (normaliser: subprocess)",
    )
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--lag-bound", type=float, default=2.0)
    parser.add_argument(
        "--inbox-defer", type=float, help="the inbox's inbox_defer (default: the daemon's)"
    )
    parser.add_argument("--keep-going", action="store_true", help="step on past a failure")
    parser.add_argument("--json", type=Path, help="also write every step here")
    args = parser.parse_args()
    rates = [int(x) for x in args.rates.split(",")][:6]
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    paths = [p for p in args.paths.split(",") if p == "committed" or inbox_supported()]
    if len(paths) < len(args.paths.split(",")):
        print("this checkout has no inbox (no `ack` key): inbox runs skipped", flush=True)
    steps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rcingest-bench-sustained-") as tmp:
        workdir = Path(tmp)
        data = workdir / "deliveries.tsv"
        write_wrk_data(data, max(rates) * args.seconds + args.connections * 2)
        for n in range(args.rounds):
            for path in paths:
                for rate in rates:
                    r = one_step(path, rate, workdir, data, args)
                    r["round"] = n + 1
                    steps.append(r)
                    print(f"round {n + 1} {describe(r)}", flush=True)
                    if not r["bounded"] and not args.keep_going:
                        break
    summary = summarise(steps, paths, args.rounds)
    print(json.dumps({"summary": summary}, sort_keys=True))
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "summary": summary}, indent=1))


def summarise(steps: list[dict[str, Any]], paths: list[str], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        caps, lags, p99s = [], [], []
        for n in range(1, rounds + 1):
            ok = [s for s in steps if s["path"] == path and s["round"] == n and s["bounded"]]
            best = max(ok, key=lambda s: s["offered"], default=None)
            caps.append(best["offered"] if best else 0)
            lags.append(best["lag_p99_s"] if best else None)
            p99s.append(best["p99_us"] / 1000 if best else None)
        out[path] = {"capacity_rounds": caps, "lag_p99_rounds": lags, "ack_p99_ms_rounds": p99s}
        out[path]["capacity"] = statistics.median(caps)
    for path in ("inbox", "split"):
        if path in out and "committed" in out and out["committed"]["capacity"]:
            out[f"{path}_x_committed"] = out[path]["capacity"] / out["committed"]["capacity"]
    print(
        "\n| path | end-to-end capacity (median) | rounds | lag p99 s at capacity, per round "
        "| ack p99 ms at capacity, per round |"
    )
    print("|---|---|---|---|---|")
    for path in paths:
        s = out[path]
        print(
            f"| {path} | {s['capacity']:,.0f}/s | {', '.join(map(str, s['capacity_rounds']))} "
            f"| {', '.join(fmt(x) for x in s['lag_p99_rounds'])} "
            f"| {', '.join(fmt(x) for x in s['ack_p99_ms_rounds'])} |"
        )
    for path in ("inbox", "split"):
        if f"{path}_x_committed" in out:
            ratio = out[f"{path}_x_committed"]
            print(f"\n{path} / committed end-to-end: {ratio:.2f}x (target >= 2x)")
    return out


if __name__ == "__main__":
    main()
