"""``rcingest run`` and ``rcingest serve``: load a pipeline, run it, print the summary.

Exit codes: 0 success; 1 the run failed; 2 bad usage or bad configuration
(nothing was written). The runner, the plugins' heavy dependencies and the
summary are imported when a command runs, not when ``--help`` is shown.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rcingest.cli_common import (
    DEFAULT_SETTINGS,
    fail,
    iso_option,
    log_level,
    pipeline_path,
    registry_of,
    split_values,
    verbosity_options,
)
from rcingest.cli_options import GreedyOption
from rcingest.errors import ConfigError, RcingestError

if TYPE_CHECKING:
    import asyncio
    import signal

    from rcingest.config import Pipeline
    from rcingest.interfaces import RunContext
    from rcingest.pipeline import Runner, RunResult

log = logging.getLogger("rcingest.cli")


@click.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help=f"The pipeline or settings file (same as PIPELINE; default {DEFAULT_SETTINGS} "
    "when it exists).",
)
@click.option(
    "--hours", type=click.FloatRange(min=0, min_open=True), help="Window: the last N hours."
)
@click.option(
    "--since",
    callback=iso_option("since"),
    help="Window start (ISO 8601; naive = pipeline timezone).",
)
@click.option("--until", callback=iso_option("until"), help="Window end, exclusive (ISO 8601).")
@click.option(
    "--repos", cls=GreedyOption, help="Repositories: `--repos api web`, commas or repetition."
)
@click.option(
    "--branches",
    cls=GreedyOption,
    help="Branches: `--branches main develop`, commas or repetition.",
)
@click.option(
    "--database",
    # The environment keeps a postgresql:// password out of `ps` (docs/database.md).
    envvar="RCINGEST_DATABASE_URL",
    show_envvar=True,
    help="Database path or postgresql:// URL (overrides the pipeline's); prefer the "
    "environment variable for a URL with a password.",
)
@click.option("--artifacts-dir", type=click.Path(file_okay=False), help="Where JSON artifacts go.")
@click.option("--dry-run", is_flag=True, help="Fetch and enrich, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--schedule",
    is_flag=True,
    help="Run on the pipeline's schedules: until SIGTERM, instead of once.",
)
@verbosity_options
@click.pass_context
def run(
    ctx: click.Context,
    pipeline: str | None,
    config_path: str | None,
    hours: float | None,
    since: str | None,
    until: str | None,
    repos: tuple[str, ...],
    branches: tuple[str, ...],
    database: str | None,
    artifacts_dir: str | None,
    dry_run: bool,
    as_json: bool,
    quiet: bool,
    verbose: int,
    schedule: bool = False,
) -> None:
    """Run a pipeline once, to the end, and print a summary.

    With no file named, reads config/settings.yaml (the runbook's settings
    file) when it exists.

    \b
    Examples:
      rcingest run config/pipeline.example.yaml --hours 4
      rcingest run --config scan.yaml --repos api web --branches main develop --dry-run
      rcingest run scan.yaml --since 2026-11-01T00:00 --until 2026-11-02T00:00
    """
    from rcingest.logs import start_logging
    from rcingest.pipeline import Runner
    from rcingest.progress import live_progress, progress_wanted
    from rcingest.runtime import make_context, redact
    from rcingest.summary import cadence_line, format_summary

    path = pipeline_path(pipeline, config_path, default=DEFAULT_SETTINGS)
    overrides = {
        "hours": hours,
        "since": since,
        "until": until,
        "repos": split_values(repos),
        "branches": split_values(branches),
        "database": database,
        "artifacts_dir": artifacts_dir,
    }
    start_logging(ctx, log_level(quiet, verbose))  # UTC stamps until the zone is known
    loaded = _load(ctx, path, overrides)
    context = make_context(loaded, mode="run", dry_run=dry_run)
    start_logging(ctx, log_level(quiet, verbose), loaded, context)
    if schedule:
        _scheduled(loaded, None)
    # Progress on a terminal only; it is erased when the run ends, before the summary.
    with live_progress(progress_wanted(quiet)) as progress:
        try:
            runner = Runner(loaded, context, progress)
        except RcingestError as exc:
            fail(exc, loaded.secrets)
        result, error = _run_to_end(runner)
    code = 0 if error is None else error.exit_code
    if as_json:
        summary = json.dumps({**result.to_dict(), "exit_code": code}, default=str, indent=2)
        click.echo(redact(summary, loaded.secrets))  # the error text may quote a URL
    elif not quiet or error is not None:
        click.echo(format_summary(result, loaded, context, code))
    if error is not None:
        click.echo(f"error: {redact(str(error), loaded.secrets)}", err=True)
    log.info("%s", cadence_line(result, context))  # the last line, also in the log file
    sys.exit(code)


def _load(ctx: click.Context, path: Path, overrides: dict[str, Any], mode: str = "run") -> Pipeline:
    from rcingest.config import load_pipeline

    try:
        return load_pipeline(
            path, registry_of(ctx), overrides=overrides, mode="serve" if mode == "serve" else "run"
        )
    except RcingestError as exc:
        fail(exc)


def _run_to_end(runner: Runner) -> tuple[RunResult, RcingestError | None]:
    import asyncio
    import contextlib
    import signal

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        # Ctrl-C in a scan: stop the source, keep what was stored, exit 1.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, _on_signal, runner, sig)
        return await runner.run()

    try:
        result = asyncio.run(go())
    except RcingestError as exc:
        return runner.result, exc
    if result.status == "interrupted":
        return result, RcingestError("interrupted; what was stored before the signal is kept")
    return result, None


@click.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The pipeline file.")
@click.option("--host", help="Address to listen on (overrides the source's host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--database",
    # The environment keeps a postgresql:// password out of `ps` (docs/database.md).
    envvar="RCINGEST_DATABASE_URL",
    show_envvar=True,
    help="Database path or postgresql:// URL (overrides the pipeline's); prefer the "
    "environment variable for a URL with a password.",
)
@verbosity_options
@click.pass_context
def serve(
    ctx: click.Context,
    pipeline: str | None,
    config_path: str | None,
    host: str | None,
    port: int | None,
    database: str | None,
    quiet: bool,
    verbose: int,
) -> None:
    """Run a long-lived pipeline whose source is a server (the webhook daemon).

    SIGTERM or SIGINT stops accepting, drains what was accepted, flushes the
    sinks and exits 0. A summary line is logged every `summary_interval`
    seconds.

    \b
    Example:
      BITBUCKET_WEBHOOK_SECRET=... rcingest serve config/webhook.example.yaml --port 8080
    """
    from rcingest.logs import start_logging
    from rcingest.pipeline import Runner
    from rcingest.runtime import make_context

    path = pipeline_path(pipeline, config_path)
    start_logging(ctx, log_level(quiet, verbose))  # UTC stamps until the zone is known
    scheduled = _scheduled_source(ctx, path)
    # A scheduled pipeline's source serves nothing: --host/--port are for /metrics.
    overrides: dict[str, Any] = {"database": database}
    if not scheduled:
        overrides |= {"host": host, "port": port}
    loaded = _load(ctx, path, overrides, "serve")
    context = make_context(loaded, mode="serve")
    start_logging(ctx, log_level(quiet, verbose), loaded, context)
    if scheduled:
        _scheduled(loaded, (host or "127.0.0.1", 8080 if port is None else port))
    if loaded.config.schedules:
        # Not silently ignored: a daemon that never ran its schedules would look fine.
        fail(
            ConfigError(
                f"{path}: $.schedules: a server source ({loaded.source.label}) with schedules "
                "is not supported yet; serve the scheduled pipeline as its own `rcingest serve`"
            ),
            loaded.secrets,
        )
    try:
        runner = Runner(loaded, context)
    except RcingestError as exc:
        fail(exc, loaded.secrets)
    _tune_for_daemon()
    if getattr(runner.source, "role", None) == "receiver":
        from rcingest.cli_normalise import serve_receiver

        serve_receiver(ctx, runner, path, database, quiet, verbose)
    run_daemon(runner, loaded, context)


def run_daemon(runner: Runner, loaded: Pipeline, context: RunContext) -> NoReturn:
    """Run a long-lived pipeline until SIGTERM or SIGINT, with interval summaries; exit 0.

    ``serve`` and ``normalise`` (the webhook daemon's normaliser process) both end here.
    """
    import asyncio
    import signal

    from rcingest.summary import cadence_line, format_summary

    async def go() -> RunResult:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _on_signal, runner, sig)
        ticker = asyncio.create_task(_summaries(runner, loaded.config.summary_interval))
        try:
            return await runner.run()
        finally:
            ticker.cancel()

    try:
        result = asyncio.run(go())
    except RcingestError as exc:
        fail(exc, loaded.secrets)
    log.info("%s", format_summary(result, loaded, context, 0).replace("\n", "; "))
    log.info("%s", cadence_line(result, context))
    sys.exit(0)


def _scheduled_source(ctx: click.Context, path: Path) -> bool:
    """True when ``serve`` runs the pipeline on its schedules (its source is not a server)."""
    from rcingest.yaml_file import read_yaml

    try:
        data = read_yaml(path)
        kind = data["source"]["type"]
        cls = registry_of(ctx).get("source", str(kind)).component
    except (RcingestError, KeyError, TypeError):
        return False  # the load that follows reports what is wrong
    return not getattr(cls, "low_latency", False) and bool(data.get("schedules"))


def _scheduled(loaded: Pipeline, http: tuple[str, int] | None) -> NoReturn:
    """Run ``loaded`` on its schedules until a signal; exit 0 (2 on a schedule problem)."""
    import asyncio

    from rcingest.scheduled import run_scheduled

    try:
        asyncio.run(run_scheduled(loaded, secrets=loaded.secrets, http=http))
    except RcingestError as exc:
        fail(exc, loaded.secrets)
    except OSError as exc:
        fail(RcingestError(f"cannot serve /metrics on {http}: {exc.strerror}"), loaded.secrets)
    sys.exit(0)


def _tune_for_daemon() -> None:
    """Keep a daemon's tail latency free of pauses it can avoid.

    * Everything loaded at start (plugins, config, the app) is frozen out of
      the garbage collector's view, and young collections run every 100,000
      allocations instead of 700, so no collection that walks the whole heap
      lands in a burst of deliveries (reference cycles are still collected).
    * The GIL switch interval drops from 5 ms to 0.5 ms. The database writer
      thread releases the GIL around every SQLite call and must take it back
      after each one; while the event loop is busy with requests, each of
      those hand-overs waited up to 5 ms, stretching every transaction.

    Measured with bench/bench_webhook.py (4 interleaved rounds, durable
    SQLite): 1,861 -> 2,231 deliveries/s and p99 27.7 -> 19.8 ms.
    """
    import gc

    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    sys.setswitchinterval(0.0005)


_pending: set[asyncio.Task[None]] = set()


def _on_signal(runner: Runner, sig: signal.Signals) -> None:
    import asyncio

    log.info("received %s: draining and stopping", sig.name)
    task = asyncio.ensure_future(runner.stop())
    # Keep a reference until done: the loop holds tasks only weakly.
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _summaries(runner: Runner, interval: float) -> None:
    """Every ``interval``: that interval's cadence line, then the running totals."""
    import asyncio

    from rcingest.summary import IntervalSummary

    ticks = IntervalSummary(runner.context, runner.result)
    while True:
        await asyncio.sleep(interval)
        for line in ticks.lines(runner.result):
            log.info("%s", line)
