"""run_sarif_scanner against tests/fixtures/sarif/fake_scanner.py, a real child process."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import msgspec
import pytest

from rcingest.scanning.diff import parse_diff
from rcingest.scanning.external import ScannerFailed, ScannerTimeout, run_sarif_scanner
from rcingest.scanning.model import AddedLine, DiffFile, fingerprint

SCRIPT = str(Path(__file__).parent / "fixtures" / "sarif" / "fake_scanner.py")
DIFFS = Path(__file__).parent / "fixtures" / "diffs"
KEY = b"external-test-key"
AWS = "AKIAQWERTYUIOPASDFGH"
OTHER = "AKIAZXCVBNMLKJHGFDSA"


def command(mode: str = "ok", extra: str = "", out: str = "{out}") -> list[str]:
    return [sys.executable, SCRIPT, "{dir}", out, mode, extra]


def files() -> list[DiffFile]:
    extra = DiffFile(
        path="deploy/keys.env",
        status="added",
        added=[AddedLine(2, f"A={OTHER}"), AddedLine(7, f"B={OTHER}")],
    )
    return [*parse_diff((DIFFS / "pr_mixed.diff").read_bytes()), extra]


def assert_empty(parent: Path) -> None:
    assert list(parent.iterdir()) == []


async def test_findings_sit_on_the_pull_requests_lines(tmp_path: Path) -> None:
    found = await run_sarif_scanner(
        command(), files(), key=KEY, timeout=60, workdir_parent=str(tmp_path)
    )
    assert [(f.path, f.line_start, f.rule_id) for f in found] == [
        ("app.py", 21, "aws-access-token"),  # the second hunk's added line
        ("deploy/keys.env", 2, "aws-access-token"),
        ("deploy/keys.env", 7, "aws-access-token"),
    ]
    assert found[0].fingerprint == fingerprint(KEY, "aws-access-token", AWS)
    assert {f.scanner for f in found} == {"sarif:fakeleaks"}
    assert AWS not in msgspec.json.encode(found).decode()
    assert_empty(tmp_path)


async def test_the_tree_holds_only_added_content_privately(tmp_path: Path) -> None:
    work, seen = tmp_path / "work", tmp_path / "seen.json"
    work.mkdir()
    await run_sarif_scanner(
        command("inspect", str(seen)), files(), key=KEY, timeout=60, workdir_parent=str(work)
    )
    listing = json.loads(seen.read_text())
    assert listing["parent_mode"] == 0o700
    # Deleted, binary and mode-only files have nothing added: not written.
    assert listing["files"] == [
        "app.py",
        "deploy/keys.env",
        "dir with space/added file.md",
        "new name.txt",
        "nonl.txt",
        "win.bat",
    ]
    assert listing["cwd"].endswith("/tree")
    assert_empty(work)


async def test_gaps_are_empty_lines(tmp_path: Path) -> None:
    # The fake reports a key at the line it reads it on: line 7 means six
    # lines (five of them empty) came before it.
    only = [DiffFile(path="k", added=[AddedLine(7, AWS)])]
    [finding] = await run_sarif_scanner(
        command(), only, key=KEY, timeout=60, workdir_parent=str(tmp_path)
    )
    assert finding.line_start == 7


async def test_sarif_on_stdout_when_there_is_no_out(tmp_path: Path) -> None:
    found = await run_sarif_scanner(
        [sys.executable, SCRIPT, "{dir}", "-"],
        files(),
        key=KEY,
        timeout=60,
        workdir_parent=str(tmp_path),
    )
    assert len(found) == 3


async def test_unsafe_paths_are_scanned_and_reported_under_their_own_name(
    tmp_path: Path,
) -> None:
    odd = [
        DiffFile(path="../escape.txt", added=[AddedLine(1, AWS)]),
        DiffFile(path="a", added=[AddedLine(1, "x")]),
        DiffFile(path="a/b", added=[AddedLine(3, OTHER)]),  # "a" is a file already
    ]
    found = await run_sarif_scanner(
        command(), odd, key=KEY, timeout=60, workdir_parent=str(tmp_path)
    )
    assert sorted((f.path, f.line_start) for f in found) == [("../escape.txt", 1), ("a/b", 3)]
    assert not (tmp_path.parent / "escape.txt").exists()


async def test_exit_code_one_means_findings_not_failure(tmp_path: Path) -> None:
    clean = [DiffFile(path="x", added=[AddedLine(1, "nothing here")])]
    assert (
        await run_sarif_scanner(command(), clean, key=KEY, timeout=60, workdir_parent=str(tmp_path))
        == []
    )
    with pytest.raises(ScannerFailed, match="exited with code 1"):
        await run_sarif_scanner(
            command(), files(), key=KEY, timeout=60, workdir_parent=str(tmp_path), ok_codes={0}
        )
    assert_empty(tmp_path)


async def test_non_zero_exit_is_failed_with_redacted_stderr(tmp_path: Path) -> None:
    with pytest.raises(ScannerFailed) as caught:
        await run_sarif_scanner(
            command("fail"), files(), key=KEY, timeout=60, workdir_parent=str(tmp_path)
        )
    message = str(caught.value)
    assert "exited with code 2" in message and "fatal: internal error" in message
    assert AWS not in message and OTHER not in message
    assert "[redacted]" in message
    assert len(message) < 600
    assert_empty(tmp_path)


async def test_timeout_kills_the_tool_and_its_children(tmp_path: Path) -> None:
    work, pid_file = tmp_path / "work", tmp_path / "child.pid"
    work.mkdir()
    with pytest.raises(ScannerTimeout, match="did not finish within 3s"):
        await run_sarif_scanner(
            command("sleep", str(pid_file)),
            files(),
            key=KEY,
            timeout=3,
            workdir_parent=str(work),
        )
    assert_empty(work)
    # Three seconds are ample for the tool to start its child on a busy machine.
    child = int(pid_file.read_text())
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    os.kill(pid, signal.SIGKILL)  # ours, started by the fake scanner: do not leak it
    return True


@pytest.mark.parametrize(
    ("mode", "message"),
    [("garbage", "unreadable SARIF: not valid JSON"), ("noreport", "wrote no SARIF report")],
)
async def test_bad_output_is_failed(tmp_path: Path, mode: str, message: str) -> None:
    with pytest.raises(ScannerFailed, match=message):
        await run_sarif_scanner(
            command(mode), files(), key=KEY, timeout=60, workdir_parent=str(tmp_path)
        )
    assert_empty(tmp_path)


async def test_missing_binary_and_empty_command(tmp_path: Path) -> None:
    with pytest.raises(ScannerFailed, match="could not be started"):
        await run_sarif_scanner(
            [str(tmp_path / "no-such-scanner"), "{dir}"],
            files(),
            key=KEY,
            timeout=60,
            workdir_parent=str(tmp_path),
        )
    with pytest.raises(ScannerFailed, match="empty command"):
        await run_sarif_scanner([], files(), key=KEY, timeout=60)
    assert_empty(tmp_path)


async def test_the_tool_does_not_get_rcingest_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITBUCKET_TOKEN", "not-for-scanners")
    work, seen = tmp_path / "work", tmp_path / "env.json"
    work.mkdir()
    await run_sarif_scanner(
        command("env", str(seen)),
        files(),
        key=KEY,
        timeout=60,
        workdir_parent=str(work),
        env={"SCANNER_OPT": "1"},
    )
    names = json.loads(seen.read_text())
    assert "BITBUCKET_TOKEN" not in names and "SCANNER_OPT" in names and "PATH" in names
