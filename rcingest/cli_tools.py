"""``rcingest validate``, ``plugins`` and ``schema``: look at pipelines and plugins, run nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rcingest.cli_common import fail, registry_of
from rcingest.errors import ConfigError, RcingestError

if TYPE_CHECKING:
    from rcingest.config import Pipeline

FORMATS = click.Choice(["table", "json"])


@click.command()
@click.argument("pipeline", type=click.Path(dir_okay=False))
@click.option(
    "--check-connection",
    is_flag=True,
    help="Then try the API host and the credentials once, read-only (exit 1 if that fails).",
)
@click.pass_context
def validate(ctx: click.Context, pipeline: str, check_connection: bool) -> None:
    """Check a pipeline or settings file as run and serve would, reporting every problem.

    Each problem is given with its YAML path.

    Unknown keys are errors. Every component is built as run builds it (so an
    API token without its e-mail or a webhook source without a secret is
    caught), without contacting the network or writing anything.
    Exit 0 when valid, 2 when not. With --check-connection, one request to
    the workspace's repository listing and one per configured repository
    (at most 10) follow; exit 1 when one of them fails.

    \b
    Examples:
      rcingest validate config/pipeline.example.yaml
      rcingest validate config/settings.yaml --check-connection
    """
    from rcingest.preflight import preflight
    from rcingest.settings import has_webhook

    path = Path(pipeline)
    try:
        report = preflight(path, registry_of(ctx))
        # A settings file means a second pipeline under `serve` when it has a webhook section.
        served = preflight(path, registry_of(ctx), mode="serve") if has_webhook(path) else None
    except RcingestError as exc:
        fail(exc)
    problems = list(dict.fromkeys(report.problems + (served.problems if served else [])))
    if problems:  # each with its YAML path
        fail(ConfigError(problems[0], problems), report.secrets)
    for checked, command in ((report, "run"), (served, "serve")):
        if checked is None or checked.pipeline is None:
            continue
        loaded = checked.pipeline
        n_enrich, n_sinks = len(loaded.enrichers), len(loaded.sinks)
        under = f" (settings file, under rcingest {command})" if checked.settings else ""
        click.echo(
            f"ok: {path}{under}: source {loaded.source.label}, "
            f"{n_enrich} enricher(s), {n_sinks} sink(s)"
        )
    if check_connection:
        _check_connection([c.pipeline for c in (report, served) if c and c.pipeline])


def _check_connection(pipelines: list[Pipeline]) -> None:
    from rcingest.doctor import check_connection

    seen: set[str] = set()
    failed = False
    for loaded in pipelines:
        for check in check_connection(loaded):
            if check.what in seen:
                continue
            seen.add(check.what)
            failed = failed or not check.ok
            click.echo(check.line())
        if not seen:
            click.echo("ok   nothing to check: no component of this pipeline talks to Bitbucket")
    if failed:
        sys.exit(1)


@click.command()
@click.option("--all", "include_all", is_flag=True, help="Include rcingest's built-in plugins.")
@click.option("--format", "fmt", type=FORMATS, default="json", show_default=True)
@click.pass_context
def plugins(ctx: click.Context, include_all: bool, fmt: str) -> None:
    """List installed plugins: distribution, version, types and hooks.

    \b
    Examples:
      rcingest plugins --all --format table
      rcingest plugins --all | jq '.[].types'
    """
    from rcingest.plugins import describe_plugins

    registry = registry_of(ctx)
    described = describe_plugins(registry.manager, include_builtins=include_all)
    if fmt == "json":
        click.echo(json.dumps(described, indent=2))
        return
    rows = [
        (
            d["name"],
            f"{d['distribution']} {d['version']}",
            ", ".join(f"{kind}: {' '.join(names)}" for kind, names in d["types"].items()) or "-",
        )
        for d in described
    ]
    click.echo(table(("PLUGIN", "DISTRIBUTION", "TYPES"), rows), nl=False)


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """A plain aligned text table (no borders: easy to grep and to read in a log)."""
    cells = [tuple(str(c) for c in header), *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines) + "\n"


@click.command()
@click.argument(
    "name", type=click.Choice(["pipeline", "settings", "policy", "run"]), default="pipeline"
)
@click.option("--write", is_flag=True, help="Write every generated schema to its committed file.")
@click.option("--all", "include_all", is_flag=True, help="Include third-party plugin types.")
@click.pass_context
def schema(ctx: click.Context, name: str, write: bool, include_all: bool) -> None:
    """Print (or --write) JSON Schemas generated from the config and artifact types.

    The committed files (schemas/pipeline.schema.json, settings.schema.json, policy.schema.json,
    run.schema.json and its copy under artifacts/) hold the built-in types only.

    \b
    Examples:
      rcingest schema > pipeline.schema.json
      rcingest schema run
      rcingest schema settings
      rcingest schema --write
    """
    from rcingest.plugins import Registry, make_plugin_manager
    from rcingest.schema import dumps, generated_schemas

    builtins = Registry(make_plugin_manager(only_builtins=True))
    registry = registry_of(ctx) if include_all and not write else builtins
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


#: ``rcingest init --kind``: the template (in rcingest/templates/) and where it goes by default.
TEMPLATES = {
    "settings": ("settings.yaml", "config/settings.yaml"),
    "scan": ("scan.yaml", "config/scan.yaml"),
    "webhook": ("webhook.yaml", "config/webhook.yaml"),
}


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--kind",
    type=click.Choice(sorted(TEMPLATES)),
    default="settings",
    show_default=True,
    help="settings: the runbook's settings file; scan / webhook: a pipeline file.",
)
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
def init(path: str | None, kind: str, force: bool) -> None:
    """Write a commented settings or pipeline file to start from.

    \b
    Examples:
      rcingest init                      # config/settings.yaml
      rcingest init --kind webhook hooks.yaml
    """
    from importlib.resources import files

    template, default = TEMPLATES[kind]
    target = Path(path or default)
    if target.exists() and not force:
        raise click.UsageError(f"{target} exists; --force replaces it")
    text = files("rcingest").joinpath("templates", template).read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(target)  # atomic: never a half-written file under the real name
    command = "serve" if kind == "webhook" else "run"
    click.echo(f"wrote {target} ({kind})")
    click.echo(f"next: edit it, then `rcingest validate {target} --check-connection`")
    click.echo(f"      and `rcingest {command} {target}`")
