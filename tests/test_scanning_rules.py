"""The shipped secret rules: every example found, every negative example not (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rcingest.errors import ConfigError
from rcingest.scanning.engine import SecretsEngine
from rcingest.scanning.rules import CompiledRule, load_rules

RULES = load_rules()
ENGINE = SecretsEngine(RULES, b"rules-test-key-0123456789")
CASES = [(r, i, ex) for r in RULES for i, ex in enumerate(r.examples)]
NEGATIVES = [(r, i, ex) for r in RULES for i, ex in enumerate(r.negative_examples)]


def test_the_issue_s_kinds_are_covered() -> None:
    ids = {r.id for r in RULES}
    for wanted in ("np.aws.1", "np.aws.2", "np.pem.1", "np.github.1", "np.gitlab.1",
                   "np.slack.2", "np.stripe.1", "np.atlassian.1", "np.bitbucket.1",
                   "rc.atlassian.2", "rc.generic.1"):  # fmt: skip
        assert wanted in ids
    assert all(r.examples and r.negative_examples for r in RULES)


@pytest.mark.parametrize(("rule", "n", "example"), CASES, ids=[f"{r.id}-{n}" for r, n, _ in CASES])
def test_example_is_found_by_its_rule(rule: CompiledRule, n: int, example: str) -> None:
    found, _ = SecretsEngine([rule], b"k" * 16).scan_text("example.txt", example)
    assert [f.rule_id for f in found] == [rule.id]


@pytest.mark.parametrize(
    ("rule", "n", "example"), NEGATIVES, ids=[f"{r.id}-{n}" for r, n, _ in NEGATIVES]
)
def test_negative_example_is_found_by_no_rule(rule: CompiledRule, n: int, example: str) -> None:
    found, _ = ENGINE.scan_text("example.txt", example)
    assert found == [], [f.rule_id for f in found]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("rules:\n- {name: x, id: a.b, pattern: '(abc'}\n", "$.rules[0].pattern: invalid regular"),
        ("rules:\n- {name: x, id: a.b, pattern: 'abc'}\n", "$.rules[0].pattern: needs a capture"),
        ("rules:\n- {name: x, id: 'a b', pattern: '(a)'}\n", "$.rules[0].id"),
        ("rules:\n- {name: x, id: a.b, pattern: '(a)', colour: red}\n", "$.rules[0].colour"),
        ("rules:\n- {name: x, pattern: '(a)'}\n", "$.rules[0]"),
    ],
)
def test_a_bad_rule_file_is_named_with_its_path(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_rules([path], builtin=False)
    message = "\n".join(caught.value.problems)
    assert str(path) in message and where in message


def test_extra_rules_add_to_the_shipped_ones_and_ids_stay_unique(tmp_path: Path) -> None:
    extra = write(
        tmp_path,
        "rules:\n- {name: Acme, id: acme.1, pattern: '(acme_[0-9a-f]{32})', keywords: [acme_]}\n",
    )
    rules = load_rules([extra])
    assert len(rules) == len(RULES) + 1 and rules[-1].keywords == ("acme_",)
    dup = write(tmp_path, "rules:\n- {name: Again, id: np.aws.1, pattern: '(x)'}\n")
    with pytest.raises(ConfigError, match="also defined"):
        load_rules([dup])
