"""``rcingest normalise``, and ``rcingest serve`` as a receiver whose normaliser runs elsewhere.

A webhook pipeline with ``normaliser: subprocess`` or ``external`` splits
the daemon in two (docs/webhooks.md, "Scaling out"):

* ``rcingest serve`` only receives: verify, append to the inbox, answer.
  It opens no sink, so two processes never write the same database file or
  hourly artifact. With ``subprocess`` it starts the normaliser below and
  supervises it.
* ``rcingest normalise`` runs the pipeline on the inbox: the normaliser, the
  backfill worker, the enrichers and sinks; it serves nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rcingest.cli_common import fail, log_level, pipeline_path, verbosity_options
from rcingest.errors import ConfigError, RcingestError

if TYPE_CHECKING:
    from rcingest.pipeline import Runner

__all__ = ["normalise", "serve_receiver"]

log = logging.getLogger("rcingest")


@click.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The pipeline file.")
@click.option(
    "--database",
    envvar="RCINGEST_DATABASE_URL",
    show_envvar=True,
    help="Database path or postgresql:// URL (overrides the pipeline's); prefer the "
    "environment variable for a URL with a password.",
)
@click.option(
    "--supervised",
    is_flag=True,
    hidden=True,
    help="Started by rcingest serve: stdin is its pipe (a byte per append; closed: stop).",
)
@verbosity_options
@click.pass_context
def normalise(
    ctx: click.Context,
    pipeline: str | None,
    config_path: str | None,
    database: str | None,
    supervised: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Normalise a webhook pipeline's inbox: its records into the sinks, without serving.

    For pipelines whose source is `bitbucket_webhook` with `ack: inbox`.
    `rcingest serve` starts this itself with `normaliser: subprocess`; with
    `normaliser: external` run it yourself, on this machine (one per SQLite
    inbox: a second waits) or on several sharing a PostgreSQL inbox. It logs
    to the pipeline's log file with `.normaliser` before the suffix.
    SIGTERM or SIGINT finishes the batch under way, normalises what is left
    for up to `shutdown_timeout` seconds, flushes the sinks and exits 0.

    \b
    Example:
      RCINGEST_INBOX_URL=postgresql://... rcingest normalise config/webhook.yaml
    """
    from rcingest.cli_run import _load, _tune_for_daemon, run_daemon
    from rcingest.logs import own_log_file, start_logging
    from rcingest.pipeline import Runner
    from rcingest.runtime import make_context

    path = pipeline_path(pipeline, config_path)
    start_logging(ctx, log_level(quiet, verbose))
    loaded = _load(ctx, path, {"database": database}, "serve")
    if not getattr(loaded.source.registered.component, "low_latency", False):
        fail(
            ConfigError(
                f"{path}: $.source.type: rcingest normalise works on a webhook daemon's "
                f"inbox; {loaded.source.label!r} has none (use rcingest run)"
            ),
            loaded.secrets,
        )
    context = make_context(loaded, mode="serve")
    context.worker = True
    own_log_file(ctx, loaded, "normaliser")
    start_logging(ctx, log_level(quiet, verbose), loaded, context)
    try:
        runner = Runner(loaded, context)
    except RcingestError as exc:
        fail(exc, loaded.secrets)
    runner.source.supervised = supervised  # type: ignore[attr-defined]
    _tune_for_daemon()  # the database writer thread's GIL hand-overs, as in serve
    run_daemon(runner, loaded, context)


def child_command(ctx: click.Context, path: Path, quiet: bool, verbose: int) -> tuple[str, ...]:
    """The command line of the normaliser process ``rcingest serve`` starts."""
    from rcingest.logs import child_log_flags

    flags = ["-q"] if quiet else ["-v"] * verbose
    return (
        sys.executable,
        "-m",
        "rcingest",
        "normalise",
        str(path.resolve()),
        "--supervised",
        *flags,
        *child_log_flags(ctx),
    )


def serve_receiver(
    ctx: click.Context,
    runner: Runner,
    path: Path,
    database: str | None,
    quiet: bool,
    verbose: int,
) -> None:
    """``rcingest serve`` for a receiver: serve until a signal, without a pipeline; exit 0."""
    import asyncio
    import signal

    source: Any = runner.source
    if source.config.normaliser == "subprocess":
        source.normaliser_command = child_command(ctx, path, quiet, verbose)
        env = dict(os.environ)
        if database:
            # Through the environment, as for serve itself: not on the command line.
            env["RCINGEST_DATABASE_URL"] = database
        source.normaliser_env = env

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _stop, source, sig)
        await source.serve_until_stopped()

    try:
        asyncio.run(go())
    except RcingestError as exc:
        fail(exc, runner.pipeline.secrets)
    log.info("receiver stopped: %s", _counts(runner.context.stats.snapshot()))
    sys.exit(0)


_pending: set[Any] = set()


def _stop(source: Any, sig: Any) -> None:
    import asyncio

    log.info("received %s: stopping the receiver, then the normaliser", sig.name)
    task = asyncio.ensure_future(source.stop())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def _counts(stats: dict[str, Any]) -> str:
    wanted = ("webhook.stored", "webhook.duplicate", "webhook.rejected")
    return ", ".join(f"{k.split('.', 1)[1]} {stats.get(k, 0)}" for k in wanted)
