"""Scanners as plugins (issue 12): the hook, the pipeline's `scanners:`, the contract check."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import rcingest
from rcingest.config import load_pipeline
from rcingest.errors import ConfigError
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.runtime import make_context
from rcingest.scanning.model import DiffFile, Finding, fingerprint, redact_secret
from rcingest.testing import check_scanner_contract
from tests.test_core_plugins import _plugin

TOKEN = re.compile(r"acme_[0-9a-f]{32}")
SECRET = "acme_" + "0f1e2d3c" * 4


class AcmeTokens(rcingest.Scanner[rcingest.ComponentConfig]):
    """The example of docs/plugin-hooks.md."""

    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]:
        found = []
        for file in files:
            for added in file.added:
                for match in TOKEN.finditer(added.text):
                    secret = match.group()
                    found.append(
                        Finding(
                            path=file.path,
                            line_start=added.line,
                            line_end=added.line,
                            rule_id="acme.token",
                            rule_name="Acme API token",
                            severity="high",
                            fingerprint=fingerprint(self.fingerprint_key, "acme.token", secret),
                            excerpt=added.text.replace(secret, redact_secret(secret))[:160],
                            scanner=self.name,
                        )
                    )
        return found


class LeakyScanner(AcmeTokens):
    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]:
        found = await super().scan(files)
        return [Finding(**{**_fields(f), "excerpt": SECRET}) for f in found]


def _fields(finding: Finding) -> dict[str, Any]:
    return {k: getattr(finding, k) for k in finding.__struct_fields__}


def manager() -> Any:
    def register_scanners(register: Any) -> None:
        register("acme_tokens", AcmeTokens)

    return make_plugin_manager(extra=[("acme", _plugin(register_scanners=register_scanners))])


def pipeline(tmp_path: Path, scanner_type: str = "acme_tokens") -> Path:
    path = tmp_path / "scan.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            source: {{type: records_file, config: {{path: none.jsonl}}}}
            scanners:
              - type: {scanner_type}
                name: acme
            scanning:
              fingerprint_key: pipeline-key-0123456789abcdef
            sinks: [{{type: database, config: {{database: '{tmp_path}/x.db'}}}}]
            """
        )
    )
    return path


def test_hook_register_scanners(tmp_path: Path) -> None:
    registry = Registry(manager())
    assert registry.get("scanner", "acme_tokens").component is AcmeTokens
    loaded = load_pipeline(pipeline(tmp_path), registry)
    runner = Runner(loaded, make_context(loaded))
    [scanner] = runner.context.scanners
    assert isinstance(scanner, AcmeTokens) and scanner.name == "acme"
    assert scanner.fingerprint_key == b"pipeline-key-0123456789abcdef"


def test_an_unknown_scanner_type_is_named_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_pipeline(pipeline(tmp_path, "acme_tokenz"), Registry(manager()))
    text = "\n".join(caught.value.problems)
    assert "$.scanners[0].type" in text and "acme_tokens" in text


async def test_the_documented_scanner_passes_the_contract(tmp_path: Path) -> None:
    await check_scanner_contract(
        lambda ctx: AcmeTokens(rcingest.ComponentConfig(), ctx),
        secret=SECRET,
        line_text=f"ACME_TOKEN = '{SECRET}'",
        tmp_path=tmp_path,
    )


async def test_the_contract_catches_a_scanner_that_keeps_the_secret(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="holds the secret"):
        await check_scanner_contract(
            lambda ctx: LeakyScanner(rcingest.ComponentConfig(), ctx),
            secret=SECRET,
            line_text=f"ACME_TOKEN = '{SECRET}'",
            tmp_path=tmp_path,
        )


def test_the_docs_example_is_this_tests_scanner() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugin-hooks.md").read_text()
    section = doc.split("## register_scanners(register)", 1)[1].split("\n## ", 1)[0]
    assert "class AcmeTokens(rcingest.Scanner" in section
    assert 'register("acme_tokens", AcmeTokens)' in section
