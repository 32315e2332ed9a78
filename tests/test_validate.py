"""``rcingest validate`` reaches run's and serve's verdict, offline, reporting every problem.

The configs below are the ones issue 10 found: validate said ok, run/serve
then exited 2. Each is validated (exit 2, the YAML path named) and then run or
served as a real process (exit 2 too); the fixed config validates (exit 0).
Nothing may be written and no connection made while validating.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from click.testing import CliRunner

import rcingest
from rcingest.cli import _iso, cli
from rcingest.config import load_pipeline
from rcingest.default_plugins.bitbucket_rest import BitbucketRestConfig, BitbucketRestSource
from rcingest.default_plugins.bitbucket_webhook import WebhookConfig
from rcingest.errors import ConfigError
from rcingest.moments import normalise_moments
from rcingest.plugins import Manager, Registry, make_plugin_manager
from rcingest.preflight import preflight
from rcingest.runtime import make_context
from rcingest.validation import errors_for

TOKEN = "planted-api-TOKEN-7c41e9"
ACCESS = "planted-access-TOKEN-55d0aa"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1 used as the Bitbucket base URL: it sees any connection."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def _base_url(listener: socket.socket) -> str:
    return f"http://127.0.0.1:{listener.getsockname()[1]}/2.0"


def _assert_no_connection(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()


def _tree(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()
    } | {str(p.relative_to(root)) + "/": 0 for p in root.rglob("*") if p.is_dir()}


def _scan(auth: str, base_url: str) -> str:
    return textwrap.dedent(
        f"""
        name: scan
        source:
          type: bitbucket_rest
          config:
            workspace: acme
            base_url: {base_url}
            hours: 4
            auth: {auth}
        sinks:
          - type: database
            config: {{database: data/deep/commits.db}}
          - type: json_artifact
            config: {{artifacts_dir: out/artifacts}}
        """
    )


def _hook(secret_line: str) -> str:
    return textwrap.dedent(
        f"""
        name: hooks
        source:
          type: bitbucket_webhook
          config:
            port: 0
            {secret_line}
        sinks:
          - type: database
            config: {{database: data/deep/commits.db}}
        """
    )


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("BITBUCKET_") and k != "HOOK_SECRET"
    }
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", *args]
    return subprocess.run(
        cmd, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


# (name, pipeline text builder, environment, command run/serve, path named by validate)
DISAGREED: list[tuple[str, Callable[[str], str], dict[str, str], str, str]] = [
    (
        "api token without e-mail",
        lambda url: _scan("{api_token: ${BITBUCKET_API_TOKEN}}", url),
        {"BITBUCKET_API_TOKEN": TOKEN},
        "run",
        "$.source.config.auth.email: ",
    ),
    (
        "mixed auth",
        lambda url: _scan(
            "{email: me@example.com, api_token: ${BITBUCKET_API_TOKEN}, "
            "access_token: ${BITBUCKET_ACCESS_TOKEN}}",
            url,
        ),
        {"BITBUCKET_API_TOKEN": TOKEN, "BITBUCKET_ACCESS_TOKEN": ACCESS},
        "run",
        "$.source.config.auth: choose one way",
    ),
    (
        "webhook without a secret",
        lambda url: _hook("path: /hooks"),
        {},
        "serve",
        "$.source.config: no webhook secret",
    ),
    (
        "webhook secret from an unset variable",
        lambda url: _hook("secret: ${BITBUCKET_WEBHOOK_SECRET:-}"),
        {},
        "serve",
        "$.source.config: no webhook secret",
    ),
]


@pytest.mark.parametrize(("case", "text", "env", "command", "named"), DISAGREED, ids=lambda v: v)
def test_validate_agrees_with_run_and_serve(
    case: str,
    text: Callable[[str], str],
    env: dict[str, str],
    command: str,
    named: str,
    tmp_path: Path,
    listener: socket.socket,
) -> None:
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(text(_base_url(listener)))
    before = _tree(tmp_path)

    checked = _cli(["validate", "pipeline.yaml"], tmp_path, env)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert f"pipeline.yaml: {named}" in checked.stderr
    assert "Traceback" not in checked.stderr
    assert TOKEN not in checked.stderr + checked.stdout
    assert ACCESS not in checked.stderr + checked.stdout
    assert _tree(tmp_path) == before  # no database, no artifact folder, no state file
    _assert_no_connection(listener)

    started = _cli([command, "pipeline.yaml"], tmp_path, env)
    assert started.returncode == 2, started.stdout + started.stderr


def test_the_fixed_configs_validate_without_writing_or_connecting(
    tmp_path: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = _base_url(listener)
    scan = tmp_path / "scan.yaml"
    scan.write_text(_scan("{email: ${BITBUCKET_EMAIL}, api_token: ${BITBUCKET_API_TOKEN}}", url))
    hook = tmp_path / "hook.yaml"
    hook.write_text(_hook("secret: ${BITBUCKET_WEBHOOK_SECRET:-}"))
    before = _tree(tmp_path)
    env = {"BITBUCKET_EMAIL": "me@example.com", "BITBUCKET_API_TOKEN": TOKEN}
    for path, extra in ((scan, {}), (hook, {"BITBUCKET_WEBHOOK_SECRET": "hook-SECRET-x1-9Qz"})):
        result = CliRunner().invoke(
            cli, ["validate", str(path)], obj=make_plugin_manager(), env={**env, **extra}
        )
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"ok: {path}: source ")
    assert _tree(tmp_path) == before
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
    _assert_no_connection(listener)


def test_every_problem_at_once_each_with_its_path(write_yaml: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = write_yaml(
        f"""
        source:
          type: bitbucket_rest
          config:
            workspace: acme
            hours: -4.0
            base_url: ftp://x:${{BB_TOKEN}}@example.invalid/2.0
            auth: {{api_token: ${{BITBUCKET_API_TOKEN}}, emial: me@example.com}}
        enrichers:
          - type: story_keys
            config: {{mode: loose-ish}}
        sinks:
          - type: database
            config: {{database: "mysql://u:${{DB_PASSWORD}}@h/db"}}
          - type: database
            name: blocked
            config: {{database: {blocker}/sub/commits.db}}
          - type: json_artifact
            config: {{artifact_dir: out}}
        """
    )
    env = {"BITBUCKET_API_TOKEN": TOKEN, "BB_TOKEN": ACCESS, "DB_PASSWORD": "pw-planted-9"}
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager(), env=env)
    assert result.exit_code == 2
    out = result.output
    for expected in (
        "$.source.config.hours: must be > 0",
        "$.source.config.auth.emial: unknown field",
        "$.enrichers[0].config.mode: expected one of",
        "$.sinks[0].config: database ",  # built: an unsupported scheme
        "$.sinks[1].config: database ",  # built: a folder that cannot be created
        "$.sinks[2].config.artifact_dir: unknown field",
    ):
        assert f"{path}: {expected}" in out, (expected, out)
    assert "unsupported URL scheme" in out and "cannot create folder" in out
    # The source has Struct problems: it is not built as well (no repeated noise).
    assert "base_url" not in out
    for secret in (TOKEN, ACCESS, "pw-planted-9"):
        assert secret not in out
    assert not (blocker.parent / "out").exists()


def test_a_refused_build_names_the_field_and_hides_planted_secrets(write_yaml: Any) -> None:
    path = write_yaml(
        """
        source:
          type: bitbucket_rest
          config:
            workspace: acme
            hours: 4
            base_url: ftp://x:${BB_TOKEN}@example.invalid/${BB_TOKEN}
        sinks:
          - type: json_artifact
        """
    )
    report = preflight(path, Registry(make_plugin_manager()), environ={"BB_TOKEN": ACCESS})
    assert report.pipeline is None
    assert report.problems[0].startswith(f"{path}: $.source.config.base_url: expected an http")
    assert ACCESS in report.problems[0]  # the component's own message quotes the value ...
    result = CliRunner().invoke(
        cli, ["validate", str(path)], obj=make_plugin_manager(), env={"BB_TOKEN": ACCESS}
    )
    assert result.exit_code == 2
    assert "$.source.config.base_url" in result.output
    assert ACCESS not in result.output  # ... and validate prints it redacted


def test_a_secret_in_a_struct_message_is_redacted(write_yaml: Any) -> None:
    # WebhookConfig.__post_init__ quotes a bad `path`; here it comes from a secret variable.
    path = write_yaml(
        """
        source:
          type: bitbucket_webhook
          config: {path: "${HOOK_SECRET}", insecure: true}
        sinks:
          - type: json_artifact
        """
    )
    secret = "no-slash-SECRET-4411"
    result = CliRunner().invoke(
        cli, ["validate", str(path)], obj=make_plugin_manager(), env={"HOOK_SECRET": secret}
    )
    assert result.exit_code == 2
    assert "$.source.config: " in result.output and "must start with '/'" in result.output
    assert secret not in result.output


# -- the preflight protocol -----------------------------------------------------------


class WritingConfig(rcingest.ComponentConfig):
    path: str = "made-by-constructor.txt"
    refuse: bool = False


class WritingSink(rcingest.Sink[WritingConfig]):
    """Its constructor writes (what validation must never call); ``preflight`` does not."""

    Config = WritingConfig

    def __init__(self, config: WritingConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        Path(config.path).write_text("written")

    @classmethod
    def preflight(cls, config: WritingConfig, context: rcingest.RunContext) -> None:
        if config.refuse:
            raise ConfigError("path: refused by preflight")


class BrokenConfig(rcingest.ComponentConfig):
    pass


class BrokenEnricher(rcingest.Enricher[BrokenConfig]):
    Config = BrokenConfig

    def __init__(self, config: BrokenConfig, context: rcingest.RunContext) -> None:
        raise RuntimeError("no model loaded")


class Extra:
    @rcingest.hookimpl
    def register_sinks(self, register: Callable[..., None]) -> None:
        register("test_writing", WritingSink)

    @rcingest.hookimpl
    def register_enrichers(self, register: Callable[..., None]) -> None:
        register("test_broken", BrokenEnricher)


@pytest.fixture
def extra_manager(manager: Manager) -> Manager:
    """The test components plus the two above."""
    manager.pm.register(Extra(), "test-validate-extra")
    return manager


def test_preflight_replaces_a_constructor_that_writes(
    extra_manager: Manager, write_yaml: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = """
        source: {type: test_counter}
        sinks:
          - type: test_writing
            config: {refuse: REFUSE}
        """
    ok = write_yaml(text.replace("REFUSE", "false"), "ok.yaml")
    refused = write_yaml(text.replace("REFUSE", "true"), "refused.yaml")
    registry = Registry(extra_manager)
    assert preflight(ok, registry).problems == []
    report = preflight(refused, registry)
    assert report.problems == [f"{refused}: $.sinks[0].config.path: refused by preflight"]
    assert not (tmp_path / "made-by-constructor.txt").exists()
    assert not (tmp_path / "ok.state.json").exists()  # no sink stores cursors: run would write it


def test_a_constructor_that_fails_otherwise_cannot_start(
    extra_manager: Manager, write_yaml: Any
) -> None:
    path = write_yaml(
        """
        source: {type: test_counter}
        enrichers: [{type: test_broken, name: model}]
        sinks: [{type: test_memory}]
        """
    )
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=extra_manager)
    assert result.exit_code == 2
    assert "$.enrichers[0] (model): cannot start: RuntimeError: no model loaded" in result.output
    assert "Traceback" not in result.output


# -- readable messages for constraint errors --------------------------------------------


@pytest.mark.parametrize(
    ("struct", "data", "expected"),
    [
        (BitbucketRestConfig, {"workspace": "a", "hours": -4.0}, "$.hours: must be > 0"),
        (BitbucketRestConfig, {"workspace": "a", "hours": 0}, "$.hours: must be > 0"),
        (BitbucketRestConfig, {"workspace": "a", "updated_within_days": 0}, "must be > 0"),
        (BitbucketRestConfig, {"workspace": "a", "concurrency": 0}, "$.concurrency: must be >= 1"),
        (BitbucketRestConfig, {"workspace": "a", "concurrency": 999}, "must be <= 256"),
        (BitbucketRestConfig, {"workspace": "a", "role": "boss"}, "$.role: expected one of"),
        (BitbucketRestConfig, {"workspace": "a", "q": 5}, "$.q: expected str or null, got int"),
        (BitbucketRestConfig, {"hours": 4}, "$.workspace: missing required field"),
        (WebhookConfig, {"port": 70000}, "$.port: must be <= 65535"),
        (WebhookConfig, {"ack_timeout": 0}, "$.ack_timeout: must be > 0"),
        (WebhookConfig, {"backfill_synchronous": "OFF"}, "$.backfill_synchronous: expected one"),
    ],
)
def test_constraint_messages_say_what_is_wrong(
    struct: type, data: dict[str, Any], expected: str
) -> None:
    found = errors_for(data, struct, "$")
    assert any(expected in line for line in found), found
    assert not any("got float" in line and "expected float" in line for line in found)


def test_negative_hours_through_the_cli(write_yaml: Any) -> None:
    path = write_yaml(
        """
        source:
          type: bitbucket_rest
          config: {workspace: acme, hours: -4.0}
        sinks: [{type: json_artifact}]
        """
    )
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager())
    assert result.exit_code == 2
    assert f"{path}: $.source.config.hours: must be > 0" in result.output


# -- dates, times and the window ----------------------------------------------------


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-11-01", "2026-11-02"),
        ("'2026-11-01'", "'2026-11-02T00:00'"),
        ("2026-11-01T00:00", "2026-11-02 00:00:00"),
    ],
)
def test_date_only_since_in_yaml_means_what_the_flag_means(
    since: str, until: str, write_yaml: Any
) -> None:
    text = f"""
        timezone: America/Phoenix
        source:
          type: bitbucket_rest
          config: {{workspace: acme, since: {since}, until: {until}}}
        sinks: [{{type: json_artifact}}]
        """
    path = write_yaml(text)
    registry = Registry(make_plugin_manager())
    from_yaml = load_pipeline(path, registry)
    flagged = load_pipeline(
        write_yaml(text.replace(f"since: {since}, until: {until}", "hours: 4"), "flags.yaml"),
        registry,
        overrides={
            "since": _iso("since")(None, None, "2026-11-01"),  # type: ignore[arg-type]
            "until": _iso("until")(None, None, "2026-11-02"),  # type: ignore[arg-type]
        },
    )
    config = from_yaml.source.config
    assert isinstance(config, BitbucketRestConfig)
    assert config.since == datetime(2026, 11, 1) and config.until == datetime(2026, 11, 2)
    assert config.since == flagged.source.config.since  # type: ignore[attr-defined]
    assert config.until == flagged.source.config.until  # type: ignore[attr-defined]
    # Both are read in the pipeline's timezone: the window starts at its midnight.
    source = BitbucketRestSource(config, make_context(from_yaml))
    phoenix = ZoneInfo("America/Phoenix")
    assert source.window.start == datetime(2026, 11, 1, tzinfo=phoenix)
    assert source.window.end == datetime(2026, 11, 2, tzinfo=phoenix)
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager())
    assert result.exit_code == 0, result.output


def test_dates_loaded_as_objects_are_read_the_same_way() -> None:
    # A YAML loader that resolves timestamps hands over date / datetime objects.
    data = {"workspace": "a", "since": date(2026, 11, 1), "until": datetime(2026, 11, 2, 6)}
    assert normalise_moments(data, BitbucketRestConfig) == {
        "workspace": "a",
        "since": "2026-11-01T00:00:00",
        "until": "2026-11-02T06:00:00",
    }
    assert yaml.safe_load("since: 2026-11-01")["since"] == date(2026, 11, 1)


def test_a_date_that_is_no_date_is_still_an_error(write_yaml: Any) -> None:
    path = write_yaml(
        """
        source:
          type: bitbucket_rest
          config: {workspace: acme, since: 2026-13-45}
        sinks: [{type: json_artifact}]
        """
    )
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager())
    assert result.exit_code == 2
    assert "$.source.config.since: " in result.output


# -- YAML: ${VAR} in flow collections, one-line syntax errors -------------------------------


def test_variables_inside_flow_collections(write_yaml: Any) -> None:
    path = write_yaml(
        """
        source:
          type: bitbucket_rest
          config:
            workspace: ${BITBUCKET_WORKSPACE:-acme}
            repositories: [${REPO_A}, "${REPO_B:-web}", plain]
            hours: 4
            auth: {email: ${BITBUCKET_EMAIL}, api_token: ${BITBUCKET_API_TOKEN}}
        sinks: [{type: json_artifact, config: {artifacts_dir: ${OUT:-out}/x}}]
        """
    )
    env = {"BITBUCKET_EMAIL": "me@example.com", "BITBUCKET_API_TOKEN": TOKEN, "REPO_A": "api"}
    pipeline = load_pipeline(path, Registry(make_plugin_manager()), environ=env)
    config = pipeline.source.config
    assert isinstance(config, BitbucketRestConfig)
    assert config.auth.email == "me@example.com" and config.auth.api_token == TOKEN
    assert config.repositories == ["api", "web", "plain"]
    assert config.workspace == "acme"
    assert pipeline.sinks[0].config.artifacts_dir == "out/x"  # type: ignore[attr-defined]
    assert TOKEN in pipeline.secrets
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager(), env=env)
    assert result.exit_code == 0, result.output


def test_yaml_errors_keep_their_line_and_column_around_variables(write_yaml: Any) -> None:
    broken = "source:\n  config: {workspace: ${WS}, hours: [4}\nsinks: []\n"
    path = write_yaml(broken)
    # The same text with the reference spelled as plain characters of the same length.
    with pytest.raises(yaml.MarkedYAMLError) as plain:
        yaml.safe_load(broken.replace("${WS}", "xxxxx"))
    mark = plain.value.problem_mark
    assert mark is not None
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, Registry(make_plugin_manager()), environ={"WS": "acme"})
    message = str(info.value)
    assert f"line {mark.line + 1}, column {mark.column + 1}" in message
    assert message.startswith(f"{path}: invalid YAML at ")


@pytest.mark.parametrize(
    "text",
    [
        "source:\n  type: [unclosed\nsinks: []\n",
        "source: {type: a\n",
        "a: 1\n b: 2\n",
        "source:\n  type: x\x07\n",
        "--- {a: 1}\n--- {b: 2}\n",
    ],
    ids=["unclosed", "flow", "indent", "control-char", "two-documents"],
)
def test_any_yaml_error_is_one_line_with_file_line_and_column(text: str, write_yaml: Any) -> None:
    path = write_yaml(text)
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager())
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {path}: invalid YAML at line ")
    assert ", column " in lines[0]
