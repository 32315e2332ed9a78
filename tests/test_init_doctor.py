"""``rcingest init`` (a commented file to start from) and ``validate --check-connection``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.cli_tools import TEMPLATES
from rcingest.plugins import make_plugin_manager
from tests.test_settings import TOKEN, rcingest, settings_text, start_fake

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"settings": "settings.example.yaml", "scan": "pipeline.example.yaml"}
EXAMPLES["webhook"] = "webhook.example.yaml"


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_each_template_is_the_committed_example(kind: str) -> None:
    """The files init writes are the ones docs and tests use (config/*.example.yaml)."""
    template = ROOT / "rcingest" / "templates" / TEMPLATES[kind][0]
    assert template.read_text() == (ROOT / "config" / EXAMPLES[kind]).read_text()


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_init_writes_a_file_that_validates(tmp_path: Path, kind: str) -> None:
    env = {"BITBUCKET_WEBHOOK_SECRET": "init-test-secret-91aXk2Lq"}
    done = rcingest(tmp_path, f"rcingest init --kind {kind}", **env)
    assert done.returncode == 0, done.stderr
    target = tmp_path / TEMPLATES[kind][1]
    assert target.is_file() and target.read_text().startswith("#")
    assert f"rcingest validate {TEMPLATES[kind][1]}" in done.stdout
    checked = rcingest(tmp_path, f"rcingest validate {TEMPLATES[kind][1]}", **env)
    assert checked.returncode == 0, checked.stderr


def test_init_never_replaces_a_file_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "mine.yaml"
    target.write_text("bitbucket: {workspace: mine}\n")
    runner = CliRunner()
    refused = runner.invoke(cli, ["init", str(target)])
    assert refused.exit_code == 2
    assert "exists" in refused.output
    assert target.read_text() == "bitbucket: {workspace: mine}\n"
    forced = runner.invoke(cli, ["init", str(target), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "workspace:" in target.read_text() and "mine" not in target.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def fake() -> Iterator[str]:
    proc, url = start_fake(f"Bearer {TOKEN}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def check(path: Path, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BITBUCKET_")}
    result = CliRunner(env={**environ, **env}).invoke(
        cli, ["validate", str(path), "--check-connection"], obj=make_plugin_manager()
    )
    return result.exit_code, result.output


def test_check_connection_tries_the_listing_and_each_repository(tmp_path: Path, fake: str) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(settings_text(fake, "access_token: ${BITBUCKET_ACCESS_TOKEN}"))
    code, output = check(path, BITBUCKET_ACCESS_TOKEN=TOKEN)
    assert code == 0, output
    assert "access token (Bearer)" in output
    for repo in ("acme/service-00", "acme/service-01", "acme/service-02"):
        assert f"ok   bitbucket_rest: repository {repo}" in output
    assert TOKEN not in output


def test_check_connection_reports_refused_credentials_and_missing_repositories(
    tmp_path: Path, fake: str
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(settings_text(fake, "access_token: ${BITBUCKET_ACCESS_TOKEN}"))
    code, output = check(path, BITBUCKET_ACCESS_TOKEN="wrong-token-Pq83nV1x")
    assert code == 1
    assert "FAIL" in output and "401" in output
    assert "wrong-token-Pq83nV1x" not in output

    path.write_text(
        settings_text(fake, "access_token: ${BITBUCKET_ACCESS_TOKEN}").replace(
            "service-02", "no-such-repo"
        )
    )
    code, output = check(path, BITBUCKET_ACCESS_TOKEN=TOKEN)
    assert code == 1
    assert "FAIL bitbucket_rest: repository acme/no-such-repo: 404" in output


def test_check_connection_names_an_unreachable_host(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(
        settings_text("http://127.0.0.1:9/2.0", "access_token: ${BITBUCKET_ACCESS_TOKEN}")
    )
    code, output = check(path, BITBUCKET_ACCESS_TOKEN=TOKEN)
    assert code == 1
    assert "cannot reach it" in output and "127.0.0.1:9" in output
    assert TOKEN not in output


def test_check_connection_of_the_webhook_daemon_uses_the_global_listing(
    tmp_path: Path, fake: str
) -> None:
    path = tmp_path / "hook.yaml"
    path.write_text(
        (ROOT / "config" / "webhook.example.yaml")
        .read_text()
        .replace("https://api.bitbucket.org/2.0", fake)
        .replace(
            "email: ${BITBUCKET_EMAIL:-}\n      api_token: ${BITBUCKET_API_TOKEN:-}",
            "access_token: ${BITBUCKET_ACCESS_TOKEN}",
        )
    )
    code, output = check(
        path, BITBUCKET_ACCESS_TOKEN=TOKEN, BITBUCKET_WEBHOOK_SECRET="doctor-hook-secret-4Rt9"
    )
    assert code == 0, output
    assert "ok   bitbucket_webhook:" in output


def test_the_wheel_ships_the_templates() -> None:
    """init reads its templates as package data, not from a checkout."""
    code = (
        "from importlib.resources import files; "
        "print(sorted(p.name for p in files('rcingest').joinpath('templates').iterdir()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert all(t in out.stdout for t, _ in TEMPLATES.values())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"templates/*.yaml"' in pyproject
