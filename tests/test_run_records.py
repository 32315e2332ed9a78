"""Honest run records and summaries (issue 10, section 7)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.runtime import setup_logging
from tests.test_core_pipeline import _pipeline

# A child that opens the database sink (which records its run as "running"),
# says so, and waits to be killed.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from zoneinfo import ZoneInfo
    from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
    from rcingest.interfaces import RunContext

    async def main():
        ctx = RunContext(run_id="victim", pipeline_name="p", timezone=ZoneInfo("UTC"),
                         started_at=datetime.now(UTC), base_dir=Path("."), source_id="p:s")
        async with DatabaseSink(DatabaseConfig(database=sys.argv[1]), ctx):
            print("ready", flush=True)
            await asyncio.sleep(120)

    asyncio.run(main())
    """
)


def _runs(db: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, status, noticed_at, host, pid FROM runs").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_a_killed_run_is_marked_interrupted_by_the_next(
    manager: Any, memory: Any, tmp_path: Path
) -> None:
    db = tmp_path / "commits.db"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        status, noticed, host, pid = _runs(db)["victim"]
        assert (status, noticed, pid) == ("running", None, child.pid)
        assert host
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    # The next run through the database sink notices it.
    pipeline = tmp_path / "next.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            name: next
            source: {{type: test_counter, config: {{count: 3}}}}
            sinks: [{{type: database, config: {{database: '{db}'}}}}]
            """
        )
    )
    result = CliRunner().invoke(cli, ["run", str(pipeline)], obj=manager)
    assert result.exit_code == 0, result.output
    runs = _runs(db)
    status, noticed, _host, _pid = runs["victim"]
    assert status == "interrupted" and noticed is not None
    assert len(runs) == 2


def test_a_live_run_of_this_host_is_left_running(tmp_path: Path) -> None:
    from rcingest.default_plugins.database.runs import process_alive

    assert process_alive(os.getpid())
    assert not process_alive(0)


def test_a_sink_that_cannot_open_gives_failed_and_why(
    manager: Any, memory: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    path = _pipeline(tmp_path, 5)
    text = path.read_text().replace(str(tmp_path / "out" / "records.jsonl"), str(blocker / "x"))
    path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path)], obj=manager)
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert ": failed in " in first and "running" not in first
    reason = next(line for line in result.output.splitlines() if line.startswith("reason:"))
    assert "sink 'jsonl' failed to open" in reason


def test_quiet_logs_only_errors(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(-1)
    log = logging.getLogger("rcingest.test")
    log.warning("a warning that -q hides")
    log.error("an error that -q shows")
    err = capsys.readouterr().err
    assert "a warning that -q hides" not in err
    assert "an error that -q shows" in err
    setup_logging(0)
