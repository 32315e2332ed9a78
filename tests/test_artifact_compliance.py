"""Compliance evaluations in the JSON artifact (issue 13): the latest per pull request.

Every artifact written here is validated against ``schemas/run.schema.json``
and the copy the sink writes beside it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import msgspec

from rcingest.compliance.facts import PullRequestFacts
from rcingest.compliance.records import ComplianceEvaluation, RuleOutcome
from rcingest.default_plugins.json_artifact import JsonArtifactConfig, JsonArtifactSink
from rcingest.interfaces import Batch
from rcingest.testing import make_test_context
from tests.test_database_compliance import HEAD1, HEAD2, evaluation, facts
from tests.test_database_sink import T0
from tests.test_json_artifact import SCHEMA, Clock

_decode_outcomes = msgspec.json.Decoder(list[RuleOutcome]).decode


async def run(tmp_path: Path, *batches: list[Any], **kw: Any) -> dict[str, Any]:
    ctx = make_test_context(tmp_path, **kw)
    sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(tmp_path / "out")), ctx)
    async with sink:
        for batch in batches:
            await sink.write(Batch(batch))
        ctx.status = "succeeded"
    (path,) = sink.written
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    beside = json.loads((tmp_path / "out" / "run.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, beside)
    return doc


def by_pr(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["pull_request_id"]: e for e in doc["compliance_evaluations"]}


async def test_the_latest_evaluation_per_pull_request(tmp_path: Path) -> None:
    minute = timedelta(minutes=1)
    pr8, merged = facts(pull_request_id=8), facts(pull_request_id=8, state="MERGED")
    doc = await run(
        tmp_path,
        [evaluation(), evaluation(approved=True, at=T0 + minute)],  # PR 7: approved later
        [
            evaluation(at=T0 - minute),  # a late delivery of an older evaluation: ignored
            evaluation(pull_request_id=8, facts=merged, at=T0 + 2 * minute, frozen=True),
            # After PR 8's merge: a late event, a replayed merge with other facts.
            evaluation(pull_request_id=8, facts=pr8, approved=True, at=T0 + 3 * minute),
            evaluation(HEAD1[:12], pull_request_id=8, at=T0 + 4 * minute, frozen=True),
        ],
    )
    entries = by_pr(doc)
    assert [(e["pull_request_id"], e["verdict"], e["frozen"]) for e in entries.values()] == [
        (7, "compliant", False),
        (8, "non_compliant", True),
    ]
    seven = entries[7]
    assert seven["evaluated_at"] == "2026-11-20T05:01:00-07:00"  # the pipeline's zone
    assert (seven["head"], seven["policy_name"], seven["policy_hash"]) == (
        HEAD1,
        "default",
        "p" * 64,
    )
    assert [(o["rule_id"], o["level"], o["outcome"], o["message"]) for o in seven["outcomes"]] == [
        ("two-approvals", "required", "pass", "approved by Bob"),
        ("branch-name", "advisory", "pass", "ok"),
    ]
    assert entries[8]["head"] == HEAD1 and entries[8]["pr_state"] == "MERGED"
    assert doc["counts"]["repositories"] == 1


async def test_outcomes_and_facts_come_back_exactly(tmp_path: Path) -> None:
    ev = evaluation(approved=True, head=HEAD2, facts=facts(HEAD2, approved=True))
    [entry] = (await run(tmp_path, [ev]))["compliance_evaluations"]
    assert _decode_outcomes(json.dumps(entry["outcomes"])) == ev.outcomes
    back = msgspec.json.decode(json.dumps(entry["facts"]), type=PullRequestFacts)
    assert back == ev.facts  # every value; times equal, now written in the pipeline's zone
    assert entry["facts"]["updated_on"] == "2026-11-20T05:00:00-07:00"
    assert entry["facts"]["description"] == "Line 1\nLine \\2 — 日本語"


async def test_a_vanished_pull_request_and_a_secret(tmp_path: Path) -> None:
    secret = 'tok"en\\9f2c'
    gone = ComplianceEvaluation(
        repository="acme/api",
        pull_request_id=9,
        head=HEAD1,
        policy_name="default",
        policy_hash="p" * 64,
        evaluated_at=T0,
        verdict="not_found",
        reason="404 Not Found",
        trigger="check",
    )
    leaky = evaluation(facts=facts(description=f"use {secret}"), title=f"t {secret}")
    doc = await run(tmp_path, [gone, leaky], secrets=frozenset({secret}))
    entries = by_pr(doc)
    assert entries[9]["facts"] is None and entries[9]["outcomes"] == []
    assert entries[9]["reason"] == "404 Not Found"
    assert entries[7]["title"] == "t ***" and entries[7]["facts"]["description"] == "use ***"
    assert "9f2c" not in json.dumps(doc)


async def test_a_restarted_daemon_keeps_the_hours_evaluations(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for run_id, ev in (("first", evaluation()), ("second", evaluation(pull_request_id=8))):
        ctx = make_test_context(tmp_path, mode="serve", run_id=run_id)
        sink = JsonArtifactSink(JsonArtifactConfig(artifacts_dir=str(out)), ctx)
        sink.clock = Clock(T0 + timedelta(minutes=5))
        async with sink:
            await sink.write(Batch([ev]))
            ctx.status = "succeeded"
    (path,) = out.glob("webhook_*.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    assert sorted(by_pr(doc)) == [7, 8]
