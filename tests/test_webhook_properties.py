"""Property-based tests of the sans-I/O webhook core (issue 15), with Hypothesis.

* Any headers and any bytes give one of the documented statuses (200, 202,
  400, 401, 413), never an exception; the inbox's request path (``admit``)
  gives the same status, and what it stores derives to the same records.
* A generated valid push payload decodes to exactly the commits it holds
  (NUL characters removed, the documented rule).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from rcingest.inbox.derive import DecodeSettings, derive
from rcingest.inbox.gate import admit
from rcingest.inbox.model import InboxEntry, InboxRow
from rcingest.records import Commit
from rcingest.webhooks import receive, sign
from rcingest.webhooks.decode import decode

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
SECRET = "whsec-Properties-15-xY3k"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
STATUSES = {200, 202, 400, 401, 413}
# Hypothesis writes caches to .hypothesis/ in the working directory, which git
# does not ignore: keep them out of the checkout.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "rcingest-hypothesis")
# Bounded so the file runs in a few seconds; no example database: a failure
# prints its example.
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EVENTS = [
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "pullrequest:approved",
    "repo:commit_status_updated",
    "repo:created",
    "repo:fork",
    "repo:deleted",
    "issue:created",
]
FIXTURES = sorted(FIX.glob("webhook_*.json"))

# Text as JSON can carry it: any code point but lone surrogates (msgspec refuses those).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str | None, bytes]:
    """Random bytes, random JSON, or a real capture and its event, perhaps with a value replaced."""
    kind = draw(st.sampled_from(["bytes", "json", "capture", "deep"]))
    if kind == "bytes":
        return None, draw(st.binary(max_size=300))
    if kind == "json":
        return None, json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = "1" if opener.startswith("{") else ""
        return None, ('{"push": ' + opener * depth + inner + closer * depth + "}").encode()
    capture = draw(st.sampled_from(FIXTURES))
    # webhook_repo-commit-status-updated_... -> repo:commit_status_updated
    family, _, action = capture.name.split("_")[1].partition("-")
    event = f"{family}:{action.replace('-', '_')}"
    data = json.loads(capture.read_bytes())
    node = data
    for _ in range(draw(st.integers(0, 5))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict | list) or draw(st.booleans()):
                node[key] = draw(json_values)
                break
            node = node[key]
        elif isinstance(node, list) and node:
            node = node[draw(st.integers(0, len(node) - 1))]
        else:
            break
    return event, json.dumps(data).encode()


header_names = st.sampled_from(
    ["X-Event-Key", "X-Request-UUID", "X-Hook-UUID", "X-Attempt-Number", "X-Hub-Signature"]
) | st.text(max_size=20)


@SETTINGS
@given(
    headers=st.dictionaries(header_names, st.text(max_size=60), max_size=6),
    # None: the capture's own event (when the body is one), else whatever headers has.
    event=st.none() | st.sampled_from(EVENTS) | st.text(max_size=30),
    event_body=bodies(),
    signed=st.sampled_from(["no secret", "signed", "unsigned", "bad signature"]),
    options=st.fixed_dictionaries(
        {
            "scan_pull_requests": st.booleans(),
            "compliance_keys": st.none() | st.just(frozenset({"rcingest"})),
            "inventory": st.booleans(),
            "max_body_bytes": st.sampled_from([262_144, 262_144, 262_144, 64]),
        }
    ),
)
def test_any_request_gets_a_documented_status(
    headers: dict[str, str],
    event: str | None,
    event_body: tuple[str | None, bytes],
    signed: str,
    options: dict[str, Any],
) -> None:
    headers = dict(headers)
    capture_event, body = event_body
    if event is not None or capture_event is not None:
        headers["X-Event-Key"] = event or capture_event or ""
    secret = None if signed == "no secret" else SECRET
    if signed == "signed":
        headers["X-Hub-Signature"] = sign(body, SECRET)
    elif signed == "bad signature":
        headers["X-Hub-Signature"] = sign(body + b"x", SECRET)
    v = receive(headers, body, secret=secret, received_at=NOW, **options)
    assert v.status in STATUSES
    tally(f"status {v.status}")  # shown by --hypothesis-show-statistics
    assert v.reason
    assert (v.decoded is not None) == (v.status == 200)
    if signed in ("unsigned", "bad signature") and len(body) <= options["max_body_bytes"]:
        assert v.status == 401
    # The inbox's request path answers exactly as the direct path, and what it
    # stores derives, later, to exactly the records the direct path stores.
    a = admit(headers, body, secret=secret, received_at=NOW.timestamp(), **options)
    assert (a.verdict.status, a.verdict.outcome) == (v.status, v.outcome)
    assert (a.arrival is not None) == (v.status == 200)
    if a.arrival is not None and v.decoded is not None:
        entry = InboxEntry(
            row=InboxRow(
                id=1,
                request_uuid=a.arrival.request_uuid,
                event=a.arrival.event,
                repository=a.arrival.repository,
                received_at=a.arrival.received_at,
                state="pending",
                attempts=0,
                last_error=None,
                done_at=None,
                body_bytes=len(body),
                received=1,
            ),
            headers=a.arrival.headers,
            body=a.arrival.body,
        )
        flags = {k: options[k] for k in ("scan_pull_requests", "compliance_keys", "inventory")}
        derived = derive(entry, DecodeSettings(**flags))
        assert derived.records == [*v.decoded.records, v.decoded.delivery]
        assert derived.jobs == v.decoded.jobs


# ---- round trip ---------------------------------------------------------------

hashes = st.text("0123456789abcdef", min_size=40, max_size=40)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.astimezone(timezone(timedelta(hours=d.minute % 24 - 12))))
branch_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=30,
)
name_part = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20)


@st.composite
def pushes(draw: st.DrawFn) -> tuple[str, list[tuple[str, list[dict[str, Any]]]]]:
    """A repository and, per branch, the commits a push lists (hashes unique overall)."""
    repo = f"{draw(name_part)}/{draw(name_part)}"
    branches = draw(st.lists(branch_names, min_size=1, max_size=3, unique=True))
    all_hashes = draw(st.lists(hashes, min_size=len(branches) * 4, unique=True))
    changes = []
    for i, branch in enumerate(branches):
        commits = []
        for h in all_hashes[i * 4 : i * 4 + draw(st.integers(0, 4))]:
            commits.append(
                {
                    "hash": h,
                    "date": draw(moments),
                    "author": {"raw": draw(text)},
                    "message": draw(text),
                    "parents": [{"hash": p} for p in draw(st.lists(hashes, max_size=2))],
                }
            )
        changes.append((branch, commits))
    return repo, changes


def payload(repo: str, changes: list[tuple[str, list[dict[str, Any]]]]) -> bytes:
    out = []
    for branch, commits in changes:
        head = commits[0]["hash"] if commits else "f" * 40
        out.append(
            {
                "new": {"type": "branch", "name": branch, "target": {"hash": head}},
                "old": None,
                "created": True,
                "commits": [{**c, "date": c["date"].isoformat()} for c in commits],
            }
        )
    return json.dumps({"push": {"changes": out}, "repository": {"full_name": repo}}).encode()


@SETTINGS
@given(push=pushes())
def test_valid_push_round_trips_to_its_commits(
    push: tuple[str, list[tuple[str, list[dict[str, Any]]]]],
) -> None:
    repo, changes = push
    d = decode({"X-Event-Key": "repo:push"}, payload(repo, changes), received_at=NOW)
    got = {c.hash: c for c in d.records if isinstance(c, Commit)}
    assert len(got) == len(d.records)
    expected = {c["hash"]: (branch, c) for branch, commits in changes for c in commits}
    assert set(got) == set(expected)
    tally(f"{len(got)} commits")
    for h, (branch, c) in expected.items():
        record = got[h]
        assert record.repository == repo
        assert record.date == c["date"]
        assert record.branches == [branch]
        assert record.message == c["message"].replace("\x00", "")
        assert record.author_raw == c["author"]["raw"].replace("\x00", "")
        assert record.parents == [p["hash"] for p in c["parents"]]
    assert d.delivery.repository == repo
    assert d.delivery.outcome == "stored"
