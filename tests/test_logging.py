"""Logs: zoned stamps, the log file (folder, rotation), JSON lines, redaction, the cadence line."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.interfaces import RunContext
from rcingest.logconfig import LoggingConfig
from rcingest.logs import setup_logging, stamp
from rcingest.pipeline import RunResult
from rcingest.summary import IntervalSummary, cadence_line

HERE = Path(__file__).resolve().parent
SECRET = "s3cr3t-planted-in-a-log-line"
PHOENIX = ZoneInfo("America/Phoenix")
# 2026-12-02T10:15:03.120-07:00, then a space (text) or the end of the JSON value.
PHOENIX_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-07:00$")
# The window the test_counter source reports, shown in America/Phoenix.
WINDOW = "window [2026-10-31T17:00:00-07:00, 2026-10-31T21:00:00-07:00)"

PIPELINE = """
name: logs
timezone: America/Phoenix
source:
  type: test_counter
  config: {{count: {count}, checkpoint_every: 5}}
sinks:
  - type: jsonl
    config: {{path: '{out}'}}
batch: {{size: 5, linger: 0}}
{extra}
"""


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    setup_logging(0)  # closes any log file a test opened


def _pipeline(tmp_path: Path, count: int = 12, out: str | None = None, extra: str = "") -> Path:
    path = tmp_path / "logs.yaml"
    target = out or str(tmp_path / "out" / "records.jsonl")
    path.write_text(PIPELINE.format(count=count, out=target, extra=extra))
    return path


def _stamp_of(line: str) -> str:
    return line.split(" ", 1)[0]


def _cadence(lines: list[str]) -> list[str]:
    return [line for line in lines if f": {WINDOW} " in line]


def test_run_stamps_stderr_and_file_in_the_pipeline_zone(manager: Any, tmp_path: Path) -> None:
    log_file = tmp_path / "temp_data" / "bitbucket" / "rcingest.log"
    args = ["run", str(_pipeline(tmp_path)), "--log-file", str(log_file)]
    result = CliRunner().invoke(cli, args, obj=manager)
    assert result.exit_code == 0, result.output
    assert log_file.parent.is_dir()  # created with its folder
    for lines in (result.stderr.splitlines(), log_file.read_text().splitlines()):
        assert lines
        for line in lines:
            assert PHOENIX_STAMP.match(_stamp_of(line)), line
        (cadence,) = _cadence(lines)  # once per run
        assert " INFO rcingest.cli: run " in cadence
        assert cadence.endswith("s") and "commit 12 in " in cadence
    # A second run appends its own line: one per run.
    again = CliRunner().invoke(cli, args, obj=manager)
    assert again.exit_code == 0, again.output
    assert len(_cadence(log_file.read_text().splitlines())) == 2


def test_logging_section_writes_json_lines_and_the_flag_overrides_it(
    manager: Any, tmp_path: Path
) -> None:
    section_file = tmp_path / "logs" / "from-section.log"
    extra = f"logging: {{file: '{section_file}', format: json, level: info}}"
    path = _pipeline(tmp_path, extra=extra)
    result = CliRunner().invoke(cli, ["run", str(path), "--json"], obj=manager)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    records = [json.loads(line) for line in section_file.read_text().splitlines()]
    assert records
    for record in records:
        assert {"time", "level", "logger", "message", "run_id"} <= record.keys()
        assert PHOENIX_STAMP.match(record["time"]), record
        assert record["run_id"] == summary["run_id"]
    (cadence,) = [r for r in records if WINDOW in r["message"]]
    assert cadence["level"] == "INFO" and cadence["logger"] == "rcingest.cli"
    # stderr uses the section's format too.
    assert all(json.loads(line)["time"] for line in result.stderr.splitlines())

    flag_file = tmp_path / "flag.log"
    args = ["run", str(path), "--log-file", str(flag_file), "--log-format", "text"]
    before = section_file.read_text()
    result = CliRunner().invoke(cli, args, obj=manager)
    assert result.exit_code == 0, result.output
    assert section_file.read_text() == before  # the flag replaced the section's file
    assert len(_cadence(flag_file.read_text().splitlines())) == 1
    assert PHOENIX_STAMP.match(_stamp_of(flag_file.read_text().splitlines()[0]))


def test_a_secret_reaches_neither_stderr_nor_the_file_nor_json(
    manager: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sink cannot open its file, and the path holds the secret: the run's
    # failure reason (in the cadence line) would quote it.
    monkeypatch.setenv("RCI_LOG_TOKEN", SECRET)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    path = _pipeline(tmp_path, out=f"{blocker}/${{RCI_LOG_TOKEN}}/x.jsonl")
    for fmt in ("text", "json"):
        log_file = tmp_path / f"run.{fmt}.log"
        args = ["run", str(path), "--log-file", str(log_file), "--log-format", fmt]
        result = CliRunner().invoke(cli, args, obj=manager)
        assert result.exit_code == 1
        text = log_file.read_text()
        assert "failed" in text and "***" in text  # the reason is there, redacted
        assert SECRET not in text
        assert SECRET not in result.output and SECRET not in result.stderr
        if fmt == "json":
            assert [json.loads(line) for line in text.splitlines()]


def test_secrets_in_messages_arguments_and_extras_are_redacted(tmp_path: Path) -> None:
    log_file = tmp_path / "deep" / "er" / "x.log"
    setup_logging(0, {SECRET}, timezone=PHOENIX, log_file=log_file, log_format="json", run_id="r-1")
    log = logging.getLogger("rcingest.test")
    log.info("token %s", SECRET, extra={"auth": {"token": SECRET}, "attempt": 2})
    log.warning("url https://user:%s@example.test/x", SECRET)
    try:
        raise RuntimeError(f"boom with {SECRET}")
    except RuntimeError:
        log.exception("it failed")
    text = log_file.read_text()
    assert SECRET not in text
    first, second, third = (json.loads(line) for line in text.splitlines())
    assert first["message"] == "token ***" and first["auth"] == {"token": "***"}
    assert first["attempt"] == 2 and first["run_id"] == "r-1"
    assert "***" in second["message"] and second["level"] == "WARNING"
    assert "boom with ***" in third["message"]  # the traceback, redacted


def test_the_file_rotates_at_max_bytes(tmp_path: Path) -> None:
    log_file = tmp_path / "rot" / "r.log"
    setup_logging(0, config=LoggingConfig(file=str(log_file), max_bytes=400, backups=2))
    log = logging.getLogger("rcingest.test")
    for i in range(40):
        log.info("line %03d %s", i, "x" * 40)
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["r.log", "r.log.1", "r.log.2"]  # two backups kept, older ones deleted
    for name in files:
        assert (log_file.parent / name).stat().st_size <= 400
    assert "line 039" in log_file.read_text()


def test_quiet_shows_only_errors_on_stderr_but_the_file_keeps_info(
    manager: Any, tmp_path: Path
) -> None:
    log_file = tmp_path / "q.log"
    args = ["run", str(_pipeline(tmp_path)), "-q", "--log-file", str(log_file)]
    result = CliRunner().invoke(cli, args, obj=manager)
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert len(_cadence(log_file.read_text().splitlines())) == 1


def test_quiet_hides_info_and_warning(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(-1)
    log = logging.getLogger("rcingest.test")
    log.info("an info -q hides")
    log.warning("a warning -q hides")
    log.error("an error -q shows")
    err = capsys.readouterr().err
    assert "hides" not in err and "an error -q shows" in err


def test_before_the_pipeline_is_loaded_stamps_are_utc() -> None:
    moment = datetime(2026, 12, 2, 17, 15, 3, 120000, tzinfo=UTC).timestamp()
    assert stamp(moment, UTC) == "2026-12-02T17:15:03.120+00:00"
    assert stamp(moment, PHOENIX) == "2026-12-02T10:15:03.120-07:00"


def test_a_log_file_that_cannot_be_opened_is_a_config_error(manager: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = ["run", str(_pipeline(tmp_path)), "--log-file", str(blocker / "x.log")]
    result = CliRunner().invoke(cli, args, obj=manager)
    assert result.exit_code == 2
    assert str(blocker / "x.log") in result.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_an_unknown_key_of_the_logging_section_is_reported_with_its_path(
    manager: Any, tmp_path: Path
) -> None:
    path = _pipeline(tmp_path, extra="logging: {file: x.log, rotate: yes}")
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=manager)
    assert result.exit_code == 2
    assert "$.logging" in result.output


def _context() -> RunContext:
    started = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    return RunContext("r-2", "p", PHOENIX, started, Path("."), mode="serve")


def test_interval_summaries_state_each_intervals_window_and_counts() -> None:
    context = _context()
    result = RunResult("r-2", "running", 0.0, records={"commit": 3})
    ticks = IntervalSummary(context, result)
    ticks.since = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    result.records = {"commit": 10, "pull_request": 2}
    cadence, totals = ticks.lines(result, now=datetime(2026, 12, 2, 17, 1, tzinfo=UTC))
    assert cadence == (
        "run r-2: window [2026-12-02T10:00:00-07:00, 2026-12-02T10:01:00-07:00) "
        "commit 7, pull_request 2 in 60.00s"
    )
    assert totals.startswith("summary: commit 10, pull_request 2; checkpoints 0")
    quiet, _ = ticks.lines(result, now=datetime(2026, 12, 2, 17, 2, tzinfo=UTC))
    assert "10:01:00-07:00, 2026-12-02T10:02:00-07:00) no records in 60.00s" in quiet


def test_a_run_without_a_window_reports_the_time_it_covered() -> None:
    context = _context()
    result = RunResult("r-2", "failed", 90.5, records={"commit": 1}, error="boom")
    line = cadence_line(result, context)
    end = (context.started_at + timedelta(seconds=90.5)).astimezone(PHOENIX)
    assert f"[2026-12-02T10:00:00-07:00, {end.isoformat(timespec='seconds')})" in line
    assert line.endswith("commit 1 in 90.50s; failed: boom")


def test_serve_logs_a_cadence_line_each_interval_in_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    log_file = tmp_path / "temp_data" / "bitbucket" / "serve.log"
    pipeline = tmp_path / "serve.yaml"
    pipeline.write_text(
        "name: ticker\ntimezone: America/Phoenix\nsummary_interval: 0.2\nsource: {type: tick}\n"
        f"sinks: [{{type: jsonl, config: {{path: '{out}'}}}}]\n"
    )
    command = [sys.executable, str(HERE / "serve_main.py"), "serve", str(pipeline)]
    proc = subprocess.Popen(
        [*command, "--log-file", str(log_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if log_file.exists() and log_file.read_text().count(": window [") >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    lines = log_file.read_text().splitlines()
    cadence = [line for line in lines if ": window [" in line]
    assert len(cadence) >= 3  # at least two intervals and the end of the run
    for line in cadence:
        assert PHOENIX_STAMP.match(_stamp_of(line)), line
        assert re.search(r"window \[\S+-07:00, \S+-07:00\) ", line), line
    assert any("repository " in line for line in cadence[:-1])
