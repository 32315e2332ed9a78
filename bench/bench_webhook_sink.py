"""The webhook daemon's storage ceiling: the ``database`` sink alone, no HTTP.

The same signed ``repo:push`` deliveries as ``bench_webhook.py`` are decoded
(``rcingest.webhooks.receive``) and enriched (``story_keys``) up front; then
the ``database`` sink writes them to a fresh SQLite file (WAL,
``synchronous=NORMAL``) in batches the size group commit forms at 32 in
flight, one transaction each, as in ``rcingest serve``. Whatever the HTTP side
does, the daemon cannot store deliveries faster than this. The figures per
delivery split the writer thread's time into building rows, the inserts and
the COMMIT (writing the dirtied pages to the WAL).

    python bench/bench_webhook_sink.py                      # 10,000 deliveries, batches of 20
    python bench/bench_webhook_sink.py --deliveries 2000 --batch 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import peewee

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_load import SECRET, delivery

from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.database import sink as sink_module
from rcingest.default_plugins.database import writer as writer_module
from rcingest.default_plugins.story_keys import StoryKeysConfig, StoryKeysEnricher
from rcingest.interfaces import Batch, RunContext
from rcingest.records import Checkpoint, Record
from rcingest.webhooks import sign
from rcingest.webhooks.receive import receive

SPENT: collections.Counter[str] = collections.Counter()


def timed(label: str, func: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            SPENT[label] += time.perf_counter() - started

    return wrapper


def instrument() -> None:
    """Time the writer thread's three parts (the wrappers cost about 1 us per call)."""
    sink_module.build_rows = timed("build rows", sink_module.build_rows)  # type: ignore[attr-defined]
    writer_module._insert = timed("inserts", writer_module._insert)  # type: ignore[attr-defined]
    peewee.SqliteDatabase.commit = timed("COMMIT", peewee.SqliteDatabase.commit)  # type: ignore[method-assign]


def context(workdir: Path) -> RunContext:
    return RunContext(
        run_id=f"bench-{time.monotonic_ns()}",
        pipeline_name="bench",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=datetime.now(UTC),
        base_dir=workdir,
        source_id="bench",
        mode="serve",
    )


def batches(count: int, size: int, ctx: RunContext) -> list[Batch]:
    enricher = StoryKeysEnricher(StoryKeysConfig(), ctx)
    out: list[Batch] = []
    records: list[Record] = []
    checkpoints: list[Checkpoint] = []
    for i in range(count):
        uuid, body = delivery(i)
        headers = {
            "X-Event-Key": "repo:push",
            "X-Request-UUID": uuid,
            "X-Hook-UUID": "{bench-hook}",
            "X-Hub-Signature": sign(body, SECRET),
        }
        decoded = receive(headers, body, secret=SECRET).decoded
        assert decoded is not None
        records += [enricher.enrich(r) for r in decoded.records]
        records.append(decoded.delivery)
        checkpoints.append(Checkpoint(stream="webhook", token=i))
        if len(checkpoints) == size or i == count - 1:
            out.append(Batch(records=records, checkpoints=checkpoints))
            records, checkpoints = [], []
    return out


async def write_all(path: Path, todo: list[Batch], ctx: RunContext) -> tuple[float, list[float]]:
    sink = DatabaseSink(DatabaseConfig(database=str(path)), ctx)
    latencies = []
    async with sink:
        started = time.perf_counter()
        for batch in todo:
            t0 = time.perf_counter()
            await sink.write(batch)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        ctx.status = "succeeded"
    return elapsed, sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=20, help="deliveries per transaction")
    args = parser.parse_args()
    count = min(args.deliveries, 200_000)  # bounded
    with tempfile.TemporaryDirectory(prefix="rcingest-bench-sink-") as tmp:
        workdir = Path(tmp)
        ctx = context(workdir)
        todo = batches(count, args.batch, ctx)
        instrument()
        elapsed, lat = asyncio.run(write_all(workdir / "commits.db", todo, ctx))
    per = elapsed / count * 1e6
    print(
        f"{count} deliveries in batches of {args.batch}: {count / elapsed:,.0f} deliveries/s "
        f"({per:.0f} us each); batch p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
    )
    for label in ("build rows", "inserts", "COMMIT"):
        print(f"  {label:10s} {SPENT[label] / count * 1e6:6.0f} us per delivery")


if __name__ == "__main__":
    main()
