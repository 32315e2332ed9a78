""" "Did you mean" (issue 11): unknown component types and keys get the closest known name.

Through ``rcingest validate`` on small files, as a user meets it: a type is
matched against the registered types of its own kind, a key against the
fields of the Struct at its YAML path; nothing is suggested when nothing is
close.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.plugins import make_plugin_manager
from rcingest.validation import did_you_mean


def validate(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)], obj=make_plugin_manager())
    prefix = f"error: {path}: "
    lines = [line.removeprefix(prefix) for line in result.output.splitlines()]
    return result.exit_code, lines


def test_an_unknown_source_type_names_the_closest_source(tmp_path: Path) -> None:
    code, lines = validate(
        tmp_path,
        """
        source: {type: bitbucket_rset, config: {workspace: acme, hours: 4}}
        sinks: [{type: json_artifact}]
        """,
    )
    assert code == 2
    [line] = [line for line in lines if line.startswith("$.source.type:")]
    assert line.startswith(
        "$.source.type: unknown source type 'bitbucket_rset' (did you mean 'bitbucket_rest'?); "
        "installed types: ["
    ), line


def test_a_type_is_matched_only_against_its_own_kind(tmp_path: Path) -> None:
    # ``databse`` is close to the ``database`` sink, which is no source.
    code, lines = validate(
        tmp_path,
        """
        source: {type: databse}
        sinks: [{type: databse}]
        """,
    )
    assert code == 2
    [source] = [line for line in lines if line.startswith("$.source.type:")]
    [sink] = [line for line in lines if line.startswith("$.sinks[0].type:")]
    assert "did you mean" not in source, source
    assert "(did you mean 'database'?)" in sink, sink


def test_an_unknown_key_names_the_closest_field_at_its_path(tmp_path: Path) -> None:
    code, lines = validate(
        tmp_path,
        """
        source:
          type: bitbucket_rest
          config: {workspace: acme, hours: 4, auth: {emial: me@example.com}}
        enricher:
          - type: story_keys
        sinks:
          - type: json_artifact
            config: {artifact_dir: out}
        """,
    )
    assert code == 2
    for expected in (
        "$.enricher: unknown field; did you mean 'enrichers'?",
        "$.sinks[0].config.artifact_dir: unknown field; did you mean 'artifacts_dir'?",
        # The fields of the auth Struct, not of the source config around it.
        "$.source.config.auth.emial: unknown field; did you mean 'email'?",
    ):
        assert expected in lines, (expected, lines)


def test_a_settings_file_key_names_the_closest_settings_field(tmp_path: Path) -> None:
    code, lines = validate(
        tmp_path,
        """
        bitbucket:
          workspace: acme
          repositories: [api]
          default_branchs: [main]
          credentials: {access_token: t0ken}
        """,
    )
    assert code == 2
    assert "$.bitbucket.default_branchs: unknown field; did you mean 'default_branches'?" in lines


def test_nothing_is_suggested_when_nothing_is_close(tmp_path: Path) -> None:
    code, lines = validate(
        tmp_path,
        """
        source: {type: zzz}
        sinks: [{type: json_artifact, config: {qqq: 1}}]
        xyzzy: 1
        """,
    )
    assert code == 2
    assert "$.xyzzy: unknown field" in lines
    assert "$.sinks[0].config.qqq: unknown field" in lines
    [source] = [line for line in lines if line.startswith("$.source.type:")]
    assert source.startswith("$.source.type: unknown source type 'zzz'; installed types: [")
    assert not any("did you mean" in line for line in lines), lines


def test_a_valid_file_has_no_suggestion(tmp_path: Path) -> None:
    code, lines = validate(
        tmp_path,
        """
        source: {type: bitbucket_rest, config: {workspace: acme, hours: 4}}
        enrichers: [{type: story_keys}]
        sinks: [{type: json_artifact, config: {artifacts_dir: out}}]
        """,
    )
    assert code == 0, lines
    assert lines == [
        f"ok: {tmp_path / 'pipeline.yaml'}: source bitbucket_rest, 1 enricher(s), 1 sink(s)"
    ]


def test_did_you_mean_picks_the_closest_choice() -> None:
    assert did_you_mean("artifact_dir", ["artifacts_dir", "include_payload"]) == (
        "; did you mean 'artifacts_dir'?"
    )
    assert did_you_mean("zzz", ["artifacts_dir"]) == ""
