"""``rcingest inbox``: the webhook daemon's inbox, listed and retried (docs/inbox.md).

``list`` (the default) shows each delivery's metadata and state, never its
body or headers: the raw bodies are evidence, kept out of terminals and
logs. ``retry`` puts failed and parked deliveries back to pending; a running
daemon claims them at its next poll (within a second).

Where the inbox is: ``--inbox`` (or ``RCINGEST_INBOX_URL``), else the
``bitbucket_webhook`` source's ``inbox`` setting in ``--config``, else the
source's default. A SQLite inbox that does not exist is an error (exit 2),
never created. ``rcingest replay`` (``cli_replay``) shares these options.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from rcingest.cli_common import fail, iso_option, registry_of
from rcingest.cli_tools import FORMATS, table
from rcingest.errors import ConfigError, RcingestError, RunFailed

if TYPE_CHECKING:
    from rcingest.inbox.db import InboxDB
    from rcingest.inbox.model import InboxFilter, InboxRow, State

__all__ = ["DEFAULT_INBOX", "Where", "inbox", "inbox_options", "open_inbox", "selection"]

#: The ``bitbucket_webhook`` source's default (``WebhookConfig.inbox``).
DEFAULT_INBOX = "data/bitbucket/webhook-inbox.db"
#: Characters of ``last_error`` a table cell shows (JSON has it whole).
ERROR_WIDTH = 60
#: Rows a table shows unless ``--limit`` says otherwise.
TABLE_LIMIT = 100


@dataclass(frozen=True)
class Where:
    """The inbox to open, as it may be shown, and the zone of naive ``--since``/``--until``."""

    spec: str
    secrets: frozenset[str]
    timezone: ZoneInfo

    @property
    def shown(self) -> str:
        from rcingest.runtime import redact

        return redact(self.spec, self.secrets)


def where_of(
    ctx: click.Context, spec: str | None, config_path: str | None, zone: str | None
) -> Where:
    """``--inbox``, else the pipeline's ``bitbucket_webhook`` source ``inbox``, else the default."""
    secrets: set[str] = set()
    tz_name = zone
    if config_path:
        from rcingest.config import entries, prepare

        try:
            prepared = prepare(Path(config_path), registry_of(ctx), mode="serve")
        except RcingestError as exc:
            fail(exc)
        secrets |= prepared.secrets
        if tz_name is None and isinstance(prepared.data.get("timezone"), str):
            tz_name = prepared.data["timezone"]
        if spec is None:
            spec = _configured_inbox(config_path, prepared, entries(prepared.data))
    spec = spec or DEFAULT_INBOX
    from rcingest.default_plugins.database.connect import url_secrets

    secrets |= url_secrets(spec)
    try:
        timezone = ZoneInfo(tz_name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(
            f"unknown IANA time zone {tz_name!r}", param_hint="--timezone"
        ) from None
    return Where(spec, frozenset(secrets), timezone)


def _configured_inbox(config_path: str, prepared: Any, found: list[Any]) -> str:
    for kind, where, entry in found:
        if kind != "source" or entry.get("type") != "bitbucket_webhook":
            continue
        # Only this setting's problems matter: reading needs no secret.
        mine = [p for p in prepared.problems if p.startswith(f"{where}.config.inbox")]
        if mine:
            shown = [f"{config_path}: {p}" for p in prepared.shown(mine)]
            fail(ConfigError(shown[0], shown), prepared.secrets)
        config = entry.get("config") or {}
        value = config.get("inbox", DEFAULT_INBOX) if isinstance(config, dict) else None
        if not isinstance(value, str) or not value:
            fail(ConfigError(f"{config_path}: {where}.config.inbox: expected a path or URL"))
        return value
    fail(
        ConfigError(
            f"{config_path}: $.source: not a bitbucket_webhook source; name the inbox with --inbox"
        )
    )


@contextmanager
def open_inbox(where: Where) -> Iterator[InboxDB]:
    """The inbox, open; exit 2 when it is missing or is not an inbox."""
    from rcingest.inbox.db import connect

    try:
        db = connect(where.spec, must_exist=True)
    except FileNotFoundError:
        fail(ConfigError(f"no inbox at {where.shown}"))
    except Exception as exc:  # a PostgreSQL that refuses, a file that is not SQLite
        fail(ConfigError(f"cannot open the inbox {where.shown}: {exc}"), where.secrets)
    try:
        try:
            db.counts()  # a database without the table is not an inbox
        except Exception as exc:
            fail(ConfigError(f"{where.shown}: not an inbox ({exc})".strip()), where.secrets)
        yield db
    finally:
        db.close()


def _epoch(value: str | None, zone: ZoneInfo) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)  # naive: the pipeline's (or --timezone's) zone
    return moment.timestamp()


