"""Issue 15, defect 2: SIGTERM with deliveries in flight answers what is stored.

A sink that blocks on an event holds the first batch in the runner while more
deliveries pile up behind it; the stop begins with all of them handed over.
Every delivery answered 200 must be in the database, and none in the database
may have been answered 503. A request arriving on a kept-alive connection after
the stop began still gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

import rcingest
import rcingest.default_plugins.bitbucket_webhook as webhook_plugin
import rcingest.default_plugins.database as database_plugin
from rcingest.config import load_pipeline
from rcingest.interfaces import RunContext
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from tests.test_webhook_daemon import PUSH, SECRET, signed

IN_FLIGHT = 32


class GateConfig(rcingest.ComponentConfig):
    pass


class GateSink(rcingest.Sink[GateConfig]):
    """Holds its first write until ``release`` is set; fails later writes when ``fail_later``."""

    Config = GateConfig
    entered: asyncio.Event
    release: asyncio.Event
    fail_later = False
    writes = 0

    async def write(self, batch: rcingest.Batch) -> None:
        GateSink.writes += 1
        if GateSink.writes == 1:
            GateSink.entered.set()
            await GateSink.release.wait()
        elif GateSink.fail_later:
            raise OSError("database unreachable (injected)")


class GatePlugins:
    @rcingest.hookimpl
    def register_sinks(self, register: Callable[..., None]) -> None:
        register("test_gate", GateSink)


@contextlib.asynccontextmanager
async def gated_daemon(tmp_path: Path) -> AsyncIterator[tuple[Runner, asyncio.Task[object]]]:
    db = tmp_path / "commits.db"
    spec = {
        "name": "hooks",
        "source": {
            "type": "bitbucket_webhook",
            # The committed path (defect 2 is about it); the inbox path's
            # SIGTERM test is in tests/test_inbox_daemon.py.
            "config": {
                "port": 0,
                "secret": SECRET,
                "backfill_queue": f"{tmp_path}/bf.db",
                "ack": "committed",
            },
        },
        "sinks": [{"type": "test_gate"}, {"type": "database", "config": {"database": str(db)}}],
    }
    (tmp_path / "webhook.yaml").write_text(json.dumps(spec))
    registry = Registry(
        make_plugin_manager(
            load_entrypoints=False,
            extra=[
                ("bitbucket_webhook", webhook_plugin),
                ("database", database_plugin),
                ("test", GatePlugins()),
            ],
        )
    )
    loaded = load_pipeline(tmp_path / "webhook.yaml", registry)
    context = RunContext(
        run_id="stop-1",
        pipeline_name="hooks",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="hooks:bitbucket_webhook",
        mode="serve",
        secrets=loaded.secrets | {SECRET},
    )
    runner = Runner(loaded, context)
    task: asyncio.Task[object] = asyncio.create_task(runner.run())
    for _ in range(500):
        if runner.source.bound_port is not None or task.done():  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert runner.source.bound_port is not None, "the daemon did not start"  # type: ignore[attr-defined]
    try:
        yield runner, task
    finally:
        GateSink.release.set()
        if not runner.source.receiver.closing:  # type: ignore[attr-defined]
            await runner.stop()
        await asyncio.wait_for(task, 10)


def stored_uuids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT request_uuid FROM deliveries")}


@pytest.mark.parametrize("fail_later", [False, True], ids=["all-commit", "later-batches-fail"])
async def test_sigterm_with_deliveries_in_flight_answers_what_is_stored(
    tmp_path: Path, fail_later: bool
) -> None:
    GateSink.entered, GateSink.release = asyncio.Event(), asyncio.Event()
    GateSink.fail_later, GateSink.writes = fail_later, 0
    raw = PUSH.read_bytes()
    async with gated_daemon(tmp_path) as (runner, _task):
        source = runner.source
        url = f"http://127.0.0.1:{source.bound_port}/webhooks/bitbucket"  # type: ignore[attr-defined]
        intake = source.intake  # type: ignore[attr-defined]
        async with (
            aiohttp.ClientSession() as s,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as late,
        ):
            # A kept-alive connection opened before the stop, for the late request.
            async with late.get(url.replace("/webhooks/bitbucket", "/healthz")) as r:
                assert r.status == 200

            async def one(i: int) -> tuple[str, int]:
                uuid = f"stop-{i}"
                async with s.post(url, data=raw, headers=signed(raw, uuid=uuid)) as r:
                    return uuid, r.status

            first = asyncio.create_task(one(0))
            await asyncio.wait_for(GateSink.entered.wait(), 5)  # its batch is being written
            rest = [asyncio.create_task(one(i)) for i in range(1, IN_FLIGHT)]
            async with asyncio.timeout(5):
                while intake.depth < IN_FLIGHT:  # every delivery handed to the pipeline
                    await asyncio.sleep(0.005)
            stopping = asyncio.create_task(runner.stop())  # what SIGTERM does (cli_run)
            async with asyncio.timeout(5):
                while not intake.closed:
                    await asyncio.sleep(0.005)
            async with late.post(url, data=raw, headers=signed(raw, uuid="stop-late")) as r:
                late_status = r.status
            GateSink.release.set()
            answers = dict(await asyncio.wait_for(asyncio.gather(first, *rest), 10))
            await asyncio.wait_for(stopping, 10)
    stored = stored_uuids(tmp_path / "commits.db")
    ok = {u for u, status in answers.items() if status == 200}
    assert set(answers.values()) <= {200, 503}, answers
    assert ok <= stored, f"answered 200 but not stored: {sorted(ok - stored)}"
    assert stored - {"stop-late"} <= ok, f"stored but answered 503: {sorted(stored - ok)}"
    assert late_status == 503 and "stop-late" not in stored
    if fail_later:
        # The first batch committed; every later write failed.
        assert ok == {"stop-0"}
    else:
        assert ok == set(answers) and len(ok) == IN_FLIGHT
