"""A complete pipeline against the fake Bitbucket: bitbucket_rest -> story_keys -> jsonl."""

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from rcingest.config import load_pipeline
from rcingest.interfaces import Window
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.records import Commit, Record
from rcingest.runtime import make_context
from rcingest.testing import FakeBitbucket, GenSpec

TOKEN = "fake-bitbucket-token"  # what the fake on loopback expects


async def test_a_scan_of_the_fake_bitbucket_ends_up_in_the_jsonl_file(tmp_path: Path) -> None:
    out = tmp_path / "out" / "records.jsonl"  # the sink creates the folder
    end = datetime(2026, 11, 20, 18, tzinfo=UTC)  # the fake's newest commit
    spec = GenSpec(repositories=2, branches=2, commits=40, end=end)
    async with FakeBitbucket(spec, expected_auth=f"Bearer {TOKEN}") as fake:
        pipeline_file = tmp_path / "pipeline.yaml"
        pipeline_file.write_text(
            f"""
name: jsonl-scan
timezone: America/Phoenix
source:
  type: bitbucket_rest
  config:
    base_url: {fake.base_url}
    workspace: acme
    auth: {{access_token: "${{BITBUCKET_TOKEN}}"}}
    since: "2026-11-19T00:00:00"
    until: "2026-11-20T12:00:00"
enrichers:
  - type: story_keys
sinks:
  - type: jsonl
    config: {{path: "{out}"}}
""",
            encoding="utf-8",
        )
        registry = Registry(make_plugin_manager())  # finds the installed plugins
        pipeline = load_pipeline(pipeline_file, registry, environ={"BITBUCKET_TOKEN": TOKEN})
        result = await Runner(pipeline, make_context(pipeline)).run()
        phoenix = ZoneInfo("America/Phoenix")
        window = Window(
            datetime(2026, 11, 19, tzinfo=phoenix), datetime(2026, 11, 20, 12, tzinfo=phoenix)
        )
        expected = fake.data.expected_commits(window, ["main"])

    assert result.status == "succeeded" and len(expected) > 10
    records = [msgspec.json.decode(line, type=Record) for line in out.read_bytes().splitlines()]
    commits = [r for r in records if isinstance(r, Commit)]
    assert {c.hash: (c.repository, set(c.branches)) for c in commits} == expected
    assert any(c.story_keys for c in commits)  # the enricher ran before the sink
    assert TOKEN not in out.read_text(encoding="utf-8")
