"""What the command modules share: the registry, error exit, option parsing helpers.

Kept light on purpose (click and the plugin manager only): ``--help`` and
``--version`` import this module, and everything heavy (aiohttp, peewee, the
pipeline runner) is imported inside the commands that need it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from rcingest.errors import ConfigError, RcingestError
from rcingest.plugins import Manager, Registry, make_plugin_manager

#: ``rcingest run`` and ``rcingest ingest bitbucket-scan`` read this settings file
#: when no pipeline file is named (the runbook's ``config/settings.yaml``).
DEFAULT_SETTINGS = Path("config/settings.yaml")


def registry_of(ctx: click.Context) -> Registry:
    """The registry of the manager passed as ``obj`` (tests), else of the installed plugins."""
    root = ctx.find_root()
    if not isinstance(root.obj, Manager):
        root.obj = make_plugin_manager()
    return Registry(root.obj)


def fail(exc: RcingestError, secrets: frozenset[str] = frozenset()) -> NoReturn:
    """Print the error (each problem on its line, redacted) and exit with its code."""
    from rcingest.runtime import redact

    lines = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
    for line in lines:
        click.echo(f"error: {redact(line, secrets)}", err=True)
    sys.exit(exc.exit_code)


def pipeline_path(pipeline: str | None, config: str | None, *, default: Path | None = None) -> Path:
    """The file named as PIPELINE or ``--config``; else ``default`` when it exists."""
    if pipeline and config and Path(pipeline) != Path(config):
        raise click.UsageError("give the pipeline file once: as an argument or with --config")
    chosen = pipeline or config
    if chosen:
        return Path(chosen)
    if default is not None and default.is_file():
        return default
    hint = f" (or create {default})" if default is not None else ""
    raise click.UsageError(f"missing the pipeline file (PIPELINE or --config PATH){hint}")


def split_values(values: tuple[str, ...]) -> list[str] | None:
    """``("a,b", "c")`` -> ``["a", "b", "c"]``; ``None`` when nothing was given."""
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return items or None


def iso_option(option: str) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback reading ``--since``/``--until`` as an ISO 8601 date or time."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        from rcingest.moments import iso_moment

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
    """``-q``, ``-v`` and the log options (``--log-file``, ``--log-format``)."""
    from rcingest.logs import log_options  # read back by start_logging

    func = log_options(func)
    func = click.option("-v", "--verbose", count=True, help="Log more (repeatable).")(func)
    return click.option("-q", "--quiet", is_flag=True, help="Only errors and the exit code.")(func)


def log_level(quiet: bool, verbose: int) -> int:
    """The verbosity ``start_logging`` takes: -1 quiet, 0 normal, more with ``-v``."""
    return -1 if quiet else verbose
