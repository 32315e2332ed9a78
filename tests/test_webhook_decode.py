"""Decoding every shared fixture, the bad-input cases and ``receive``'s verdicts (sans-I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from rcingest.records import Commit, PullRequest
from rcingest.webhooks import DecodeError, decode, receive, sign

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SECRET = "s3cret-for-tests"


def body(name: str) -> bytes:
    return (FIX / name).read_bytes()


def headers(event: str, **extra: str) -> dict[str, str]:
    return {"X-Event-Key": event, "X-Request-UUID": "req-1", "X-Hook-UUID": "hook-1", **extra}


def run(name: str, event: str) -> tuple[list[Commit], list[PullRequest], object]:
    d = decode(headers(event, **{"X-Attempt-Number": "2"}), body(name), received_at=NOW)
    commits = [r for r in d.records if isinstance(r, Commit)]
    prs = [r for r in d.records if isinstance(r, PullRequest)]
    return commits, prs, d


def test_push_three_changes_one_truncated() -> None:
    commits, prs, d = run(
        "webhook_repo-push_3-changes-one-truncated_jenkins-2017.json", "repo:push"
    )
    assert not prs
    by_hash = {c.hash: c for c in commits}
    assert by_hash["325d37697849f4b1fe42cb19c20134af08e03a82"].branches == ["main"]
    manchu = [c for c in commits if c.branches == ["manchu"]]
    assert len(manchu) == 5  # the truncated change's 5 listed commits
    c = by_hash["325d37697849f4b1fe42cb19c20134af08e03a82"]
    assert c.repository == "cloudbeers/temp"
    assert c.author_raw == "Stephen Connolly <stephen.alan.connolly@gmail.com>"
    assert c.author_name == "Stephen Connolly"
    assert c.message == "typo\n"
    assert c.parents == ["fc4d1ce2853b6f1ac0d0dbad643d17ef4a6e0be7"]
    assert c.date == datetime(2017, 3, 6, 16, 9, 28, tzinfo=UTC)
    assert d.truncated == 1  # type: ignore[attr-defined]
    [job] = d.jobs  # type: ignore[attr-defined]
    assert job.kind == "push_range"
    assert job.include == ["e22fcb49645b4586a845938afac5eb3ac1950586"]
    assert job.exclude == []  # a created branch has no old head
    assert job.branch == "manchu"
    delivery = d.delivery  # type: ignore[attr-defined]
    assert (delivery.request_uuid, delivery.hook_uuid, delivery.attempt) == ("req-1", "hook-1", 2)
    assert delivery.event == "repo:push" and delivery.repository == "cloudbeers/temp"
    assert delivery.received_at == NOW
    assert "tag:v0.1:" in delivery.content_key


def test_push_single_commit_and_branch_create() -> None:
    commits, _, d = run("webhook_repo-push_single-commit_go-scm-2018.json", "repo:push")
    assert [(c.hash, c.branches) for c in commits] == [
        ("141977fedf5cf35aa290ac87d4b5177ac4cd9de1", ["master"])
    ]
    assert commits[0].author_account_id is None or isinstance(commits[0].author_account_id, str)
    assert not d.jobs  # type: ignore[attr-defined]
    commits, _, _ = run("webhook_repo-push_branch-create-2-commits_go-scm-2018.json", "repo:push")
    assert len(commits) == 2 and all(c.branches == ["develop"] for c in commits)


@pytest.mark.parametrize(
    "name",
    [
        "webhook_repo-push_branch-delete_go-scm-2018.json",
        "webhook_repo-push_tag-create_go-scm-2018.json",
    ],
)
def test_push_without_commits_still_records_the_delivery(name: str) -> None:
    commits, prs, d = run(name, "repo:push")
    assert commits == [] and prs == []
    assert d.delivery.outcome == "stored"  # type: ignore[attr-defined]
    assert d.delivery.content_key  # type: ignore[attr-defined]


def test_push_empty_changes() -> None:
    d = decode(
        headers("repo:push"),
        b'{"push":{"changes":[]},"repository":{"full_name":"a/b"}}',
        received_at=NOW,
    )
    assert d.records == [] and d.delivery.repository == "a/b"


def test_documentation_example_without_dates_uses_received_time() -> None:
    commits, _, _ = run("webhook_repo-push_atlassian-doc-example_go-playground.json", "repo:push")
    assert len(commits) == 1 and commits[0].date == NOW


@pytest.mark.parametrize(
    ("name", "event", "state", "merge"),
    [
        ("webhook_pullrequest-created_go-scm-2018.json", "pullrequest:created", "OPEN", None),
        ("webhook_pullrequest-updated_go-scm-2018.json", "pullrequest:updated", "OPEN", None),
        (
            "webhook_pullrequest-fulfilled_go-scm-2018.json",
            "pullrequest:fulfilled",
            "MERGED",
            "4f8f6de9d0ff",
        ),
        ("webhook_pullrequest-rejected_go-scm-2018.json", "pullrequest:rejected", "DECLINED", None),
        ("webhook_pullrequest-created_jenkins-2024.json", "pullrequest:created", "OPEN", None),
    ],
)
def test_pull_requests(name: str, event: str, state: str, merge: str | None) -> None:
    commits, prs, d = run(name, event)
    assert commits == []
    [pr] = prs
    assert pr.state == state and pr.merge_commit == merge
    assert pr.title and pr.source_branch and pr.destination_branch
    assert pr.author_name
    [job] = d.jobs  # type: ignore[attr-defined]
    assert job.kind == "pr_commits" and job.pull_request == pr
    assert f"|pr|{pr.id}|{event}|" in d.delivery.content_key  # type: ignore[attr-defined]


def test_jenkins_pr_fields() -> None:
    _, [pr], _ = run("webhook_pullrequest-created_jenkins-2024.json", "pullrequest:created")
    assert (pr.id, pr.title, pr.source_branch, pr.destination_branch) == (
        735,
        "BUILD test",
        "feature/test",
        "master",
    )
    assert pr.author_account_id == "557058:ca1cd232-2017-4216-94be-99637899e18d"


@pytest.mark.parametrize(
    ("name", "event", "outcome"),
    [
        (
            "webhook_pullrequest-comment-created_go-scm-2022.json",
            "pullrequest:comment_created",
            "ignored",
        ),
        (
            "webhook_repo-commit-status-updated_atlassian-doc-example_go-playground.json",
            "repo:commit_status_updated",
            "ignored",
        ),
        ("webhook_repo-push_single-commit_go-scm-2018.json", "repo:teleported", "unknown_event"),
    ],
)
def test_other_events_are_not_stored(name: str, event: str, outcome: str) -> None:
    d = decode(headers(event), body(name), received_at=NOW)
    assert d.records == [] and d.jobs == [] and d.delivery.outcome == outcome


@pytest.mark.parametrize(
    ("event", "raw", "fragment"),
    [
        ("repo:push", b"not json", "not valid JSON"),
        ("repo:push", b"", "not valid JSON"),
        ("repo:push", b"[]", "wrong shape"),
        ("repo:push", b'{"push": {}, "repository": {"full_name": "a/b"}}', "$.push"),
        (
            "repo:push",
            b'{"push": {"changes": null}, "repository": {"full_name": "a/b"}}',
            "$.push.changes",
        ),
        ("repo:push", b'{"push": {"changes": []}}', "repository"),
        (
            "pullrequest:created",
            b'{"pullrequest": {"id": "x"}, "repository": {"full_name": "a/b"}}',
            "$.pullrequest",
        ),
    ],
)
def test_bad_payloads(event: str, raw: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(headers(event), raw, received_at=NOW)
    assert info.value.status == 400 and fragment in info.value.reason


def test_missing_event_key() -> None:
    with pytest.raises(DecodeError, match="X-Event-Key"):
        decode({}, b"{}", received_at=NOW)


def test_missing_request_uuid_is_derived_from_the_body() -> None:
    raw = body("webhook_repo-push_single-commit_go-scm-2018.json")
    a = decode({"X-Event-Key": "repo:push"}, raw, received_at=NOW)
    b = decode({"x-event-key": "repo:push", "X-Attempt-Number": "bogus"}, raw, received_at=NOW)
    assert a.delivery.request_uuid == b.delivery.request_uuid
    assert a.delivery.request_uuid.startswith("sha256:") and b.delivery.attempt == 1


def signed(raw: bytes, event: str = "repo:push") -> dict[str, str]:
    return {**headers(event), "X-Hub-Signature": sign(raw, SECRET)}


def test_receive_table() -> None:
    """The bad-input table: 401, 400, 413, 202; 200 only with something to store."""
    raw = body("webhook_repo-push_single-commit_go-scm-2018.json")
    ok = receive(signed(raw), raw, secret=SECRET)
    assert (ok.status, ok.outcome) == (200, "accepted") and ok.decoded is not None
    cases = [
        (receive(headers("repo:push"), raw, secret=SECRET), 401, "bad_signature"),
        (
            receive(
                {**signed(raw), "X-Hub-Signature": sign(raw + b" ", SECRET)}, raw, secret=SECRET
            ),
            401,
            "bad_signature",
        ),
        (receive(signed(b"{nope"), b"{nope", secret=SECRET), 400, "bad_request"),
        (receive(signed(b"[1]"), b"[1]", secret=SECRET), 400, "bad_request"),
        (receive(signed(raw), raw, secret=SECRET, max_body_bytes=len(raw) - 1), 413, "too_large"),
        (receive(signed(raw, "repo:fork"), raw, secret=SECRET), 202, "ignored"),
        (receive(signed(raw, "x:y"), raw, secret=SECRET), 202, "unknown_event"),
    ]
    for verdict, status, outcome in cases:
        assert (verdict.status, verdict.outcome) == (status, outcome), verdict
        assert verdict.decoded is None
        assert SECRET not in verdict.reason


def test_receive_checks_the_signature_before_parsing() -> None:
    # Garbage with a wrong signature is a 401, not a 400: nothing is parsed first.
    verdict = receive(
        {"X-Event-Key": "repo:push", "X-Hub-Signature": "sha256=00"}, b"{", secret=SECRET
    )
    assert verdict.status == 401


def test_no_backfill_for_a_repository_name_unfit_for_an_api_path() -> None:
    raw = body("webhook_repo-push_3-changes-one-truncated_jenkins-2017.json")
    evil = raw.replace(b'"full_name": "cloudbeers/temp"', b'"full_name": "../../users/x"')
    assert evil != raw
    d = decode(headers("repo:push"), evil, received_at=NOW)
    assert d.truncated == 1 and d.jobs == []
    pr = body("webhook_pullrequest-created_go-scm-2018.json")
    evil_pr = pr.replace(b'"full_name": "brydzewski/foo"', b'"full_name": "brydzewski/.."')
    assert decode(headers("pullrequest:created"), evil_pr, received_at=NOW).jobs == []