def selection(
    where: Where,
    *,
    states: Sequence[str] = (),
    repository: str | None = None,
    since: str | None = None,
    until: str | None = None,
    uuids: Sequence[str] = (),
    limit: int | None = None,
) -> InboxFilter:
    """The filter the options name (an empty one selects every delivery)."""
    from rcingest.inbox.model import InboxFilter

    if repository is not None and repository.count("/") != 1:
        raise click.BadParameter(
            f"expected workspace/slug, got {repository!r}", param_hint="--repository"
        )
    return InboxFilter(
        states=cast("tuple[State, ...]", tuple(dict.fromkeys(states))),
        repository=repository,
        since=_epoch(since, where.timezone),
        until=_epoch(until, where.timezone),
        request_uuids=tuple(dict.fromkeys(uuids)),
        limit=limit,
    )


def inbox_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--inbox``, ``--repository``, ``--since``/``--until``, ``--uuid``, ``--timezone``."""
    options = [
        click.option(
            "--inbox",
            "inbox_spec",
            metavar="PATH_OR_URL",
            envvar="RCINGEST_INBOX_URL",
            show_envvar=True,
            help="The inbox: a SQLite file or a postgresql:// URL (prefer the environment "
            "variable for a URL with a password). Default: the pipeline's bitbucket_webhook "
            f"source `inbox`, else {DEFAULT_INBOX}.",
        ),
        click.option(
            "--repository", metavar="WORKSPACE/SLUG", help="Only this repository's deliveries."
        ),
        click.option(
            "--since",
            callback=iso_option("since"),
            help="Received at or after (ISO 8601; naive = pipeline timezone, else UTC).",
        ),
        click.option("--until", callback=iso_option("until"), help="Received before (ISO 8601)."),
        click.option(
            "--uuid", "uuids", multiple=True, help="A delivery's X-Request-UUID (repeatable)."
        ),
        click.option(
            "--timezone", "zone", metavar="ZONE", help="IANA zone of naive --since/--until."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def _short(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(text: str | None) -> str:
    if not text:
        return "-"
    one_line = " ".join(text.split())
    if len(one_line) <= ERROR_WIDTH:
        return one_line
    return one_line[: ERROR_WIDTH - 1] + "…"


def row_json(row: InboxRow) -> dict[str, Any]:
    """One row as ``list --format json`` prints it: InboxRow's fields, then ISO times."""
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(row)
    out["received_at_iso"] = _iso(row.received_at)
    out["done_at_iso"] = _iso(row.done_at)
    return out


def _selected(db: InboxDB, f: InboxFilter) -> int:
    """How many rows ``f`` selects, without its limit."""
    where, params = db._where(f)
    return int(db._query(f"SELECT COUNT(*) FROM webhook_inbox{where}", params)[0][0])  # noqa: S608


