"""The ``bitbucket_rest`` source against the fake Bitbucket on loopback."""

from __future__ import annotations

import base64
import json
import logging
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rcingest.bitbucket.client import BitbucketError
from rcingest.bitbucket.parse import files_from_diffstat
from rcingest.config import load_pipeline
from rcingest.default_plugins.bitbucket_rest import BitbucketRestConfig, BitbucketRestSource
from rcingest.errors import RunFailed
from rcingest.interfaces import RunContext, Window
from rcingest.pipeline import Runner
from rcingest.plugins import Manager, Registry
from rcingest.records import Checkpoint, Commit, PullRequest, Record, Repository
from rcingest.testing import FakeBitbucket, Faults, GenSpec

END = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PHX = ZoneInfo("America/Phoenix")
SPEC = GenSpec(end=END, repositories=3, branches=3, commits=60)
TOKEN = "s3cr3t-token-value-4242"


def context(tmp_path: Path, started: datetime = END + timedelta(minutes=1)) -> RunContext:
    return RunContext(
        run_id="t",
        pipeline_name="t",
        timezone=PHX,
        started_at=started,
        base_dir=tmp_path,
        source_id="t:src",
    )


def source_config(fake: FakeBitbucket, **kwargs: Any) -> BitbucketRestConfig:
    base: dict[str, Any] = {
        "workspace": "acme",
        "base_url": fake.base_url,
        "hours": 12,
        "backoff_base": 0.001,
        "backoff_max": 0.01,
    }
    base.update(kwargs)
    return BitbucketRestConfig(**base)


async def scan(
    fake: FakeBitbucket,
    tmp_path: Path,
    cursors: dict[str, Any] | None = None,
    started: datetime = END + timedelta(minutes=1),
    **kwargs: Any,
) -> tuple[list[Record | Checkpoint], RunContext]:
    ctx = context(tmp_path, started)
    source = BitbucketRestSource(source_config(fake, **kwargs), ctx)
    async with source:
        out = [item async for item in source.records(cursors or {})]
    return out, ctx


def branches_of(fake: FakeBitbucket) -> list[str]:
    return list(next(iter(fake.data.repos.values())).heads)


async def test_scan_returns_exactly_the_window_once_each(tmp_path: Path) -> None:
    async with FakeBitbucket(SPEC) as fake:
        branches = branches_of(fake)
        out, ctx = await scan(fake, tmp_path, default_branches=branches)
        window = ctx.window
        assert window is not None
        assert window.end - window.start == timedelta(hours=12)
        assert ctx.source_info == {
            "type": "bitbucket_rest",
            "workspace": "acme",
            "repositories": ["acme/service-00", "acme/service-01", "acme/service-02"],
            "branches": sorted(branches),
        }
        commits = [r for r in out if isinstance(r, Commit)]
        expected = fake.data.expected_commits(window, branches)
        assert len(commits) == len({c.hash for c in commits})  # once each
        assert {c.hash: (c.repository, set(c.branches)) for c in commits} == expected
        assert any(len(c.branches) > 1 for c in commits)  # shared history: several branches
        for c in commits:
            repo = fake.data.repos[c.repository]
            assert c.files == files_from_diffstat(repo.files(c.hash, 20))
            assert window.start <= c.date < window.end
        # Each commit's diffstat fetched once, however many branches reach it.
        assert fake.counters.routes["diffstat"] == len(commits)

        prs = [r for r in out if isinstance(r, PullRequest)]
        assert {(p.repository, p.id) for p in prs} == set(fake.data.expected_pull_requests(window))
        for pr in prs:
            fake_pr = next(p for p in fake.data.repos[pr.repository].pull_requests if p.id == pr.id)
            assert pr.commit_hashes == fake_pr.commits
            if pr.state == "MERGED":
                assert pr.merge_commit == fake_pr.commits[0]  # 12 characters expanded
        assert fake.counters.routes["commit"] == 0  # expanded from known hashes, no request
        by_hash = {c.hash: c for c in commits}
        linked = 0
        for pr in prs:
            for h in pr.commit_hashes:
                if h in by_hash:
                    refs = by_hash[h].pull_requests
                    assert [(r.id, r.title, r.source_branch) for r in refs] == [
                        (pr.id, pr.title, pr.source_branch)
                    ]
                    linked += 1
        assert linked > 0

        # Per repository: Repository, pull requests, commits, then one checkpoint per branch.
        kinds = [type(r).__name__ for r in out]
        assert kinds.count("Repository") == 3 and kinds.count("Checkpoint") == 9
        for repo_name in fake.data.repos:
            items = [
                r
                for r in out
                if getattr(r, "repository", getattr(r, "full_name", None)) == repo_name
                or (isinstance(r, Checkpoint) and r.stream.startswith(repo_name + "@"))
            ]
            assert isinstance(items[0], Repository)
            checkpoints = [i for i, r in enumerate(items) if isinstance(r, Checkpoint)]
            assert checkpoints == list(range(len(items) - 3, len(items)))
        cp = next(r for r in out if isinstance(r, Checkpoint))
        assert cp.state is not None and set(cp.state) == {"start", "end", "head", "run_id"}


