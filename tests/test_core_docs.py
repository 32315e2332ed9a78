"""Docs and generated files stay in sync with the code."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import jsonschema
import pytest

from rcingest import hookspecs
from rcingest.config import load_pipeline
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.schema import dumps, generated_schemas

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "rcingest_spec")
)


def test_there_are_five_hooks() -> None:
    assert HOOKS == [
        "register_commands",
        "register_enrichers",
        "register_scanners",
        "register_sinks",
        "register_sources",
    ]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    doc = (ROOT / "docs" / "plugin-hooks.md").read_text()
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"\n## {hook}({params})\n" in doc


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook: str) -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", sources), f"no test_hook_{hook} test"


def test_committed_schemas_are_generated() -> None:
    registry = Registry(make_plugin_manager(only_builtins=True))
    for content, paths in generated_schemas(registry).values():
        for path in paths:
            committed = (ROOT / path).read_text()
            assert committed == dumps(content), f"{path} is stale: run `rcingest schema --write`"
            jsonschema.Draft202012Validator.check_schema(json.loads(committed))


@pytest.mark.parametrize("example", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate(example: Path) -> None:
    load_pipeline(example, Registry(make_plugin_manager()))


def test_example_configs_exist() -> None:
    names = {p.name for p in (ROOT / "config").glob("*.yaml")}
    assert {"pipeline.example.yaml", "webhook.example.yaml"} <= names


def _documented_fields(doc: str, title: str) -> list[str]:
    section = doc.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


@pytest.mark.parametrize(
    "struct",
    [
        "Repository",
        "Commit",
        "FileChange",
        "PullRequestRef",
        "PullRequest",
        "StoryKey",
        "WebhookDelivery",
        "Checkpoint",
    ],
)
def test_records_doc_lists_every_field(struct: str) -> None:
    from rcingest import records

    doc = (ROOT / "docs" / "records.md").read_text()
    fields = list(getattr(records, struct).__struct_fields__)
    assert _documented_fields(doc, struct) == fields
