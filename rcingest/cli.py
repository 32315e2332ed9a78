"""The ``rcingest`` command line: a thin shell over the library.

Exit codes: 0 success; 1 the run failed; 2 bad usage or bad configuration
(nothing was written).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from rcingest import __version__
from rcingest.cli_ingest import add_ingest_commands
from rcingest.cli_options import GreedyOption
from rcingest.config import Pipeline, load_pipeline
from rcingest.errors import ConfigError, RcingestError
from rcingest.logs import log_options, start_logging
from rcingest.moments import iso_moment
from rcingest.pipeline import Runner, RunResult
from rcingest.plugins import Manager, Registry, describe_plugins, make_plugin_manager
from rcingest.preflight import preflight
from rcingest.runtime import make_context, redact
from rcingest.summary import IntervalSummary, cadence_line, format_summary, progress_printer

log = logging.getLogger("rcingest.cli")


def _registry(ctx: click.Context) -> Registry:
    """The registry of the manager passed as ``obj`` (tests), else of the installed plugins."""
    root = ctx.find_root()
    if not isinstance(root.obj, Manager):
        root.obj = make_plugin_manager()
    return Registry(root.obj)


def _fail(exc: RcingestError, secrets: frozenset[str] = frozenset()) -> NoReturn:
    lines = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
    for line in lines:
        click.echo(f"error: {redact(line, secrets)}", err=True)
    sys.exit(exc.exit_code)


def _pipeline_path(pipeline: str | None, config: str | None) -> Path:
    if pipeline and config and Path(pipeline) != Path(config):
        raise click.UsageError("give the pipeline file once: as an argument or with --config")
    chosen = pipeline or config
    if not chosen:
        raise click.UsageError("missing the pipeline file (PIPELINE or --config PATH)")
    return Path(chosen)


def _split(values: tuple[str, ...]) -> list[str] | None:
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return items or None


def _iso(option: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            # The same reading as a date or time in the pipeline file: "2026-11-01" is
            # the start of that day; a naive value stays naive (the pipeline's zone).
            return iso_moment(value)
        except ValueError:
            raise click.BadParameter(f"not an ISO 8601 date or time: {value!r}") from None

    return check


def verbosity_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = log_options(func)  # --log-file, --log-format: read back by start_logging
    func = click.option("-v", "--verbose", count=True, help="Log more (repeatable).")(func)
    return click.option("-q", "--quiet", is_flag=True, help="Only errors and the exit code.")(func)


def _level(quiet: bool, verbose: int) -> int:
    return -1 if quiet else verbose


@click.group(
    epilog="Exit codes: 0 ok, 1 the run failed, 2 bad usage or bad configuration. "
    "Docs: docs/configuration.md, docs/plugin-hooks.md."
)
@click.version_option(__version__, prog_name="rcingest")
def cli() -> None:
    """rcingest: ingest Bitbucket commits, files, authors and Jira keys through plugin pipelines."""


@cli.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The pipeline file (same as PIPELINE).",
)
@click.option(
    "--hours", type=click.FloatRange(min=0, min_open=True), help="Window: the last N hours."
)
@click.option(
    "--since", callback=_iso("since"), help="Window start (ISO 8601; naive = pipeline timezone)."
)
@click.option("--until", callback=_iso("until"), help="Window end, exclusive (ISO 8601).")
@click.option(
    "--repos", cls=GreedyOption, help="Repositories: `--repos api web`, commas or repetition."
)
@click.option(
    "--branches",
    cls=GreedyOption,
    help="Branches: `--branches main develop`, commas or repetition.",
)
@click.option("--database", help="Database path or postgresql:// URL.")
@click.option("--artifacts-dir", type=click.Path(file_okay=False), help="Where JSON artifacts go.")
@click.option("--dry-run", is_flag=True, help="Fetch and enrich, write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
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
) -> None:
    """Run a pipeline once, to the end, and print a summary.

    \b
    Examples:
      rcingest run config/pipeline.example.yaml --hours 4
      rcingest run --config scan.yaml --repos api web --branches main develop --dry-run
      rcingest run scan.yaml --since 2026-11-01T00:00 --until 2026-11-02T00:00
    """
    path = _pipeline_path(pipeline, config_path)
    overrides = {
        "hours": hours,
        "since": since,
        "until": until,
        "repos": _split(repos),
        "branches": _split(branches),
        "database": database,
        "artifacts_dir": artifacts_dir,
    }
    start_logging(ctx, _level(quiet, verbose))  # UTC stamps until the pipeline's zone is known
    loaded = _load(ctx, path, overrides)
    context = make_context(loaded, mode="run", dry_run=dry_run)
    start_logging(ctx, _level(quiet, verbose), loaded, context)
    show_progress = not quiet and sys.stderr.isatty() and not os.environ.get("CI")
    try:
        runner = Runner(loaded, context, progress_printer() if show_progress else None)
    except RcingestError as exc:
        _fail(exc, loaded.secrets)
    result, error = _run_to_end(runner)
    if show_progress:
        sys.stderr.write("\n")  # end the progress line before the summary
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


def _load(ctx: click.Context, path: Path, overrides: dict[str, Any]) -> Pipeline:
    try:
        return load_pipeline(path, _registry(ctx), overrides=overrides)
    except RcingestError as exc:
        _fail(exc)


def _run_to_end(runner: Runner) -> tuple[RunResult, RcingestError | None]:
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


@cli.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The pipeline file.")
@click.option("--host", help="Address to listen on (overrides the source's host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--database", help="Database path or postgresql:// URL.")
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
    path = _pipeline_path(pipeline, config_path)
    start_logging(ctx, _level(quiet, verbose))  # UTC stamps until the pipeline's zone is known
    loaded = _load(ctx, path, {"host": host, "port": port, "database": database})
    context = make_context(loaded, mode="serve")
    start_logging(ctx, _level(quiet, verbose), loaded, context)
    try:
        runner = Runner(loaded, context)
    except RcingestError as exc:
        _fail(exc, loaded.secrets)
    _tune_for_daemon()

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
        _fail(exc, loaded.secrets)
    log.info("%s", format_summary(result, loaded, context, 0).replace("\n", "; "))
    log.info("%s", cadence_line(result, context))
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
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    sys.setswitchinterval(0.0005)


_pending: set[asyncio.Task[None]] = set()


def _on_signal(runner: Runner, sig: signal.Signals) -> None:
    log.info("received %s: draining and stopping", sig.name)
    task = asyncio.ensure_future(runner.stop())
    # Keep a reference until done: the loop holds tasks only weakly.
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _summaries(runner: Runner, interval: float) -> None:
    """Every ``interval``: that interval's cadence line, then the running totals."""
    ticks = IntervalSummary(runner.context, runner.result)
    while True:
        await asyncio.sleep(interval)
        for line in ticks.lines(runner.result):
            log.info("%s", line)