async def test_main_branch_by_default(tmp_path: Path) -> None:
    async with FakeBitbucket(SPEC) as fake:
        out, ctx = await scan(fake, tmp_path, repositories=["service-00", "acme/service-01"])
        assert ctx.window is not None
        commits = {r.hash for r in out if isinstance(r, Commit)}
        expected = fake.data.expected_commits(
            ctx.window, None, ["acme/service-00", "acme/service-01"]
        )
        assert commits == set(expected)
        assert ctx.source_info["branches"] == ["main"]


async def test_short_window_never_pages_a_branch_to_its_root(tmp_path: Path) -> None:
    spec = GenSpec(end=END, repositories=1, branches=1, commits=1000, step=timedelta(minutes=10))
    async with FakeBitbucket(spec) as fake:
        out, ctx = await scan(fake, tmp_path, hours=4, pull_requests=False)
        commits = [r for r in out if isinstance(r, Commit)]
        assert len(commits) == 24
        # Page 1: 24 in the window + 76 older; page 2: 100 older, past the margin: stop.
        assert fake.counters.routes["commits"] == 2  # of 10 pages to the root
        assert ctx.stats.get("bitbucket.early_stops") == 1


async def test_out_of_order_history_returns_exactly_the_window(tmp_path: Path) -> None:
    spec = GenSpec(
        end=END,
        repositories=2,
        branches=2,
        commits=300,
        out_of_order_every=4,
        skew=timedelta(hours=30),
    )
    async with FakeBitbucket(spec) as fake:
        branches = branches_of(fake)
        out, ctx = await scan(fake, tmp_path, hours=24, default_branches=branches)
        assert ctx.window is not None
        got = {r.hash: (r.repository, set(r.branches)) for r in out if isinstance(r, Commit)}
        assert got == fake.data.expected_commits(ctx.window, branches)


@pytest.mark.parametrize(
    ("switches", "routes_absent", "kinds_absent"),
    [
        ({"diffstat": False}, {"diffstat"}, set()),
        ({"pull_requests": False}, {"pullrequests", "pullrequest_commits"}, {"PullRequest"}),
        ({"commits": False}, {"commits", "diffstat"}, {"Commit"}),
    ],
)
async def test_switches(
    tmp_path: Path, switches: dict[str, bool], routes_absent: set[str], kinds_absent: set[str]
) -> None:
    async with FakeBitbucket(SPEC) as fake:
        out, _ = await scan(fake, tmp_path, **switches)
        kinds = {type(r).__name__ for r in out}
        assert not kinds & kinds_absent
        assert not routes_absent & set(fake.counters.routes)
        if switches.get("diffstat") is False:
            assert all(r.files is None for r in out if isinstance(r, Commit))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["acme/service-00", "acme/service-01", "acme/service-02"]),
        ({"is_private": False}, ["acme/service-02"]),
        ({"language": "python", "is_private": True}, ["acme/service-00"]),
        ({"q": 'name ~ "01"'}, ["acme/service-01"]),
        ({"role": "owner"}, ["acme/service-00", "acme/service-02"]),
        ({"updated_within_days": 5}, ["acme/service-00", "acme/service-01"]),
    ],
)
async def test_every_repository_with_filters(
    tmp_path: Path, filters: dict[str, Any], expected: list[str]
) -> None:
    async with FakeBitbucket(SPEC) as fake:
        out, ctx = await scan(fake, tmp_path, commits=False, pull_requests=False, **filters)
        assert [r.full_name for r in out if isinstance(r, Repository)] == expected
        assert ctx.source_info["repositories"] == expected


