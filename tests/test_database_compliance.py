"""Compliance evaluations in the database (issue 13), on SQLite files and PostgreSQL.

The table is an audit history: a re-delivery moves ``last_evaluated_at``,
a change adds a row, a merge freezes the pull request's history.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from rcingest.compliance.facts import Participant, Person, PullRequestFacts, Status
from rcingest.compliance.records import ComplianceEvaluation, RuleOutcome
from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.database.connect import open_database
from rcingest.default_plugins.database.schema import CURRENT_VERSION
from rcingest.interfaces import Batch
from rcingest.scanning.records import PullRequestScan
from tests.test_database_sink import DOC, T0, _doc_queries, dump, make_context, write_run

HEAD1, HEAD2 = "1a" * 20, "2b" * 20
ADA = Person(account_id="557058:ada", uuid="{ada}", nickname="ada", display_name="Ada L.")
BOB = Person(account_id="557058:bob", uuid="{bob}", nickname="bob", display_name='Bob «B» "Q"')


def facts(head: str = HEAD1, *, approved: bool = False, **kw: Any) -> PullRequestFacts:
    fields: dict[str, Any] = {
        "repository": "acme/api",
        "pull_request_id": 7,
        "title": "REL-12 café parser",
        "description": "Line 1\nLine \\2 — 日本語",
        "author": ADA,
        "source_branch": "feature/REL-12",
        "source_repository": "acme/api",
        "destination_branch": "main",
        "head": head,
        "reviewers": [BOB],
        "participants": [
            Participant(
                user=BOB,
                role="REVIEWER",
                approved=approved,
                state="approved" if approved else None,
                participated_on=T0.astimezone(timezone(timedelta(hours=-7))),
            )
        ],
        "statuses": [Status(key="build", state="SUCCESSFUL", name="CI", updated_on=T0)],
        "commit_messages": ["REL-12 parse"],
        "updated_on": T0,
        "unreadable": {"default_reviewers": "403 forbidden"},
    }
    return PullRequestFacts(**{**fields, **kw})


def outcome(approved: bool) -> RuleOutcome:
    return RuleOutcome(
        rule_id="two-approvals",
        type="approvals",
        level="required",
        outcome="pass" if approved else "fail",
        message="approved by Bob" if approved else "no approval",
        fix=None if approved else "ask a reviewer",
        facts={"approvers": [{"user": "Bob", "approved_on": T0.isoformat()}] if approved else []},
    )


ADVISORY = RuleOutcome(
    rule_id="branch-name", type="branch_name", level="advisory", outcome="pass", message="ok"
)


def evaluation(
    head: str = HEAD1, *, approved: bool = False, at: datetime = T0, **kw: Any
) -> ComplianceEvaluation:
    frozen = kw.pop("frozen", False)
    f = kw.pop("facts", None) or facts(
        head, approved=approved, state="MERGED" if frozen else "OPEN"
    )
    fields: dict[str, Any] = {
        "repository": "acme/api",
        "pull_request_id": 7,
        "head": head,
        "policy_name": "default",
        "policy_hash": "p" * 64,
        "evaluated_at": at,
        "verdict": "compliant" if approved else "non_compliant",
        "pr_state": f.state,
        "title": f.title,
        "source_branch": f.source_branch,
        "destination_branch": f.destination_branch,
        "outcomes": [outcome(approved), ADVISORY],
        "facts": f,
        "trigger": "pullrequest:updated",
        "frozen": frozen,
    }
    return ComplianceEvaluation(**{**fields, **kw})


def history(spec: str) -> list[dict[str, Any]]:
    rows = dump(spec, ["compliance_evaluations"])["compliance_evaluations"]
    return sorted(rows, key=lambda r: r["id"])


async def write(spec: str, tmp_path: Path, *batches: list[Any], run: str = "run-1") -> None:
    await write_run(spec, tmp_path, [Batch(b) for b in batches], run_id=run)


async def test_a_redelivered_evaluation_only_moves_last_evaluated_at(
    database_spec: str, tmp_path: Path
) -> None:
    first = evaluation()
    # The same evaluation twice in a batch, then again later with only
    # volatile times changed (a comment moved updated_on and participated_on).
    await write(database_spec, tmp_path, [first, first])
    later = T0 + timedelta(minutes=10)
    moved = facts(updated_on=later, participants=[msgspec.structs.replace(
        facts().participants[0], participated_on=later
    )])  # fmt: skip
    again = evaluation(at=later, facts=moved, trigger="check")
    await write(database_spec, tmp_path, [again], run="run-2")
    # An older copy arriving late never moves the time back.
    await write(database_spec, tmp_path, [first], run="run-3")
    [row] = history(database_spec)
    assert row["first_evaluated_at"] == datetime(2026, 11, 20, 12, 0)
    assert row["last_evaluated_at"] == datetime(2026, 11, 20, 12, 10)
    assert row["trigger"] == "pullrequest:updated"  # the first one's, as documented
    assert row["verdict"] == "non_compliant" and row["frozen"] is False
    assert re.fullmatch(r"[0-9a-f]{64}", row["digest"])


async def test_every_change_is_a_new_row(database_spec: str, tmp_path: Path) -> None:
    steps = [
        evaluation(),  # open, no approval: non-compliant
        evaluation(approved=True, at=T0 + timedelta(minutes=1)),  # approved: compliant
        evaluation(HEAD2, at=T0 + timedelta(minutes=2)),  # a push: approval gone
        evaluation(HEAD2, at=T0 + timedelta(minutes=3), policy_hash="q" * 64),  # new policy
        # A status changed state: a fact, not a volatile time.
        evaluation(
            HEAD2,
            at=T0 + timedelta(minutes=4),
            policy_hash="q" * 64,
            facts=facts(HEAD2, statuses=[Status(key="build", state="FAILED", updated_on=T0)]),
        ),
    ]
    await write(database_spec, tmp_path, steps[:2])
    await write(database_spec, tmp_path, steps[2:], run="run-2")
    # Back to the first result: not the latest row, so a new one (the history shows the flip).
    back = evaluation(HEAD2, at=T0 + timedelta(minutes=5), policy_hash="q" * 64)
    await write(database_spec, tmp_path, [back, back], run="run-3")
    rows = history(database_spec)
    assert [(r["head"], r["policy_hash"][0], r["verdict"]) for r in rows] == [
        (HEAD1, "p", "non_compliant"),
        (HEAD1, "p", "compliant"),
        (HEAD2, "p", "non_compliant"),
        (HEAD2, "q", "non_compliant"),
        (HEAD2, "q", "non_compliant"),
        (HEAD2, "q", "non_compliant"),
    ]
    assert len({r["digest"] for r in rows}) == 4  # same result under two policies: same digest
    assert rows[-1]["digest"] == rows[3]["digest"] != rows[4]["digest"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


async def test_a_merge_freezes_the_history(database_spec: str, tmp_path: Path) -> None:
    await write(database_spec, tmp_path, [evaluation(approved=True)])
    merged = evaluation(approved=True, at=T0 + timedelta(minutes=5), frozen=True)
    await write(database_spec, tmp_path, [merged], run="run-2")
    # A late event after the merge, the merge replayed (also with the short
    # head of a payload), a re-check of the merged PR: none of them is stored.
    late = evaluation(at=T0 + timedelta(minutes=6), trigger="pullrequest:updated")
    pushed = evaluation(HEAD2, at=T0 + timedelta(minutes=6))  # a late push event's head
    replay = evaluation(approved=True, at=T0 + timedelta(minutes=7), frozen=True)
    short = evaluation(HEAD1[:12], at=T0 + timedelta(minutes=8), frozen=True)
    changed = evaluation(at=T0 + timedelta(minutes=9), frozen=True)  # other facts, same head
    await write(database_spec, tmp_path, [late, replay], [short, pushed, changed], run="run-3")
    rows = history(database_spec)
    assert [(r["frozen"], r["pr_state"], r["verdict"]) for r in rows] == [
        (False, "OPEN", "compliant"),
        (True, "MERGED", "compliant"),
    ]
    assert rows[1]["last_evaluated_at"] == rows[1]["first_evaluated_at"]  # untouched
    # A frozen evaluation at another head is more evidence, stored beside the first.
    other_head = evaluation(HEAD2, at=T0 + timedelta(minutes=10), frozen=True)
    await write(database_spec, tmp_path, [other_head], run="run-4")
    assert [(r["head"], r["frozen"]) for r in history(database_spec)][1:] == [
        (HEAD1, True),
        (HEAD2, True),
    ]
    # Another pull request is not frozen by this one.
    other = evaluation(pull_request_id=8, facts=facts(pull_request_id=8))
    await write(database_spec, tmp_path, [other], run="run-5")
    assert len(history(database_spec)) == 4


async def test_a_vanished_pull_request_is_recorded(database_spec: str, tmp_path: Path) -> None:
    await write(database_spec, tmp_path, [evaluation()])
    gone = ComplianceEvaluation(
        repository="acme/api",
        pull_request_id=7,
        head=HEAD1,
        policy_name="default",
        policy_hash="p" * 64,
        evaluated_at=T0 + timedelta(hours=1),
        verdict="not_found",
        reason="404 Not Found",
        trigger="check",
    )
    await write(database_spec, tmp_path, [gone], [gone], run="run-2")
    rows = history(database_spec)
    assert [(r["verdict"], r["facts"], r["outcomes"]) for r in rows][1:] == [
        ("not_found", None, "[]")
    ]
    assert rows[1]["title"] is None and rows[1]["trigger"] == "check"


async def test_outcomes_and_facts_come_back_exactly(database_spec: str, tmp_path: Path) -> None:
    ev = evaluation(approved=True)
    await write(database_spec, tmp_path, [ev])
    [row] = history(database_spec)
    assert msgspec.json.decode(row["outcomes"], type=list[RuleOutcome]) == ev.outcomes
    back = msgspec.json.decode(row["facts"], type=PullRequestFacts)
    assert back == ev.facts
    # Times in the JSON are UTC, like the columns; the -07:00 one included.
    assert '"participated_on":"2026-11-20T12:00:00Z"' in row["facts"]
    assert row["outcomes"].startswith('[{"facts":')  # canonical: keys sorted


async def test_secrets_are_masked_inside_the_json(tmp_path: Path) -> None:
    """A secret in a description, escaped by JSON (quote, backslash), is still masked."""
    secret = 'pw"se\\cr/et-9f2c é'
    spec = str(tmp_path / "db" / "commits.db")
    ev = evaluation(facts=facts(description=f"deploy with {secret}"), title=f"t {secret}")
    ctx = make_context(tmp_path, secrets=frozenset({secret}))
    async with DatabaseSink(DatabaseConfig(database=spec), ctx) as sink:
        await sink.write(Batch([ev]))
        ctx.status = "succeeded"
    [row] = history(spec)
    assert row["title"] == "t ***"
    assert msgspec.json.decode(row["facts"], type=PullRequestFacts).description == "deploy with ***"
    raw = b"".join(p.read_bytes() for p in (tmp_path / "db").iterdir())
    assert b"se\\\\cr" not in raw and b"se\\cr" not in raw


async def test_version_4_database_is_upgraded_in_place(
    database_spec: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A version-4 database (made by dropping the table): upgraded on open, its rows kept."""
    scan = PullRequestScan(
        repository="acme/api", pull_request_id=7, head=HEAD1, state="clean", scanned_at=T0
    )
    await write(database_spec, tmp_path, [scan])
    db, _ = open_database(database_spec)
    with db.connection_context():
        db.execute_sql("DROP TABLE compliance_evaluations")  # type: ignore[no-untyped-call]
        db.execute_sql("UPDATE schema_version SET version = 4")  # type: ignore[no-untyped-call]
    db.close()
    caplog.set_level("INFO", logger="rcingest")
    await write(database_spec, tmp_path, [evaluation()], run="run-2")
    assert f"schema upgraded from version 4 to {CURRENT_VERSION}" in caplog.text
    assert CURRENT_VERSION == 6
    assert len(dump(database_spec, ["pr_scans"])["pr_scans"]) == 1
    assert len(history(database_spec)) == 1


