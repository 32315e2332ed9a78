"""Secret rules in the YAML format Nosey Parker and Titus share, compiled for Python's ``re``.

A rule file has a top-level ``rules:`` list; each rule has ``name``, ``id``
(at most 20 characters, alphanumeric segments joined by ``.`` or ``-``),
``pattern`` (a regular expression with at least one capture group: the
secret is the group named ``token``, else the first group), and optionally
``examples`` and ``negative_examples`` (every shipped rule's are tests),
``references``, ``categories`` and ``description``. rcingest adds three
optional keys: ``keywords`` (the rule runs only on text containing one of
them, case-insensitively: the prefilter that keeps the cost per byte low),
``min_entropy`` (Shannon bits per character the secret must reach) and
``severity``. Unknown keys are errors; every problem names the file and the
rule's YAML path.

Nosey Parker's and Titus's patterns are Rust/Go regular expressions; the few
differences that matter here are translated (``\\z`` becomes ``\\Z``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import msgspec

from rcingest.errors import ConfigError
from rcingest.scanning.model import Severity
from rcingest.yaml_file import read_yaml

__all__ = ["CompiledRule", "Rule", "RuleFile", "builtin_rules_path", "compile_rule", "load_rules"]

_ID = re.compile(r"^[A-Za-z0-9]+(?:[.-][A-Za-z0-9]+)*$")


class Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One rule as written in a rule file."""

    name: str
    id: Annotated[str, msgspec.Meta(max_length=20)]
    pattern: str
    examples: list[str] = []
    negative_examples: list[str] = []
    references: list[str] = []
    categories: list[str] = []
    description: str | None = None
    keywords: list[str] = []
    min_entropy: Annotated[float, msgspec.Meta(ge=0, le=8)] | None = None
    severity: Severity = "high"


class RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    rules: list[Rule]


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to run."""

    id: str
    name: str
    regex: re.Pattern[str]
    #: Lower-cased prefilter words; empty: the rule always runs.
    keywords: tuple[str, ...]
    min_entropy: float | None
    severity: Severity
    examples: tuple[str, ...]
    negative_examples: tuple[str, ...]
    generic: bool

    def secret(self, match: re.Match[str]) -> str:
        """The secret a match found: the ``token`` group, else the first non-empty group."""
        if "token" in self.regex.groupindex and match.group("token"):
            return match.group("token")
        for value in match.groups():
            if value:
                return value
        return match.group(0)

    def span(self, match: re.Match[str]) -> tuple[int, int]:
        """Where the secret is in the scanned text."""
        if "token" in self.regex.groupindex and match.group("token"):
            return match.span("token")
        for i, value in enumerate(match.groups(), start=1):
            if value:
                return match.span(i)
        return match.span()


def _translate(pattern: str) -> str:
    # Rust's end-of-text anchor; Python spells it \Z.
    return re.sub(r"(?<!\\)\\z", r"\\Z", pattern)


def compile_rule(rule: Rule, where: str) -> CompiledRule:
    """``rule`` compiled; ``ConfigError`` naming ``where`` (file and YAML path) otherwise."""
    if not _ID.match(rule.id):
        raise ConfigError(
            f"{where}.id: {rule.id!r} is not a rule id (alphanumeric segments joined by . or -)"
        )
    try:
        regex = re.compile(_translate(rule.pattern))
    except re.error as exc:
        raise ConfigError(f"{where}.pattern: invalid regular expression: {exc}") from None
    if regex.groups < 1:
        raise ConfigError(f"{where}.pattern: needs a capture group around the secret")
    return CompiledRule(
        id=rule.id,
        name=rule.name,
        regex=regex,
        keywords=tuple(k.lower() for k in rule.keywords if k),
        min_entropy=rule.min_entropy,
        severity=rule.severity,
        examples=tuple(rule.examples),
        negative_examples=tuple(rule.negative_examples),
        generic="generic" in rule.categories,
    )


def builtin_rules_path() -> Path:
    """The rule file rcingest ships (``rcingest/scanning/rules/default.yml``)."""
    return Path(str(files("rcingest").joinpath("scanning", "rules", "default.yml")))


def _load_file(path: Path) -> list[CompiledRule]:
    from rcingest.validation import errors_for

    if not path.is_file():
        # read_yaml would call it a pipeline file.
        raise ConfigError(f"{path}: no such rule file")
    data = read_yaml(path)
    problems = errors_for(data, RuleFile, "$")
    if problems:
        raise ConfigError(f"{path}: {problems[0]}", [f"{path}: {p}" for p in problems])
    parsed = msgspec.convert(data, RuleFile)
    return [compile_rule(rule, f"{path}: $.rules[{i}]") for i, rule in enumerate(parsed.rules)]


def load_rules(paths: Sequence[str | Path] = (), *, builtin: bool = True) -> list[CompiledRule]:
    """The shipped rules (unless ``builtin=False``) and those of ``paths``; ids are unique."""
    sources: list[Path] = ([builtin_rules_path()] if builtin else []) + [Path(p) for p in paths]
    rules: list[CompiledRule] = []
    seen: dict[str, Path] = {}
    for path in sources:
        for rule in _load_file(path):
            if rule.id in seen:
                raise ConfigError(f"{path}: rule id {rule.id!r} is also defined in {seen[rule.id]}")
            seen[rule.id] = path
            rules.append(rule)
    if not rules:
        raise ConfigError("secrets scanner: no rules (builtin: false and no rule files)")
    return rules