async def test_a_missing_default_branch_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBitbucket(SPEC) as fake:
        with caplog.at_level(logging.WARNING):
            out, ctx = await scan(fake, tmp_path, default_branches=["main", "develop"])
        streams = {r.stream for r in out if isinstance(r, Checkpoint)}
        assert streams == {f"acme/service-0{i}@main" for i in range(3)}
        assert ctx.stats.get("bitbucket.missing_branches") == 3
        assert "branch 'develop' not found" in caplog.text


async def test_an_unknown_repository_fails_naming_it(tmp_path: Path) -> None:
    async with FakeBitbucket(SPEC) as fake:
        with pytest.raises(BitbucketError, match=r"Repository acme/nope not found.*acme/nope"):
            await scan(fake, tmp_path, repositories=["service-00", "nope"])


async def test_resume_skips_branches_a_cursor_covers(tmp_path: Path) -> None:
    window = {"since": datetime(2026, 11, 23, 0, 0), "until": datetime(2026, 11, 23, 5, 0)}
    async with FakeBitbucket(SPEC) as fake:
        first, _ = await scan(fake, tmp_path, resume=True, hours=None, **window)
        cursors = {c.stream: c.state for c in first if isinstance(c, Checkpoint)}
        before = fake.counters.routes["commits"]
        second, ctx = await scan(fake, tmp_path, cursors=cursors, resume=True, hours=None, **window)
        assert fake.counters.routes["commits"] == before  # no branch walked again
        assert ctx.stats.get("bitbucket.branches_resumed") == 3
        assert not [r for r in second if isinstance(r, Commit | Checkpoint)]


PIPELINE = """\
    name: scan
    timezone: America/Phoenix
    source:
      type: bitbucket_rest
      config:
        workspace: acme
        base_url: {base_url}
        auth:
          email: me@example.com
          api_token: ${{BITBUCKET_API_TOKEN}}
        hours: 12
        incremental: true
        parallel_repositories: 1
        max_tries: 1
        backoff_base: 0.001
        default_branches: {branches}
    sinks:
      - type: test_memory
"""


async def test_crash_then_incremental_resume_without_refetching_finished_branches(
    tmp_path: Path, manager: Manager, memory: dict[str, list[Any]]
) -> None:
    basic = "Basic " + base64.b64encode(f"me@example.com:{TOKEN}".encode()).decode()
    async with FakeBitbucket(SPEC, expected_auth=basic) as fake:
        branches = branches_of(fake)
        path = tmp_path / "scan.yaml"
        text = PIPELINE.format(base_url=fake.base_url, branches=json.dumps(branches))
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        pipeline = load_pipeline(path, Registry(manager), environ={"BITBUCKET_API_TOKEN": TOKEN})

        # Run 1 crashes in the second repository, after the first is stored.
        fake.faults.fail_paths = {"/service-01/": 500}
        ctx1 = context(tmp_path)
        with pytest.raises(RunFailed, match="service-01"):
            await Runner(pipeline, ctx1).run()
        state = json.loads((tmp_path / "scan.state.json").read_text())["t:src"]
        assert set(state) == {f"acme/service-00@{b}" for b in branches}
        stored_1 = {r.hash for r in memory["default"] if isinstance(r, Commit)}
        assert stored_1 and {r.repository for r in memory["default"] if isinstance(r, Commit)} == {
            "acme/service-00"
        }
        run_1_count = len(memory["default"])

        # Run 2, a minute later: service-00 is only read from its cursor on.
        fake.faults.fail_paths = {}
        fake.counters.repo_routes.clear()
        ctx2 = context(tmp_path, END + timedelta(minutes=2))
        result = await Runner(pipeline, ctx2).run()
        assert result.status == "succeeded"
        walked = fake.counters.repo_routes
        # One page per branch, plus one per non-main branch for the commits it brought.
        assert walked["commits acme/service-00"] == 2 * len(branches) - 1
        assert walked["commits acme/service-01"] >= len(branches)
        run_2 = [r for r in memory["default"][run_1_count:] if isinstance(r, Commit)]
        # service-00 is read again only from its cursor's end minus the 10-minute overlap.
        cursor_end = END + timedelta(minutes=1)
        again = [c for c in run_2 if c.repository == "acme/service-00"]
        assert all(c.date >= cursor_end - timedelta(minutes=10) for c in again)
        assert {c.repository for c in run_2} >= {"acme/service-01", "acme/service-02"}
        # Together the two runs stored every commit of the first run's window.
        assert ctx1.window is not None
        expected = fake.data.expected_commits(ctx1.window, branches)
        stored = {r.hash for r in memory["default"] if isinstance(r, Commit)}
        assert set(expected) <= stored
        assert not any(TOKEN in repr(r) for r in memory["default"])
        assert TOKEN not in (tmp_path / "scan.state.json").read_text()


