"""``rcingest ingest bitbucket-scan``: the runbook's name for ``rcingest run``.

The runbook (written for the tool rcingest replaces) says
``rc ingest bitbucket-scan --hours 4 --config <path> --repos repo-1 repo-2
--branches main develop --database data/bitbucket/commits.db``. The command
here is ``run`` itself under that name: the same options, the same callback,
the same summary and exit codes, so the two can never drift apart.
"""

from __future__ import annotations

import click

__all__ = ["add_ingest_commands"]


def add_ingest_commands(group: click.Group, run: click.Command) -> None:
    """Add ``ingest bitbucket-scan`` (an alias of ``run``) to ``group``."""

    @group.group()
    def ingest() -> None:
        """The runbook's commands (``rc ingest ...``)."""

    ingest.add_command(
        click.Command(
            "bitbucket-scan",
            params=list(run.params),
            callback=run.callback,
            help=(
                "Scan Bitbucket once: `rcingest run` under the runbook's name.\n\n"
                "\b\nExample:\n"
                "  rcingest ingest bitbucket-scan --config scan.yaml --hours 4 "
                "--repos repo-1 repo-2 --branches main develop"
            ),
        )
    )
