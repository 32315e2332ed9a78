"""``rcingest assets``: the inventory read back from a real database (issue 14).

SQLite files and a real PostgreSQL, filled by the ``database`` sink itself;
reading never creates a file, and a password is never printed.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.interfaces import Batch
from rcingest.plugins import make_plugin_manager
from rcingest.records import Repository
from tests.test_database_inventory import HEAD1, A, B, repository, scan
from tests.test_database_sink import _execute, write_run


def run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, obj=make_plugin_manager())
    return result.exit_code, result.stdout, result.stderr


async def fill(spec: str, tmp_path: Path) -> None:
    """An inventory: one active repository with two findings, a public one, a tombstone."""
    records = [
        repository(),
        repository("acme/web", uuid="{web}", is_private=False, language="go", last_push=None),
        Repository(full_name="acme/old", uuid="{old}", state="deleted", renamed_to="acme/new"),
        Repository(full_name="acme/bin", state="filtered", state_reason="language not in [go]"),
        scan(HEAD1, [A, B]),
    ]
    await write_run(spec, tmp_path, [Batch(records)])


async def test_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = str(tmp_path / "inv.db")
    await fill(spec, tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["assets", "--database", spec])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["REPOSITORY", "STATE", "VISIBILITY"]
    by_name = {line.split()[0]: line.split() for line in lines[1:]}
    assert by_name["acme/api"][:5] == ["acme/api", "active", "private", "python", "CORE"]
    assert by_name["acme/api"][-2:] == ["2", "findings"]  # open findings, last scan
    assert by_name["acme/web"][:4] == ["acme/web", "active", "public", "go"]
    assert by_name["acme/old"][1] == "deleted" and out.count("renamed to acme/new") == 1
    assert by_name["acme/bin"][1] == "filtered" and "language not in [go]" in out
    assert "5 repositories (3 active, 1 deleted, 1 filtered), 2 open findings" in err


async def test_the_database_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = str(tmp_path / "inv.db")
    await fill(spec, tmp_path)
    monkeypatch.chdir(tmp_path)  # no data/bitbucket/commits.db here
    result = CliRunner().invoke(
        cli, ["assets"], obj=make_plugin_manager(), env={"RCINGEST_DATABASE_URL": spec}
    )
    assert result.exit_code == 0, result.stderr
    assert "acme/api" in result.stdout


async def test_json_and_the_state_filter(database_spec: str, tmp_path: Path) -> None:
    await fill(database_spec, tmp_path)
    code, out, err = run(["assets", "--database", database_spec, "--format", "json"])
    assert code == 0, err
    found: list[dict[str, Any]] = json.loads(out)
    assert [a["full_name"] for a in found] == [
        "acme/api",
        "acme/bin",
        "acme/new",
        "acme/old",
        "acme/web",
    ]
    api = found[0]
    assert (api["state"], api["visibility"], api["language"], api["open_findings"]) == (
        "active",
        "private",
        "python",
        2,
    )
    assert api["last_push"] == "2026-11-20T11:00:00Z"
    assert api["last_synced_at"].endswith("Z")
    assert api["last_scan"]["head"] == HEAD1 and api["last_scan"]["state"] == "findings"
    code, out, _ = run(["assets", "--database", database_spec, "--format=json", "--state=deleted"])
    assert code == 0
    [old] = json.loads(out)
    assert (old["full_name"], old["renamed_to"], old["state_reason"]) == (
        "acme/old",
        "acme/new",
        "renamed",
    )
    code, out, _ = run(["assets", "--database", database_spec, "--state", "filtered"])
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["acme/bin"]


def test_a_missing_database_is_exit_2_and_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["assets"])  # the default: data/bitbucket/commits.db
    assert code == 2 and out == ""
    assert "data/bitbucket/commits.db" in err and "no such file" in err
    code, _, err = run(["assets", "--database", str(tmp_path / "nope" / "x.db")])
    assert code == 2 and "nothing was created" in err
    assert list(tmp_path.iterdir()) == []


async def test_a_database_without_inventory_is_exit_2(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    code, _, err = run(["assets", "--database", str(other)])
    assert code == 2 and "not an rcingest database" in err
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all, " * 100)
    code, _, err = run(["assets", "--database", str(garbage)])
    assert code == 2 and "error:" in err
    # A version-5 database: read, not upgraded.
    v5 = str(tmp_path / "v5.db")
    await write_run(v5, tmp_path, [])
    _execute(v5, ["UPDATE schema_version SET version = 5"])
    code, _, err = run(["assets", "--database", v5])
    assert code == 2 and "schema version 5 has no inventory" in err
    with closing(sqlite3.connect(v5)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(5,)]


async def test_the_database_of_a_pipeline_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = str(tmp_path / "store" / "inv.db")
    await fill(spec, tmp_path)
    monkeypatch.delenv("BITBUCKET_API_TOKEN", raising=False)
    pipeline = tmp_path / "assets.yaml"
    pipeline.write_text(
        "source:\n  type: bitbucket_rest\n  config:\n    workspace: acme\n    hours: 4\n"
        "    auth:\n      email: me@example.com\n      api_token: ${BITBUCKET_API_TOKEN}\n"
        "sinks:\n  - type: database\n    config:\n      database: ${INVENTORY_DB}\n",
        encoding="utf-8",
    )
    # Credentials missing do not matter for reading; the database's variable does.
    monkeypatch.delenv("INVENTORY_DB", raising=False)
    code, _, err = run(["assets", "--config", str(pipeline)])
    assert code == 2 and "$.sinks[0].config.database" in err and "INVENTORY_DB" in err
    monkeypatch.setenv("INVENTORY_DB", spec)
    code, out, err = run(["assets", "--config", str(pipeline), "--format", "json"])
    assert code == 0, err
    assert len(json.loads(out)) == 5
    # --database wins over the file's setting.
    code, _, err = run(["assets", "--config", str(pipeline), "--database", spec + ".x"])
    assert code == 2 and "no such file" in err
    no_db = tmp_path / "no-db.yaml"
    no_db.write_text(
        "source:\n  type: bitbucket_rest\n  config:\n    workspace: acme\n    hours: 4\n"
        "sinks:\n  - type: json_artifact\n",
        encoding="utf-8",
    )
    code, _, err = run(["assets", "--config", str(no_db)])
    assert code == 2 and "no database sink" in err


@pytest.mark.postgres
async def test_postgres_passwords_are_never_printed(postgres_url: str, tmp_path: Path) -> None:
    await fill(postgres_url, tmp_path)
    parts = urlsplit(postgres_url)
    assert parts.password
    code, out, err = run(["assets", "--database", postgres_url])
    assert code == 0, err
    assert "acme/api" in out and parts.password not in out + err
    wrong = "wrong-pass-s3cret"
    netloc = f"{parts.username}:{wrong}@{parts.hostname}:{parts.port}"
    code, out, err = run(["assets", "--database", urlunsplit(parts._replace(netloc=netloc))])
    assert code == 2 and "***" in err
    assert wrong not in out + err and parts.password not in out + err
    missing = urlunsplit(parts._replace(path="/no_such_database_here"))
    code, out, err = run(["assets", "--database", missing])
    assert code == 2 and "no_such_database_here" in err and parts.password not in out + err
