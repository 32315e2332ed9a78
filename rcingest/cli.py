"""The ``rcingest`` command line: a thin shell over the library.

Exit codes: 0 success; 1 the run failed; 2 bad usage or bad configuration
(nothing was written). The commands live in ``cli_run`` (run, serve),
``cli_tools`` (validate, init, plugins, schema) and ``cli_ingest`` (the runbook's
names); plugins add theirs through ``rcingest_register_commands``.
"""

from __future__ import annotations

import click

from rcingest import __version__
from rcingest.cli_assets import assets
from rcingest.cli_check import check
from rcingest.cli_common import fail
from rcingest.cli_common import iso_option as _iso  # kept for tests and callers of 0.1
from rcingest.cli_inbox import inbox
from rcingest.cli_ingest import add_ingest_commands
from rcingest.cli_normalise import normalise
from rcingest.cli_replay import replay
from rcingest.cli_run import run, serve
from rcingest.cli_scan import scan_diff
from rcingest.cli_tools import init, plugins, schema, validate
from rcingest.errors import RcingestError
from rcingest.plugins import Manager, Registry, make_plugin_manager

__all__ = ["_iso", "build_cli", "cli", "main"]


@click.group(
    epilog="Exit codes: 0 ok, 1 the run failed, 2 bad usage or bad configuration. "
    "Docs: the docs/ folder of the rcingest repository or source distribution "
    "(not the wheel): docs/cli.md (commands, shell completion), docs/configuration.md, "
    "docs/plugin-hooks.md."
)
@click.version_option(__version__, prog_name="rcingest")
def cli() -> None:
    """rcingest: ingest Bitbucket commits, files, authors and Jira keys through plugin pipelines."""


for _command in (
    run, serve, normalise, validate, init, plugins, schema, scan_diff, check, assets, inbox,
    replay,
):  # fmt: skip
    cli.add_command(_command)
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
        fail(exc)
    group.main(obj=manager, prog_name="rcingest")
