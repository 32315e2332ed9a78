"""A branch's story key goes only to the commits that branch brought (issue 10, section 2).

A branch name lends its key to a commit only when the commit is new on it:
not reachable from the repository's main branch or the other branches'
heads. Creating ``feature/REL-12-login`` at a commit already on ``main`` tags
nothing, although Bitbucket's push payload lists the 5 newest commits
reachable from the new branch. Which branches *contain* a commit is still
recorded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rcingest.default_plugins.story_keys import StoryKeysConfig, StoryKeysEnricher
from rcingest.interfaces import RunContext
from rcingest.records import Commit, StoryKey
from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.data import FakeData
from rcingest.testing.fake_bitbucket.render import render_commit
from rcingest.webhooks.decode import decode
from tests.test_bitbucket_rest_source import scan
from tests.test_webhook_backfill import REPO, daemon, post, rows, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "bitbucket"
CAPTURE = FIXTURES / "webhook_repo-push_branch-create-2-commits_go-scm-2018.json"
TOKEN = "bbat-backfill-token-Q9x7"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def enricher(tmp_path: Path) -> StoryKeysEnricher:
    ctx = RunContext(
        run_id="k",
        pipeline_name="k",
        timezone=ZoneInfo("UTC"),
        started_at=NOW,
        base_dir=tmp_path,
        source_id="k:src",
    )
    return StoryKeysEnricher(StoryKeysConfig(), ctx)


def test_created_branch_capture_lends_its_key_to_no_listed_commit(tmp_path: Path) -> None:
    """The real capture, its branch renamed to carry a key: the payload proves nothing."""
    raw = CAPTURE.read_bytes().replace(b'"name": "develop"', b'"name": "feature/REL-12-login"')
    decoded = decode({"X-Event-Key": "repo:push"}, raw, received_at=NOW)
    commits = [r for r in decoded.records if isinstance(r, Commit)]
    assert len(commits) == 2
    keys = enricher(tmp_path)
    for c in commits:
        assert c.branches == ["feature/REL-12-login"]  # containment is kept
        assert c.new_on == []
        assert all(sk.key != "REL-12" for sk in keys.enrich(c).story_keys)  # type: ignore[attr-defined]
    # The job that can tell which commits the branch brought.
    (job,) = decoded.jobs
    assert (job.kind, job.branch, job.truncated) == ("push_range", "feature/REL-12-login", False)
    assert job.include == ["141977fedf5cf35aa290ac87d4b5177ac4cd9de1"]


def test_a_branch_without_a_key_like_name_needs_no_job() -> None:
    raw = CAPTURE.read_bytes()  # branch "develop", not truncated
    assert decode({"X-Event-Key": "repo:push"}, raw, received_at=NOW).jobs == []


def test_branch_key_names_the_branch_that_lent_it(tmp_path: Path) -> None:
    commit = Commit(
        hash="a" * 40,
        repository=REPO,
        date=NOW,
        branches=["main", "feature/REL-7-x"],
        new_on=["feature/REL-7-x"],
        message="REL-7 and OPS-2",
    )
    enriched = enricher(tmp_path).enrich(commit)
    assert isinstance(enriched, Commit)
    assert enriched.story_keys == [
        StoryKey("REL-7", ("message", "branch"), ("feature/REL-7-x",)),
        StoryKey("OPS-2", ("message",)),
    ]
    assert enricher(tmp_path).enrich(enriched) is enriched  # idempotent, evidence kept


def created_branch_push(data: FakeData, branch: str, head: str) -> bytes:
    """``repo:push`` creating ``branch`` at ``head``, listing 5 commits reachable from it."""
    repo = data.repos[REPO]
    listed = (repo.listing([head], []) or [])[:5]
    body: dict[str, Any] = {
        "push": {
            "changes": [
                {
                    "new": {"type": "branch", "name": branch, "target": {"hash": head}},
                    "old": None,
                    "created": True,
                    "closed": False,
                    "forced": False,
                    "truncated": False,
                    "commits": [render_commit(data, repo, c) for c in listed],
                }
            ]
        },
        "repository": {"full_name": REPO, "uuid": repo.uuid},
    }
    return json.dumps(body).encode()


async def test_created_branch_at_a_main_commit_tags_nothing_end_to_end(tmp_path: Path) -> None:
    data = FakeData(GenSpec(repositories=1, branches=2, commits=30))
    repo = data.repos[REPO]
    branch = "feature/REL-12-login"
    repo.heads[branch] = repo.heads["main"]
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        raw = created_branch_push(data, branch, repo.heads["main"])
        async with daemon(tmp_path, fake.base_url) as (_runner, url):
            assert await post(url, raw, "repo:push", "create-1") == 200
            await wait_for(
                lambda: (
                    rows(tmp_path / "backfill.db", "SELECT state FROM backfill_jobs") == [("done",)]
                )
            )
        # The job excluded main (and the other branch's head) from its listing.
        assert fake.counters.routes["branches"] >= 1
    db = tmp_path / "commits.db"
    assert rows(db, "SELECT * FROM story_keys WHERE key = 'REL-12'") == []
    on_branch = rows(db, f"SELECT commit_hash FROM commit_branches WHERE branch = '{branch}'")
    assert len(on_branch) == 5  # containment, as the payload listed it


async def test_created_feature_branch_tags_only_its_own_commits(tmp_path: Path) -> None:
    """A feature branch with its own commits: those get its key, main's history does not."""
    data = FakeData(GenSpec(repositories=1, branches=2, commits=30, own_commits=3))
    repo = data.repos[REPO]
    feature = next(b for b in repo.heads if b != "main")
    key = feature.split("/", 1)[1].rsplit("-", 1)[0]  # e.g. "OPS-311"
    own = {c.hash for c in repo.listing([feature], ["main"]) or []}
    assert len(own) == 3
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        raw = created_branch_push(data, feature, repo.heads[feature])
        async with daemon(tmp_path, fake.base_url) as (_runner, url):
            assert await post(url, raw, "repo:push", "create-2") == 200
            await wait_for(
                lambda: (
                    rows(tmp_path / "backfill.db", "SELECT state FROM backfill_jobs") == [("done",)]
                )
            )
    db = tmp_path / "commits.db"
    lent = rows(
        db, f"SELECT commit_hash, branch FROM story_keys WHERE key = '{key}' AND origin = 'branch'"
    )
    assert {h for h, _ in lent} == own
    assert {b for _, b in lent} == {feature}
    # The payload listed 5 commits: 3 own, 2 of main's; all 5 are recorded on the branch.
    assert len(rows(db, f"SELECT 1 FROM commit_branches WHERE branch = '{feature}'")) == 5


