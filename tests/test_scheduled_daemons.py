"""Scheduled runs (issue 14): `rcingest run --schedule` and `rcingest serve` on `schedules:`.

Two daemons on one PostgreSQL database run each slot of a job once; a second
daemon on one SQLite file is refused; `serve` answers /metrics with the
schedule series; SIGTERM ends them with exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from rcingest.testing import FakeBitbucket, GenSpec
from tests.test_pr_security_example import free_port

TOKEN = "sched-token-Xw81LmQ"


def pipeline(folder: Path, base_url: str, database: str, every: str = "1s") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "inventory.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: sched-test
            source:
              type: bitbucket_repositories
              config:
                workspace: acme
                base_url: {base_url}
                auth: {{access_token: "${{SCHED_TOKEN}}"}}
            schedules:
              full_sync: {{every: {every}}}
            sinks:
              - {{type: database, config: {{database: '{database}'}}}}
            """
        )
    )
    return path


async def start(path: Path, *args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "SCHED_TOKEN": TOKEN}
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", *args, str(path)]
    return await asyncio.create_subprocess_exec(
        *cmd, cwd=path.parent, env=env, stderr=asyncio.subprocess.PIPE
    )


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, err.decode()


@pytest.mark.postgres
async def test_two_daemons_on_postgres_run_each_slot_once(
    tmp_path: Path, postgres_url: str
) -> None:
    import psycopg2

    async with FakeBitbucket(GenSpec(repositories=2)) as fake:
        a = pipeline(tmp_path / "a", fake.base_url, postgres_url)
        b = pipeline(tmp_path / "b", fake.base_url, postgres_url)
        procs = [await start(a, "run", "--schedule"), await start(b, "run", "--schedule")]
        began = time.time()
        await asyncio.sleep(4.5)
        results = [await stop(p) for p in procs]
        elapsed = time.time() - began
    for code, err in results:
        assert code == 0, err
        assert TOKEN not in err
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT started_at, status, pid FROM runs ORDER BY started_at")
        runs = cur.fetchall()
    assert runs and all(status == "succeeded" for _, status, _ in runs)
    slots = [int(started.timestamp()) for started, _, _ in runs]
    # Each one-second slot ran once, by one daemon or the other, never by both.
    assert len(set(slots)) == len(slots), slots
    assert len(runs) <= elapsed + 2
    started: list[datetime] = [r[0] for r in runs]
    assert len(started) >= 3


async def test_a_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    database = str(tmp_path / "commits.db")
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        first = await start(
            pipeline(tmp_path / "a", fake.base_url, database, "1h"), "run", "--schedule"
        )
        await asyncio.sleep(1.5)
        second = await start(
            pipeline(tmp_path / "b", fake.base_url, database, "1h"), "run", "--schedule"
        )
        _, raw = await asyncio.wait_for(second.communicate(), 60)  # ends by itself
        code2, err2 = second.returncode, raw.decode()
        code1, err1 = await stop(first)
    assert code1 == 0, err1
    assert code2 == 1 and "PostgreSQL" in err2, err2  # refused: the run failed to start


async def test_serve_runs_the_schedule_and_answers_metrics(tmp_path: Path) -> None:
    port = free_port()
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        path = pipeline(tmp_path, fake.base_url, str(tmp_path / "commits.db"), "1h")
        proc = await start(path, "serve", "--port", str(port))
        try:
            text = ""
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                            text = await r.text()
                        if (
                            'rcingest_schedule_runs_total{job="full_sync",outcome="success"} 1.0'
                            in text
                        ):
                            break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
            assert 'rcingest_schedule_runs_total{job="full_sync",outcome="success"} 1.0' in text
            assert "rcingest_schedule_last_success_timestamp_seconds" in text
        finally:
            code, err = await stop(proc)
        assert code == 0, err


def test_serve_refuses_schedules_it_would_not_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rcingest.cli import cli

    path = tmp_path / "daemon.yaml"
    path.write_text(
        "name: x\nsource: {type: bitbucket_webhook, config: {secret: abcdefgh12}}\n"
        "schedules: {run: {every: 1h}}\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path}/x.db'}}}}]\n"
    )
    result = CliRunner().invoke(cli, ["serve", str(path)])
    assert result.exit_code == 2 and "not supported yet" in result.output
    assert not (tmp_path / "x.db").exists()
