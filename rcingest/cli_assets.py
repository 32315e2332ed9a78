"""``rcingest assets``: the repository inventory, read back from the database.

Each repository with its state (active, deleted, filtered), visibility,
language, project, last push, last sync and open findings of its branch
content, as a table or JSON. Read-only: a database that does not exist is
an error (exit 2), never created; so is one without an inventory (before
schema version 6). The database is ``--database``, else the ``database``
sink's setting in ``--config``, else the sink's default.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from rcingest.cli_common import fail, registry_of
from rcingest.cli_tools import FORMATS, table
from rcingest.errors import ConfigError, RcingestError

if TYPE_CHECKING:
    from rcingest.default_plugins.database.inventory_read import StateFilter

__all__ = ["assets"]

#: The ``database`` sink's default (``DatabaseConfig.database``).
DEFAULT_DATABASE = "data/bitbucket/commits.db"


@click.command()
@click.option(
    "--database",
    metavar="PATH_OR_URL",
    envvar="RCINGEST_DATABASE_URL",
    show_envvar=True,
    help="Database path or postgresql:// URL (as run and serve: the environment keeps a "
    "password out of the process list).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Pipeline or settings file: read its database sink's setting.",
)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--state",
    type=click.Choice(["active", "deleted", "filtered", "all"]),
    default="all",
    show_default=True,
    help="Only repositories in this state.",
)
@click.pass_context
def assets(
    ctx: click.Context, database: str | None, config_path: str | None, fmt: str, state: str
) -> None:
    """List the repository inventory: state, visibility, last push, last sync, open findings.

    \b
    Examples:
      rcingest assets
      rcingest assets --config config/pipeline.example.yaml --state deleted
      rcingest assets --database postgresql://rc@db:5432/rcingest --format json
    """
    from rcingest.default_plugins.database.inventory_read import read_inventory

    spec, secrets = _database(ctx, database, config_path)
    try:
        found = read_inventory(spec, cast("StateFilter", state))
    except RcingestError as exc:
        fail(exc, secrets)
    _print(found, fmt, secrets)


def _database(
    ctx: click.Context, database: str | None, config_path: str | None
) -> tuple[str, frozenset[str]]:
    """The database to read and the secrets the pipeline file named."""
    if database:
        return database, frozenset()
    if not config_path:
        return DEFAULT_DATABASE, frozenset()
    from rcingest.config import entries, prepare

    try:
        prepared = prepare(Path(config_path), registry_of(ctx))
    except RcingestError as exc:
        fail(exc)
    sinks = [(where, e) for kind, where, e in entries(prepared.data) if kind == "sink"]
    for where, entry in sinks:
        if entry.get("type") != "database":
            continue
        # Only the problems of this sink matter: reading needs no credentials.
        mine = [p for p in prepared.problems if p.startswith(f"{where}.")]
        if mine:
            shown = [f"{config_path}: {p}" for p in prepared.shown(mine)]
            fail(ConfigError(shown[0], shown), prepared.secrets)
        config = entry.get("config") or {}
        value = config.get("database", DEFAULT_DATABASE) if isinstance(config, dict) else None
        if not isinstance(value, str) or not value:
            fail(ConfigError(f"{config_path}: {where}.config.database: expected a path or URL"))
        return value, prepared.secrets
    fail(ConfigError(f"{config_path}: $.sinks: no database sink; name one with --database"))


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def _note(asset: Any) -> str:
    if asset.renamed_to:
        return f"renamed to {asset.renamed_to}"
    return str(asset.state_reason or "")


def _print(found: list[Any], fmt: str, secrets: frozenset[str]) -> None:
    import msgspec

    from rcingest.runtime import redact

    if fmt == "json":
        text = json.dumps(msgspec.to_builtins(found), indent=2, ensure_ascii=False)
        click.echo(redact(text, secrets))
        return
    rows = [
        (
            a.full_name,
            a.state,
            a.visibility or "-",
            a.language or "-",
            a.project or "-",
            _when(a.last_push),
            _when(a.last_synced_at),
            a.open_findings,
            a.last_scan.state if a.last_scan is not None else "-",
            _note(a),
        )
        for a in found
    ]
    header = (
        "REPOSITORY", "STATE", "VISIBILITY", "LANGUAGE", "PROJECT", "LAST PUSH (UTC)",
        "LAST SYNC (UTC)", "OPEN FINDINGS", "LAST SCAN", "NOTE",
    )  # fmt: skip
    click.echo(redact(table(header, rows), secrets), nl=False)
    by_state: dict[str, int] = {}
    for a in found:
        by_state[a.state] = by_state.get(a.state, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
    total = sum(a.open_findings for a in found)
    click.echo(
        f"{len(found)} repositories{f' ({states})' if states else ''}, {total} open findings",
        err=True,
    )
