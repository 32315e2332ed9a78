"""Compliance evaluations reported on the pull request by the write-back sinks (issue 13)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rcingest.compliance.evaluate import evaluate
from rcingest.compliance.facts import Participant, Person, PullRequestFacts, Status
from rcingest.compliance.policy import load_policy
from rcingest.compliance.records import ComplianceEvaluation
from rcingest.compliance.settings import ComplianceConfig
from tests.test_writeback_sinks import REPO, deliver, finding, scan, sinks

HEAD = "cd" * 20
BOB = Person(uuid="{b}", nickname="bob", display_name="Bob")
CAROL = Person(uuid="{c}", nickname="carol", display_name="Carol")
POLICY = load_policy(
    {
        "name": "merge-policy",
        "rules": [
            {"id": "branch-name", "type": "branch_name", "pattern": "^feature/"},
            {"id": "two-approvals", "type": "approvals", "min": 2},
            {"id": "green", "type": "checks"},
        ],
    }
)


def evaluation(pr: int, *, approvers: list[Person], branch: str = "feature/x") -> Any:
    facts = PullRequestFacts(
        repository=REPO,
        pull_request_id=pr,
        source_branch=branch,
        destination_branch="main",
        head=HEAD,
        participants=[Participant(user=p, approved=True) for p in approvers],
        statuses=[Status(key="ci", state="SUCCESSFUL")],
    )
    return evaluate(POLICY, facts)


def compliance_sinks(fake: Any, tmp_path: Path) -> list[Any]:
    built = sinks(fake, tmp_path)
    for sink in built:
        sink.context.compliance = ComplianceConfig()
    return built


async def test_a_non_compliant_pr_gets_a_failed_status_a_report_and_a_comment(
    tmp_path: Path,
) -> None:
    from rcingest.testing import FakeBitbucket, GenSpec

    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        bad = evaluation(pr, approvers=[BOB], branch="wip")
        await deliver(compliance_sinks(fake, tmp_path), bad)
        w = fake.writes
        status = w.statuses[(REPO, HEAD)]["rcingest-compliance"]
        assert status["state"] == "FAILED"
        assert "branch-name, two-approvals" in status["description"]
        report = w.reports[(REPO, HEAD)]["rcingest-compliance"]
        assert (report["result"], report["report_type"]) == ("FAILED", "BUG")
        assert [d["title"] for d in report["data"]] == [
            "Policy",
            "branch-name",
            "two-approvals",
            "green",
        ]
        [comment] = w.live_comments(REPO, pr)
        raw = comment["content"]["raw"]
        assert "**not compliant**" in raw and "`branch-name`" in raw and "1 of 2 approvals" in raw
        assert "\nrcingest:compliance " in raw
        # Approved enough and renamed: the same comment now says compliant.
        good = evaluation(pr, approvers=[BOB, CAROL])
        await deliver(compliance_sinks(fake, tmp_path), good)
        assert w.statuses[(REPO, HEAD)]["rcingest-compliance"]["state"] == "SUCCESSFUL"
        assert w.reports[(REPO, HEAD)]["rcingest-compliance"]["result"] == "PASSED"
        [comment] = w.live_comments(REPO, pr)
        assert "is compliant with policy `merge-policy`" in comment["content"]["raw"]


async def test_compliant_from_the_start_gets_no_comment_and_scans_keep_their_own(
    tmp_path: Path,
) -> None:
    from rcingest.testing import FakeBitbucket, GenSpec

    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        secrets = scan(pr, "findings", [finding(3)], head=HEAD)
        await deliver(
            compliance_sinks(fake, tmp_path),
            secrets,
            evaluation(pr, approvers=[BOB, CAROL]),
        )
        w = fake.writes
        assert set(w.statuses[(REPO, HEAD)]) == {"rcingest-secrets", "rcingest-compliance"}
        [comment] = w.live_comments(REPO, pr)  # the secret scan's alone
        assert "rcingest:secret-scan" in comment["content"]["raw"]
        # A second non-compliant evaluation adds the compliance comment beside it.
        await deliver(compliance_sinks(fake, tmp_path), evaluation(pr, approvers=[]))
        assert len(w.live_comments(REPO, pr)) == 2


async def test_a_pull_request_that_is_gone_gets_nothing(tmp_path: Path) -> None:
    from rcingest.testing import FakeBitbucket, GenSpec

    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        gone = ComplianceEvaluation(
            repository=REPO,
            pull_request_id=999,
            head="",
            policy_name="p",
            policy_hash="sha256:0",
            evaluated_at=evaluation(1, approvers=[]).evaluated_at,
            verdict="not_found",
        )
        await deliver(compliance_sinks(fake, tmp_path), gone)
        assert fake.writes.received == []
