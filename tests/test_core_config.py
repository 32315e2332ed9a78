"""Pipeline files: YAML errors, interpolation, strict validation with paths, flag overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.config import interpolate, load_pipeline
from rcingest.errors import ConfigError
from rcingest.plugins import Registry

GOOD = """
name: scan
timezone: America/Phoenix
source:
  type: test_counter
  config: {count: 3}
enrichers:
  - type: test_suffix
sinks:
  - type: test_memory
  - type: jsonl
    config: {path: out.jsonl}
"""


def _validate(manager: Any, path: Path, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, ["validate", str(path)], obj=manager, env=env)


def test_valid_pipeline(manager: Any, write_yaml: Any) -> None:
    result = _validate(manager, write_yaml(GOOD))
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output
    pipeline = load_pipeline(write_yaml(GOOD), Registry(manager))
    assert pipeline.timezone.key == "America/Phoenix"
    assert [s.label for s in pipeline.sinks] == ["test_memory", "jsonl"]


def test_every_problem_reported_with_its_path(manager: Any, write_yaml: Any) -> None:
    path = write_yaml(
        """
        timezone: Mars/Olympus
        sourc: {}
        source:
          type: test_counter
          config: {count: "many", chekpoint_every: 2}
        sinks:
          - type: test_memory
          - type: jsonl
            config: {path: 5}
          - type: nope
        batch: {size: 0}
        """
    )
    result = _validate(manager, path)
    assert result.exit_code == 2
    out = result.output
    for expected in (
        "$.sourc: unknown field",
        "$.source.config.count: expected int, got str",
        "$.source.config.chekpoint_every: unknown field",
        "$.sinks[1].config.path: expected str, got int",
        "$.sinks[2].type: unknown sink type 'nope'; installed types:",
        "$.batch.size: must be >= 1",
        "$.timezone: unknown IANA time zone 'Mars/Olympus'",
    ):
        assert expected in out, (expected, out)
    assert str(path) in out


def test_missing_sinks_and_source(manager: Any, write_yaml: Any) -> None:
    result = _validate(manager, write_yaml("name: x\nsinks: []\n"))
    assert result.exit_code == 2
    assert "$.source: missing required field" in result.output
    assert "$.sinks: must have at least 1 items" in result.output


def test_invalid_yaml_names_line_and_column(manager: Any, write_yaml: Any) -> None:
    result = _validate(manager, write_yaml("source:\n  type: [unclosed\nsinks: []\n"))
    assert result.exit_code == 2
    assert "invalid YAML at line" in result.output and "column" in result.output


def test_missing_file(manager: Any, tmp_path: Path) -> None:
    result = _validate(manager, tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "no such pipeline file" in result.output


def test_env_interpolation_and_defaults() -> None:
    data, secrets, problems = interpolate(
        {"a": "${HOST:-localhost}:${PORT}", "b": ["${API_TOKEN}"], "c": 5},
        {"PORT": "80", "API_TOKEN": "s3cr3t-value"},
    )
    assert data == {"a": "localhost:80", "b": ["s3cr3t-value"], "c": 5}
    assert secrets == {"s3cr3t-value"}
    assert problems == []


def test_missing_variable_names_it_and_its_path(manager: Any, write_yaml: Any) -> None:
    path = write_yaml(GOOD.replace("path: out.jsonl", "path: '${OUT_PATH}'"))
    result = _validate(manager, path, env={"OUT_PATH": None})  # type: ignore[dict-item]
    assert result.exit_code == 2
    assert "$.sinks[1].config.path: environment variable OUT_PATH is not set" in result.output


def test_secret_values_are_never_echoed(manager: Any, write_yaml: Any) -> None:
    secret = "tok-9f8e7d6c5b4a"
    path = write_yaml(GOOD.replace("count: 3", "count: '${MY_API_TOKEN}'"))
    result = _validate(manager, path, env={"MY_API_TOKEN": secret})
    assert result.exit_code == 2
    assert "$.source.config.count: expected int, got str" in result.output
    assert secret not in result.output


def test_dates_stay_strings_until_validated(manager: Any, write_yaml: Any) -> None:
    # PyYAML would turn this into a naive datetime; the loader keeps it for msgspec.
    path = write_yaml(GOOD.replace("name: scan", "name: 2026-11-23"))
    pipeline = load_pipeline(path, Registry(manager))
    assert pipeline.config.name == "2026-11-23"


def test_flag_overrides_matching_field(manager: Any, write_yaml: Any) -> None:
    path = write_yaml(GOOD)
    pipeline = load_pipeline(path, Registry(manager), overrides={"artifacts_dir": None})
    assert pipeline.sinks[1].config.path == "out.jsonl"  # type: ignore[attr-defined]


def test_flag_no_component_accepts_is_an_error(manager: Any, write_yaml: Any) -> None:
    with pytest.raises(ConfigError, match="--database: no component of this pipeline accepts it"):
        load_pipeline(write_yaml(GOOD), Registry(manager), overrides={"database": "x.db"})
    result = CliRunner().invoke(cli, ["run", str(write_yaml(GOOD)), "--hours", "4"], obj=manager)
    assert result.exit_code == 2
    assert "--hours: no component of this pipeline accepts it" in result.output


def test_bad_flag_values_are_usage_errors(manager: Any, write_yaml: Any) -> None:
    result = CliRunner().invoke(
        cli, ["run", str(write_yaml(GOOD)), "--since", "yesterday"], obj=manager
    )
    assert result.exit_code == 2
    assert "not an ISO 8601 date" in result.output
    result = CliRunner().invoke(cli, ["run"], obj=manager)
    assert result.exit_code == 2 and "missing the pipeline file" in result.output


def test_iso_flags_are_normalised_for_the_config(manager: Any, write_yaml: Any) -> None:
    from rcingest.cli import _iso

    check = _iso("since")
    assert check(None, None, "2026-11-01T00:00") == "2026-11-01T00:00:00"  # type: ignore[arg-type]
    assert check(None, None, "2026-11-01") == "2026-11-01T00:00:00"  # type: ignore[arg-type]
    assert check(None, None, "2026-11-01T08:00-07:00") == "2026-11-01T08:00:00-07:00"  # type: ignore[arg-type]


def test_until_alone_keeps_hours(manager: Any, write_yaml: Any) -> None:
    from rcingest.config import apply_overrides

    class Windowed:
        class Config:
            __struct_fields__ = ("hours", "since", "until")

    class Reg:
        def get(self, kind: str, type_name: str) -> Any:
            from types import SimpleNamespace

            return SimpleNamespace(component=Windowed)

    data = {"source": {"type": "x", "config": {"hours": 4}}, "sinks": []}
    out = apply_overrides(data, {"until": "2026-11-02T00:00:00"}, Reg())  # type: ignore[arg-type]
    assert out["source"]["config"] == {"hours": 4, "until": "2026-11-02T00:00:00"}
    out = apply_overrides(out, {"hours": 2}, Reg())  # type: ignore[arg-type]
    assert out["source"]["config"] == {"hours": 2}


def test_validate_builds_components_but_opens_none(
    manager: Any, write_yaml: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # jsonl (a third-party plugin) opens out.jsonl in __aenter__; run would also
    # write pipeline.state.json, since no sink here stores cursors.
    monkeypatch.chdir(tmp_path)
    path = write_yaml(GOOD)
    result = _validate(manager, path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.yaml"]


def test_load_pipeline_lists_every_problem_with_a_count(manager: Any, write_yaml: Any) -> None:
    path = write_yaml(GOOD.replace("count: 3", "nope: 1").replace("test_suffix", "test_nah"))
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, Registry(manager))
    assert str(info.value) == f"{path}: 2 problems"
    assert info.value.problems[0] == f"{path}: $.source.config.nope: unknown field"
    assert info.value.problems[1].startswith(f"{path}: $.enrichers[0].type: ")
