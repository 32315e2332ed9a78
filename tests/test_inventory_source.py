"""The repository inventory: filters, full and incremental sync, tombstones, renames (issue 14)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rcingest.default_plugins.bitbucket_repositories import (
    CloneSettings,
    RepositoriesConfig,
    RepositoriesSource,
)
from rcingest.inventory.filters import RepositoryFilters, filtered_reason
from rcingest.inventory.sync import InventoryState, needs_scan, sync
from rcingest.records import Checkpoint, Repository
from rcingest.testing import FakeBitbucket, GenSpec, make_test_context

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def repo(name: str, uuid: str | None = None, **kw: Any) -> Repository:
    return Repository(full_name=f"acme/{name}", uuid=uuid or "{" + name + "}", **kw)


def test_a_full_sync_tombstones_what_is_gone_and_follows_renames() -> None:
    first, state = sync(InventoryState(), [repo("a"), repo("b"), repo("c")], full=True, now=NOW)
    assert [r.full_name for r in first] == ["acme/a", "acme/b", "acme/c"]
    # b is gone, c was renamed to c2 (same UUID).
    second, state = sync(state, [repo("a"), repo("c2", uuid="{c}")], full=True, now=NOW)
    shown = [(r.full_name, r.state, r.renamed_to) for r in second]
    assert shown == [
        ("acme/a", "active", None),
        ("acme/c", "deleted", "acme/c2"),
        ("acme/c2", "active", None),
        ("acme/b", "deleted", None),
    ]
    # A tombstone is emitted once.
    third, state = sync(state, [repo("a"), repo("c2", uuid="{c}")], full=True, now=NOW)
    assert [r.state for r in third] == ["active", "active"]
    # An incremental sync sees only changes and tombstones nothing.
    fourth, _ = sync(state, [], full=False, now=NOW)
    assert fourth == []


def test_needs_scan_only_when_the_repository_changed() -> None:
    updated = NOW - timedelta(hours=1)
    a = repo("a", mainbranch="main", updated_on=updated)
    _, state = sync(InventoryState(), [a], full=True, now=NOW)
    assert needs_scan(state, a)  # never scanned
    state.known["{a}"].head = "f" * 40
    assert not needs_scan(state, a)
    assert needs_scan(state, repo("a", mainbranch="main", updated_on=NOW))
    assert not needs_scan(state, repo("a", state="filtered", mainbranch="main"))


def test_filters_record_why() -> None:
    f = RepositoryFilters(
        visibility="private", languages=["Python"], names=["service-*"], active_within_days=30
    )
    recent = NOW - timedelta(days=1)
    ok = repo("service-1", is_private=True, language="python", updated_on=recent)
    assert filtered_reason(ok, f, NOW) is None
    assert filtered_reason(repo("service-1", is_private=False), f, NOW) == "visibility: public"
    assert (
        filtered_reason(repo("service-1", is_private=True, language="go"), f, NOW) == "language: go"
    )
    assert (
        filtered_reason(repo("web", is_private=True, language="python"), f, NOW)
        == "names: no pattern matches"
    )
    old = repo("service-1", is_private=True, language="python", updated_on=NOW - timedelta(60))
    assert "active_within_days" in (filtered_reason(old, f, NOW) or "")


async def collect(fake: FakeBitbucket, tmp_path: Path, cursors: dict[str, Any], **kw: Any) -> Any:
    config = RepositoriesConfig(
        workspace="acme", base_url=fake.base_url, backoff_base=0.001, max_tries=2, **kw
    )
    source = RepositoriesSource(config, make_test_context(tmp_path))
    async with source:
        items = [item async for item in source.records(cursors)]
    [checkpoint] = [i for i in items if isinstance(i, Checkpoint)]
    cursors[checkpoint.stream] = checkpoint.state
    return [i for i in items if isinstance(i, Repository)]


async def test_the_source_against_the_fake(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=4)) as fake:
        cursors: dict[str, Any] = {}
        first = await collect(
            fake, tmp_path, cursors, filters=RepositoryFilters(exclude_names=["service-03"])
        )
        states = {r.full_name: r.state for r in first}
        assert states == {
            "acme/service-00": "active",
            "acme/service-01": "active",
            "acme/service-02": "active",
            "acme/service-03": "filtered",
        }
        a = next(r for r in first if r.full_name == "acme/service-00")
        assert a.web_url == "https://bitbucket.org/acme/service-00" and a.project == "SERVICE"
        assert a.size and a.created_on and a.last_push == a.updated_on
        # Remove one repository, rename another: the next full sync says so.
        repos = fake.data.repos
        del repos["acme/service-01"]
        moved = repos.pop("acme/service-02")
        moved.slug = "service-02-renamed"
        repos[moved.full_name] = moved
        second = await collect(fake, tmp_path, cursors)
        tomb = {r.full_name: (r.state, r.renamed_to) for r in second if r.state == "deleted"}
        assert tomb == {
            "acme/service-01": ("deleted", None),
            "acme/service-02": ("deleted", "acme/service-02-renamed"),
        }
        # Incremental: only repositories updated since the last sync are listed.
        third = await collect(fake, tmp_path, cursors, sync="incremental")
        assert third == []


async def test_changed_main_branches_are_cloned_and_scanned_once(tmp_path: Path) -> None:
    from rcingest.bitbucket.auth import AuthConfig
    from rcingest.default_plugins.scanners import SecretsConfig, SecretsScanner
    from rcingest.records import RepositoryScan
    from rcingest.reposcan.auth import git_auth_header
    from rcingest.testing.git_http import GitHttpServer

    token = "inv-token-Qw82LmZx0c"
    aws = "AKIAZ7VRSQ5TJPHKXW4Q"
    auth = AuthConfig(access_token=token)
    async with (
        FakeBitbucket(GenSpec(repositories=2)) as fake,
        GitHttpServer(tmp_path / "git", auth=git_auth_header(auth)) as git,
    ):
        git.make_repo("acme/service-00", {"app.py": "print('hi')\n", "aws.ini": f"key={aws}\n"})
        git.make_repo("acme/service-01", {"README.md": "clean\n"})
        ctx = make_test_context(tmp_path, secrets=frozenset({token}))
        ctx.fingerprint_key = b"k" * 32
        scanner = SecretsScanner(SecretsConfig(), ctx)
        scanner.name = "secrets"
        ctx.scanners = [scanner]
        config = RepositoriesConfig(
            workspace="acme",
            base_url=fake.base_url,
            auth=auth,
            scan=True,
            clone=CloneSettings(url=f"http://{git.authority}/{{full_name}}.git", timeout=20),
        )
        cursors: dict[str, Any] = {}

        async def once() -> list[Any]:
            source = RepositoriesSource(config, ctx)
            async with source:
                items = [i async for i in source.records(cursors)]
            [cp] = [i for i in items if isinstance(i, Checkpoint)]
            cursors[cp.stream] = cp.state
            return [i for i in items if isinstance(i, RepositoryScan)]

        scans = {s.repository: s for s in await once()}
        assert scans["acme/service-00"].state == "findings"
        [found] = scans["acme/service-00"].findings
        assert (found.path, found.line_start, found.rule_id) == ("aws.ini", 1, "np.aws.1")
        assert scans["acme/service-01"].state == "clean"
        # Nothing changed: no clone, no ls-remote, no scan.
        before = len(git.requests)
        assert await once() == []
        assert len(git.requests) == before
        # The secret is removed and the repository pushed to: scanned again, clean.
        git.commit("acme/service-00", remove=["aws.ini"])
        fake.data.repos["acme/service-00"].updated_on += timedelta(minutes=5)
        [again] = await once()
        assert (again.repository, again.state, again.findings) == ("acme/service-00", "clean", [])
        assert aws not in repr(cursors) and token not in repr(cursors)


async def test_a_repository_gone_between_listing_and_cloning_is_tombstoned(
    tmp_path: Path,
) -> None:
    from rcingest.bitbucket.auth import AuthConfig
    from rcingest.default_plugins.scanners import SecretsConfig, SecretsScanner
    from rcingest.records import RepositoryScan
    from rcingest.reposcan.auth import git_auth_header
    from rcingest.testing.git_http import GitHttpServer

    auth = AuthConfig(access_token="inv-token-Zp40")
    async with (
        FakeBitbucket(GenSpec(repositories=2)) as fake,
        GitHttpServer(tmp_path / "git", auth=git_auth_header(auth)) as git,
    ):
        git.make_repo("acme/service-00", {"README.md": "still here\n"})
        # acme/service-01 is listed by the API but its git repository is gone.
        ctx = make_test_context(tmp_path)
        ctx.fingerprint_key = b"k" * 32
        scanner = SecretsScanner(SecretsConfig(), ctx)
        scanner.name = "secrets"
        ctx.scanners = [scanner]
        config = RepositoriesConfig(
            workspace="acme",
            base_url=fake.base_url,
            auth=auth,
            scan=True,
            clone=CloneSettings(url=f"http://{git.authority}/{{full_name}}.git", timeout=20),
        )
        source = RepositoriesSource(config, ctx)
        async with source:
            items = [i async for i in source.records({})]
    scans = {i.repository: i.state for i in items if isinstance(i, RepositoryScan)}
    assert scans == {"acme/service-00": "clean"}
    tombs = [i for i in items if isinstance(i, Repository) and i.state == "deleted"]
    assert [(t.full_name, t.state_reason) for t in tombs] == [
        ("acme/service-01", "gone while scanning (not found)")
    ]
    [cp] = [i for i in items if isinstance(i, Checkpoint)]
    assert cp.state is not None
    known = {v["full_name"]: v.get("state", "active") for v in cp.state["known"].values()}
    assert known["acme/service-01"] == "deleted"
