"""The compliance enforcer's bad input: each a clear message, nothing half-written (issue 13)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.testing import FakeBitbucket, Faults, GenSpec

REPO = "acme/service-00"


def write(tmp_path: Path, base_url: str, rules: str, **extra: str) -> Path:
    body = textwrap.indent(textwrap.dedent(rules).strip(), " " * 6)
    path = tmp_path / "compliance.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: compliance-test
            source:
              type: bitbucket_webhook
              config:
                secret: hook-secret-for-tests
                base_url: {base_url}
                auth: {{access_token: bad-input-token-Qz19}}
                backfill_queue: {tmp_path}/queue.db
                inbox: {tmp_path}/inbox.db
            compliance:
              repositories: [{REPO}]
              policy:
                rules:
            """
        )
        + body
        + "\n"
        + "sinks:\n  - {type: database, config: {database: "
        + f"'{tmp_path}/commits.db'}}}}\n"
    )
    return path


def test_an_invalid_policy_exits_2_naming_every_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "http://127.0.0.1:9/2.0",
        """
        - {id: branch, type: branch_name, pattern: '(feature'}
        - {id: approvals, type: approvals, min: 3, from_accounts: [alice, bob]}
        - {id: typo, type: aprovals, min: 1}
        """,
    )
    for args in (["validate", str(path)], ["check", "--config", str(path), "--all-open"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        text = result.output
        assert "$.compliance.policy.rules[0]: pattern is not a valid regular expression" in text
        assert "$.compliance.policy.rules[1]: can never pass: 3 approvals" in text
        assert "$.compliance.policy.rules[2].type: unknown rule type 'aprovals'" in text
        assert "did you mean 'approvals'?" in text
    assert not (tmp_path / "commits.db").exists()  # nothing half-written


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "http://127.0.0.1:9/2.0", "- {id: n, type: no_fork}")
    for args in (
        ["check", "--config", str(path)],
        ["check", "--config", str(path), "--repo", REPO],
        ["check", "--config", str(path), "--all-open", "--pr", "3"],
    ):
        assert CliRunner().invoke(cli, args).exit_code == 2


async def _check(path: Path, pr_id: int) -> tuple[int, dict[str, object]]:
    import asyncio

    def call() -> tuple[int, str]:
        args = ["check", "--config", str(path), "--repo", REPO, "--pr", str(pr_id), "--json"]
        result = CliRunner().invoke(cli, args)
        return result.exit_code, result.stdout

    code, out = await asyncio.to_thread(call)
    [evaluation] = json.loads(out)
    return code, evaluation


async def test_a_pull_request_that_is_gone_and_unreadable_default_reviewers(
    tmp_path: Path,
) -> None:
    async with FakeBitbucket(GenSpec(repositories=1), Faults()) as fake:
        pr = next(p for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN")
        path = write(
            tmp_path,
            fake.base_url,
            "- {id: leads, type: required_reviewers, default_reviewers: true}",
        )
        fake.faults.fail_routes["effective_default_reviewers"] = 403
        code, evaluation = await _check(path, pr.id)
        assert code == 1
        [outcome] = evaluation["outcomes"]  # type: ignore[misc]
        assert outcome["outcome"] == "error"
        assert "403" in outcome["message"] and "read access" in outcome["message"]
        assert evaluation["verdict"] == "non_compliant"  # a required rule fails closed
        code, gone = await _check(path, 9999)
        assert code == 1
        assert gone["verdict"] == "not_found" and "404" in str(gone["reason"])