async def test_two_writers_store_one_evaluation_once(database_spec: str, tmp_path: Path) -> None:
    """Two daemons evaluating the same pull requests at once: each result stored once.

    On PostgreSQL the per-PR advisory lock makes this so (today the upsert of
    the batch's implied ``repositories`` row also happens to serialise them).
    """
    await write_run(database_spec, tmp_path, [])  # the schema, once
    ctx_a, ctx_b = make_context(tmp_path, "a"), make_context(tmp_path, "b")
    a = DatabaseSink(DatabaseConfig(database=database_spec), ctx_a)
    b = DatabaseSink(DatabaseConfig(database=database_spec), ctx_b)

    def batch(order: range) -> Batch:
        return Batch([evaluation(pull_request_id=n, facts=facts(pull_request_id=n)) for n in order])

    async with a, b:
        for _ in range(3):
            await asyncio.gather(a.write(batch(range(40))), b.write(batch(range(39, -1, -1))))
        ctx_a.status = ctx_b.status = "succeeded"
    assert len(history(database_spec)) == 40


def _engine_queries() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"```sql\n-- (sqlite|postgresql): (\S+)\n(.*?)```", text, flags=re.S)
    return {engine: sql.strip().rstrip(";") for engine, _name, sql in found}


async def test_failed_required_rules_of_merges(database_spec: str, tmp_path: Path) -> None:
    """The ready queries of docs/database.md, and the per-engine one that opens the JSON."""
    merged_bad = evaluation(frozen=True)
    merged_ok = evaluation(
        approved=True, pull_request_id=8, frozen=True, facts=facts(pull_request_id=8)
    )
    open_bad = evaluation(pull_request_id=9, facts=facts(pull_request_id=9))
    await write(database_spec, tmp_path, [evaluation(approved=True), merged_bad])
    await write(database_spec, tmp_path, [merged_ok, open_bad], run="run-2")
    queries = _doc_queries()
    engine = "sqlite" if "://" not in database_spec else "postgresql"
    db, _ = open_database(database_spec)
    with db.connection_context():
        merges = db.execute_sql(queries["merges-not-compliant"]).fetchall()  # type: ignore[no-untyped-call]
        story = db.execute_sql(queries["compliance-history"]).fetchall()  # type: ignore[no-untyped-call]
        rules = db.execute_sql(_engine_queries()[engine]).fetchall()  # type: ignore[no-untyped-call]
    db.close()
    assert [(m[0], m[1], m[2], m[3]) for m in merges] == [("acme/api", 7, HEAD1, "p" * 64)]
    assert '"rule_id":"two-approvals"' in merges[0][5]
    assert [(s[4], bool(s[6])) for s in story] == [("compliant", False), ("non_compliant", True)]
    assert [tuple(r) for r in rules] == [
        ("acme/api", 7, HEAD1, "p" * 64, "two-approvals", "fail", "no approval")
    ]
