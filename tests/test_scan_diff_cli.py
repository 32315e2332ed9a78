"""``rcingest scan-diff``: the rules tried on a local diff (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ghp_R8v2Kq9sLm4Tx7Wb1Zc5Nd3Hf6Jg0Ya8Pe2Q"
DIFF = (
    "diff --git a/a.env b/a.env\n--- a/a.env\n+++ b/a.env\n@@ -0,0 +1,3 @@\n"
    f"+GH={TOKEN}\n+ok\n+AWS=AKIAIOSFODNN7EXAMPLE\n"
)


def run(args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, input=stdin, obj=make_plugin_manager())
    return result.exit_code, result.stdout, result.stderr


def test_findings_are_printed_redacted_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["scan-diff", "-"], DIFF)
    assert code == 1
    assert "a.env:1" in out and "np.github.1" in out and "ghp_***" in out
    assert TOKEN[:6] not in out + err
    assert "1 possible secret(s)" in err
    assert list(tmp_path.iterdir()) == []  # trying rules writes no key file


def test_json_and_a_clean_diff(tmp_path: Path) -> None:
    path = tmp_path / "change.diff"
    path.write_text(DIFF)
    code, out, _ = run(["scan-diff", str(path), "--format", "json"])
    assert code == 1 and json.loads(out)["findings"][0]["line_start"] == 1
    path.write_text(DIFF.replace(TOKEN, "${GITHUB_TOKEN}"))
    code, out, err = run(["scan-diff", str(path)])
    assert code == 0 and out == "" and "0 possible secret(s)" in err


def test_the_pipeline_s_scanners_and_allowlist_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pipeline = tmp_path / "p.yaml"
    example = (ROOT / "config" / "pr-security.example.yaml").read_text()
    pipeline.write_text(example.replace('paths: ["tests/fixtures/**"]', 'paths: ["*.env"]'))
    path = tmp_path / "change.diff"
    path.write_text(DIFF)
    code, _out, err = run(["scan-diff", str(path), "--config", str(pipeline)])
    assert code == 0 and "(1 allowed)" in err


def test_not_a_diff_is_exit_2_and_quotes_nothing(tmp_path: Path) -> None:
    code, _out, err = run(["scan-diff", "-"], f"PASSWORD={TOKEN}\n")
    assert code == 2 and "not a unified diff" in err and TOKEN not in err
