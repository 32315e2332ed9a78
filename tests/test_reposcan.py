"""``scan_repository``: a main branch's secret scan from a real shallow clone (issue 14, pattern 1).

Every test clones from ``git http-backend`` on loopback with the real git
CLI and scans with the shipped ``secrets`` scanner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rcingest.bitbucket.auth import AuthConfig
from rcingest.default_plugins.scanners import SecretsConfig, SecretsScanner
from rcingest.errors import RcingestError
from rcingest.reposcan import RepositoryTarget, git_auth_header, scan_repository
from rcingest.scanning.allowlist import Allowlist
from rcingest.scanning.model import DiffFile, Finding
from rcingest.scanning.records import RepositoryScan
from rcingest.scanning.settings import ScanningConfig
from rcingest.testing import make_test_context
from rcingest.testing.git_http import (
    GitHttpServer,
    RecordingGit,
    git_command_lines,
    process_group_alive,
)

AWS = "AKIAZ7VRSQ5TJPHKXW4Q"
GITHUB = "ghp_R8v2Kq9sLm4Tx7Wb1Zc5Nd3Hf6Jg0Ya8Pe2Q"
TOKEN = "repo-access-token-7Hq2Lm9Xv4Tz8Rb1"
HEADER = git_auth_header(AuthConfig(access_token=TOKEN))
assert HEADER is not None
SECRET_VALUES = (AWS, TOKEN, HEADER, HEADER.split()[1])
SETTINGS = "[default]\nregion = eu-west-1\naws_access_key_id = " + AWS + "\n"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[GitHttpServer]:
    async with GitHttpServer(tmp_path / "served", auth=HEADER) as running:
        yield running


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """Where scans and git's HOME make their temporary folders (empty after every scan)."""
    folder = tmp_path / "work"
    folder.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    yield folder
    tempfile.tempdir = saved


def secrets_scanner(tmp_path: Path, allowlist: Allowlist | None = None) -> SecretsScanner:
    ctx = make_test_context(tmp_path)
    ctx.scanning = ScanningConfig(fingerprint_key="reposcan-test-key-0123456789")
    scanner = SecretsScanner(SecretsConfig(allowlist=allowlist or Allowlist()), ctx)
    scanner.name = "secrets"
    return scanner


async def scan(
    server: GitHttpServer,
    tmp_path: Path,
    name: str = "acme/api",
    scanners: Sequence[Any] | None = None,
    **kw: Any,
) -> RepositoryScan | None:
    target = RepositoryTarget(
        repository=name,
        branch=kw.pop("branch", "main"),
        clone_url=server.url(name),
        head=kw.pop("head", None),
    )
    options: dict[str, Any] = {
        "auth_header": HEADER,
        "allowed_host": server.authority,
        "max_bytes": 5_000_000,
        "timeout": 20.0,
    }
    options.update(kw)
    return await scan_repository(
        target, scanners if scanners is not None else [secrets_scanner(tmp_path)], **options
    )


