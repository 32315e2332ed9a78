"""Start-up (issue 11): the everyday commands import no network, database or metrics layer.

``--help``, ``--version`` and ``validate`` discover every installed plugin
(entry points), so each plugin module, its component classes and their
Config Structs must import cheaply; the heavy dependencies are imported by
the methods that run. Each command runs in a fresh interpreter that prints
``sys.modules`` afterwards: which modules were loaded is deterministic, how
long it took is not (``bench/bench_startup.py`` measures that).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import msgspec
import pytest
from click.testing import CliRunner

from rcingest.bitbucket.client import BitbucketClient
from rcingest.bitbucket.client import ClientConfig as ReExported
from rcingest.bitbucket.config import ClientConfig
from rcingest.default_plugins.bitbucket_rest import (
    DEMO_SUMMARY,
    BitbucketRestConfig,
    BitbucketRestSource,
)
from rcingest.default_plugins.database.connect import check_database, open_database
from rcingest.default_plugins.lazy_command import LazyCommand
from rcingest.errors import ConfigError
from rcingest.interfaces import RunContext, Stats
from rcingest.records import Commit

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("aiohttp", "peewee", "prometheus_client", "psycopg2", "yarl", "multidict", "jsonschema")
#: Runs ``rcingest <argv>`` in this interpreter, then prints the loaded modules as JSON.
WRAPPER = """
import json, sys
from rcingest.cli import main
sys.argv = ["rcingest", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\nMODULES " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def rcingest(*argv: str, cwd: Path = ROOT) -> tuple[int, str, set[str]]:
    """Exit code, output and loaded modules of ``rcingest argv`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONHASHSEED": "0"},
    )
    out, _, last = done.stdout.rpartition("\nMODULES ")
    assert last, (done.stdout, done.stderr)
    found = json.loads(last)
    return found["code"], out + done.stderr, set(found["modules"])


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize(
    "argv",
    [("--version",), ("--help",), ("validate", "config/pipeline.example.yaml")],
    ids=["version", "help", "validate"],
)
def test_everyday_commands_import_no_heavy_dependency(argv: tuple[str, ...]) -> None:
    code, out, modules = rcingest(*argv)
    assert code == 0, out
    assert heavy_in(modules) == [], heavy_in(modules)
    # Every built-in plugin was still discovered, and nothing of the demo was loaded.
    for plugin in ("bitbucket_rest", "bitbucket_webhook", "database", "json_artifact"):
        assert f"rcingest.default_plugins.{plugin}" in modules, plugin
    assert "rcingest.demo" not in modules and "rcingest.testing" not in modules
    if argv[0] == "validate":
        assert "ok: config/pipeline.example.yaml" in out
        assert "rcingest.preflight" in modules  # the components were built (preflight)
    if argv[0] == "--help":
        assert "demo" in out and "validate" in out


def test_validate_with_problems_still_reports_every_one(tmp_path: Path) -> None:
    """jsonschema comes in only to list the problems of a file that has some."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "source: {type: records_file, config: {path: x.jsonl, chekpoint_every: 0}}\n"
        "sinks: [{type: json_artifact, config: {artifacts_dir: out}}]\n"
        "batch: {size: 0}\n"
    )
    code, out, modules = rcingest("validate", str(path), cwd=tmp_path)
    assert code == 2, out
    for expected in (
        "$.source.config.chekpoint_every: unknown field; did you mean 'checkpoint_every'?",
        "$.batch.size: must be >= 1",
    ):
        assert expected in out, out
    assert "jsonschema" in modules
    assert "peewee" not in modules and "aiohttp" not in modules


def test_a_run_loads_what_its_pipeline_uses(tmp_path: Path) -> None:
    """A run still works: the database sink imports peewee when it is built, not before."""
    commit = Commit(
        hash="a" * 40,
        repository="acme/api",
        date=datetime(2026, 11, 20, 12, tzinfo=UTC),
        message="REL-7 start-up",
    )
    (tmp_path / "records.jsonl").write_bytes(msgspec.json.encode(commit) + b"\n")
    (tmp_path / "pipeline.yaml").write_text(
        "source: {type: records_file, config: {path: records.jsonl}}\n"
        "enrichers: [{type: story_keys}]\n"
        "sinks: [{type: database, config: {database: out/commits.db}}]\n"
    )
    code, out, modules = rcingest("run", "pipeline.yaml", cwd=tmp_path)
    assert code == 0, out
    assert "peewee" in modules
    assert "aiohttp" not in modules  # no component of this pipeline talks HTTP
    with sqlite3.connect(tmp_path / "out" / "commits.db") as db:
        assert db.execute("SELECT hash FROM commits").fetchall() == [("a" * 40,)]
        assert db.execute("SELECT key FROM story_keys").fetchall() == [("REL-7",)]


