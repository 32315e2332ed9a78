"""`--repos repo-1 repo-2`: the runbook's space-separated values (issue 11, point 2)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.cli_options import GreedyOption


@click.command()
@click.argument("path", required=False)
@click.option("--repos", cls=GreedyOption)
@click.option("--branches", cls=GreedyOption)
@click.option("--dry-run", is_flag=True)
def probe(
    path: str | None, repos: tuple[str, ...], branches: tuple[str, ...], dry_run: bool
) -> None:
    click.echo(json.dumps({"path": path, "repos": repos, "branches": branches, "dry": dry_run}))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["p.yaml", "--repos", "a", "b", "--branches", "main", "develop"],
            {"path": "p.yaml", "repos": ["a", "b"], "branches": ["main", "develop"], "dry": False},
        ),
        (
            ["--repos", "a,b", "--repos", "c", "--dry-run", "p.yaml"],
            {"path": "p.yaml", "repos": ["a,b", "c"], "branches": [], "dry": True},
        ),
        (
            ["--repos", "a", "b", "--", "p.yaml"],
            {"path": "p.yaml", "repos": ["a", "b"], "branches": [], "dry": False},
        ),
        (["--branches", "main"], {"path": None, "repos": [], "branches": ["main"], "dry": False}),
    ],
)
def test_space_separated_commas_and_repetition(
    args: list[str], expected: dict[str, object]
) -> None:
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


@pytest.fixture
def fake_bitbucket() -> Iterator[str]:
    """The fake Bitbucket in its own process (``rcingest run`` runs its own event loop)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcingest.testing.fake_bitbucket"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and line[0] == "READY", line
        yield line[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("command", [["run"], ["ingest", "bitbucket-scan", "--config"]])
def test_run_takes_the_runbooks_space_separated_repos(
    tmp_path: Path, fake_bitbucket: str, command: list[str]
) -> None:
    pipeline = tmp_path / "scan.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            name: scan
            source:
              type: bitbucket_rest
              config: {{workspace: acme, base_url: '{fake_bitbucket}'}}
            sinks: [{{type: database, config: {{database: '{tmp_path}/commits.db'}}}}]
            """
        )
    )
    args = [*command, str(pipeline), "--hours", "4", "--repos", "service-00", "service-01"]
    result = CliRunner().invoke(cli, [*args, "--branches", "main", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "succeeded"
    with sqlite3.connect(tmp_path / "commits.db") as conn:
        repos = {r for (r,) in conn.execute("SELECT DISTINCT repository FROM commits")}
    assert repos == {"acme/service-00", "acme/service-01"}