FULL = """\
    name: scan
    timezone: America/Phoenix
    source:
      type: bitbucket_rest
      config:
        workspace: acme
        base_url: {base_url}
        auth:
          email: me@example.com
          api_token: ${{BITBUCKET_API_TOKEN}}
        hours: 12
        backoff_base: 0.001
        max_tries: 5
    enrichers:
      - type: story_keys
    sinks:
      - type: database
        config:
          database: {db}
      - type: json_artifact
        config:
          artifacts_dir: {artifacts}
"""


@pytest.mark.parametrize("accepted", [True, False])
async def test_credentials_never_reach_logs_errors_artifacts_or_the_database(
    tmp_path: Path, manager: Manager, caplog: pytest.LogCaptureFixture, accepted: bool
) -> None:
    basic = base64.b64encode(f"me@example.com:{TOKEN}".encode()).decode()
    expected_auth = f"Basic {basic}" if accepted else "Bearer something-else"
    async with FakeBitbucket(SPEC, Faults(rate_limit_every=7), expected_auth=expected_auth) as fake:
        path = tmp_path / "scan.yaml"
        text = FULL.format(
            base_url=fake.base_url, db=tmp_path / "commits.db", artifacts=tmp_path / "artifacts"
        )
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        pipeline = load_pipeline(path, Registry(manager), environ={"BITBUCKET_API_TOKEN": TOKEN})
        assert TOKEN in pipeline.secrets
        ctx = context(tmp_path)
        ctx.secrets = pipeline.secrets
        error = ""
        with caplog.at_level(logging.DEBUG):
            try:
                result = await Runner(pipeline, ctx).run()
                assert result.records["commit"] > 0 and result.stats["http.rate_limited"] > 0
            except RunFailed as exc:
                error = str(exc)
                assert not accepted and "401" in error
        outputs = [error, caplog.text]
        outputs += [
            p.read_bytes().decode("latin-1")
            for p in tmp_path.rglob("*")
            if p.is_file() and p.name != "scan.yaml"
        ]
        for text in outputs:
            assert TOKEN not in text
            assert basic not in text


async def test_merge_hash_expanded_through_the_commit_endpoint_when_unknown() -> None:
    from rcingest.bitbucket.client import BitbucketClient, ClientConfig
    from rcingest.default_plugins.bitbucket_rest.scan import _expand_merge_commits
    from rcingest.interfaces import Stats

    async with FakeBitbucket(SPEC) as fake:
        repo = fake.data.repos["acme/service-00"]
        head = repo.heads["main"]

        def pr(merge: str) -> PullRequest:
            return PullRequest(
                id=1, repository=repo.full_name, title="t", state="MERGED", source_branch="a",
                destination_branch="main", created_on=END, updated_on=END, merge_commit=merge,
            )  # fmt: skip

        found, gone = pr(head[:12]), pr("0123456789ab")
        async with BitbucketClient(ClientConfig(base_url=fake.base_url), Stats()) as client:
            await _expand_merge_commits(client, repo.full_name, [found, gone], set())
        assert found.merge_commit == head
        assert gone.merge_commit == "0123456789ab"  # unknown to Bitbucket: kept as sent
        assert fake.counters.routes["commit"] == 2


