"""schedules: the Scheduler on real SQLite files (one process), failures, stop, metrics."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from rcingest.default_plugins.database.connect import redact
from rcingest.errors import ConfigError
from rcingest.schedules import (
    MemoryStore,
    ScheduleConfig,
    ScheduleMetrics,
    Scheduler,
    SchedulesConfig,
    SchedulesLocked,
    open_store,
)
from rcingest.schedules.sqlite_store import SqliteStore, lock_path
from rcingest.schedules.store import Claim, Refused, lock_key

TICK = 0.2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_now() -> int:
    """The scheduler's clock in whole microseconds: slot boundaries compare exactly.

    (``time.time() // 0.2`` does not: 0.2 has no exact float, and a run started
    right at a boundary would be counted in the slot before.)
    """
    return micros_of(datetime.now(UTC))


def schedules(data: dict[str, object]) -> SchedulesConfig:
    return msgspec.convert(data, SchedulesConfig)


def micros_of(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def slot_index(micros: int) -> int:
    return micros // round(TICK * 1_000_000)


class Recorder:
    """An async job that notes the wall time each run starts (and which daemon ran it)."""

    def __init__(self, runs: list[tuple[int, str]], who: str, seconds: float = 0.0) -> None:
        self.runs, self.who, self.seconds = runs, who, seconds

    async def __call__(self) -> None:
        self.runs.append((micros_now(), self.who))
        if self.seconds:
            await asyncio.sleep(self.seconds)


class Observed(SqliteStore):
    """The real SQLite store, noting each slot it granted (and to whom)."""

    def __init__(self, database: str, who: str, granted: list[tuple[datetime, str]]) -> None:
        super().__init__(database, namespace="assets")
        self.who, self.granted = who, granted

    async def claim(self, job: str, slot: datetime, now: datetime) -> Claim | Refused:
        result = await super().claim(job, slot, now)
        if isinstance(result, Claim):
            self.granted.append((slot, self.who))
        return result


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value = registry.get_sample_value(name, labels)
    return value


async def test_sqlite_second_scheduler_refused_and_each_slot_runs_once(tmp_path: Path) -> None:
    database = str(tmp_path / "db" / "inventory.db")
    runs: list[tuple[int, str]] = []
    granted: list[tuple[datetime, str]] = []
    config = schedules({"incremental_sync": {"every": TICK}})
    first = Scheduler(
        config, {"incremental_sync": Recorder(runs, "a", 0.02)}, Observed(database, "a", granted)
    )
    second = Scheduler(
        config, {"incremental_sync": Recorder(runs, "b", 0.02)}, Observed(database, "b", granted)
    )
    await first.start()
    try:
        with pytest.raises(SchedulesLocked) as refused:
            await second.start()
        message = str(refused.value)
        assert "another process" in message and "only one process" in message
        assert "PostgreSQL" in message and str(lock_path(database)) in message
        await asyncio.sleep(6 * TICK + 0.05)
    finally:
        await first.stop(grace=1)
        await second.stop(grace=1)
    assert {who for _, who in runs} == {"a"}
    slots = [slot for slot, _ in granted]
    assert len(slots) == len(set(slots)) == len(runs), granted  # no slot twice
    assert len(slots) >= 6  # the catch-up at start, then every slot
    # Each run started within its slot's period (or, for a catch-up granted in
    # the last instant of a slot, right after it).
    for (slot, _), (started, _) in zip(granted, runs, strict=True):
        assert 0 <= slot_index(started) - slot_index(micros_of(slot)) <= 1
    # The record is in the database file itself.
    with sqlite3.connect(database) as conn:
        row = conn.execute(
            "SELECT job, runs, failures, last_error, last_success_at FROM schedule_runs"
        ).fetchone()
    assert row[:4] == ("assets:incremental_sync", len(runs), 0, None) and row[4]
    # Once the first has stopped, its lock is gone: another process may take over.
    third = open_store(database, "assets")
    await third.open()
    await third.close()


async def test_sqlite_store_claims(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    slot = datetime(2024, 1, 1, 6, tzinfo=UTC)
    async with store:
        assert await store.state("scan") is None
        claim = await store.claim("scan", slot, slot + timedelta(seconds=3))
        assert isinstance(claim, Claim)
        again = await store.claim("scan", slot, slot + timedelta(seconds=4))
        assert again == Refused("scan", slot, "done", slot + timedelta(seconds=3))
        state = await store.finish(
            claim, finished_at=slot + timedelta(seconds=9), duration=6.0, error="boom"
        )
        assert (state.runs, state.failures, state.last_error, state.last_success_at) == (
            1,
            1,
            "boom",
            None,
        )
        later = slot + timedelta(hours=6)
        claim = await store.claim("scan", later, later)
        assert isinstance(claim, Claim)
        await store.finish(claim, finished_at=later, duration=0.5, error=None)
        final = await store.state("scan")
    assert final is not None
    assert (final.runs, final.failures, final.last_error) == (2, 1, None)
    assert final.last_success_at == later and final.last_duration_s == 0.5


async def test_failing_job_is_counted_and_the_scheduler_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[float] = []

    async def broken() -> None:
        calls.append(time.time())
        raise RuntimeError("cannot reach postgresql://ingest:hunter2@db.internal/rc")

    good: list[tuple[int, str]] = []
    registry = CollectorRegistry()
    scheduler = Scheduler(
        schedules({"scan": {"every": TICK}, "full_sync": {"every": TICK}}),
        {"scan": broken, "full_sync": Recorder(good, "a")},
        open_store(str(tmp_path / "rc.db")),
        metrics=ScheduleMetrics(registry),
        redact=redact,
    )
    with caplog.at_level(logging.INFO, logger="rcingest.schedules"):
        async with scheduler:
            await asyncio.sleep(4 * TICK + 0.05)
    assert len(calls) >= 4 and len(good) >= 4  # both loops kept going
    failures = sample(registry, "rcingest_schedule_runs_total", job="scan", outcome="failure")
    assert failures == len(calls)
    assert sample(registry, "rcingest_schedule_runs_total", job="scan", outcome="success") == 0
    assert sample(registry, "rcingest_schedule_last_success_timestamp_seconds", job="scan") is None
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged and all("hunter2" not in m for m in caplog.messages)
    assert "schedules: scan failed: cannot reach postgresql://***:***@db.internal/rc" in logged
    async with open_store(str(tmp_path / "rc.db")) as store:
        state = await store.state("scan")
    assert state is not None and state.failures == state.runs == len(calls)
    assert state.last_error == "cannot reach postgresql://***:***@db.internal/rc"


async def test_metrics_series_and_labels(tmp_path: Path) -> None:
    runs: list[tuple[int, str]] = []
    registry = CollectorRegistry()
    database = str(tmp_path / "rc.db")
    scheduler = Scheduler(
        schedules({"full_sync": {"every": TICK}, "scan": {"every": "24h", "on_missed": "skip"}}),
        {"full_sync": Recorder(runs, "a", 0.01), "scan": Recorder(runs, "a")},
        open_store(database),
        metrics=ScheduleMetrics(registry),
    )
    before = time.time()
    async with scheduler:
        await asyncio.sleep(2 * TICK + 0.05)
    text = generate_latest(registry).decode()
    assert "# TYPE rcingest_schedule_runs_total counter" in text
    assert 'rcingest_schedule_runs_total{job="scan",outcome="skipped_locked"} 0.0' in text
    assert 'rcingest_schedule_runs_total{job="scan",outcome="success"} 0.0' in text
    successes = sample(registry, "rcingest_schedule_runs_total", job="full_sync", outcome="success")
    assert successes == len(runs) >= 2
    last = sample(registry, "rcingest_schedule_last_success_timestamp_seconds", job="full_sync")
    assert last is not None and before < last <= time.time()
    duration = sample(registry, "rcingest_schedule_last_duration_seconds", job="full_sync")
    assert duration is not None and 0.01 <= duration < 0.5
    # A restarted daemon shows the last success from the run records before its first run.
    fresh = CollectorRegistry()
    restarted = Scheduler(
        schedules({"full_sync": {"every": "24h", "on_missed": "skip"}}),
        {"full_sync": Recorder(runs, "b")},
        open_store(database),
        metrics=ScheduleMetrics(fresh),
    )
    async with restarted:
        await asyncio.sleep(0.05)
    assert sample(fresh, "rcingest_schedule_last_success_timestamp_seconds", job="full_sync") == (
        last
    )


@pytest.mark.parametrize(("on_missed", "expected"), [("run_once", 1), ("skip", 0)])
async def test_catch_up_after_downtime(tmp_path: Path, on_missed: str, expected: int) -> None:
    database = str(tmp_path / "rc.db")
    long_ago = datetime.now(UTC) - timedelta(hours=5)
    async with open_store(database) as store:
        claim = await store.claim("full_sync", long_ago, long_ago)
        assert isinstance(claim, Claim)
        await store.finish(claim, finished_at=long_ago, duration=1.0, error=None)
    runs: list[tuple[int, str]] = []
    scheduler = Scheduler(
        schedules({"full_sync": {"every": "1h", "on_missed": on_missed}}),
        {"full_sync": Recorder(runs, "a")},
        open_store(database),
    )
    async with scheduler:
        await asyncio.sleep(0.3)
    assert len(runs) == expected  # run_once: one catch-up for five missed slots, not five


async def test_stop_is_bounded_and_records_the_cancelled_run(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.sleep(3600)

    database = str(tmp_path / "rc.db")
    scheduler = Scheduler(
        schedules({"scan": {"every": "1h"}}), {"scan": hangs}, open_store(database)
    )
    await scheduler.start()
    await asyncio.wait_for(started.wait(), 2)
    assert scheduler.running == {"scan"}
    clock = time.monotonic()
    await scheduler.stop(grace=0.2)
    assert time.monotonic() - clock < 1.0
    assert scheduler.running == frozenset()
    async with open_store(database) as store:
        state = await store.state("scan")
    assert state is not None and state.last_error == "cancelled (the scheduler stopped)"
    # Waiting (no run due) stops at once.
    idle = Scheduler(
        schedules({"scan": {"every": "1h", "on_missed": "skip"}}), {"scan": hangs}, MemoryStore()
    )
    await idle.start()
    clock = time.monotonic()
    await idle.stop(grace=5)
    assert time.monotonic() - clock < 0.5


async def test_jitter_is_seeded_and_bounded() -> None:
    runs: list[tuple[int, str]] = []
    scheduler = Scheduler(
        schedules({"scan": {"every": 0.3, "jitter": 0.1}}),
        {"scan": Recorder(runs, "a")},
        MemoryStore(),
        rng=random.Random(1),
    )
    async with scheduler:
        await asyncio.sleep(1.0)
    regular = [t for t, _ in runs[1:]]  # the first is the catch-up at start, without jitter
    assert regular
    for moment in regular:
        offset = moment % 300_000  # microseconds past the slot
        assert offset < 100_000 + 50_000, offset


def test_unknown_and_disabled_jobs() -> None:
    async def job() -> None:
        return None

    with pytest.raises(ConfigError, match=r"\$\.schedules\.nightly: unknown job \(known: scan\)"):
        Scheduler(schedules({"nightly": {"every": "1h"}}), {"scan": job}, MemoryStore())
    quiet = Scheduler(
        schedules({"nightly": {"every": "1h", "enabled": False}, "scan": {"every": "1h"}}),
        {"scan": job},
        MemoryStore(),
    )
    assert set(quiet.schedules) == {"scan"}
    assert isinstance(ScheduleConfig(every=1), ScheduleConfig)


def test_lock_keys_are_stable() -> None:
    # Every daemon, whatever its Python, must compute the same advisory lock key.
    assert lock_key("assets:full_sync") == lock_key("assets:full_sync")
    assert lock_key("assets:full_sync") != lock_key("assets:scan")
    assert -(2**63) <= lock_key("x") < 2**63
    assert lock_key("full_sync") == -3545402519041152810  # changing it splits old and new daemons
