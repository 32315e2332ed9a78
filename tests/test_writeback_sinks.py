"""The write-back sinks against the fake Bitbucket: what the pull request shows (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rcingest.bitbucket.auth import AuthConfig
from rcingest.default_plugins.writeback import BuildStatusSink, CodeInsightsSink, CommentSink
from rcingest.interfaces import Batch
from rcingest.scanning import report
from rcingest.scanning.model import Finding, fingerprint, redact_secret
from rcingest.scanning.records import PullRequestScan
from rcingest.testing import FakeBitbucket, GenSpec, make_test_context

TOKEN = "wb-token-Lr93kQ0xZm"
SECRET = "AKIAPOIUYTREWQLKJHGF"
REPO = "acme/service-00"
HEAD = "ab" * 20


def finding(line: int) -> Finding:
    return Finding(
        path="deploy/env.sh",
        line_start=line,
        line_end=line,
        rule_id="np.aws.1",
        rule_name="AWS API Key",
        severity="high",
        fingerprint=fingerprint(b"k" * 16, "np.aws.1", SECRET + str(line)),
        excerpt=f"export AWS_KEY={redact_secret(SECRET)}",
    )


def scan(pr: int, state: str, findings: list[Finding] | None = None, head: str = HEAD) -> Any:
    return PullRequestScan(
        repository=REPO,
        pull_request_id=pr,
        head=head,
        state=state,  # type: ignore[arg-type]
        scanned_at=datetime(2026, 12, 2, tzinfo=UTC),
        findings=findings or [],
        scanners=["secrets"],
        destination_branch="main",
    )


def sinks(fake: FakeBitbucket, tmp_path: Path, **status: Any) -> list[Any]:
    ctx = make_test_context(tmp_path, secrets=frozenset({TOKEN}))
    common = {"base_url": fake.base_url, "auth": AuthConfig(access_token=TOKEN), "max_tries": 2}
    common["backoff_base"] = 0.001
    return [
        BuildStatusSink(BuildStatusSink.Config(**common, **status), ctx),
        CodeInsightsSink(CodeInsightsSink.Config(**common), ctx),
        CommentSink(CommentSink.Config(**common), ctx),
    ]


async def deliver(all_sinks: list[Any], *records: Any) -> None:
    for sink in all_sinks:
        async with sink:
            await sink.write(Batch(list(records)))
            await sink.flush()


async def test_findings_give_failed_status_a_report_and_one_comment(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        result = scan(pr, "findings", [finding(4), finding(12)])
        await deliver(sinks(fake, tmp_path), scan(pr, "scanning"), result)
        w = fake.writes
        status = w.statuses[(REPO, HEAD)]["rcingest-secrets"]
        assert status["state"] == "FAILED" and "2 possible secrets" in status["description"]
        rep = w.reports[(REPO, HEAD)]["rcingest-secrets"]
        assert rep["result"] == "FAILED" and rep["report_type"] == "SECURITY"
        lines = sorted(a["line"] for a in w.annotations[(REPO, HEAD, "rcingest-secrets")].values())
        assert lines == [4, 12]
        [comment] = w.live_comments(REPO, pr)
        assert "`deploy/env.sh` | 4 |" in comment["content"]["raw"]
        # The same scan again: nothing new, the comment edited in place at most.
        await deliver(sinks(fake, tmp_path), result)
        assert len(w.live_comments(REPO, pr)) == 1
        assert len(w.annotations[(REPO, HEAD, "rcingest-secrets")]) == 2
        assert SECRET not in w.received_text()


async def test_a_clean_head_turns_everything_green_and_the_comment_says_so(
    tmp_path: Path,
) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        await deliver(sinks(fake, tmp_path), scan(pr, "findings", [finding(4)]))
        clean_head = "cd" * 20
        await deliver(sinks(fake, tmp_path), scan(pr, "clean", head=clean_head))
        w = fake.writes
        assert w.statuses[(REPO, clean_head)]["rcingest-secrets"]["state"] == "SUCCESSFUL"
        assert w.reports[(REPO, clean_head)]["rcingest-secrets"]["result"] == "PASSED"
        [comment] = w.live_comments(REPO, pr)
        assert "no secrets found" in comment["content"]["raw"]


async def test_a_clean_pr_that_never_had_findings_gets_no_comment(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        await deliver(sinks(fake, tmp_path), scan(pr, "clean"))
        assert fake.writes.live_comments(REPO, pr) == []
        assert fake.writes.statuses[(REPO, HEAD)]["rcingest-secrets"]["state"] == "SUCCESSFUL"


async def test_someone_elses_comment_with_the_marker_is_not_ours(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        w = fake.writes
        fake_body = f"quoting the bot:\n{report.MARKER} · head x"
        w.comments[(REPO, pr)] = [
            {"id": 1, "content": {"raw": fake_body}, "deleted": False,
             "user": {"account_id": "557058:someone-else"}},
        ]  # fmt: skip
        await deliver(sinks(fake, tmp_path), scan(pr, "findings", [finding(4)]))
        comments = w.live_comments(REPO, pr)
        assert len(comments) == 2 and comments[0]["content"]["raw"] == fake_body


async def test_a_read_only_token_logs_one_error_and_fails_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        fake.writes.read_only.add(f"Bearer {TOKEN}")
        all_sinks = sinks(fake, tmp_path)
        await deliver(
            all_sinks, scan(pr, "findings", [finding(4)]), scan(pr, "findings", [finding(5)])
        )
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 3  # once per sink (and repository), not per write
        assert all(
            "403" in r.getMessage() and "stored all the same" in r.getMessage() for r in errors
        )
        assert TOKEN not in caplog.text
        assert all_sinks[0].context.stats.get("writeback.failed") >= 3


async def test_the_merge_check_restriction_is_created_once_when_asked(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        status_sink = sinks(fake, tmp_path, require_passing_builds=True)[:1]
        await deliver(status_sink, scan(pr, "clean"))
        await deliver(sinks(fake, tmp_path, require_passing_builds=True)[:1], scan(pr, "clean"))
        [restriction] = fake.writes.restrictions[REPO]
        assert restriction["kind"] == "require_passing_builds_to_merge"
        assert restriction["pattern"] == "main"


async def test_a_token_without_admin_scope_is_told_the_restriction_needs_admin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        fake.faults.fail_routes["branch_restrictions"] = 403
        with caplog.at_level("ERROR"):
            await deliver(sinks(fake, tmp_path, require_passing_builds=True)[:1], scan(pr, "clean"))
        assert fake.writes.statuses[(REPO, HEAD)]["rcingest-secrets"]["state"] == "SUCCESSFUL"
        [record] = [r for r in caplog.records if "restriction" in r.getMessage()]
        assert "admin" in record.getMessage() and "write access" not in record.getMessage()
