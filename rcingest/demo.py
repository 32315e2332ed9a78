"""``rcingest demo``: the example scan against a fake Bitbucket on loopback.

No account and no network: the fake Bitbucket of ``rcingest.testing`` serves
a generated workspace on 127.0.0.1, a pipeline like
``config/pipeline.example.yaml`` (bitbucket_rest → story_keys → database +
json_artifact) is written into a local folder and run through the same
loader and runner as ``rcingest run``, and the command prints what it stored,
where, and how long it took.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import yaml

from rcingest.config import load_pipeline
from rcingest.errors import RcingestError
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.runtime import make_context
from rcingest.summary import format_summary
from rcingest.testing import FakeBitbucket, GenSpec

__all__ = ["DEMO_UNTIL", "demo", "demo_pipeline", "run_demo"]

#: The token the demo's fake expects; it only protects a loopback toy.
DEMO_TOKEN = "demo-token-not-a-secret"  # noqa: S105

#: The demo scans a fixed day, not the last hours before now, so its database
#: is the same every time and the ready queries of docs/database.md (written
#: for the America/Phoenix day 2026-11-20 and ``acme/api``) find rows in it.
#: Its window ends at midnight in Phoenix (UTC-7 all year, no DST) ...
DEMO_UNTIL = "2026-11-21T00:00:00"
#: ... and the fake's newest commit is a little before that, inside the window.
DEMO_END = datetime(2026, 11, 21, 7, tzinfo=UTC) - timedelta(minutes=20)
#: Repository slugs the docs use (``service-03``, ... after them).
DEMO_SLUGS = ("api", "web", "mobile")


def demo_pipeline(base_url: str, folder: Path, branches: list[str], hours: float) -> dict[str, Any]:
    """The demo's pipeline mapping: the example scan, pointed at the fake and at ``folder``."""
    return {
        "name": "demo-scan",
        "timezone": "America/Phoenix",
        "source": {
            "type": "bitbucket_rest",
            "config": {
                "base_url": base_url,
                "workspace": "acme",
                "auth": {"access_token": "${RCINGEST_DEMO_TOKEN:-" + DEMO_TOKEN + "}"},
                "default_branches": branches,
                "hours": hours,
                "until": DEMO_UNTIL,
                # The fake has no rate limit: an hourly budget would only
                # stall a large demo (0 = unlimited).
                "requests_per_hour": 0,
            },
        },
        "enrichers": [{"type": "story_keys"}],
        "sinks": [
            {"type": "database", "config": {"database": str(folder / "commits.db")}},
            {"type": "json_artifact", "config": {"artifacts_dir": str(folder / "artifacts")}},
        ],
    }


def _table_counts(db: Path) -> dict[str, int]:
    tables = ["repositories", "commits", "commit_repositories", "commit_branches"]
    tables += ["commit_files", "story_keys"]
    tables += ["pull_requests", "pull_request_commits"]
    counts: dict[str, int] = {}
    if not db.exists():
        return counts
    with sqlite3.connect(db) as conn:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in tables:
            if table in present:
                counts[table] = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed names
    return counts


async def run_demo(
    folder: Path, *, repositories: int = 3, hours: float = 24.0, latency: float = 0.0
) -> int:
    """Serve the fake, write ``folder/pipeline.yaml``, run it, print the results; the exit code.

    ``folder`` must exist (the command creates it).
    """
    spec = GenSpec(
        repositories=repositories, branches=3, commits=120, end=DEMO_END, slugs=DEMO_SLUGS
    )
    started = time.monotonic()
    async with FakeBitbucket(spec, expected_auth=f"Bearer {DEMO_TOKEN}") as fake:
        fake.faults.latency = latency
        branches = list(next(iter(fake.data.repos.values())).heads)
        path = folder / "pipeline.yaml"
        text = yaml.safe_dump(
            demo_pipeline(fake.base_url, folder, branches, hours), sort_keys=False
        )
        header = (
            "# Written by `rcingest demo`: the example scan against a fake Bitbucket on loopback.\n"
        )
        path.write_text(header + text, encoding="utf-8")
        shown = ", ".join(branches)
        click.echo(f"fake Bitbucket: {fake.base_url} ({repositories} repositories; {shown})")
        click.echo(f"pipeline:       {path}")
        try:
            pipeline = load_pipeline(path, Registry(make_plugin_manager()))
            context = make_context(pipeline, mode="run")
            result = await Runner(pipeline, context).run()
            code = 0
        except RcingestError as exc:
            click.echo(f"error: {exc}", err=True)
            return exc.exit_code
        requests = fake.counters.total
    elapsed = time.monotonic() - started
    click.echo("")
    click.echo(format_summary(result, pipeline, context, code))
    click.echo("")
    db = folder / "commits.db"
    counts = _table_counts(db)
    click.echo(f"stored in {db}:")
    for table, n in counts.items():
        click.echo(f"  {table:<22} {n:>7}")
    artifacts = sorted((folder / "artifacts").glob("scan_*.json"))
    if artifacts:
        click.echo(f"artifact:       {artifacts[-1]}")
    click.echo(
        f"took {elapsed:.2f}s in all ({requests} requests to the fake, scan {result.duration:.2f}s)"
    )
    query = "SELECT key, COUNT(*) FROM story_keys GROUP BY key"
    click.echo(f"look inside:    sqlite3 {db} '{query}'")
    return code


@click.command()
@click.option(
    "--dir",
    "folder",
    default="rcingest-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the pipeline, the database and the artifacts.",
)
@click.option("--repositories", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--hours", default=24.0, show_default=True, type=click.FloatRange(min=0, min_open=True)
)
@click.option(
    "--latency",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds the fake waits per request.",
)
def demo(folder: Path, repositories: int, hours: float, latency: float) -> None:
    """Run the example scan against a fake Bitbucket on loopback (no account, no network).

    The fake's history is fixed; the scan covers the --hours before midnight
    ending the America/Phoenix day 2026-11-20, so every run stores the same rows.

    \b
    Example:
      rcingest demo                 # writes ./rcingest-demo/
      rcingest demo --dir /tmp/demo --repositories 5 --latency 0.03
    """
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    raise SystemExit(
        asyncio.run(run_demo(folder, repositories=repositories, hours=hours, latency=latency))
    )
