"""A pipeline on its ``schedules:``: ``rcingest serve`` (with ``/metrics``) and ``run --schedule``.

Each scheduled job is one run of the pipeline, as ``rcingest run`` makes it:

* ``full_sync``: the source's ``sync`` set to ``full`` (the inventory source
  lists everything and tombstones what is gone);
* ``incremental_sync``: ``sync`` set to ``incremental``;
* ``run``: the pipeline as written.

Runs of one pipeline never overlap; two daemons on one PostgreSQL database
run each slot once (``rcingest.schedules``: advisory locks and
``schedule_runs``), and a second daemon on one SQLite file is refused. Under
``serve`` a small HTTP server answers ``/healthz`` and ``/metrics`` (the
``rcingest_schedule_*`` series). SIGTERM/SIGINT lets a running job finish
(up to ``GRACE`` seconds) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import Any

import msgspec

from rcingest.config import Pipeline
from rcingest.errors import ConfigError, RcingestError, RunFailed

__all__ = ["GRACE", "database_of", "run_scheduled"]

log = logging.getLogger("rcingest.schedules")
#: Seconds a running job gets to finish after SIGTERM before it is cancelled.
GRACE = 60.0


def database_of(pipeline: Pipeline) -> str | None:
    """The ``database`` sink's setting: where schedules keep their runs and locks."""
    for sink in pipeline.sinks:
        if sink.registered.type_name == "database":
            value = getattr(sink.config, "database", None)
            return str(value) if value else None
    return None


def _with_sync(pipeline: Pipeline, sync: str | None) -> Pipeline:
    if sync is None:
        return pipeline
    config = pipeline.source.config
    if "sync" not in getattr(type(config), "__struct_fields__", ()):
        raise ConfigError(
            f"$.schedules: {pipeline.source.label} has no `sync` setting; schedule `run` instead"
        )
    source = dataclasses.replace(pipeline.source, config=msgspec.structs.replace(config, sync=sync))
    return dataclasses.replace(pipeline, source=source)


def _jobs(pipeline: Pipeline) -> dict[str, Any]:
    from rcingest.pipeline import Runner
    from rcingest.runtime import make_context
    from rcingest.summary import cadence_line

    # Two jobs due at once (a full and an incremental sync at midnight) run one
    # after the other: both read and write the source's cursor.
    one_at_a_time = asyncio.Lock()

    def job(sync: str | None) -> Any:
        chosen = _with_sync(pipeline, sync)  # checked before the first slot, not in it

        async def one_run() -> None:
            async with one_at_a_time:
                await _run_once(chosen)

        return one_run

    async def _run_once(chosen: Pipeline) -> None:
        context = make_context(chosen, mode="run")
        result = await Runner(chosen, context).run()
        log.info("%s", cadence_line(result, context))
        if result.status != "succeeded":
            raise RunFailed(f"run {context.run_id} {result.status}: {result.error or ''}")

    wanted = {"full_sync": "full", "incremental_sync": "incremental", "run": None}
    return {name: job(wanted[name]) for name in pipeline.config.schedules if name in wanted}


async def _metrics_server(registry: Any, host: str, port: int) -> Any:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("schedules: /metrics and /healthz on http://%s:%s", host, bound)
    return runner


async def run_scheduled(
    pipeline: Pipeline, *, secrets: frozenset[str], http: tuple[str, int] | None = None
) -> None:
    """Run ``pipeline``'s scheduled jobs until SIGTERM/SIGINT (``http``: serve /metrics)."""
    from prometheus_client import CollectorRegistry

    from rcingest.runtime import redact
    from rcingest.schedules import ScheduleMetrics, Scheduler, open_store

    if not pipeline.config.schedules:
        raise ConfigError(f"{pipeline.path}: $.schedules: no job is scheduled")
    registry = CollectorRegistry()
    scheduler = Scheduler(
        pipeline.config.schedules,
        _jobs(pipeline),
        open_store(database_of(pipeline), namespace=pipeline.config.name),
        metrics=ScheduleMetrics(registry),
        redact=lambda text: redact(text, secrets),
        logger=log,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = await _metrics_server(registry, *http) if http is not None else None
    try:
        await scheduler.start()
        await stop.wait()
        log.info("schedules: stopping (a running job gets up to %.0f s)", GRACE)
    except RcingestError:
        raise
    finally:
        await scheduler.stop(GRACE)
        if server is not None:
            await server.cleanup()
