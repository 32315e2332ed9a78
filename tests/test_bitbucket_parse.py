"""Sans-I/O parsing of Bitbucket payloads and the window / early-stop rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from rcingest.bitbucket import api
from rcingest.bitbucket.parse import (
    author_name_from_raw,
    commit_from_api,
    error_message,
    files_from_diffstat,
    page_next,
    pull_request_from_api,
    repository_from_api,
)
from rcingest.bitbucket.window import EarlyStop, branch_window, covered_start, resolve_window
from rcingest.errors import ConfigError
from rcingest.interfaces import Window
from rcingest.records import FileChange

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
PHX = ZoneInfo("America/Phoenix")


def load(name: str) -> Any:
    return json.loads((FIX / name).read_text(encoding="utf-8"))


# --- records from real payloads ---------------------------------------------------


def test_commit_with_linked_account() -> None:
    value = load("rest_commit-get_jenkins.json")
    commit = commit_from_api(value, "amuniz/test-repos", ["master"])
    assert commit.hash == "251fce291f086cdde68ae2a896148abb5b58033e"
    assert commit.date == datetime(2025, 4, 26, 9, 50, 59, tzinfo=UTC)
    assert commit.author_raw == "Nikolas Falco <amuniz@acme.com>"
    assert commit.author_name == "Nikolas Falco"
    assert commit.author_account_id == "557058:270a1f96-cd27-4013-ade6-85df2ab9820c"
    assert commit.branches == ["master"]
    assert commit.files is None  # not fetched
    assert commit.message.startswith("Provide some change")


def test_commit_without_linked_account_takes_name_from_raw() -> None:
    value = load("rest_pullrequest-commit-value_devlake-csv-row-id1.json")
    value["author"].pop("user", None)
    commit = commit_from_api(value, "likyh/likyhphp", [])
    assert commit.author_account_id is None
    assert commit.author_name == author_name_from_raw(value["author"]["raw"])
    assert commit.author_name and "<" not in commit.author_name


def test_commit_from_list_page_and_struct_are_equal() -> None:
    page = load("rest_commits-list-with-next_go-scm.json")
    value = page["values"][0]
    as_dict = commit_from_api(value, "atlassian/stash-example-plugin", ["master"])
    import msgspec

    as_struct = commit_from_api(
        msgspec.convert(value, api.Commit), "atlassian/stash-example-plugin", ["master"]
    )
    assert as_dict == as_struct
    assert as_dict.parents and all(len(p) == 40 for p in as_dict.parents)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("Jane Doe <jane@example.com>", "Jane Doe"),
        ("孙婉译 <swy@likyh.com>", "孙婉译"),
        ("<nobody@example.com>", None),
        ("plain-name", "plain-name"),
        ("", None),
    ],
)
def test_author_name_from_raw(raw: str, name: str | None) -> None:
    assert author_name_from_raw(raw) == name


def test_files_from_diffstat_statuses_paths_and_lines() -> None:
    files = files_from_diffstat(load("rest_diffstat-commit_go-scm.json")["values"])
    assert files == [
        FileChange("CONTRIBUTING.md", "modified", None, 15, 15),
        FileChange("new-folder/CONTRIBUTING.md", "renamed", "old-folder/CONTRIBUTING.md", 0, 0),
        # Bitbucket sends ``new.path: ""`` for a removed file: the old path is the path.
        FileChange("CONTRIBUTING.md", "removed", None, 0, 15),
    ]


def test_files_from_diffstat_odd_values() -> None:
    files = files_from_diffstat(
        [
            {"status": "added", "old": None, "new": {"path": "a.py"}, "lines_added": 3},
            {
                "status": "merge conflict",
                "old": {"path": "b.py"},
                "new": {"path": "b.py"},
                "lines_added": None,
                "lines_removed": None,
            },
        ]
    )
    assert files[0] == FileChange("a.py", "added", None, 3, 0)
    assert files[1] == FileChange("b.py", "modified", None, 0, 0)


def test_pull_request_from_list() -> None:
    value = load("rest_pullrequests-list_jenkins.json")["values"][0]
    pr = pull_request_from_api(value, "amuniz/test-repos", ["a" * 40])
    assert pr.id == 11 and pr.state == "OPEN"
    assert pr.title == "Draft pull request"
    assert pr.destination_branch == "master"
    assert pr.source_branch
    assert pr.author_account_id == "557058:270a1f96-cd27-4013-ade6-85df2ab9820c"
    assert pr.commit_hashes == ["a" * 40]
    assert pr.created_on.tzinfo is not None


def test_merged_pull_request_keeps_short_merge_hash() -> None:
    value = load("rest_pullrequest-merged_devlake-csv-row-id169.json")
    pr = pull_request_from_api(value, "likyh/likyhphp", [])
    assert pr.state == "MERGED"
    assert pr.merge_commit is not None and len(pr.merge_commit) == 12


def test_repository_with_mainbranch() -> None:
    repo = repository_from_api(load("rest_repository-get-mainbranch_jenkins.json"))
    assert repo.full_name == "amuniz/test-repos"
    assert repo.mainbranch == "master"
    assert repo.workspace == "amuniz"
    assert repo.uuid and repo.uuid.startswith("{")


def test_repository_from_filtered_listing() -> None:
    page = load("rest_repositories-list_q-filter_go-scm.json")
    repos = [repository_from_api(v) for v in page["values"]]
    assert repos and all("/" in r.full_name for r in repos)


def test_branch_listing_decodes() -> None:
    import msgspec

    page = msgspec.convert(load("rest_refs-branches-list_jenkins.json"), api.Page[api.Branch])
    names = {b.name for b in page.values}
    assert {"feature/BB-1", "feature/BB-2"} <= names


def test_error_message_from_envelope_and_text() -> None:
    body = (FIX / "rest_error-404_go-scm.json").read_bytes()
    assert error_message(body) == "Repository dev/null not found"
    assert error_message(b"Rate limit for this resource has been exceeded") == (
        "Rate limit for this resource has been exceeded"
    )
    assert error_message(b'{"unexpected": true}') == '{"unexpected": true}'
    assert error_message(b"x" * 1000).endswith("…")


def test_page_next_rules() -> None:
    """The rule typed_pages follows, on pages decoded the way the client decodes them."""
    decode = msgspec.json.Decoder(api.Page[dict[str, Any]]).decode
    real = (FIX / "rest_commits-list-with-next_go-scm.json").read_bytes()
    assert page_next(decode(real)) == json.loads(real)["next"]
    assert page_next(decode(b'{"values": [{}]}')) is None
    assert page_next(decode(b'{"values": [{}], "next": ""}')) is None
    # Bitbucket sometimes sends ``next`` on an empty last page: the listing ends anyway.
    assert page_next(decode(b'{"values": [], "next": "https://api/x?page=3"}')) is None
    assert page_next(decode(b"{}")) is None


# --- the window ----------------------------------------------------------------------


def test_window_from_hours_is_half_open_in_the_pipeline_zone() -> None:
    now = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    window = resolve_window(now, PHX, hours=4)
    assert window.end == now and window.start == now - timedelta(hours=4)
    assert window.start.tzinfo == PHX
    assert now - timedelta(hours=4) in window
    assert now not in window


def test_window_naive_since_until_read_in_pipeline_zone() -> None:
    window = resolve_window(
        datetime.now(UTC), PHX, since=datetime(2026, 11, 1), until=datetime(2026, 11, 2)
    )
    assert window.start == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def test_window_hours_counts_back_from_until() -> None:
    window = resolve_window(datetime.now(UTC), PHX, hours=2, until=datetime(2026, 11, 2, 12, 0))
    assert window.end - window.start == timedelta(hours=2)


@pytest.mark.parametrize(
    "until",
    [datetime(2026, 3, 8, 4, 0), datetime(2026, 11, 1, 3, 0)],  # spring forward, fall back
)
def test_window_hours_is_real_time_across_a_dst_change(until: datetime) -> None:
    new_york = ZoneInfo("America/New_York")
    window = resolve_window(datetime.now(UTC), new_york, hours=4, until=until)
    assert window.end == until.replace(tzinfo=new_york)
    assert window.end.astimezone(UTC) - window.start.astimezone(UTC) == timedelta(hours=4)
    assert window.start.tzinfo == new_york


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hours": 4, "since": datetime(2026, 1, 1)}, "hours and since"),
        ({}, "needs a window"),
        ({"since": datetime(2026, 1, 2), "until": datetime(2026, 1, 1)}, "window is empty"),
        ({"hours": 0}, "hours: must be > 0"),
    ],
)
def test_window_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_window(datetime.now(UTC), PHX, **kwargs)


START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def walk(dates: list[datetime], page: int, **kwargs: Any) -> int:
    """How many commits a walk reads before stopping (checks at page ends)."""
    stop = EarlyStop(START, **kwargs)
    for i, date in enumerate(dates, start=1):
        stop.see(date)
        if i % page == 0 and stop.should_stop():
            return i
    return len(dates)


def test_early_stop_after_a_full_page_safely_past_the_window() -> None:
    # 100 commits in the window, then 1,000 older ones, 10 minutes apart.
    dates = [START + timedelta(hours=4) - timedelta(minutes=2 * i) for i in range(100)]
    dates += [START - timedelta(minutes=10 * (i + 1)) for i in range(1000)]
    assert walk(dates, page=100) == 200  # page 2 is all old: stop, never page to the root


def test_early_stop_waits_for_the_margin() -> None:
    # Old commits one minute apart: the first 100 are within the 60-minute margin.
    dates = [START + timedelta(minutes=1)] + [START - timedelta(minutes=i + 1) for i in range(400)]
    assert walk(dates, page=100) == 200
    assert walk(dates, page=100, margin=timedelta(hours=4)) == 300


def test_out_of_order_history_does_not_stop_the_walk_early() -> None:
    # A merged branch brings 60 commits dated a week back, listed before
    # mainline commits that are still in the window (topological order).
    in_window = [START + timedelta(hours=3) - timedelta(minutes=i) for i in range(30)]
    merged_old = [START - timedelta(days=7, minutes=i) for i in range(60)]
    more_in_window = [START + timedelta(hours=1) - timedelta(minutes=i) for i in range(30)]
    old = [START - timedelta(hours=2, minutes=i) for i in range(300)]
    dates = in_window + merged_old + more_in_window + old
    read = walk(dates, page=100)
    seen = dates[:read]
    assert all(d in seen for d in more_in_window)  # the late in-window commits are reached
    assert read < len(dates)  # and the walk still stops before the root


def test_out_of_order_run_longer_than_the_threshold_is_the_documented_limit() -> None:
    # 100+ consecutive old commits *do* end the walk: the configurable threshold.
    dates = [START - timedelta(days=7, minutes=i) for i in range(100)]
    dates += [START + timedelta(minutes=5)] + [START - timedelta(hours=5)] * 99
    assert walk(dates, page=100) == 100
    assert walk(dates, page=100, stop_after=150) == 200


Listed = tuple[str, datetime, list[str]]


def walk_commits(listing: list[Listed], page: int, **kwargs: Any) -> list[str]:
    """The hashes a parent-aware walk reads before stopping (checks at page ends)."""
    stop = EarlyStop(START, **kwargs)
    read: list[str] = []
    for i, (commit_hash, date, parents) in enumerate(listing, start=1):
        stop.see(date, commit_hash, parents)
        read.append(commit_hash)
        if i % page == 0 and stop.should_stop():
            break
    return read


def linear(prefix: str, dates: list[datetime], last_parent: str | None = None) -> list[Listed]:
    """A first-parent chain ``prefix0 -> prefix1 -> ...`` (newest first)."""
    out: list[Listed] = []
    for i, date in enumerate(dates):
        parent = f"{prefix}{i + 1}" if i + 1 < len(dates) else last_parent
        out.append((f"{prefix}{i}", date, [parent] if parent else []))
    return out


def test_early_stop_keeps_the_first_parent_behind_a_merged_old_branch() -> None:
    # M (1 h ago) merges a 250-commit branch dated 5 days back; its first
    # parent P1 (2 h ago, in the 4-hour window) is listed after all of them.
    end = START + timedelta(hours=4)
    feature = linear("f", [end - timedelta(days=5, minutes=i) for i in range(250)])
    mainline = linear("p", [end - timedelta(hours=2)] + [START - timedelta(days=6)] * 400)
    listing: list[Listed] = [("m", end - timedelta(hours=1), ["p0", "f0"])]
    listing += feature + mainline
    read = walk_commits(listing, page=30)
    assert "p0" in read  # the in-window first parent is reached
    assert len(read) < len(listing)  # and the walk still stops before the root
    # Without parents (the old rule) the walk ended inside the merged branch.
    assert walk([d for _, d, _ in listing], page=30) < 250


def test_early_stop_first_parent_chain_with_out_of_order_dates() -> None:
    # Mainline commits in the window, one of them dated 30 minutes before the
    # window start (clock skew, within the margin), then a merged 150-commit
    # branch a week old, then the rest of the mainline: two in-window commits.
    end = START + timedelta(hours=4)
    dates = [end - timedelta(minutes=10), START - timedelta(minutes=30)]
    head = linear("a", dates, last_parent="b0")
    head[-1] = (head[-1][0], head[-1][1], ["b0", "x0"])  # a merge
    merged = linear("x", [START - timedelta(days=7, minutes=i) for i in range(150)])
    rest = linear("b", [START + timedelta(minutes=20), START + timedelta(minutes=5)])
    rest += linear("o", [START - timedelta(hours=3, minutes=i) for i in range(300)])
    rest[1] = (rest[1][0], rest[1][1], ["o0"])
    read = walk_commits(head + merged + rest, page=50)
    assert {"b0", "b1"} <= set(read)  # in the window, behind 150 old commits
    assert len(read) < len(head + merged + rest)


def test_early_stop_linear_history_with_parents_stops_like_before() -> None:
    # 100 in the window, then 1,000 older ones 10 minutes apart, parents given:
    # the chain ends at the first commit past the margin, the old run decides.
    dates = [START + timedelta(hours=4) - timedelta(minutes=2 * i) for i in range(100)]
    dates += [START - timedelta(minutes=10 * (i + 1)) for i in range(1000)]
    assert len(walk_commits(linear("c", dates), page=100)) == 200


def test_early_stop_a_chain_ending_before_the_margin_does_not_block() -> None:
    # The head's first parent is already a week old: nothing more to wait for.
    listing = linear("c", [START + timedelta(hours=1)] + [START - timedelta(days=7)] * 300)
    assert len(walk_commits(listing, page=100)) == 200


W = Window(START, START + timedelta(hours=4))
OVERLAP = timedelta(minutes=10)


def cursor(start: datetime, end: datetime) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), "head": "a" * 40}


def test_branch_window_without_cursor_is_the_run_window() -> None:
    assert branch_window(W, None, incremental=True, overlap=OVERLAP) == W
    assert branch_window(W, {}, incremental=False, overlap=OVERLAP) == W


def test_branch_window_incremental_starts_at_last_end_minus_overlap() -> None:
    saved = cursor(START - timedelta(days=1), START + timedelta(hours=2))
    got = branch_window(W, saved, incremental=True, overlap=OVERLAP)
    assert got == Window(START + timedelta(hours=2) - OVERLAP, W.end)


def test_branch_window_resume_skips_covered_branches() -> None:
    covered = cursor(START, W.end)
    assert branch_window(W, covered, incremental=False, overlap=OVERLAP, resume=True) is None
    partial = cursor(START - timedelta(hours=1), START + timedelta(hours=3))
    got = branch_window(W, partial, incremental=False, overlap=OVERLAP, resume=True)
    assert got == Window(START + timedelta(hours=3) - OVERLAP, W.end)
    # A cursor that starts after the window start covers nothing at its beginning.
    later = cursor(START + timedelta(hours=1), W.end)
    assert branch_window(W, later, incremental=False, overlap=OVERLAP, resume=True) == W
    # Without resume, a non-incremental scan always reads its whole window.
    assert branch_window(W, covered, incremental=False, overlap=OVERLAP) == W


def test_covered_start_keeps_the_union_with_a_contiguous_cursor() -> None:
    later = Window(START + timedelta(hours=3) - OVERLAP, W.end)
    # The saved cursor reaches into the part scanned now: the new one covers both.
    assert covered_start(later, cursor(START, START + timedelta(hours=3))) == START
    # A gap between them, no cursor, or a broken one: only what was scanned.
    assert covered_start(later, cursor(START, START + timedelta(hours=1))) == later.start
    assert covered_start(later, None) == later.start
    assert covered_start(later, {"start": "x", "end": "y"}) == later.start


def test_branch_window_ignores_broken_cursors() -> None:
    assert branch_window(W, {"end": "not a date"}, incremental=True, overlap=OVERLAP) == W
