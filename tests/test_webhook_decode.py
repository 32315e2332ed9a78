"""Decoding every shared fixture, the bad-input cases and ``receive``'s verdicts (sans-I/O)."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, None),  # the fixture: source and target are the same repository
        ("ada/foo-fork", "ada/foo-fork"),
        ("ada/..", None),  # not a plain workspace/slug: the target's is assumed
        ("ada/foo\nfork", None),
    ],
)
def test_pull_request_source_repository(source: str | None, expected: str | None) -> None:
    data = json.loads(body("webhook_pullrequest-created_go-scm-2018.json"))
    if source is not None:
        data["pullrequest"]["source"]["repository"]["full_name"] = source
    d = decode(headers("pullrequest:created"), json.dumps(data).encode(), received_at=NOW)
    (job,) = d.jobs
    assert job.repository == "brydzewski/foo"
    assert job.source_repository == expected


@pytest.mark.parametrize(
    ("raw", "attempt"),
    [
        ("3", 3),
        ("0", 1),
        ("-4", 1),
        ("bogus", 1),
        ("1000", 1000),
        ("1001", 1000),
        ("99999999999999999999", 1000),
        ("9" * 5000, 1000),
        ("٣", 1),
    ],
)
def test_attempt_number_is_clamped(raw: str, attempt: int) -> None:
    # An unsigned header must never carry a value the database cannot hold.
    d = decode(
        headers("repo:push", **{"X-Attempt-Number": raw}),
        body("webhook_repo-push_single-commit_go-scm-2018.json"),
        received_at=NOW,
    )
    assert d.delivery.attempt == attempt


@pytest.mark.parametrize(
    ("name", "event", "old", "new", "fragment"),
    [
        (
            "webhook_repo-push_single-commit_go-scm-2018.json",
            "repo:push",
            b'"date": "2018-',
            b'"date": "9999-12-31T23:00:00-05:00", "x": "',
            "date out of range",
        ),
        (
            "webhook_repo-push_single-commit_go-scm-2018.json",
            "repo:push",
            b'"date": "2018-',
            b'"date": "0001-01-01T00:00:00+05:00", "x": "',
            "date out of range",
        ),
        (
            "webhook_pullrequest-created_go-scm-2018.json",
            "pullrequest:created",
            b'"updated_on": "',
            b'"updated_on": "9999-12-31T23:59:59+00:00", "x": "',
            "updated_on out of range",
        ),
        (
            "webhook_pullrequest-created_go-scm-2018.json",
            "pullrequest:created",
            b'"id": 1,',
            b'"id": 2147483648,',
            "pull request id 2147483648 out of range",
        ),
        (
            "webhook_pullrequest-created_go-scm-2018.json",
            "pullrequest:created",
            b'"id": 1,',
            b'"id": -1,',
            "out of range",
        ),
    ],
)
def test_values_the_database_cannot_hold_are_refused(
    name: str, event: str, old: bytes, new: bytes, fragment: str
) -> None:
    raw = body(name)
    assert old in raw
    with pytest.raises(DecodeError) as info:
        decode(headers(event), raw.replace(old, new), received_at=NOW)
    assert info.value.status == 400 and fragment in info.value.reason


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("X-Request-UUID", "\udcff", "X-Request-UUID header is not printable ASCII"),
        ("X-Request-UUID", "é", "not printable ASCII"),
        ("X-Request-Id", "a\x00b", "X-Request-Id header is not printable ASCII"),
        ("X-Hook-UUID", "\udcfe\udcff", "X-Hook-UUID header is not printable ASCII"),
        ("X-Request-UUID", "x" * 201, "longer than 200 characters"),
        ("X-Hook-UUID", "x" * 201, "longer than 200 characters"),
    ],
)
def test_identifier_headers_must_be_short_ascii(name: str, value: str, fragment: str) -> None:
    raw = body("webhook_repo-push_single-commit_go-scm-2018.json")
    hdrs = {**headers("repo:push"), name: value}
    if name == "X-Request-Id":
        del hdrs["X-Request-UUID"]
    with pytest.raises(DecodeError) as info:
        decode(hdrs, raw, received_at=NOW)
    assert info.value.status == 400 and fragment in info.value.reason
    verdict = receive({**hdrs, "X-Hub-Signature": sign(raw, SECRET)}, raw, secret=SECRET)
    assert verdict.status == 400 and verdict.decoded is None


@pytest.mark.parametrize("event", ["repo:\udcff", "é:push", "repo:" + "x" * 200])
def test_event_key_must_be_short_ascii(event: str) -> None:
    with pytest.raises(DecodeError, match="X-Event-Key"):
        decode({"X-Event-Key": event}, b"{}", received_at=NOW)


def test_identifier_headers_at_the_limit_are_kept() -> None:
    raw = body("webhook_repo-push_single-commit_go-scm-2018.json")
    d = decode(headers("repo:push", **{"X-Request-UUID": "u" * 200}), raw, received_at=NOW)
    assert d.delivery.request_uuid == "u" * 200


@pytest.mark.parametrize("event", ["repo:fork", "totally:unknown"])
@pytest.mark.parametrize("raw", [b"this is not json", b"", b"{", b'{"a": 1} x', b'{"a": "\xff"}'])
def test_a_body_that_is_not_json_is_400_even_for_an_event_not_stored(
    event: str, raw: bytes
) -> None:
    # docs/webhooks.md: a body that is not JSON is 400, whatever the event.
    verdict = receive(
        {"X-Event-Key": event, "X-Hub-Signature": sign(raw, SECRET)}, raw, secret=SECRET
    )
    assert (verdict.status, verdict.outcome) == (400, "bad_request")
    assert "not valid JSON" in verdict.reason


@pytest.mark.parametrize("event", ["repo:push", "pullrequest:created"])
def test_a_body_that_is_not_utf8_is_400_not_an_exception(event: str) -> None:
    raw = b'{"push": {"changes": []}, "repository": {"full_name": "a/\xff"}}'
    verdict = receive(signed(raw, event), raw, secret=SECRET)
    assert (verdict.status, verdict.outcome) == (400, "bad_request")
    # Our own wording (decode.py), whatever msgspec version says it.
    assert verdict.reason == "body is not valid JSON: not UTF-8"


@pytest.mark.parametrize(
    ("name", "event", "scanned"),
    [
        ("webhook_pullrequest-created_go-scm-2018.json", "pullrequest:created", True),
        ("webhook_pullrequest-updated_go-scm-2018.json", "pullrequest:updated", True),
        ("webhook_pullrequest-created_jenkins-2024.json", "pullrequest:created", True),
        ("webhook_pullrequest-fulfilled_go-scm-2018.json", "pullrequest:fulfilled", False),
        ("webhook_pullrequest-rejected_go-scm-2018.json", "pullrequest:rejected", False),
    ],
)
def test_pr_scan_jobs_are_keyed_by_source_head(name: str, event: str, scanned: bool) -> None:
    """Issue 12: created/updated of an open PR queue a scan of its head, once per head."""
    d = decode(headers(event), body(name), received_at=NOW, scan_pull_requests=True)
    scans = [j for j in d.jobs if j.kind == "pr_scan"]
    if not scanned:
        assert scans == []
        return
    [job] = scans
    payload = json.loads(body(name))["pullrequest"]
    head = payload["source"]["commit"]["hash"]
    assert job.head == head
    assert job.key == f"pr_scan:{d.delivery.repository}:{payload['id']}:{head[:12]}"
    # Without the option (no scanners configured) no scan is queued.
    plain = decode(headers(event), body(name), received_at=NOW)
    assert [j.kind for j in plain.jobs] == ["pr_commits"]
