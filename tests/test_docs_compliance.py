"""docs/compliance.md and docs/records.md say what the compliance code does (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from rcingest.compliance.policy import _RULE_CLASSES, RULE_TYPES, _Rule
from rcingest.compliance.records import ComplianceEvaluation, RuleOutcome
from rcingest.compliance.report import MARKER
from rcingest.compliance.settings import DEFAULT_STATUS_KEY

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
RECORDS = (ROOT / "docs" / "records.md").read_text(encoding="utf-8")


def _fields(struct: type) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(struct)}


def test_every_rule_type_is_documented_with_its_options() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| .*? \| (.*) \|$", DOC, re.M))
    assert set(RULE_TYPES) <= set(rows), "rule types missing from the table"
    common = _fields(_Rule)
    for name, cls in _RULE_CLASSES.items():
        options = set(re.findall(r"`(\w+)`", rows[name]))
        own = _fields(cls) - common
        assert own == options, f"{name}: documented {sorted(options)}, fields {sorted(own)}"
    for field in common:
        assert f"| `{field}` |" in DOC


def test_the_names_the_doc_quotes_are_the_codes() -> None:
    assert DEFAULT_STATUS_KEY == "rcingest-compliance" and f"`{DEFAULT_STATUS_KEY}`" in DOC
    assert f"`{MARKER}`" in DOC


def test_records_md_lists_every_field() -> None:
    for struct in (ComplianceEvaluation, RuleOutcome):
        section = RECORDS.split(f"## {struct.__name__}\n", 1)[1].split("\n## ", 1)[0]
        listed = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
        assert listed == _fields(struct), struct.__name__
