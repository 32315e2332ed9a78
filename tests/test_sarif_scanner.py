"""The ``sarif`` scanner plugin: an external tool in a pull request's scan (issue 12)."""

from __future__ import annotations

import sys
from pathlib import Path

from rcingest.default_plugins.scanners import SarifConfig, SarifScanner
from rcingest.scanning.allowlist import Allowlist
from rcingest.scanning.pullrequest import PullRequestTarget, scan_pull_request
from rcingest.scanning.settings import ScanningConfig
from rcingest.testing import make_test_context

SCRIPT = str(Path(__file__).parent / "fixtures" / "sarif" / "fake_scanner.py")
KEY = "AKIAQ2W3E4R5T6Y7U8I9"
DIFF = (
    "diff --git a/ci/deploy.sh b/ci/deploy.sh\nindex 1..2 100644\n--- a/ci/deploy.sh\n"
    f"+++ b/ci/deploy.sh\n@@ -1,2 +1,3 @@\n echo a\n echo b\n+export AWS_KEY={KEY}\n"
)


class FakeAPI:
    async def commit(self, repo: str, rev: str) -> dict[str, str]:
        return {"hash": "f" * 40}

    async def pullrequest_diff(self, repo: str, pr_id: int, *, max_bytes: int) -> bytes:
        return DIFF.encode()


def scanner(tmp_path: Path, mode: str = "ok", **kw: object) -> SarifScanner:
    ctx = make_test_context(tmp_path)
    ctx.scanning = ScanningConfig(fingerprint_key="sarif-test-key-0123456789")
    config = SarifConfig(command=[sys.executable, SCRIPT, "{dir}", "{out}", mode], **kw)  # type: ignore[arg-type]
    made = SarifScanner(config, ctx)
    made.name = "gitleaks"
    return made


TARGET = PullRequestTarget(repository="acme/api", pull_request_id=4, head="f" * 40)


async def test_an_external_tool_s_findings_are_the_scan_s(tmp_path: Path) -> None:
    result = await scan_pull_request(
        FakeAPI(), [scanner(tmp_path)], TARGET, max_diff_bytes=1_000_000
    )
    assert result.state == "findings"
    [finding] = result.findings
    assert (finding.path, finding.line_start) == ("ci/deploy.sh", 3)
    assert KEY not in str(result) and KEY[:6] not in finding.excerpt


async def test_the_allowlist_applies_to_external_findings(tmp_path: Path) -> None:
    allow = Allowlist(paths=["ci/**"])
    result = await scan_pull_request(
        FakeAPI(), [scanner(tmp_path, allowlist=allow)], TARGET, max_diff_bytes=1_000_000
    )
    assert result.state == "clean" and len(result.allowed) == 1


async def test_a_tool_that_hangs_makes_a_failed_scan_not_a_crash(tmp_path: Path) -> None:
    hung = scanner(tmp_path, "sleep", timeout=1.0)
    hung.config.command.append(str(tmp_path / "child.pid"))
    result = await scan_pull_request(FakeAPI(), [hung], TARGET, max_diff_bytes=1_000_000)
    assert result.state == "failed" and "gitleaks" in (result.reason or "")