async def test_rest_scan_tags_only_a_feature_branchs_own_commits(tmp_path: Path) -> None:
    spec = GenSpec(end=NOW, repositories=1, branches=3, commits=40, own_commits=4)
    async with FakeBitbucket(spec) as fake:
        repo = fake.data.repos[REPO]
        branches = list(repo.heads)
        out, _ctx = await scan(fake, tmp_path, default_branches=branches, hours=48)
    keys = enricher(tmp_path)
    commits = [keys.enrich(r) for r in out if isinstance(r, Commit)]
    for feature in (b for b in branches if b != "main"):
        key = feature.split("/", 1)[1].rsplit("-", 1)[0]
        own = {c.hash for c in repo.listing([feature], ["main"]) or []}
        tagged = {
            c.hash
            for c in commits
            if isinstance(c, Commit)
            and any(sk.key == key and feature in sk.branches for sk in c.story_keys)
        }
        assert tagged == own, feature
        # The feature's listing reached main's history too: recorded, not tagged.
        reached = {c.hash for c in commits if isinstance(c, Commit) and feature in c.branches}
        assert reached > own
    assert all(c.date >= NOW - timedelta(hours=48) for c in commits if isinstance(c, Commit))


# -- pull requests from a fork, from real payloads (section 4) ---------------------------

FORK_PAYLOADS = {
    "pullrequest:created": "webhook_pullrequest-created_fork_jenkins.json",
    "pullrequest:updated": "webhook_pullrequest-updated_fork_jenkins.json",
    "pullrequest:rejected": "webhook_pullrequest-rejected_fork_jenkins.json",
}


def test_fork_pull_requests_keep_their_source_repository() -> None:
    from rcingest.records import PullRequest

    for event, name in FORK_PAYLOADS.items():
        raw = (FIXTURES / name).read_bytes()
        decoded = decode({"X-Event-Key": event}, raw, received_at=NOW)
        (pr,) = [r for r in decoded.records if isinstance(r, PullRequest)]
        # stephenc/temp-fork main -> cloudbeers/temp main: not "main -> main" of one repository.
        assert (pr.repository, pr.source_repository) == ("cloudbeers/temp", "stephenc/temp-fork")
        assert (pr.source_branch, pr.destination_branch) == ("main", "main")
        (job,) = decoded.jobs
        assert job.source_repository == "stephenc/temp-fork"


async def test_fork_pull_request_is_stored_with_its_source(tmp_path: Path) -> None:
    """End to end through the daemon: the stored row names the fork."""
    raw = (FIXTURES / FORK_PAYLOADS["pullrequest:created"]).read_bytes()
    data = FakeData(GenSpec(repositories=1, branches=2, commits=10))
    async with FakeBitbucket(data, expected_auth=f"Bearer {TOKEN}") as fake:
        async with daemon(tmp_path, fake.base_url) as (_runner, url):
            assert await post(url, raw, "pullrequest:created", "fork-1") == 200
            db = tmp_path / "commits.db"
            await wait_for(lambda: bool(rows(db, "SELECT 1 FROM pull_requests")))
    assert rows(
        db,
        "SELECT repository, source_repository, source_branch, destination_branch "
        "FROM pull_requests",
    ) == [("cloudbeers/temp", "stephenc/temp-fork", "main", "main")]
