"""The compliance policy and its evaluation, without I/O (issue 13)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from rcingest.compliance.evaluate import evaluate, needs
from rcingest.compliance.facts import (
    Participant,
    Person,
    PullRequestFacts,
    Status,
    facts_from_api,
    statuses_from_api,
)
from rcingest.compliance.policy import load_policy, policy_hash, policy_problems
from rcingest.errors import ConfigError

ALICE = Person(uuid="{a}", account_id="557058:a", nickname="alice", display_name="Alice")
BOB = Person(uuid="{b}", account_id="557058:b", nickname="bob", display_name="Bob")
CAROL = Person(uuid="{c}", account_id="557058:c", nickname="carol", display_name="Carol")
DAN = Person(uuid="{d}", nickname="dan", display_name="Dan")
T = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)

POLICY: dict[str, Any] = {
    "name": "release",
    "rules": [
        {
            "id": "branch-name",
            "type": "branch_name",
            "pattern": r"^(feature|bugfix|hotfix)/[A-Z][A-Z0-9_]+-\d+-",
            "explanation": "feature/, bugfix/ or hotfix/, then the story key",
        },
        {"id": "leads", "type": "required_reviewers", "accounts": ["carol"]},
        {"id": "two-approvals", "type": "approvals", "min": 2},
        {"id": "green", "type": "checks", "required_keys": ["ci"]},
        {"id": "story", "type": "story_key"},
        {"id": "no-fork", "type": "no_fork"},
        {"id": "not-prod", "type": "destination", "forbidden": ["production"]},
        {"id": "title-key", "type": "story_key", "in": ["title"], "level": "advisory"},
    ],
}


def facts(**over: Any) -> PullRequestFacts:
    base: dict[str, Any] = {
        "repository": "acme/api",
        "pull_request_id": 7,
        "title": "Add retries",
        "author": ALICE,
        "source_branch": "feature/REL-12-retries",
        "source_repository": "acme/api",
        "destination_branch": "main",
        "head": "a" * 40,
        "reviewers": [BOB, CAROL],
        "participants": [
            Participant(
                user=BOB, role="REVIEWER", approved=True, state="approved", participated_on=T
            ),
            Participant(user=CAROL, role="REVIEWER", approved=True, state="approved"),
        ],
        "statuses": [
            Status(key="ci", state="SUCCESSFUL"),
            Status(key="rcingest-compliance", state="FAILED"),
        ],
    }
    base.update(over)
    return PullRequestFacts(**base)


def outcomes(ev: Any) -> dict[str, str]:
    return {o.rule_id: o.outcome for o in ev.outcomes}


def test_a_compliant_pull_request() -> None:
    ev = evaluate(load_policy(POLICY), facts(), now=T)
    assert ev.verdict == "compliant", [o.message for o in ev.outcomes if o.outcome != "pass"]
    # The advisory title rule fails ("Add retries" has no key) without changing the verdict.
    assert outcomes(ev)["title-key"] == "fail"
    assert ev.policy_hash.startswith("sha256:") and not ev.frozen
    # Its own FAILED status is not a check of itself.
    green = next(o for o in ev.outcomes if o.rule_id == "green")
    assert green.facts["statuses"] == {"ci": "SUCCESSFUL"}


def test_each_rule_fails_with_a_message_and_a_fix() -> None:
    bad = facts(
        source_branch="wip",
        source_repository="mallory/api",
        destination_branch="production",
        reviewers=[BOB],
        participants=[
            Participant(user=ALICE, approved=True),  # the author's own approval
            Participant(user=BOB, role="REVIEWER", state="changes_requested"),
        ],
        statuses=[Status(key="lint", state="FAILED", name="Lint")],
    )
    ev = evaluate(load_policy(POLICY), bad, now=T)
    assert ev.verdict == "non_compliant"
    failed = {o.rule_id: o for o in ev.outcomes if o.outcome == "fail"}
    assert set(failed) == set(outcomes(ev)) - set()  # every rule fails
    assert "feature/, bugfix/ or hotfix/" in failed["branch-name"].message
    assert "carol" in failed["leads"].message
    assert "changes requested by Bob" in failed["two-approvals"].message
    assert "Lint is FAILED" in failed["green"].message
    assert "required check ci has not reported" in failed["green"].message
    assert "mallory/api" in failed["no-fork"].message
    assert all(o.fix for o in failed.values())
    assert [o.rule_id for o in ev.failed_required] == [
        "branch-name", "leads", "two-approvals", "green", "story", "no-fork", "not-prod",
    ]  # fmt: skip


def test_approvals_exclude_the_author_and_the_last_pusher() -> None:
    policy = load_policy(
        {"rules": [{"id": "a", "type": "approvals", "min": 2, "exclude_last_pusher": True}]}
    )
    people = [Participant(user=p, approved=True) for p in (ALICE, BOB, CAROL)]
    ev = evaluate(policy, facts(participants=people, head_author=BOB, commit_messages=[]))
    [o] = ev.outcomes
    assert o.outcome == "fail" and o.facts["counted"] == 1
    assert "not counted: Alice, Bob" in o.message
    # Without the commits the last pusher is unknown: an error, failing closed.
    assert evaluate(policy, facts(participants=people)).verdict == "non_compliant"
    assert needs(policy, "acme/api", "main") == {"commits"}


def test_default_reviewers_and_what_could_not_be_read() -> None:
    policy = load_policy(
        {"rules": [{"id": "d", "type": "required_reviewers", "default_reviewers": True}]}
    )
    ok = evaluate(policy, facts(default_reviewers=[ALICE, BOB, CAROL]))
    assert ok.verdict == "compliant"  # the author Alice is never her own reviewer
    missing = evaluate(policy, facts(default_reviewers=[DAN]))
    assert "Dan" in missing.outcomes[0].message
    unread = evaluate(
        policy, facts(unreadable={"default_reviewers": "403 Forbidden (read:repository)"})
    )
    assert unread.outcomes[0].outcome == "error" and unread.verdict == "non_compliant"
    assert "403" in unread.outcomes[0].message


def test_story_keys_in_every_commit_use_the_enricher_grammar() -> None:
    policy = load_policy(
        {"rules": [{"id": "s", "type": "story_key", "in": [], "every_commit": True}]}
    )
    ev = evaluate(policy, facts(commit_messages=["REL-1 fix", "UTF-8 cleanup", "bump"]))
    assert ev.outcomes[0].message == "2 of 3 commits have no story key"
    lenient = evaluate(policy, facts(commit_messages=["rel-1 fix"]), story=("lenient", None))
    assert lenient.verdict == "compliant"
    only_ops = evaluate(policy, facts(commit_messages=["REL-1 fix"]), story=("strict", ["OPS"]))
    assert only_ops.verdict == "non_compliant"


def test_scope_by_repository_and_destination() -> None:
    policy = load_policy(
        {
            "rules": [
                {"id": "r", "type": "approvals", "min": 5, "branches": ["release/*"]},
                {"id": "w", "type": "approvals", "min": 5, "repositories": ["acme/web"]},
            ]
        }
    )
    ev = evaluate(policy, facts())
    assert outcomes(ev) == {"r": "not_applicable", "w": "not_applicable"}
    assert ev.verdict == "compliant"
    assert evaluate(policy, facts(destination_branch="release/2.0")).verdict == "non_compliant"


def test_merged_evaluations_are_frozen() -> None:
    assert evaluate(load_policy(POLICY), facts(state="MERGED")).frozen


def test_the_hash_ignores_formatting_but_not_rules() -> None:
    a = load_policy(POLICY)
    b = load_policy(msgspec.json.decode(msgspec.json.encode(POLICY)))
    assert policy_hash(a) == policy_hash(b)
    changed = {**POLICY, "rules": [*POLICY["rules"][:2], {**POLICY["rules"][2], "min": 3}]}
    assert policy_hash(load_policy(changed)) != policy_hash(a)


def test_every_problem_is_reported_with_its_path() -> None:
    found = policy_problems(
        {
            "rules": [
                {"id": "b", "type": "branch_nam", "pattern": "x"},
                {"id": "a", "type": "approvals", "min": 3, "from_accounts": ["x", "y"]},
                {"id": "c", "type": "branch_name", "pattern": "(("},
                {"id": "c", "type": "checks", "bogus": 1},
                {"id": "r", "type": "required_reviewers"},
            ],
            "extra": 1,
        },
        "$.compliance.policy",
    )
    text = "\n".join(found)
    assert "$.compliance.policy.extra: unknown field" in text
    assert "$.compliance.policy.rules[0].type: unknown rule type 'branch_nam'" in text
    assert "branch_name" in found[1]  # a suggestion
    assert "$.compliance.policy.rules[1]: can never pass: 3 approvals" in text
    assert "$.compliance.policy.rules[2]: pattern is not a valid regular expression" in text
    assert "$.compliance.policy.rules[3].bogus: unknown field" in text
    assert "$.compliance.policy.rules[3].id: 'c' is already the id of rules[2]" in text
    assert "$.compliance.policy.rules[4]: requires no one" in text
    with pytest.raises(ConfigError) as err:
        load_policy({"rules": []}, "$.compliance.policy")
    assert err.value.problems == ["$.compliance.policy.rules: expected a non-empty list of rules"]


def test_facts_from_the_single_pull_request_read() -> None:
    pr = {
        "id": 9,
        "title": "REL-3 thing",
        "state": "OPEN",
        "author": {"uuid": "{a}", "display_name": "Alice"},
        "source": {
            "branch": {"name": "feature/REL-3-x"},
            "commit": {"hash": "abcdef012345"},
            "repository": {"full_name": "alice/api"},
        },
        "destination": {"branch": {"name": "main"}},
        "reviewers": [{"uuid": "{b}", "display_name": "Bob"}],
        "participants": [
            {
                "user": {"uuid": "{b}", "display_name": "Bob"},
                "role": "REVIEWER",
                "approved": True,
                "state": "approved",
                "participated_on": "2026-12-03T10:00:00+00:00",
            }
        ],
    }
    f = facts_from_api("acme/api", pr)
    assert (f.source_repository, f.head, f.participants[0].approved) == (
        "alice/api",
        "abcdef012345",
        True,
    )
    assert f.participants[0].participated_on is not None
    statuses = statuses_from_api(
        [
            {"key": "ci", "state": "FAILED", "updated_on": "2026-12-03T10:00:00+00:00"},
            {"key": "ci", "state": "SUCCESSFUL", "updated_on": "2026-12-03T11:00:00+00:00"},
            {"state": "SUCCESSFUL"},
        ]
    )
    assert [(s.key, s.state) for s in statuses] == [("ci", "SUCCESSFUL")]