async def test_a_planted_key_is_found_and_nothing_secret_leaks(
    server: GitHttpServer, tmp_path: Path, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head = server.make_repo(
        "acme/api",
        {"README.md": "# api\n", "config/aws.ini": SETTINGS, "src/app.py": "print('hi')\n"},
    )
    git = RecordingGit.create(tmp_path / "bin")
    server.faults.slow = 0.3  # long enough for the process list to be read mid-clone
    seen: list[str] = []

    async def watch_processes() -> None:
        while True:
            seen.extend(git_command_lines())
            await asyncio.sleep(0.05)

    caplog.set_level(logging.DEBUG)
    watcher = asyncio.ensure_future(watch_processes())
    try:
        result = await scan(server, tmp_path, git=git.path)
    finally:
        watcher.cancel()
    assert result is not None
    assert (result.state, result.head, result.branch) == ("findings", head, "main")
    [finding] = result.findings
    assert (finding.path, finding.line_start, finding.rule_id) == ("config/aws.ini", 3, "np.aws.1")
    assert (result.files_scanned, result.bytes_scanned) == (3, 6 + len(SETTINGS) + 12)
    assert result.scanners == ["secrets"]

    encoded = msgspec.json.encode(result).decode()
    argv = " ".join(a for _, a in git.calls())
    processes = "\n".join(seen)
    assert any("clone" in line for line in seen), "the process list was read during the clone"
    requested = " ".join(r.path + "?" + r.query for r in server.requests)
    for value in SECRET_VALUES:
        for where, text in [
            ("record", encoded),
            ("logs", caplog.text),
            ("argv", argv),
            ("process list", processes),
            ("request URLs", requested),
        ]:
            assert value not in text, f"{value[:6]}... in the {where}"
    assert all(r.headers["Authorization"] == HEADER for r in server.requests)
    assert list(workdir.iterdir()) == []  # the checkout and git's HOME are gone


async def test_a_removed_secret_is_gone_at_the_new_head_and_an_unchanged_head_is_skipped(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    first = server.make_repo("acme/api", {"config/aws.ini": SETTINGS, "a.py": f"T = '{GITHUB}'\n"})
    found = await scan(server, tmp_path)
    assert found is not None and {f.rule_id for f in found.findings} == {"np.aws.1", "np.github.1"}
    # The REST head equal to the last scan's: nothing runs, not even git.
    git = RecordingGit.create(tmp_path / "bin")
    assert await scan(server, tmp_path, head=first, previous_head=first, git=git.path) is None
    assert git.calls() == []
    # No REST head: one ls-remote, no clone.
    assert await scan(server, tmp_path, previous_head=first, git=git.path) is None
    assert [argv.split()[0] for _, argv in git.calls()] == ["ls-remote"]

    second = server.commit("acme/api", remove=["config/aws.ini"])
    fixed = await scan(server, tmp_path, previous_head=first)
    assert fixed is not None and fixed.head == second
    assert [f.rule_id for f in fixed.findings] == ["np.github.1"]
    assert fixed.findings[0].fingerprint in {f.fingerprint for f in found.findings}
    assert list(workdir.iterdir()) == []


async def test_a_refused_header_is_failed_with_a_redacted_reason(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo("acme/api", {"config/aws.ini": SETTINGS})
    wrong_token = "wrong-access-token-Qx81Zb"
    wrong = git_auth_header(AuthConfig(access_token=wrong_token))
    result = await scan(server, tmp_path, auth_header=wrong, head="a" * 40)
    assert result is not None and result.state == "failed" and result.head == "a" * 40
    assert "refused the credentials" in (result.reason or "")
    assert wrong is not None and wrong_token not in msgspec.json.encode(result).decode()
    assert wrong.split()[1] not in (result.reason or "")
    assert list(workdir.iterdir()) == []


async def test_a_missing_repository_or_branch_is_not_found(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo("acme/api", {"a.txt": "a\n"})
    gone = await scan(server, tmp_path, name="acme/deleted")
    assert gone is not None and gone.state == "not_found" and gone.head == ""
    no_branch = await scan(server, tmp_path, branch="develop", previous_head="b" * 40)
    assert no_branch is not None and no_branch.state == "not_found"
    assert list(workdir.iterdir()) == []


async def test_a_hanging_clone_is_a_timeout_within_its_bound(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo("acme/api", {"config/aws.ini": SETTINGS})
    server.faults.hang = True
    git = RecordingGit.create(tmp_path / "bin")
    started = time.monotonic()
    result = await scan(server, tmp_path, timeout=1.0, git=git.path)
    assert time.monotonic() - started < 4
    assert result is not None and result.state == "timeout" and "1s" in (result.reason or "")
    assert not any(process_group_alive(pid) for pid, _ in git.calls())
    assert list(workdir.iterdir()) == []


async def test_a_cancelled_scan_leaves_no_process_and_no_folder(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo("acme/api", {"config/aws.ini": SETTINGS})
    server.faults.hang = True
    git = RecordingGit.create(tmp_path / "bin")
    task = asyncio.ensure_future(scan(server, tmp_path, git=git.path))
    await asyncio.sleep(0.8)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert git.calls() and not any(process_group_alive(pid) for pid, _ in git.calls())
    assert list(workdir.iterdir()) == []


async def test_a_repository_over_max_bytes_is_too_large_not_half_scanned(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo("acme/big", {"config/aws.ini": SETTINGS, "dump.bin": os.urandom(2_000_000)})
    result = await scan(server, tmp_path, name="acme/big", max_bytes=1_000_000)
    assert result is not None and result.state == "too_large" and result.findings == []
    assert list(workdir.iterdir()) == []


async def test_binary_and_oversize_files_are_skipped(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo(
        "acme/api",
        {
            "keys.bin": b"\x00\x01binary " + AWS.encode() + b"\n",
            "big.txt": f"aws_access_key_id = {AWS}\n" + "x" * 3000 + "\n",
            "ok.txt": "nothing here\n",
        },
    )
    result = await scan(server, tmp_path, max_file_bytes=2000)
    assert result is not None and result.state == "clean" and result.findings == []
    assert (result.files_scanned, result.bytes_scanned) == (1, len("nothing here\n"))


class BrokenScanner:
    name = "broken"

    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]:
        raise RcingestError(f"tool crashed reading {TOKEN}")

    def allowed(self, finding: Finding) -> bool:
        return False


async def test_allowlisted_findings_are_kept_apart_and_a_failing_scanner_fails_the_scan(
    server: GitHttpServer, tmp_path: Path, workdir: Path
) -> None:
    server.make_repo("acme/api", {"config/aws.ini": SETTINGS, "a.py": f"T = '{GITHUB}'\n"})
    allowing = secrets_scanner(tmp_path, Allowlist(paths=["config/**"]))
    result = await scan(server, tmp_path, scanners=[allowing])
    assert result is not None and [f.path for f in result.findings] == ["a.py"]
    assert len(result.allowed) == 1

    broken = await scan(server, tmp_path, scanners=[secrets_scanner(tmp_path), BrokenScanner()])
    assert broken is not None and broken.state == "failed"
    assert (broken.reason or "").startswith("scanner broken: tool crashed")
    assert TOKEN not in (broken.reason or "")
    assert list(workdir.iterdir()) == []