async def test_a_repository_named_twice_is_scanned_and_emitted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeBitbucket(SPEC) as fake:
        names = ["service-00", "acme/service-00", "service-00", "ACME/Service-00"]
        with caplog.at_level(logging.WARNING):
            out, ctx = await scan(fake, tmp_path, repositories=names, role="owner")
        commits = [r.hash for r in out if isinstance(r, Commit)]
        assert commits and len(commits) == len(set(commits))
        assert [r.full_name for r in out if isinstance(r, Repository)] == ["acme/service-00"]
        assert [r.stream for r in out if isinstance(r, Checkpoint)] == ["acme/service-00@main"]
        assert ctx.source_info["repositories"] == ["acme/service-00"]
        assert fake.counters.repo_routes["commits acme/service-00"] == 1
        # Listing filters do not apply to an explicit list: said, not silently ignored.
        assert "role only filter the workspace listing" in caplog.text


async def test_incremental_reads_pull_requests_from_the_earliest_branch_start(
    tmp_path: Path,
) -> None:
    async with FakeBitbucket(SPEC) as fake:
        branches = branches_of(fake)
        started = END + timedelta(hours=10)
        last = {"start": (END - timedelta(days=2)).isoformat(), "run_id": "x", "head": None}
        last["end"] = (END - timedelta(days=1)).isoformat()
        cursors = {f"{r}@{b}": dict(last) for r in fake.data.repos for b in branches}
        out, ctx = await scan(
            fake, tmp_path, cursors, started, hours=4, incremental=True, default_branches=branches
        )
        # Each branch was read from its cursor's end minus the overlap, not from
        # 4 hours back: that is the window reported and the pull requests' window.
        effective = Window(END - timedelta(days=1, minutes=10), started)
        assert ctx.window == effective
        prs = {(p.repository, p.id) for p in out if isinstance(p, PullRequest)}
        assert prs and prs == set(fake.data.expected_pull_requests(effective))
        assert any(c.pull_requests for c in out if isinstance(c, Commit))
        cp = next(c for c in out if isinstance(c, Checkpoint))
        assert cp.state is not None and cp.state["start"] == last["start"]  # union kept


async def test_resume_after_extending_the_window_keeps_the_covered_start(tmp_path: Path) -> None:
    # Run 1 covers 00:00-03:00, run 2 extends to 05:00 (reading only the new
    # part); run 3 repeats run 2's window: everything is covered, nothing read.
    first_w = {"since": datetime(2026, 11, 23, 0, 0), "until": datetime(2026, 11, 23, 3, 0)}
    window = {"since": datetime(2026, 11, 23, 0, 0), "until": datetime(2026, 11, 23, 5, 0)}
    async with FakeBitbucket(SPEC) as fake:
        out1, _ = await scan(fake, tmp_path, resume=True, hours=None, **first_w)
        cursors = {c.stream: c.state for c in out1 if isinstance(c, Checkpoint)}
        out2, _ = await scan(fake, tmp_path, cursors, resume=True, hours=None, **window)
        cursors.update({c.stream: c.state for c in out2 if isinstance(c, Checkpoint)})
        start = datetime(2026, 11, 23, 0, 0, tzinfo=PHX)
        assert all(datetime.fromisoformat(str(c["start"])) == start for c in cursors.values())
        before = fake.counters.routes["commits"]
        out3, ctx = await scan(fake, tmp_path, cursors, resume=True, hours=None, **window)
        assert fake.counters.routes["commits"] == before
        assert ctx.stats.get("bitbucket.branches_resumed") == 3
        assert not [r for r in out3 if isinstance(r, Commit | Checkpoint)]


def _listed(h: str, when: datetime, parents: list[str]) -> dict[str, Any]:
    return {
        "hash": h.ljust(40, "0"),
        "date": when.isoformat(),
        "author": {"raw": "A <a@example.com>"},
        "message": h,
        "parents": [{"hash": p.ljust(40, "0")} for p in parents],
    }


