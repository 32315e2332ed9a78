"""The runbook's settings file (issue 11, point 1), run as the runbook says.

The end-to-end tests start from a directory holding only
``config/settings.yaml`` and run the runbook's commands verbatim (with
``rcingest`` for ``rc``) in a real process against the fake Bitbucket, which
answers 401 unless the expected ``Authorization`` header arrives.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.settings import is_settings, translate

TOKEN = "bbat-settings-Zq81-not-a-real-token-7f3e"
API_TOKEN = "ATATT3xFfGF0-settings-api-token-Kd02=ABCDEF12"
EXPECT_AUTH = ["--expect-auth-env", "FAKE_EXPECTED_AUTH"]
RUNBOOK_SCAN = (
    "rcingest ingest bitbucket-scan --hours 4 --config config/settings.yaml "
    "--repos service-00 service-01 --branches main --database data/bitbucket/commits.db"
)


def settings_text(base_url: str, credentials: str, extra: str = "") -> str:
    """A settings file in the runbook's shape; ``credentials`` is YAML, one key per line."""
    lines = [
        "bitbucket:",
        "  workspace: acme",
        "  repositories: [service-00, service-01, service-02]",
        "  default_branches: [main, develop]",
        "  credentials:",
        *(f"    {line}" for line in credentials.splitlines()),
        f"  base_url: {base_url}",
    ]
    return "\n".join(lines) + "\n" + textwrap.dedent(extra)


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    work = tmp_path / "fresh"
    (work / "config").mkdir(parents=True)
    return work


def start_fake(expected_auth: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "FAKE_EXPECTED_AUTH": expected_auth}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcingest.testing.fake_bitbucket", *EXPECT_AUTH],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line and line[0] == "READY", line
    return proc, line[1]


