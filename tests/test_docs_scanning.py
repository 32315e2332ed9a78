"""docs/scanning.md stays true: its rules table, its examples, the tests it names.

The rules table is rebuilt from ``load_rules()``; the rule file and the
``scanners:`` examples are loaded and validated as written; the
``scan-diff`` example runs in bash and must print the doc's sample output;
every ``tests/PATH::TEST`` the page names must exist; the records page lists
every field of the scan records; the limits the page quotes are the code's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rcingest.scanning import report
from rcingest.scanning.engine import MAX_EXCERPT, SecretsEngine
from rcingest.scanning.keys import DEFAULT_KEY_FILE
from rcingest.scanning.model import MAX_SHOWN, Finding
from rcingest.scanning.records import PullRequestScan
from rcingest.scanning.rules import CompiledRule, load_rules
from rcingest.scanning.settings import DEFAULT_MAX_DIFF_BYTES
from tests.test_core_docs import _documented_fields
from tests.test_docs_snippets import FRAGMENT_BASE, Block, blocks

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "scanning.md"
BIN = Path(sys.executable).parent
TIMEOUT = 120


def text() -> str:
    return DOC.read_text(encoding="utf-8")


def between(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text(), re.S)
    assert match, f"docs/scanning.md has no {name}:start/end markers"
    return match.group(1)


def rule_row(rule: CompiledRule) -> str:
    keywords = ", ".join(f"`{k}`" for k in rule.keywords) or "(none: always runs)"
    entropy = "-" if rule.min_entropy is None else str(rule.min_entropy)
    return f"| `{rule.id}` | {rule.name} | {rule.severity} | {keywords} | {entropy} |"


def rules_table() -> str:
    head = ["| id | name | severity | keywords | min_entropy |", "|---|---|---|---|---|"]
    return "\n".join(head + [rule_row(r) for r in load_rules()]) + "\n"


def test_the_rules_table_is_the_shipped_rules() -> None:
    expected = rules_table()
    assert between("rules-table") == expected, (
        "docs/scanning.md's rules table differs from load_rules(); paste this between "
        f"the rules-table markers:\n\n{expected}"
    )


def doc_block(contains: str, info: str) -> Block:
    found = [b for b in blocks(DOC) if b.info == info and contains in b.body]
    assert len(found) == 1, f"docs/scanning.md: {len(found)} ```{info} blocks with {contains!r}"
    return found[0]


def environ() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out["NO_COLOR"] = "1"
    return out


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the doc's own commands, bounded
        cmd, cwd=cwd, env=environ(), capture_output=True, text=True, timeout=TIMEOUT
    )


def test_the_rule_file_example_loads_and_its_examples_hold(tmp_path: Path) -> None:
    path = tmp_path / "acme-rules.yml"
    path.write_text(doc_block("acme.token.1", "yaml").body, encoding="utf-8")
    rules = load_rules([path])
    [acme] = [r for r in rules if r.id == "acme.token.1"]
    assert acme.examples and acme.negative_examples
    engine = SecretsEngine(rules, b"docs-scanning-key-0123")
    for example in acme.examples:
        found, _ = engine.scan_text("x.env", example)
        assert [f.rule_id for f in found] == ["acme.token.1"], example
    for negative in acme.negative_examples:
        found, _ = engine.scan_text("x.env", negative)
        assert found == [], negative


def test_the_scanners_example_validates_and_uses_its_rule_file(tmp_path: Path) -> None:
    (tmp_path / "acme-rules.yml").write_text(doc_block("acme.token.1", "yaml").body)
    fragment = yaml.safe_load(doc_block("rules: [acme-rules.yml]", "yaml").body)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump({**FRAGMENT_BASE, **fragment}), encoding="utf-8")
    done = run([str(BIN / "rcingest"), "validate", str(pipeline)], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    secret = "acme_3f9a1c7e5b2d4086af1e9c3b7d5a2f60"
    diff = tmp_path / "change.diff"
    diff.write_text(
        "diff --git a/app.env b/app.env\n--- a/app.env\n+++ b/app.env\n"
        f"@@ -0,0 +1,2 @@\n+ACME_TOKEN={secret}\n+DB_PASSWORD='Tq7#mZ2!vKp9@Lr4'\n"
    )
    cmd = [str(BIN / "rcingest"), "scan-diff", str(diff), "--config", str(pipeline)]
    done = run([*cmd, "--format", "json"], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    # The rule file's rule finds the token; the allowlist's rc.generic.1 allows the password.
    assert '"rule_id": "acme.token.1"' in done.stdout and '"allowed": 1' in done.stdout
    assert secret not in done.stdout + done.stderr
    assert not (tmp_path / DEFAULT_KEY_FILE).exists()  # trying rules writes no key file


def normalise(output: str) -> list[str]:
    return [
        re.sub(r"\b[0-9a-f]{12}\b", "<fingerprint>", line).rstrip() for line in output.splitlines()
    ]


def test_the_scan_diff_example_prints_what_the_doc_shows(tmp_path: Path) -> None:
    example = doc_block("rcingest scan-diff change.diff", "bash")
    shown = doc_block("WHERE", "text")
    assert shown.line > example.line
    # One stream, as a terminal shows it: scan-diff's count goes to stderr.
    done = run(["bash", "-c", "exec 2>&1\n" + example.body], tmp_path)
    assert done.returncode == 0, done.stdout  # the block's last command is the echo
    assert normalise(done.stdout) == normalise(shown.body), (
        f"the doc shows:\n{shown.body}\nthe example printed:\n{done.stdout}"
    )
    assert not (tmp_path / "data").exists()  # no key file: a throwaway key


def named_tests() -> list[tuple[str, str]]:
    return sorted(set(re.findall(r"(tests/[\w/]+\.py)::(\w+)", text())))


def test_the_bad_input_table_names_a_test_in_every_row() -> None:
    rows = [r for r in between("bad-input").splitlines() if r.startswith("| ")][1:]
    assert len(rows) >= 10
    for row in rows:
        assert re.search(r"tests/[\w/]+\.py::\w+", row.split("|")[-2]), row


@pytest.mark.parametrize(("path", "name"), named_tests(), ids=lambda v: str(v))
def test_every_test_the_page_names_exists(path: str, name: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert re.search(rf"^(async )?def {name}\(", source, re.M), f"no {name} in {path}"


@pytest.mark.parametrize(
    ("title", "struct"), [("PullRequestScan", PullRequestScan), ("Finding", Finding)]
)
def test_records_doc_lists_every_scan_field(title: str, struct: type) -> None:
    doc = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")
    assert _documented_fields(doc, title) == list(struct.__struct_fields__)


@pytest.mark.parametrize(
    "quoted",
    [
        f"(default `{DEFAULT_MAX_DIFF_BYTES}`",
        f"`{DEFAULT_KEY_FILE}`",
        f"at most {MAX_SHOWN} leading characters",
        f"{MAX_EXCERPT} characters around the secret",
        f"batches of at most {report.MAX_BATCH} and at most {report.MAX_ANNOTATIONS:,} per report",
        f"marker line `{report.MARKER} · head",
        f"Rows stop before {report.MAX_COMMENT:,} characters",
        "(mode 0600)",
        "`key` (default `rcingest-secrets`",
        "`report_id` (default `rcingest-secrets`",
        "`require_passing_builds_to_merge`",
    ],
)
def test_the_limits_the_page_quotes_are_the_codes(quoted: str) -> None:
    # Words compared, not line breaks: the page is wrapped by hand.
    assert quoted in " ".join(text().split())


def test_the_quoted_defaults_are_the_sinks_and_scanners() -> None:
    from rcingest.default_plugins.scanners import SarifConfig
    from rcingest.default_plugins.writeback.comment import CommentConfig
    from rcingest.default_plugins.writeback.insights import CodeInsightsConfig
    from rcingest.default_plugins.writeback.status import RESTRICTION, BuildStatusConfig

    status = BuildStatusConfig()
    assert (status.key, status.name, status.unscannable) == (
        "rcingest-secrets",
        "rcingest secrets",
        "FAILED",
    )
    assert status.require_passing_builds is False and RESTRICTION in text()
    assert CodeInsightsConfig().report_id == "rcingest-secrets"
    assert CommentConfig().on_clean == "update"
    sarif = SarifConfig(command=["x"])
    assert (sarif.timeout, sarif.ok_codes) == (120.0, [0, 1])
    assert "| `timeout` | `120` |" in text() and "| `ok_codes` | `[0, 1]` |" in text()
    # Key-file mode, as keys.py creates it.
    assert "0o600" in (ROOT / "rcingest" / "scanning" / "keys.py").read_text()
