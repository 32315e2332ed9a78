"""``rcingest replay``: re-derive records from the webhook inbox (docs/inbox.md).

The pipeline's enrichers and sinks run, through the real runner, over the
records the decoder gives for each selected inbox entry (in inbox order,
with the time it was received), as if the daemon normalised it again: after
a change of the story-key grammar, the database then holds what a fresh
ingest of the same deliveries would. The database sink replaces the story
keys of what it re-derives (``context.mode == "replay"``) and upserts the
rest as the daemon does. Jobs (backfill, scans, compliance) are not run and
inbox states never change.

Exit codes as ``run``: 0 done, 1 the run failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from rcingest.cli_common import fail, log_level, pipeline_path, registry_of, verbosity_options
from rcingest.cli_inbox import Where, inbox_options, open_inbox, selection
from rcingest.errors import ConfigError, RcingestError

if TYPE_CHECKING:
    from rcingest.config import Pipeline
    from rcingest.inbox.derive import DecodeSettings
    from rcingest.inbox.replay import ReplaySource
    from rcingest.pipeline import RunResult

__all__ = ["replay"]


@click.command()
@click.argument("pipeline", required=False, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Same as PIPELINE.")
@click.option("--all", "replay_all", is_flag=True, help="Replay every delivery in the inbox.")
@inbox_options
@click.option(
    "--database",
    # The environment keeps a postgresql:// password out of `ps` (docs/database.md).
    envvar="RCINGEST_DATABASE_URL",
    show_envvar=True,
    help="Database path or postgresql:// URL (overrides the pipeline's database sink); "
    "prefer the environment variable for a URL with a password.",
)
@click.option("--dry-run", is_flag=True, help="Decode and enrich, write nothing.")
@verbosity_options
@click.pass_context
def replay(
    ctx: click.Context,
    pipeline: str | None,
    config_path: str | None,
    replay_all: bool,
    inbox_spec: str | None,
    repository: str | None,
    since: str | None,
    until: str | None,
    uuids: tuple[str, ...],
    zone: str | None,
    database: str | None,
    dry_run: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Re-derive records from the webhook inbox through PIPELINE's enrichers and sinks.

    Select with --repository, --since/--until, --uuid (combined: all must
    hold), or --all. Idempotent: the result is what a fresh ingest of the
    same deliveries stores; story keys of what is replayed are replaced.
    Backfill, scans and compliance are not run again; inbox states do not
    change. Docs: docs/inbox.md.

    \b
    Examples:
      rcingest replay config/webhook.example.yaml --all
      rcingest replay webhook.yaml --repository acme/api --since 2026-11-01
    """
    from rcingest.logs import start_logging
    from rcingest.pipeline import Runner
    from rcingest.runtime import make_context, redact

    path = pipeline_path(pipeline, config_path)
    chosen = bool(repository or since or until or uuids)
    if not chosen and not replay_all:
        raise click.UsageError(
            "name what to replay: --repository, --since/--until or --uuid; "
            "pass --all to replay everything"
        )
    if chosen and replay_all:
        raise click.UsageError("--all replays everything: drop it, or drop the other selectors")
    start_logging(ctx, log_level(quiet, verbose))
    loaded = _load(ctx, path, database)
    settings, configured = _decode_settings(loaded, str(path))
    secrets = set(loaded.secrets)
    spec = inbox_spec or configured
    from rcingest.default_plugins.database.connect import url_secrets

    secrets |= url_secrets(spec)
    where = Where(spec, frozenset(secrets), _zone(zone, loaded))
    f = selection(where, repository=repository, since=since, until=until, uuids=uuids)
    with open_inbox(where):
        pass  # missing, or not an inbox: exit 2 before anything is written
    context = make_context(loaded, dry_run=dry_run)
    context.mode = "replay"  # the database sink replaces the story keys it re-derives
    start_logging(ctx, log_level(quiet, verbose), loaded, context)
    from rcingest.inbox.replay import ReplaySource

    source = ReplaySource(context, spec=spec, selection=f, settings=settings)
    try:
        runner = Runner(loaded, context, source=source)
    except RcingestError as exc:
        fail(exc, where.secrets)
    from rcingest.cli_run import _run_to_end

    result, error = _run_to_end(runner)
    code = 0 if error is None else error.exit_code
    show: Callable[[str], str] = lambda text: redact(text, where.secrets)  # noqa: E731
    if not quiet or error is not None:
        click.echo(show(_summary(source, result, where, dry_run)))
    for request_uuid, reason in source.refusals:
        click.echo(show(f"refused: {request_uuid}: {reason}"), err=True)
    if error is not None:
        click.echo(f"error: {show(str(error))}", err=True)
    sys.exit(code)


def _load(ctx: click.Context, path: Any, database: str | None) -> Pipeline:
    from rcingest.config import load_pipeline

    try:
        # As `serve` reads it: a settings file becomes its webhook pipeline.
        return load_pipeline(path, registry_of(ctx), overrides={"database": database}, mode="serve")
    except RcingestError as exc:
        fail(exc)


def _decode_settings(loaded: Pipeline, path: str) -> tuple[DecodeSettings, str]:
    """The decoder's switches as the daemon of ``loaded`` sets them, and its inbox."""
    from rcingest.bitbucket.auth import auth_header
    from rcingest.inbox.derive import DecodeSettings

    source = loaded.source
    if source.registered.type_name != "bitbucket_webhook":
        fail(
            ConfigError(
                f"{path}: $.source: replay feeds a webhook pipeline, whose source is "
                f"bitbucket_webhook, not {source.registered.type_name}"
            )
        )
    cfg: Any = source.config
    key = str(getattr(loaded.config.compliance, "status_key", None) or "rcingest-compliance")
    settings = DecodeSettings(
        # These two only decide which jobs a delivery queues (replay runs none)
        # and which events give records: set as the daemon sets them.
        scan_pull_requests=bool(loaded.scanners),
        compliance_keys=frozenset({key}) if loaded.policy is not None else None,
        inventory=bool(cfg.inventory),
        # A truncated push's delivery says `truncated` only when the daemon
        # could not backfill it: the same outcome as it stored.
        backfill=bool(cfg.backfill) and auth_header(cfg.auth) is not None,
    )
    return settings, str(cfg.inbox)


def _zone(zone: str | None, loaded: Pipeline) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if zone is None:
        return loaded.timezone
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(
            f"unknown IANA time zone {zone!r}", param_hint="--timezone"
        ) from None


def _summary(source: ReplaySource, result: RunResult, where: Where, dry_run: bool) -> str:
    c = source.counts
    replayed = c.selected - c.refused - c.empty if dry_run else c.replayed
    verb = "would replay" if dry_run else "replayed"
    written = sum(result.records.values())
    types = ", ".join(f"{n} {name}" for name, n in sorted(result.records.items()))
    lines = [
        f"{verb} {replayed} of {c.selected} selected deliveries from {where.shown} "
        f"({c.refused} refused by the decoder, {c.empty} without records)",
        f"records {'derived' if dry_run else 'written'}: {written}"
        + (f" ({types})" if types else ""),
        f"run {result.run_id}: {result.status} in {result.duration:.1f}s",
    ]
    return "\n".join(lines)
