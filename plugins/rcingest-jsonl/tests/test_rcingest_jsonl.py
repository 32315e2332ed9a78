"""The example plugin, installed as a real distribution, used from a pipeline file."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from rcingest_jsonl import JsonlConfig, JsonlSink

from rcingest.cli import cli
from rcingest.plugins import Registry, describe_plugins, make_plugin_manager
from rcingest.records import Commit, Record
from rcingest.testing import CONTRACT_SECRETS, check_sink_contract, sample_records


def test_installed_and_listed() -> None:
    manager = make_plugin_manager()
    assert Registry(manager).get("sink", "jsonl").distribution == "rcingest-jsonl"
    listed = {p["distribution"] for p in describe_plugins(manager, include_builtins=False)}
    assert "rcingest-jsonl" in listed


def test_replays_records_into_a_jsonl_file(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"type":"repository","full_name":"acme/api"}\n'
        '{"type":"commit","hash":"' + "a" * 40 + '","repository":"acme/api",'
        '"date":"2026-11-20T10:00:00-07:00","message":"REL-1 fix"}\n'
    )
    out = tmp_path / "nested" / "out.jsonl"
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"source: {{type: records_file, config: {{path: '{source}'}}}}\n"
        f"sinks: [{{type: jsonl, config: {{path: '{out}', fsync: true}}}}]\n"
    )
    result = CliRunner().invoke(cli, ["run", str(pipeline), "-q"], obj=make_plugin_manager())
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in rows] == ["repository", "commit"]
    assert rows[1]["hash"] == "a" * 40 and rows[1]["message"] == "REL-1 fix"


def test_stdout(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"type":"repository","full_name":"acme/web"}\n')
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        f"source: {{type: records_file, config: {{path: '{source}'}}}}\nsinks: [{{type: jsonl}}]\n"
    )
    result = CliRunner().invoke(cli, ["run", str(pipeline), "-q"], obj=make_plugin_manager())
    assert result.exit_code == 0
    row = json.loads(result.output.strip())
    assert row["type"] == "repository" and row["full_name"] == "acme/web"


async def test_honours_the_sink_contract(tmp_path: Path) -> None:
    out = tmp_path / "out" / "records.jsonl"  # a folder that does not exist yet
    # The check searches every file written under tmp_path for the secrets it planted;
    # outputs= also makes it fail if the sink wrote somewhere else.
    await check_sink_contract(
        lambda ctx: JsonlSink(JsonlConfig(path=str(out), fsync=True), ctx),
        tmp_path=tmp_path,
        outputs=["out/records.jsonl"],
    )
    # Lines are an append-only log: the replay the contract makes is there twice, and
    # each line decodes back into the record written (the records_file source relies on
    # it), with the run's secrets masked.
    expected = [_masked(r) for r in sample_records()]
    lines = out.read_bytes().splitlines()
    assert [msgspec.json.decode(line, type=Record) for line in lines] == expected * 2


def _masked(record: Record) -> Record:
    if not isinstance(record, Commit):
        return record
    message = record.message
    for secret in CONTRACT_SECRETS:
        message = message.replace(secret, "***")
    return msgspec.structs.replace(record, message=message)


async def test_honours_the_sink_contract_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing lands in a file: dump= hands the check what the sink printed.
    printed: list[str] = []

    def dump() -> str:
        printed.append(capsys.readouterr().out)
        return printed[-1]

    await check_sink_contract(
        lambda ctx: JsonlSink(JsonlConfig(path="-"), ctx), tmp_path=tmp_path, dump=dump
    )
    assert printed[0].count('"type":"commit"') == 6  # three commits, written twice