@cli.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.pass_context
def validate(ctx: click.Context, pipeline: str) -> None:
    """Check a pipeline file as run and serve would, and report every problem with its YAML path.

    Unknown keys are errors. Every component is built as run builds it (so an
    API token without its e-mail or a webhook source without a secret is
    caught), without contacting the network or writing anything.
    Exit 0 when valid, 2 when not.

    \b
    Example:
      rcingest validate config/pipeline.example.yaml
    """
    path = Path(pipeline)
    try:
        report = preflight(path, _registry(ctx))
    except RcingestError as exc:
        _fail(exc)
    if report.pipeline is None:  # then there are problems, each with its YAML path
        _fail(ConfigError(report.problems[0], report.problems), report.secrets)
    loaded = report.pipeline
    n_enrich, n_sinks = len(loaded.enrichers), len(loaded.sinks)
    click.echo(
        f"ok: {path}: source {loaded.source.label}, {n_enrich} enricher(s), {n_sinks} sink(s)"
    )


@cli.command()
@click.option("--all", "include_all", is_flag=True, help="Include rcingest's built-in plugins.")
@click.pass_context
def plugins(ctx: click.Context, include_all: bool) -> None:
    """List installed plugins as JSON: distribution, version, types and hooks.

    \b
    Example:
      rcingest plugins --all | jq '.[].types'
    """
    registry = _registry(ctx)
    click.echo(
        json.dumps(describe_plugins(registry.manager, include_builtins=include_all), indent=2)
    )


@cli.command()
@click.argument("name", type=click.Choice(["pipeline", "run"]), default="pipeline")
@click.option("--write", is_flag=True, help="Write every generated schema to its committed file.")
@click.option("--all", "include_all", is_flag=True, help="Include third-party plugin types.")
@click.pass_context
def schema(ctx: click.Context, name: str, write: bool, include_all: bool) -> None:
    """Print (or --write) JSON Schemas generated from the config and artifact types.

    The committed files (schemas/pipeline.schema.json, schemas/run.schema.json
    and its copy under artifacts/) hold the built-in types only.

    \b
    Examples:
      rcingest schema > pipeline.schema.json
      rcingest schema run
      rcingest schema --write
    """
    from rcingest.schema import dumps, generated_schemas

    builtins = Registry(make_plugin_manager(only_builtins=True))
    registry = _registry(ctx) if include_all and not write else builtins
    schemas = generated_schemas(registry)
    if write:
        for schema_name, (content, paths) in schemas.items():
            for target in paths:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(dumps(content), encoding="utf-8")
                click.echo(f"wrote {target} ({schema_name})")
        return
    if name not in schemas:
        raise click.UsageError(f"the {name!r} schema is not available in this installation")
    click.echo(dumps(schemas[name][0]), nl=False)


add_ingest_commands(cli, run)


def build_cli(manager: Manager | None = None) -> click.Group:
    """The command group with plugin commands (``register_commands``) added."""
    Registry(manager or make_plugin_manager()).register_commands(cli)
    return cli


def main() -> None:
    try:
        manager = make_plugin_manager()
        group = build_cli(manager)
    except RcingestError as exc:
        _fail(exc)
    group.main(obj=manager, prog_name="rcingest")