class _ListByDefault(click.Group):
    """``rcingest inbox`` alone, or followed by list's options, means ``rcingest inbox list``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ListByDefault)
def inbox() -> None:
    """The webhook daemon's inbox: list deliveries and their states, retry parked ones.

    Without a subcommand: `list`. Bodies and headers are never printed.
    Docs: docs/inbox.md.

    \b
    Examples:
      rcingest inbox --config config/webhook.example.yaml --state parked
      rcingest inbox retry --inbox data/bitbucket/webhook-inbox.db --state parked
    """


@inbox.command(name="list")
@inbox_options
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The webhook pipeline: read its source's `inbox` and `timezone`.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["pending", "failed", "done", "parked"]),
    help="Only deliveries in this state (repeatable).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    help=f"At most N rows, oldest first (table default {TABLE_LIMIT}, JSON all; 0: all).",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def list_command(
    ctx: click.Context,
    inbox_spec: str | None,
    repository: str | None,
    since: str | None,
    until: str | None,
    uuids: tuple[str, ...],
    zone: str | None,
    config_path: str | None,
    states: tuple[str, ...],
    limit: int | None,
    fmt: str,
) -> None:
    """List deliveries with their state, attempts and last error (metadata only)."""
    where = where_of(ctx, inbox_spec, config_path, zone)
    if limit is None and fmt == "table":
        limit = TABLE_LIMIT
    f = selection(
        where,
        states=states,
        repository=repository,
        since=since,
        until=until,
        uuids=uuids,
        limit=limit or None,
    )
    from rcingest.runtime import redact

    with open_inbox(where) as db:
        try:
            rows = db.rows(f)
            total = _selected(db, f) if fmt == "table" else len(rows)
            counts = db.counts() if fmt == "table" else {}
        except Exception as exc:
            fail(RunFailed(f"inbox {where.shown}: reading failed: {exc}"), where.secrets)
    if fmt == "json":
        text = json.dumps([row_json(r) for r in rows], indent=2, ensure_ascii=False)
        click.echo(redact(text, where.secrets))
        return
    header = (
        "ID", "RECEIVED (UTC)", "STATE", "ATTEMPTS", "EVENT", "REPOSITORY", "REQUEST UUID",
        "LAST ERROR", "DONE AT (UTC)",
    )  # fmt: skip
    cells = [
        (
            r.id,
            _short(r.received_at),
            r.state,
            r.attempts,
            r.event,
            r.repository or "-",
            r.request_uuid,
            _cell(r.last_error),
            _short(r.done_at),
        )
        for r in rows
    ]
    click.echo(redact(table(header, cells), where.secrets), nl=False)
    shown = f"{len(rows)} of {total} selected" if len(rows) < total else f"{total} selected"
    by_state = ", ".join(f"{n} {s}" for s, n in counts.items())
    click.echo(f"{shown}; inbox {where.shown}: {by_state}")


@inbox.command()
@inbox_options
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The webhook pipeline: read its source's `inbox` and `timezone`.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["failed", "parked"]),
    help="Only deliveries in this state (repeatable; default both).",
)
@click.pass_context
def retry(
    ctx: click.Context,
    inbox_spec: str | None,
    repository: str | None,
    since: str | None,
    until: str | None,
    uuids: tuple[str, ...],
    zone: str | None,
    config_path: str | None,
    states: tuple[str, ...],
) -> None:
    """Put failed and parked deliveries back to pending (attempts reset).

    A running daemon normalises them at its next poll (within a second);
    one that is stopped does at its next start.
    """
    where = where_of(ctx, inbox_spec, config_path, zone)
    f = selection(
        where, states=states, repository=repository, since=since, until=until, uuids=uuids
    )
    with open_inbox(where) as db:
        try:
            n = db.retry(f)
        except Exception as exc:
            fail(RunFailed(f"inbox {where.shown}: retry failed: {exc}"), where.secrets)
    noun = "delivery" if n == 1 else "deliveries"
    click.echo(
        f"{n} {noun} back to pending in {where.shown}; a running daemon normalises them "
        "within its poll interval (1 s)"
    )
