"""``rcingest demo``: the example scan against the fake, into a local folder."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import yaml
from click.testing import CliRunner

from rcingest.cli import build_cli
from rcingest.demo import DEMO_TOKEN


def test_demo_runs_the_example_scan_and_reports_what_it_stored(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(build_cli(), ["demo", "--dir", str(folder), "--repositories", "2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "succeeded" in out and "stored in" in out and "took" in out

    pipeline = yaml.safe_load((folder / "pipeline.yaml").read_text())
    source = pipeline["source"]["config"]
    assert source["base_url"].startswith("http://127.0.0.1:")  # loopback only
    assert [s["type"] for s in pipeline["sinks"]] == ["database", "json_artifact"]
    assert [e["type"] for e in pipeline["enrichers"]] == ["story_keys"]

    db = folder / "commits.db"
    with sqlite3.connect(db) as conn:
        commits = conn.execute("SELECT COUNT(*) FROM commits").fetchone()[0]
        files = conn.execute("SELECT COUNT(*) FROM commit_files").fetchone()[0]
        keys = conn.execute("SELECT COUNT(*) FROM story_keys").fetchone()[0]
    assert commits > 0 and files >= commits and keys > 0
    assert re.search(rf"^\s+commits\s+{commits}$", out, re.MULTILINE)

    (artifact,) = (folder / "artifacts").glob("scan_*.json")
    data = json.loads(artifact.read_text())
    assert data["status"] == "succeeded"
    assert str(artifact) in out
    # The token the demo's pipeline sends is treated as a secret like any *TOKEN* variable.
    assert DEMO_TOKEN not in artifact.read_text()
    assert DEMO_TOKEN.encode() not in db.read_bytes()


def test_demo_is_repeatable_in_the_same_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(build_cli(), ["demo", "--dir", str(tmp_path), "--repositories", "1"])
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "artifacts").glob("scan_*.json"))) == 2


def test_demo_has_no_request_budget_so_a_large_demo_never_stalls(tmp_path: Path) -> None:
    from rcingest.demo import demo_pipeline

    config = demo_pipeline("http://127.0.0.1:1/2.0", tmp_path, ["main"], 24.0)
    assert config["source"]["config"]["requests_per_hour"] == 0  # 0 = unlimited
    # 10 repositories take more than Bitbucket's 1,000 requests an hour: with a
    # budget the demo would pace (wait) for most of an hour.
    result = CliRunner().invoke(
        build_cli(), ["demo", "--dir", str(tmp_path), "--repositories", "10"]
    )
    assert result.exit_code == 0, result.output
    requests = int(re.search(r"\((\d+) requests to the fake", result.output)[1])  # type: ignore[index]
    assert requests > 1000
