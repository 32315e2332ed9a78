"""The repository inventory and repositories' scans in the database (issue 14).

Real SQLite files and a real PostgreSQL (``database_spec`` runs each test on
both): the inventory's upserts (partial records, tombstones, renames that
follow the UUID), repository-scope findings (open, fixed, allowed; failed
scans fix nothing), the upgrade of a version-5 database and the ready queries.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.database.connect import open_database
from rcingest.default_plugins.database.inventory_read import read_inventory
from rcingest.default_plugins.database.schema import CURRENT_VERSION
from rcingest.interfaces import Batch
from rcingest.records import Commit, PullRequestScan, Repository, RepositoryScan
from rcingest.scanning.model import Finding, fingerprint, redact_secret
from tests.test_database_sink import T0, _doc_queries, _execute, dump, make_context, write_run

SECRET_A = "AKIAZXCVBNMASDFGHJKL"
SECRET_B = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0" * 2
SECRET_C = "xoxb-" + "1234567890-abcdefghij"
HEAD1, HEAD2, HEAD3, HEAD4 = "1" * 40, "2" * 40, "3" * 40, "4" * 40
KEY = b"inventory-test-key-0123456789"
UUID = "{5e1f-api}"


def repository(name: str = "acme/api", **kw: Any) -> Repository:
    fields: dict[str, Any] = {
        "full_name": name,
        "uuid": UUID,
        "name": name.split("/")[1],
        "is_private": True,
        "mainbranch": "main",
        "language": "python",
        "updated_on": T0,
        "web_url": f"https://bitbucket.org/{name}",
        "project": "CORE",
        "size": 5_000_000_000,  # over 2**31: a bigint
        "created_on": T0 - timedelta(days=400),
        "fork_of": None,
        "last_push": T0 - timedelta(hours=1),
    }
    return Repository(**{**fields, **kw})


def finding(secret: str, path: str, line: int) -> Finding:
    return Finding(
        path=path,
        line_start=line,
        line_end=line,
        rule_id="np.test.1",
        rule_name="Test secret",
        severity="high",
        fingerprint=fingerprint(KEY, "np.test.1", secret),
        excerpt=f"x = '{redact_secret(secret)}'",
    )


A = finding(SECRET_A, "app.py", 3)
B = finding(SECRET_B, "ci.yml", 9)
C = finding(SECRET_C, "bot.py", 1)


def scan(head: str, findings: list[Finding], state: str = "", **kw: Any) -> RepositoryScan:
    fields: dict[str, Any] = {
        "repository": "acme/api",
        "branch": "main",
        "head": head,
        "state": state or ("findings" if findings else "clean"),
        "scanned_at": T0,
        "findings": findings,
        "scanners": ["secrets"],
        "files_scanned": 12,
        "bytes_scanned": 3_000_000_000,
    }
    return RepositoryScan(**{**fields, **kw})


def repo_rows(spec: str) -> dict[str, dict[str, Any]]:
    return {r["full_name"]: r for r in dump(spec, ["repositories"])["repositories"]}


def states(spec: str, repo: str = "acme/api") -> dict[str, tuple[str, str, str | None]]:
    """Each finding of ``repo`` by path: (state, last_head, fixed_head)."""
    rows = dump(spec, ["repo_findings"])["repo_findings"]
    return {
        r["path"]: (r["state"], r["last_head"], r["fixed_head"])
        for r in rows
        if r["repository"] == repo
    }


_RUNS = itertools.count(1)


async def run(spec: str, tmp_path: Path, *records: Any) -> None:
    """One run writing ``records`` as one batch (a run id each, as separate runs have)."""
    await write_run(spec, tmp_path, [Batch(list(records))], run_id=f"run-{next(_RUNS)}")


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# -- the inventory ---------------------------------------------------------------------------


async def test_repository_round_trip(database_spec: str, tmp_path: Path) -> None:
    await run(database_spec, tmp_path, repository(), scan(HEAD1, [A]))
    row = repo_rows(database_spec)["acme/api"]
    assert {k: v for k, v in row.items() if not k.endswith(("seen_at", "synced_at"))} == {
        "full_name": "acme/api",
        "workspace": "acme",
        "uuid": UUID,
        "name": "api",
        "is_private": True,
        "mainbranch": "main",
        "language": "python",
        "updated_on": datetime(2026, 11, 20, 12, 0),  # UTC, stored without offset
        "web_url": "https://bitbucket.org/acme/api",
        "project": "CORE",
        "size": 5_000_000_000,
        "created_on": datetime(2025, 10, 16, 12, 0),
        "fork_of": None,
        "last_push": datetime(2026, 11, 20, 11, 0),
        "state": "active",
        "state_reason": None,
        "renamed_to": None,
    }
    assert row["last_synced_at"] == row["last_seen_at"] is not None
    [s] = dump(database_spec, ["repo_scans"])["repo_scans"]
    assert (s["branch"], s["head"], s["state"], s["findings"], s["bytes_scanned"]) == (
        "main",
        HEAD1,
        "findings",
        1,
        3_000_000_000,
    )
    [asset] = read_inventory(database_spec)
    assert (asset.full_name, asset.visibility, asset.open_findings) == ("acme/api", "private", 1)
    assert asset.last_scan is not None and asset.last_scan.head == HEAD1


async def test_a_partial_record_blanks_nothing_but_its_state_applies(
    database_spec: str, tmp_path: Path
) -> None:
    await run(database_spec, tmp_path, repository())
    first = repo_rows(database_spec)["acme/api"]
    # A webhook's repository: the name and not much else, an older push time.
    partial = Repository(full_name="acme/api", last_push=T0 - timedelta(days=3))
    await run(database_spec, tmp_path, partial)
    row = repo_rows(database_spec)["acme/api"]
    for column in ("uuid", "language", "project", "size", "web_url", "is_private", "mainbranch"):
        assert row[column] == first[column], column
    assert row["last_push"] == first["last_push"]  # never moves back
    assert row["last_synced_at"] > first["last_synced_at"]
    assert row["first_seen_at"] == first["first_seen_at"]
    # The state (and its reason) always applies, even on a partial record...
    filtered = Repository(
        full_name="acme/api", state="filtered", state_reason="language not in [go]"
    )
    await run(database_spec, tmp_path, filtered)
    row = repo_rows(database_spec)["acme/api"]
    assert (row["state"], row["state_reason"], row["language"]) == (
        "filtered",
        "language not in [go]",
        "python",
    )
    # ...and back to active clears the reason; a later push moves last_push on.
    await run(database_spec, tmp_path, Repository(full_name="acme/api", last_push=T0))
    row = repo_rows(database_spec)["acme/api"]
    assert (row["state"], row["state_reason"]) == ("active", None)
    assert row["last_push"] == datetime(2026, 11, 20, 12, 0)


async def test_twice_in_one_batch_merges_like_two_batches(
    database_spec: str, tmp_path: Path
) -> None:
    later = Repository(full_name="acme/api", state="deleted", state_reason="gone")
    await run(database_spec, tmp_path, repository(), later)
    row = repo_rows(database_spec)["acme/api"]
    assert (row["state"], row["state_reason"], row["language"]) == ("deleted", "gone", "python")
    assert row["last_push"] == datetime(2026, 11, 20, 11, 0)


async def test_a_tombstone_keeps_its_row(database_spec: str, tmp_path: Path) -> None:
    commit = Commit(hash="c" * 40, repository="acme/web", date=T0, message="x")
    await run(database_spec, tmp_path, repository(), commit)
    assert repo_rows(database_spec)["acme/web"]["state"] == "active"  # implied: the default
    assert repo_rows(database_spec)["acme/web"]["last_synced_at"] is None
    gone = Repository(full_name="acme/api", uuid=UUID, state="deleted", state_reason="not listed")
    await run(database_spec, tmp_path, gone)
    row = repo_rows(database_spec)["acme/api"]
    assert (row["state"], row["state_reason"], row["renamed_to"]) == ("deleted", "not listed", None)
    assert row["language"] == "python" and row["web_url"] == "https://bitbucket.org/acme/api"


async def test_a_rename_follows_the_uuid(database_spec: str, tmp_path: Path) -> None:
    await run(database_spec, tmp_path, repository(), scan(HEAD1, [A, B]))
    old = repo_rows(database_spec)["acme/api"]
    # The next sync lists the same UUID under a new name, with less said.
    renamed = Repository(
        full_name="acme/api-v2",
        uuid=UUID,
        web_url="https://bitbucket.org/acme/api-v2",
        updated_on=at(30),
    )
    await run(database_spec, tmp_path, renamed)
    rows = repo_rows(database_spec)
    tomb, new = rows["acme/api"], rows["acme/api-v2"]
    assert (tomb["state"], tomb["renamed_to"], tomb["state_reason"]) == (
        "deleted",
        "acme/api-v2",
        "renamed",
    )
    assert new["state"] == "active" and new["renamed_to"] is None
    assert (new["language"], new["project"], new["size"]) == ("python", "CORE", 5_000_000_000)
    assert new["web_url"] == "https://bitbucket.org/acme/api-v2"  # the rename's, not carried
    assert new["first_seen_at"] == old["first_seen_at"]
    assert new["last_push"] == old["last_push"]
    # The scans and findings moved with it: the next scan of the new name closes B.
    assert states(database_spec, "acme/api") == {}
    assert set(states(database_spec, "acme/api-v2")) == {"app.py", "ci.yml"}
    await run(
        database_spec, tmp_path, scan(HEAD2, [A], repository="acme/api-v2", scanned_at=at(40))
    )
    assert states(database_spec, "acme/api-v2") == {
        "app.py": ("open", HEAD2, None),
        "ci.yml": ("fixed", HEAD1, HEAD2),
    }
    [a_row] = [
        r for r in dump(database_spec, ["repo_findings"])["repo_findings"] if r["path"] == "app.py"
    ]
    assert a_row["first_head"] == HEAD1  # its first sighting survived the rename
    scans = dump(database_spec, ["repo_scans"])["repo_scans"]
    assert sorted((s["repository"], s["head"]) for s in scans) == [
        ("acme/api-v2", HEAD1),
        ("acme/api-v2", HEAD2),
    ]
    # The source's own tombstone of the old name, later: the same end, nothing moves again.
    tombstone = Repository(
        full_name="acme/api", uuid=UUID, state="deleted", renamed_to="acme/api-v2"
    )
    await run(database_spec, tmp_path, tombstone)
    rows = repo_rows(database_spec)
    assert (rows["acme/api"]["state"], rows["acme/api"]["renamed_to"]) == (
        "deleted",
        "acme/api-v2",
    )
    assert rows["acme/api-v2"]["state"] == "active"
    assert len(dump(database_spec, ["repo_findings"])["repo_findings"]) == 2
    inventory = {a.full_name: a for a in read_inventory(database_spec)}
    assert inventory["acme/api-v2"].open_findings == 1
    assert inventory["acme/api"].open_findings == 0


async def test_a_tombstone_with_renamed_to_comes_first(database_spec: str, tmp_path: Path) -> None:
    await run(database_spec, tmp_path, repository(), scan(HEAD1, [A]))
    tombstone = Repository(full_name="acme/api", uuid=UUID, state="deleted", renamed_to="team/api")
    await run(database_spec, tmp_path, tombstone)
    rows = repo_rows(database_spec)
    new = rows["team/api"]
    assert (new["state"], new["workspace"], new["uuid"], new["language"]) == (
        "active",
        "team",
        UUID,
        "python",
    )
    assert new["last_synced_at"] is None  # no record of it came yet
    assert rows["acme/api"]["state_reason"] == "renamed"
    assert set(states(database_spec, "team/api")) == {"app.py"}
    await run(database_spec, tmp_path, repository("team/api", language=None, project="TEAM"))
    new = repo_rows(database_spec)["team/api"]
    assert (new["language"], new["project"]) == ("python", "TEAM")
    assert new["last_synced_at"] is not None


async def test_a_stale_record_renames_nothing(database_spec: str, tmp_path: Path) -> None:
    await run(database_spec, tmp_path, repository())
    await run(database_spec, tmp_path, repository("acme/api-v2", updated_on=at(30)))
    assert repo_rows(database_spec)["acme/api"]["state"] == "deleted"
    # A replay of the old name's listing (older updated_on) moves nothing back,
    # and does not revive the tombstone.
    await run(database_spec, tmp_path, repository(updated_on=T0))
    rows = repo_rows(database_spec)
    assert (rows["acme/api-v2"]["state"], rows["acme/api-v2"]["renamed_to"]) == ("active", None)
    assert (rows["acme/api"]["state"], rows["acme/api"]["renamed_to"]) == (
        "deleted",
        "acme/api-v2",
    )


# -- repository-scope findings --------------------------------------------------------------


async def test_findings_open_fixed_and_allowed(database_spec: str, tmp_path: Path) -> None:
    await run(database_spec, tmp_path, scan(HEAD1, [A, B]))
    assert states(database_spec) == {
        "app.py": ("open", HEAD1, None),
        "ci.yml": ("open", HEAD1, None),
    }
    await run(database_spec, tmp_path, scan(HEAD2, [A], scanned_at=at(10)))
    assert states(database_spec) == {
        "app.py": ("open", HEAD2, None),
        "ci.yml": ("fixed", HEAD1, HEAD2),
    }
    # B is back: open again, not fixed.
    await run(database_spec, tmp_path, scan(HEAD3, [A, B], scanned_at=at(20)))
    found = dump(database_spec, ["repo_findings"])["repo_findings"]
    [b_row] = [r for r in found if r["path"] == "ci.yml"]
    assert (b_row["state"], b_row["fixed_at"], b_row["first_head"]) == ("open", None, HEAD1)
    # The same head again with new rules that no longer report B: fixed at that head.
    await run(database_spec, tmp_path, scan(HEAD3, [A], scanned_at=at(30)))
    assert states(database_spec)["ci.yml"] == ("fixed", HEAD3, HEAD3)
    # The allowlist now allows A: kept apart, neither open nor fixed.
    await run(database_spec, tmp_path, scan(HEAD4, [], allowed=[A.fingerprint], scanned_at=at(40)))
    assert states(database_spec)["app.py"][0] == "allowed"
    [s] = [s for s in dump(database_spec, ["repo_scans"])["repo_scans"] if s["head"] == HEAD4]
    assert (s["state"], s["findings"], s["allowed"]) == ("clean", 0, 1)


@pytest.mark.parametrize("state", ["failed", "too_large", "timeout", "not_found"])
async def test_a_scan_that_did_not_complete_fixes_nothing(
    database_spec: str, tmp_path: Path, state: str
) -> None:
    await run(database_spec, tmp_path, scan(HEAD1, [A, B]))
    before = dump(database_spec, ["repo_findings"])
    broken = scan(HEAD2, [], state, reason="clone killed at its bound", scanned_at=at(10))
    await run(database_spec, tmp_path, broken)
    assert dump(database_spec, ["repo_findings"]) == before
    assert {s["head"]: s["state"] for s in dump(database_spec, ["repo_scans"])["repo_scans"]} == {
        HEAD1: "findings",
        HEAD2: state,
    }
    assert read_inventory(database_spec)[0].last_scan.state == state  # type: ignore[union-attr]


async def test_an_old_scan_replayed_changes_no_finding(database_spec: str, tmp_path: Path) -> None:
    await run(database_spec, tmp_path, scan(HEAD1, [A, B]))
    await run(database_spec, tmp_path, scan(HEAD2, [A, C], scanned_at=at(10)))
    before = dump(database_spec, ["repo_findings"])
    await run(database_spec, tmp_path, scan(HEAD1, [A, B]))  # a records file replayed
    assert dump(database_spec, ["repo_findings"]) == before
    assert len(dump(database_spec, ["repo_scans"])["repo_scans"]) == 2


async def test_in_one_batch_the_latest_scan_of_a_branch_decides(
    database_spec: str, tmp_path: Path
) -> None:
    await run(
        database_spec,
        tmp_path,
        scan(HEAD2, [A], scanned_at=at(10)),
        scan(HEAD1, [A, B]),  # older, listed later: superseded
        scan(HEAD1, [C], branch="develop"),  # another branch: its own
    )
    assert states(database_spec) == {
        "app.py": ("open", HEAD2, None),
        "bot.py": ("open", HEAD1, None),
    }


async def test_repository_and_pull_request_findings_stay_apart(
    database_spec: str, tmp_path: Path
) -> None:
    pr = PullRequestScan(
        repository="acme/api",
        pull_request_id=7,
        head=HEAD1,
        state="findings",
        scanned_at=T0,
        findings=[B],
    )
    await run(database_spec, tmp_path, pr, scan(HEAD1, [A]))
    await run(database_spec, tmp_path, scan(HEAD2, [], scanned_at=at(10)))
    assert [f["state"] for f in dump(database_spec, ["findings"])["findings"]] == ["open"]
    assert states(database_spec) == {"app.py": ("fixed", HEAD1, HEAD2)}


async def test_no_secret_reaches_the_database_file(tmp_path: Path) -> None:
    spec = str(tmp_path / "db" / "commits.db")
    await write_run(spec, tmp_path, [Batch([repository(), scan(HEAD1, [A, B, C])])])
    raw = b"".join(p.read_bytes() for p in (tmp_path / "db").iterdir())
    for secret in (SECRET_A, SECRET_B, SECRET_C):
        assert secret.encode() not in raw and secret[:8].encode() not in raw


async def test_configured_secrets_are_scrubbed_from_scans(tmp_path: Path) -> None:
    spec = str(tmp_path / "db" / "commits.db")
    leaky = scan(HEAD1, [], "failed", reason="clone failed: https://x:tok-s3cret@bitbucket.org")
    ctx = make_context(tmp_path, secrets=frozenset({"tok-s3cret"}))
    async with DatabaseSink(DatabaseConfig(database=spec), ctx) as sink:
        await sink.write(Batch([leaky]))
        ctx.status = "succeeded"
    [row] = dump(spec, ["repo_scans"])["repo_scans"]
    assert "tok-s3cret" not in row["reason"] and "***" in row["reason"]


# -- upgrade and ready queries --------------------------------------------------------------

# A version-5 database, made from a fresh one: the repositories table as
# version 5 had it (the same statements on SQLite and PostgreSQL), a row in it.
TO_V5_SQL = [
    "DROP TABLE repo_findings",
    "DROP TABLE repo_scans",
    "DROP TABLE repositories",
    "CREATE TABLE repositories (full_name TEXT NOT NULL PRIMARY KEY, workspace TEXT,"
    " uuid TEXT, name TEXT, is_private BOOLEAN, mainbranch TEXT, language TEXT,"
    " updated_on TIMESTAMP, first_seen_at TIMESTAMP NOT NULL, last_seen_at TIMESTAMP NOT NULL)",
    "INSERT INTO repositories VALUES ('acme/api', 'acme', '" + UUID + "', 'api', TRUE, 'main',"
    " 'python', '2026-11-01 00:00:00', '2026-11-01 00:00:00', '2026-11-02 00:00:00')",
    "UPDATE schema_version SET version = 5",
]
V5_COLUMNS = {
    "full_name", "workspace", "uuid", "name", "is_private", "mainbranch", "language",
    "updated_on", "first_seen_at", "last_seen_at",
}  # fmt: skip


async def test_version_5_database_is_upgraded_in_place(
    database_spec: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await run(database_spec, tmp_path, Commit(hash="c" * 40, repository="acme/web", date=T0))
    _execute(database_spec, TO_V5_SQL)
    db, _ = open_database(database_spec)
    with db.connection_context():
        assert {c.name for c in db.get_columns("repositories")} == V5_COLUMNS
        assert "repo_scans" not in db.get_tables()
    db.close()
    caplog.set_level(logging.INFO, logger="rcingest")
    await run(database_spec, tmp_path, scan(HEAD1, [A]))
    assert f"schema upgraded from version 5 to {CURRENT_VERSION}" in caplog.text
    assert CURRENT_VERSION == 6
    row = repo_rows(database_spec)["acme/api"]
    assert (row["state"], row["language"], row["last_synced_at"], row["web_url"]) == (
        "active",
        "python",
        None,
        None,
    )
    assert row["first_seen_at"] == datetime(2026, 11, 1)
    assert states(database_spec) == {"app.py": ("open", HEAD1, None)}
    # The upgraded table takes the new records like a fresh one, rename included.
    await run(database_spec, tmp_path, repository("acme/api-v2", updated_on=at(1)))
    rows = repo_rows(database_spec)
    assert rows["acme/api"]["renamed_to"] == "acme/api-v2"
    assert rows["acme/api-v2"]["first_seen_at"] == datetime(2026, 11, 1)
    db, _ = open_database(database_spec)
    with db.connection_context():
        assert "repositories_uuid" in {i.name for i in db.get_indexes("repositories")}
        assert db.execute_sql("SELECT version FROM schema_version").fetchall() == [(6,)]
    db.close()


async def test_the_ready_queries_agree_with_the_inventory(
    database_spec: str, tmp_path: Path
) -> None:
    await run(
        database_spec,
        tmp_path,
        repository(),
        repository("acme/web", uuid="{web}", is_private=False, language=None),
        Repository(full_name="acme/gone", uuid="{gone}", state="deleted", state_reason="gone"),
        scan(HEAD1, [A, B]),
        Commit(hash="c" * 40, repository="acme/implied", date=T0),
    )
    queries = _doc_queries()
    db, _ = open_database(database_spec)
    with db.connection_context():
        found = {n: [tuple(r) for r in db.execute_sql(queries[n]).fetchall()] for n in queries}
    db.close()
    inventory = read_inventory(database_spec)
    assert [(r[0], r[1], r[2], r[3], r[7]) for r in found["inventory"]] == [
        (a.full_name, a.state, a.visibility, a.language, a.open_findings) for a in inventory
    ]
    assert [(r[0], r[1], r[2]) for r in found["inventory"]][:2] == [
        ("acme/api", "active", "private"),
        ("acme/gone", "deleted", None),
    ]
    assert [r[:5] for r in found["repositories-with-open-findings"]] == [
        ("acme/api", "active", "main", 2, 2)
    ]
    assert [r[:3] for r in found["tombstoned-repositories"]] == [("acme/gone", None, "gone")]
    assert [a.full_name for a in read_inventory(database_spec, "deleted")] == ["acme/gone"]
    assert [a.full_name for a in read_inventory(database_spec, "active")] == [
        "acme/api",
        "acme/implied",
        "acme/web",
    ]
