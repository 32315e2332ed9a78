"""Deliveries that re-evaluate compliance become ``compliance`` jobs (issue 13)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rcingest.webhooks import DecodeError, decode

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
OWN = frozenset({"rcingest-compliance"})
STATUS = "webhook_repo-commit-status-updated_atlassian-doc-example_go-playground.json"
COMMIT = "9fec847784abb10b2fa567ee63b85bd238955d0e"


def headers(event: str, uuid: str = "req-1") -> dict[str, str]:
    return {"X-Event-Key": event, "X-Request-UUID": uuid, "X-Hook-UUID": "hook-1"}


def body(name: str) -> bytes:
    return (FIX / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("webhook_pullrequest-created_go-scm-2018.json", "pullrequest:created"),
        ("webhook_pullrequest-updated_go-scm-2018.json", "pullrequest:updated"),
        ("webhook_pullrequest-fulfilled_go-scm-2018.json", "pullrequest:fulfilled"),
    ],
)
def test_pull_request_events_also_queue_an_evaluation(name: str, event: str) -> None:
    d = decode(headers(event), body(name), received_at=NOW, compliance_keys=OWN)
    [job] = [j for j in d.jobs if j.kind == "compliance"]
    pr_id = json.loads(body(name))["pullrequest"]["id"]
    assert (job.pr_id, job.event, job.head) == (pr_id, event, None)
    assert job.key.endswith(":req-1")  # each delivery re-evaluates; a retry is the same job
    # Without a policy nothing changes.
    plain = decode(headers(event), body(name), received_at=NOW)
    assert [j.kind for j in plain.jobs] == [j.kind for j in d.jobs if j.kind != "compliance"]


def test_a_declined_pull_request_is_not_evaluated() -> None:
    d = decode(
        headers("pullrequest:rejected"),
        body("webhook_pullrequest-rejected_go-scm-2018.json"),
        received_at=NOW,
        compliance_keys=OWN,
    )
    assert not [j for j in d.jobs if j.kind == "compliance"]


@pytest.mark.parametrize(
    "event",
    [
        "pullrequest:approved",
        "pullrequest:unapproved",
        "pullrequest:changes_request_created",
        "pullrequest:changes_request_removed",
    ],
)
def test_review_events_store_the_delivery_and_queue_an_evaluation(event: str) -> None:
    payload = json.loads(body("webhook_pullrequest-comment-created_go-scm-2022.json"))
    payload.pop("comment", None)
    payload["approval"] = {"date": "2026-12-03T08:00:00+00:00", "user": payload["actor"]}
    raw = json.dumps(payload).encode()
    d = decode(headers(event), raw, received_at=NOW, compliance_keys=OWN)
    assert d.records == [] and d.delivery.outcome != "ignored"
    [job] = d.jobs
    assert (job.kind, job.pr_id, job.repository) == (
        "compliance",
        payload["pullrequest"]["id"],
        payload["repository"]["full_name"],
    )
    # Without a policy the event is acknowledged and not stored, as before.
    assert decode(headers(event), raw, received_at=NOW).delivery.outcome == "ignored"


def test_another_tools_status_queues_an_evaluation_of_its_commit() -> None:
    d = decode(
        headers("repo:commit_status_updated"), body(STATUS), received_at=NOW, compliance_keys=OWN
    )
    [job] = d.jobs
    assert (job.kind, job.pr_id, job.head, job.repository) == (
        "compliance",
        None,
        COMMIT,
        "team_name/repo_name",
    )


def test_our_own_status_is_ignored_so_a_verdict_never_loops() -> None:
    payload = json.loads(body(STATUS))
    payload["commit_status"]["key"] = "rcingest-compliance"
    d = decode(
        headers("repo:commit_status_created"),
        json.dumps(payload).encode(),
        received_at=NOW,
        compliance_keys=OWN,
    )
    assert d.jobs == [] and d.delivery.outcome == "ignored"


@pytest.mark.parametrize(
    ("event", "raw", "fragment"),
    [
        ("repo:commit_status_created", b'{"repository": {"full_name": "a/b"}}', "commit_status"),
        (
            "repo:commit_status_created",
            b'{"repository": {"full_name": "a/b"}, "commit_status": {"key": "ci"}}',
            "names no commit",
        ),
        ("pullrequest:approved", b'{"repository": {"full_name": "a/b"}}', "pullrequest"),
        ("pullrequest:approved", b"not json", "not valid JSON"),
    ],
)
def test_bad_review_and_status_payloads(event: str, raw: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(headers(event), raw, received_at=NOW, compliance_keys=OWN)
    assert fragment in str(err.value)
