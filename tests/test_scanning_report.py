"""Status, Code Insights and comment bodies built from a pull request's scan (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rcingest.scanning import report
from rcingest.scanning.model import Finding, fingerprint, redact_secret
from rcingest.scanning.records import PullRequestScan

SECRET = "AKIAQWERTYUIOPASDFGH"
HEAD = "0123456789abcdef0123456789abcdef01234567"


def finding(path: str = "app/settings.py", line: int = 12, secret: str = SECRET) -> Finding:
    return Finding(
        path=path,
        line_start=line,
        line_end=line,
        rule_id="np.aws.1",
        rule_name="AWS API Key",
        severity="high",
        fingerprint=fingerprint(b"k", "np.aws.1", secret),
        excerpt=f"AWS_KEY = '{redact_secret(secret)}'",
    )


def scan(findings: list[Finding], state: str = "findings") -> PullRequestScan:
    return PullRequestScan(
        repository="acme/api",
        pull_request_id=7,
        head=HEAD,
        state=state,  # type: ignore[arg-type]
        scanned_at=datetime(2026, 12, 2, tzinfo=UTC),
        findings=findings,
        scanners=["secrets"],
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [("findings", "FAILED"), ("clean", "SUCCESSFUL"), ("too_large", "STOPPED")],
)
def test_status_states(state: str, expected: str) -> None:
    body = report.status_body(
        scan([finding()] if state == "findings" else [], state),
        key="rcingest-secrets",
        name="rcingest secrets",
        unscannable="STOPPED",
    )
    assert body["state"] == expected and body["key"] == "rcingest-secrets"
    assert len(body["description"]) <= report.MAX_DESCRIPTION
    started = report.status_body(None, key="k", name="n")
    assert started["state"] == "INPROGRESS"


def test_annotations_batch_by_100_stop_at_1000_and_keep_ids_unique() -> None:
    many = [finding(path=f"f{i}.py", line=i + 1, secret=f"AKIA{i:016d}") for i in range(1200)]
    many.append(finding(path="again.py", line=3))  # the same secret twice
    many.append(finding(path="again.py", line=9))
    batches = list(report.annotation_batches(scan(many)))
    assert [len(b) for b in batches] == [100] * 10
    ids = [a["external_id"] for b in batches for a in b]
    assert len(set(ids)) == len(ids) == report.MAX_ANNOTATIONS
    body = report.report_body(scan(many), title="Secrets")
    assert body["result"] == "FAILED" and body["report_type"] == "SECURITY"
    assert "first 1000" in body["details"] and len(body["data"]) <= 10


def test_comment_lists_each_finding_with_path_and_line_and_no_secret() -> None:
    body = report.comment_body(scan([finding(), finding(path="b|c.py", line=40)]))
    assert "| `app/settings.py` | 12 |" in body
    assert "b\\|c.py" in body and "| 40 |" in body
    assert SECRET not in body and SECRET[:5] not in body
    assert report.is_our_comment({"content": {"raw": body}, "user": {"account_id": "me"}}, "me")
    assert not report.is_our_comment({"content": {"raw": body}, "user": {"account_id": "x"}}, "me")
    assert not report.is_our_comment({"content": {"raw": "hello"}}, None)


def test_comment_stays_under_the_limit_and_counts_the_rest() -> None:
    many = [finding(path=f"src/module_{i:05d}.py", line=i + 1) for i in range(2000)]
    body = report.comment_body(scan(many))
    assert len(body) <= report.MAX_COMMENT
    assert "more: see the rcingest Code Insights report" in body
    assert report.MARKER in body.splitlines()[-1]


def test_clean_and_unscannable_comments() -> None:
    clean = report.comment_body(scan([], "clean"))
    assert "no secrets found" in clean and report.MARKER in clean
    large = report.comment_body(scan([], "too_large"))
    assert "too large" in large
