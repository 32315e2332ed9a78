"""schedules on a real PostgreSQL: two daemons, one database, each slot run once.

The server comes from tests/conftest.py (``RCINGEST_TEST_POSTGRES_URL`` or a
throwaway cluster; ``RCINGEST_REQUIRE_POSTGRES=1`` turns a skip into a failure).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from rcingest.errors import RcingestError
from rcingest.schedules import Job, ScheduleMetrics, Scheduler, SchedulesConfig, open_store
from rcingest.schedules.postgres_store import PostgresStore
from rcingest.schedules.store import Claim, Refused, lock_key

pytestmark = pytest.mark.postgres

TICK = 0.2


def _runs(registry: CollectorRegistry, job: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "rcingest_schedule_runs_total", {"job": job, "outcome": outcome}
    )
    return value or 0.0


class Observed(PostgresStore):
    """The real PostgreSQL store, noting each slot it granted (and to whom)."""

    def __init__(self, url: str, who: str, granted: list[tuple[datetime, str]]) -> None:
        super().__init__(url, namespace="assets")
        self.who, self.granted = who, granted

    async def claim(self, job: str, slot: datetime, now: datetime) -> Claim | Refused:
        result = await super().claim(job, slot, now)
        if isinstance(result, Claim):
            self.granted.append((slot, self.who))
        return result


async def test_two_daemons_run_each_slot_once(postgres_url: str) -> None:
    runs: list[str] = []
    granted: list[tuple[datetime, str]] = []

    def job(who: str, seconds: float) -> Job:
        async def run() -> None:
            runs.append(who)
            await asyncio.sleep(seconds)

        return run

    # Jitter up to half a slot, seeded differently: sometimes both wake together
    # (one finds the lock taken), sometimes one after the other has finished (it
    # finds the slot done, which the lock alone would not tell it).
    config = msgspec.convert(
        {"incremental_sync": {"every": TICK, "jitter": TICK / 2}}, SchedulesConfig
    )
    registries = [CollectorRegistry(), CollectorRegistry()]
    daemons = [
        Scheduler(
            config,
            {"incremental_sync": job(who, 0.03)},
            Observed(postgres_url, who, granted),
            metrics=ScheduleMetrics(registry),
            rng=random.Random(seed),
        )
        for who, seed, registry in (("a", 1, registries[0]), ("b", 2, registries[1]))
    ]
    began = time.time()
    await asyncio.gather(*(d.start() for d in daemons))
    try:
        await asyncio.sleep(12 * TICK)
    finally:
        await asyncio.gather(*(d.stop(grace=1) for d in daemons))
    elapsed = time.time() - began
    slots = [slot for slot, _ in granted]
    assert len(slots) == len(set(slots)) == len(runs), sorted(granted)  # no slot ran twice
    assert len(slots) >= int(elapsed / TICK) - 2  # and (nearly) every slot ran
    # Each slot is a multiple of the interval: both daemons agreed on them.
    epoch, step = datetime(1970, 1, 1, tzinfo=UTC), timedelta(seconds=TICK)
    assert all((slot - epoch) % step == timedelta(0) for slot in slots)
    skipped = sum(_runs(r, "incremental_sync", "skipped_locked") for r in registries)
    succeeded = sum(_runs(r, "incremental_sync", "success") for r in registries)
    assert succeeded == len(runs) and skipped >= len(runs) - 2
    async with open_store(postgres_url, namespace="assets") as store:
        state = await store.state("incremental_sync")
    assert state is not None and state.runs == len(runs) and state.failures == 0
    assert state.job == "assets:incremental_sync"


async def test_lock_then_record_refuse_a_second_daemon(postgres_url: str) -> None:
    slot = datetime(2024, 1, 1, 6, tzinfo=UTC)
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    async with first, second:
        claim = await first.claim("full_sync", slot, slot)
        assert isinstance(claim, Claim)
        # While the first runs: its session holds the advisory lock.
        assert await second.claim("full_sync", slot, slot) == Refused("full_sync", slot, "locked")
        assert await first.claim("full_sync", slot, slot) == Refused("full_sync", slot, "locked")
        probe = PostgresStore(postgres_url)
        async with probe:

            def held(conn: object) -> int:
                with conn.cursor() as cur:  # type: ignore[attr-defined]
                    cur.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND ((classid::bigint << 32) | objid::bigint) = %s",
                        (lock_key("full_sync"),),
                    )
                    return int(cur.fetchone()[0])

            assert await probe._call(held) == 1
            await first.finish(claim, finished_at=slot, duration=0.1, error=None)
            assert await probe._call(held) == 0
        # Released, but the slot is recorded as done: the slower daemon does not rerun it.
        assert await second.claim("full_sync", slot, slot + timedelta(seconds=1)) == Refused(
            "full_sync", slot, "done", slot
        )
        nxt = slot + timedelta(hours=6)
        claim = await second.claim("full_sync", nxt, nxt)
        assert isinstance(claim, Claim)
        state = await second.finish(claim, finished_at=nxt, duration=2.5, error="boom")
    assert (state.runs, state.failures, state.last_error, state.last_success_at) == (
        2,
        1,
        "boom",
        slot,
    )


async def test_a_broken_connection_is_replaced(postgres_url: str) -> None:
    slot = datetime(2024, 1, 1, tzinfo=UTC)
    store = PostgresStore(postgres_url)
    async with store:
        await store.state("scan")
        store._conn.close()  # as after a database restart
        claim = await store.claim("scan", slot, slot)
        assert isinstance(claim, Claim)
        await store.finish(claim, finished_at=slot, duration=0.0, error=None)


async def test_connection_errors_are_redacted() -> None:
    store = PostgresStore("postgresql://rc:s3cret-pw@127.0.0.1:1/rc")
    with pytest.raises(RcingestError) as failed:
        await store.open()
    assert "s3cret-pw" not in str(failed.value)
    assert str(failed.value).startswith("schedules: database postgresql://***:***@127.0.0.1:1/rc")