async def test_a_merge_of_a_long_old_branch_does_not_hide_its_first_parent(
    tmp_path: Path,
) -> None:
    # main: ... P0 -> P1 (2 h ago) -> M (1 h ago), M's second parent the tip of a
    # 250-commit branch from 5 days back. Topological listing: M, F250..F1, P1, P0, ...
    from aiohttp import web

    now = END
    listing = [_listed("m", now - timedelta(hours=1), ["p1", "f250"])]
    for i in range(250, 0, -1):
        parents = [f"f{i - 1}"] if i > 1 else []
        listing.append(_listed(f"f{i}", now - timedelta(days=5, minutes=i), parents))
    listing.append(_listed("p1", now - timedelta(hours=2), ["p0"]))
    for i in range(300):
        listing.append(_listed(f"p0{i:03d}", now - timedelta(days=6, minutes=i), []))
    listing[252]["hash"] = "p0".ljust(40, "0")
    asked: list[int] = []

    async def commits(request: web.Request) -> web.Response:
        page, size = int(request.query.get("page", 1)), int(request.query["pagelen"])
        asked.append(page)
        body: dict[str, Any] = {"values": listing[(page - 1) * size : page * size]}
        if page * size < len(listing):
            body["next"] = str(request.url.update_query(page=page + 1))
        return web.json_response(body)

    async def repository(_: web.Request) -> web.Response:
        return web.json_response({"full_name": "ws/r", "mainbranch": {"name": "main"}})

    app = web.Application()
    app.router.add_get("/2.0/repositories/ws/r", repository)
    app.router.add_get("/2.0/repositories/ws/r/commits", commits)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        ctx = context(tmp_path, now)
        cfg = BitbucketRestConfig(
            workspace="ws", repositories=["r"], base_url=f"http://127.0.0.1:{port}/2.0",
            hours=4, diffstat=False, pull_requests=False,
        )  # fmt: skip
        async with BitbucketRestSource(cfg, ctx) as source:
            out = [r async for r in source.records({})]
    finally:
        await runner.cleanup()
    got = sorted(r.hash.rstrip("0") for r in out if isinstance(r, Commit))
    assert got == ["m", "p1"]
    assert max(asked) < 6  # 552 commits on 6 pages of 100: stopped before the root


EXAMPLE = Path(__file__).parent.parent / "config" / "pipeline.example.yaml"


def test_the_example_pipeline_and_its_commands_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example file, pointed at the fake, run with each command its comments show."""
    import asyncio
    import re
    import shlex
    import sqlite3
    import threading

    from click.testing import CliRunner

    from rcingest.cli import build_cli

    text = EXAMPLE.read_text(encoding="utf-8")
    commands = re.findall(r"^#\s+rcingest run config/pipeline\.example\.yaml(.*)$", text, re.M)
    assert len(commands) >= 3
    assert any("--since" in c and "--until" in c for c in commands)
    # Data around now and around the example's --since/--until day, in api and web.
    spec = GenSpec(
        repositories=2, slugs=("api", "web"), branches=2, commits=160, step=timedelta(hours=6)
    )
    basic = "Basic " + base64.b64encode(f"me@example.com:{TOKEN}".encode()).decode()
    loop = asyncio.new_event_loop()
    fake = FakeBitbucket(spec, expected_auth=basic)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.__aenter__())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        copy = tmp_path / "pipeline.example.yaml"
        original = "base_url: https://api.bitbucket.org/2.0"
        assert original in text
        copy.write_text(text.replace(original, f"base_url: {fake.base_url}"), encoding="utf-8")
        monkeypatch.chdir(tmp_path)  # the example's relative data/ and artifacts/ land here
        env = {"BITBUCKET_EMAIL": "me@example.com", "BITBUCKET_API_TOKEN": TOKEN}
        for command in commands:
            args = ["run", str(copy), *shlex.split(command.split("#")[0])]
            result = CliRunner().invoke(build_cli(), args, env=env)
            assert result.exit_code == 0, (command, result.output)
        with sqlite3.connect(tmp_path / "data" / "bitbucket" / "commits.db") as conn:
            dates = [r[0] for r in conn.execute("SELECT committed_at FROM commits")]
            repos = {r[0] for r in conn.execute("SELECT full_name FROM repositories")}
        assert repos == {"acme/api", "acme/web"}
        assert any(d.startswith("2026-11-01") for d in dates)  # the --since/--until run
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