@pytest.fixture
def bearer_fake() -> Iterator[str]:
    proc, url = start_fake(f"Bearer {TOKEN}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rcingest(cwd: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command line as a user types it (``rcingest`` = this interpreter's CLI)."""
    args = command.split()
    assert args[0] == "rcingest"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BITBUCKET_")}
    environ.update(env)
    main = "from rcingest.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", main, *args[1:]],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_runbook_scan_runs_verbatim_from_a_fresh_directory(
    fresh_dir: Path, bearer_fake: str
) -> None:
    (fresh_dir / "config/settings.yaml").write_text(
        settings_text(bearer_fake, "access_token: ${BITBUCKET_ACCESS_TOKEN}")
    )
    done = rcingest(fresh_dir, RUNBOOK_SCAN, BITBUCKET_ACCESS_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr

    db = fresh_dir / "data/bitbucket/commits.db"
    with sqlite3.connect(db) as conn:
        repos = {r for (r,) in conn.execute("SELECT DISTINCT repository FROM commits")}
        keys = conn.execute("SELECT count(*) FROM story_keys").fetchone()[0]
    assert repos == {"acme/service-00", "acme/service-01"}  # --repos overrides the file
    assert keys > 0  # the story-key enricher is part of the standard pipeline

    out = fresh_dir / "artifacts/issues/wave3/bitbucket"
    (artifact,) = out.glob("scan_*.json")
    assert (out / "run.schema.json").is_file()
    doc = json.loads(artifact.read_text())
    assert doc["window"]["start"].endswith("-07:00")  # America/Phoenix unless said otherwise
    assert doc["payload"], "summarized payload entries"

    log = fresh_dir / "temp_data/bitbucket/rcingest.log"
    text = log.read_text()
    stamps = re.findall(r"^\S+", text, re.MULTILINE)
    assert stamps and all(s.endswith("-07:00") for s in stamps), stamps[:3]
    # docs/configuration.md's `grep ': window \[' temp_data/bitbucket/rcingest.log`
    assert [line for line in text.splitlines() if ": window [" in line], text[-500:]

    for path in [db, artifact, log]:
        assert TOKEN not in path.read_bytes().decode("utf-8", "replace"), path
    assert TOKEN not in done.stdout + done.stderr


def test_run_with_no_file_uses_config_settings_yaml(fresh_dir: Path, bearer_fake: str) -> None:
    (fresh_dir / "config/settings.yaml").write_text(
        settings_text(bearer_fake, "access_token: ${BITBUCKET_ACCESS_TOKEN}")
    )
    done = rcingest(fresh_dir, "rcingest run --hours 4 --json", BITBUCKET_ACCESS_TOKEN=TOKEN)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert (fresh_dir / "data/bitbucket/commits.db").is_file()


def test_without_a_settings_file_run_says_what_is_missing(tmp_path: Path) -> None:
    done = rcingest(tmp_path, "rcingest run --hours 4")
    assert done.returncode == 2
    assert "config/settings.yaml" in done.stderr


@pytest.mark.parametrize(
    ("credentials", "env", "header"),
    [
        (
            "email: ${BITBUCKET_EMAIL}\napi_token: ${BITBUCKET_API_TOKEN}",
            {"BITBUCKET_EMAIL": "rel@example.com", "BITBUCKET_API_TOKEN": API_TOKEN},
            "Basic " + base64.b64encode(f"rel@example.com:{API_TOKEN}".encode()).decode(),
        ),
        (
            "oauth_token: ${BITBUCKET_OAUTH_TOKEN}",
            {"BITBUCKET_OAUTH_TOKEN": TOKEN},
            f"Bearer {TOKEN}",
        ),
        (
            "username: ${BITBUCKET_USERNAME}\napp_password: ${BITBUCKET_APP_PASSWORD}",
            {"BITBUCKET_USERNAME": "releng", "BITBUCKET_APP_PASSWORD": "app-pw-91kdPq"},
            "Basic " + base64.b64encode(b"releng:app-pw-91kdPq").decode(),
        ),
    ],
    ids=["api-token", "oauth-token", "app-password"],
)
def test_each_credential_kind_reaches_bitbucket_as_its_header(
    fresh_dir: Path, credentials: str, env: dict[str, str], header: str
) -> None:
    proc, url = start_fake(header)
    try:
        (fresh_dir / "config/settings.yaml").write_text(settings_text(url, credentials))
        done = rcingest(fresh_dir, "rcingest ingest bitbucket-scan --hours 4", **env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    log = (fresh_dir / "temp_data/bitbucket/rcingest.log").read_text()
    if "app_password" in credentials:
        assert "app password" in log  # still read, with a warning
    else:
        assert "app password" not in log
    for value in env.values():
        if "@" not in value and value != "releng":
            assert value not in log + done.stderr + done.stdout


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def validate(path: Path, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BITBUCKET_")}
    result = CliRunner(env={**environ, **env}).invoke(
        cli, ["validate", str(path)], obj=make_plugin_manager()
    )
    return result.exit_code, result.output


def test_problems_are_named_with_the_settings_files_own_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bitbucket:
          workspace: acme
          credentials: {api_token: "${BITBUCKET_API_TOKEN}", pasword: x}
          scan: {hourz: 3}
        database: {url: x.db, synchronus: FULL}
        """,
    )
    code, output = validate(path)
    assert code == 2
    assert "$.bitbucket.credentials.pasword" in output
    assert "$.bitbucket.credentials.api_token: environment variable BITBUCKET_API_TOKEN" in output


def test_problems_of_the_translated_pipeline_point_into_the_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bitbucket:
          workspace: acme
          credentials: {api_token: "${BITBUCKET_API_TOKEN}"}
          scan: {hourz: 3}
        database: {url: x.db, synchronus: FULL}
        timezone: Mars/Olympus
        """,
    )
    code, output = validate(path, BITBUCKET_API_TOKEN=API_TOKEN)
    assert code == 2
    assert "$.bitbucket.scan.hourz" in output
    assert "$.database.synchronus" in output
    assert "$.timezone" in output
    assert "$.source" not in output and "$.sinks" not in output
    assert API_TOKEN not in output


def test_a_component_rule_is_named_at_the_settings_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bitbucket:
          workspace: acme
          credentials: {api_token: "${BITBUCKET_API_TOKEN}"}
        """,
    )
    code, output = validate(path, BITBUCKET_API_TOKEN=API_TOKEN)
    assert code == 2
    assert "$.bitbucket.credentials.email" in output  # an API token needs its e-mail
    assert API_TOKEN not in output


def test_a_valid_settings_file_validates_for_run_and_for_serve(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        bitbucket:
          workspace: acme
          credentials: {access_token: "${BITBUCKET_ACCESS_TOKEN:-}"}
        webhook:
          secret: ${BITBUCKET_WEBHOOK_SECRET}
          port: 8080
        """,
    )
    code, output = validate(path, BITBUCKET_WEBHOOK_SECRET="whsec-9d8c7b6a5f4e3d2c1b0a")
    assert code == 0, output
    assert "under rcingest run" in output and "under rcingest serve" in output
    assert "whsec" not in output


def test_translation_is_the_standard_pipeline() -> None:
    data = {
        "bitbucket": {
            "workspace": "acme",
            "repositories": ["api"],
            "credentials": {"oauth_token": "tok"},
            "base_url": "http://127.0.0.1:9/2.0",
        }
    }
    assert is_settings(data) and not is_settings({"bitbucket": {}, "source": {}})
    pipeline, relocate, problems = translate(data, "run")
    assert problems == []
    assert pipeline["timezone"] == "America/Phoenix"
    assert pipeline["source"]["type"] == "bitbucket_rest"
    assert pipeline["source"]["config"]["auth"] == {"access_token": "tok"}
    assert pipeline["source"]["config"]["hours"] == 4.0
    assert [e["type"] for e in pipeline["enrichers"]] == ["story_keys"]
    assert [s["type"] for s in pipeline["sinks"]] == ["database", "json_artifact"]
    assert pipeline["sinks"][0]["config"]["database"] == "data/bitbucket/commits.db"
    assert pipeline["sinks"][1]["config"]["artifacts_dir"] == "artifacts/issues/wave3/bitbucket"
    assert pipeline["logging"]["file"] == "temp_data/bitbucket/rcingest.log"
    assert relocate("$.source.config.auth.access_token: x") == (
        "$.bitbucket.credentials.oauth_token: x"
    )
    assert relocate("$.sinks[1].config.artifacts_dir: x") == "$.artifacts.dir: x"
    # The translation is a valid pipeline for the installed registry.
    from rcingest.config import problems as pipeline_problems

    assert pipeline_problems(pipeline, Registry(make_plugin_manager())) == []


def test_serve_needs_a_webhook_section() -> None:
    _pipeline, _relocate, problems = translate({"bitbucket": {"workspace": "acme"}}, "serve")
    assert any(p.startswith("$.webhook:") for p in problems)


def test_serve_runs_the_webhook_section_of_a_settings_file(fresh_dir: Path) -> None:
    """The runbook's receiver: ``X-Webhook-Secret`` accepted, stored in the same database."""
    from tests.test_webhook_serve_cli import FIX, free_port

    secret = "runbook-hook-secret-4Rk9vQ2m"
    port = free_port()
    (fresh_dir / "config/settings.yaml").write_text(
        settings_text(
            "http://127.0.0.1:9/2.0",
            "access_token: ${BITBUCKET_ACCESS_TOKEN:-}",
            f"""\
            webhook:
              secret: ${{BITBUCKET_WEBHOOK_SECRET}}
              port: {port}
              backfill: false
            """,
        )
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BITBUCKET_")}
    environ["BITBUCKET_WEBHOOK_SECRET"] = secret
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve"]
    cmd += ["config/settings.yaml"]
    proc = subprocess.Popen(cmd, env=environ, cwd=fresh_dir, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        raw = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/bitbucket",
            data=raw,
            headers={
                "X-Event-Key": "repo:push",
                "X-Request-UUID": "settings-1",
                "X-Webhook-Secret": secret,
            },
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    with sqlite3.connect(fresh_dir / "data/bitbucket/commits.db") as conn:
        assert conn.execute("SELECT count(*) FROM commits").fetchone()[0] >= 1
    log = (fresh_dir / "temp_data/bitbucket/rcingest.log").read_text()
    assert secret not in log + stderr


def test_the_documented_settings_file_validates_and_its_defaults_are_the_codes(
    tmp_path: Path,
) -> None:
    """docs/configuration.md, "Settings file": its example is valid, its defaults true."""
    from rcingest import settings

    defaults = settings.SettingsFile(bitbucket=settings.BitbucketSettings(workspace="x"))

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    section = doc.split("## Settings file", 1)[1].split("\n## ", 1)[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    for default in (
        settings.DEFAULT_DATABASE,
        settings.DEFAULT_ARTIFACTS,
        settings.DEFAULT_LOG_FILE,
        f"`{settings.DEFAULT_HOURS:g}`",
        f"`{defaults.timezone}`",
        f"`{defaults.database}`",
    ):
        assert default in section, default
    env = {
        "BITBUCKET_EMAIL": "rel@example.com",
        "BITBUCKET_API_TOKEN": API_TOKEN,
        "BITBUCKET_WEBHOOK_SECRET": "doc-secret-Lk29xQ0pZr",
    }
    path = tmp_path / "settings.yaml"
    path.write_text(example)
    code, output = validate(path, **env)
    assert code == 0, output
    assert "under rcingest run" in output and "under rcingest serve" in output