def test_the_demo_command_is_loaded_when_used() -> None:
    code, out, modules = rcingest("demo", "--help")
    assert code == 0, out
    assert "--repositories" in out and "rcingest.demo" in modules


def test_the_demo_summary_is_the_first_paragraph_of_its_help() -> None:
    from rcingest.demo import demo

    assert demo.help is not None
    assert demo.help.split("\n\n")[0] == DEMO_SUMMARY
    lazy = LazyCommand("demo", "rcingest.demo:demo", DEMO_SUMMARY)
    assert lazy.get_short_help_str(45) == demo.get_short_help_str(45)


def test_a_lazy_command_runs_the_real_one_with_its_options() -> None:
    group = click.Group("g")
    group.add_command(LazyCommand("hello", f"{__name__}:hello", "Say hello."))
    result = CliRunner().invoke(group, ["hello", "--name", "you"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello you\n"
    assert "Say hello." in CliRunner().invoke(group, ["--help"]).output
    assert "--name" in CliRunner().invoke(group, ["hello", "--help"]).output
    bad = LazyCommand("x", f"{__name__}:ROOT", "Not a command.")
    with pytest.raises(TypeError, match="is not a click command"):
        bad.load()


@click.command()
@click.option("--name", default="world")
def hello(name: str) -> None:
    click.echo(f"hello {name}")


def test_client_config_is_re_exported_from_the_client() -> None:
    assert ReExported is ClientConfig
    assert issubclass(BitbucketRestConfig, ClientConfig)


# -- the light preflights refuse what the constructors refuse --------------------------------


def context() -> RunContext:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    return RunContext(
        run_id="t",
        pipeline_name="t",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=now,
        base_dir=ROOT,
        source_id="t:src",
    )


def outcome(call: Any) -> str:
    try:
        call()
    except ConfigError as exc:
        return f"ConfigError: {exc}"
    except ValueError:
        return "ValueError"
    return "ok"


BASE_URLS = [
    "https://api.bitbucket.org/2.0",
    "http://127.0.0.1:8080/2.0/",
    "HTTPS://Host/2.0",
    "https://user:pw@h/2.0",
    "ftp://x/2.0",
    "http://",
    "http:///x",
    "api.bitbucket.org/2.0",
    "",
    "http://[::1]:80/x",
    "http://[::1/x",
    "http://h:99999/x",
    "http://h:abc/x",
]
AUTHS: list[dict[str, str]] = [
    {},
    {"email": "me@example.com", "api_token": "t0ken"},
    {"api_token": "t0ken"},
    {"email": "me@example.com"},
    {"access_token": "t0ken", "api_token": "t0ken"},
    {"username": "me", "app_password": "pw"},
]


@pytest.mark.parametrize("base_url", BASE_URLS)
def test_the_rest_source_preflight_agrees_with_its_constructor_on_base_url(base_url: str) -> None:
    config = BitbucketRestConfig(workspace="acme", hours=4, base_url=base_url)
    ctx = context()
    built = outcome(lambda: BitbucketClient(config, Stats()))
    checked = outcome(lambda: BitbucketRestSource.preflight(config, ctx))
    assert checked == built


@pytest.mark.parametrize("auth", AUTHS)
def test_the_rest_source_preflight_agrees_with_its_constructor_on_auth(
    auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    config = msgspec.convert({"workspace": "acme", "hours": 4, "auth": auth}, BitbucketRestConfig)
    ctx = context()
    built = outcome(lambda: BitbucketRestSource(config, ctx))
    warned = [r.getMessage() for r in caplog.records]
    caplog.clear()
    checked = outcome(lambda: BitbucketRestSource.preflight(config, ctx))
    assert checked == built
    assert [r.getMessage() for r in caplog.records] == warned  # the app-password warning too


def test_the_rest_source_preflight_checks_the_window() -> None:
    config = BitbucketRestConfig(workspace="acme")  # neither hours nor since
    ctx = context()
    built = outcome(lambda: BitbucketRestSource(config, ctx))
    assert built.startswith("ConfigError")
    assert outcome(lambda: BitbucketRestSource.preflight(config, ctx)) == built


@pytest.mark.parametrize(
    "spec",
    [
        "{tmp}/a/b/commits.db",
        "{tmp}/blocker/sub/commits.db",
        ":memory:",
        "mysql://u:pw@h/db",
        "postgresql://u:pw@h:5432/",
        "postgresql://u:pw@h:notaport/db",
        "postgresql://u:pw@h:5432/db?sslmode=require",
    ],
)
def test_the_database_check_agrees_with_open_database(spec: str, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a folder")
    spec = spec.format(tmp=tmp_path)
    checked = outcome(lambda: check_database(spec, create_folders=False))
    opened = outcome(lambda: open_database(spec, create_folders=False))
    assert checked == opened
    assert not (tmp_path / "a").exists()  # neither created a folder
