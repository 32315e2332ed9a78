"""A small BBQL evaluator for the fake: ``field op value`` clauses joined by ``AND``.

Enough for what rcingest and its tests send (``name ~ "x"``, ``is_private =
true``, ``updated_on >= 2026-11-23T00:00:00+00:00``, ``project.key = "REL"``);
``OR`` and nested parentheses are refused with 400 like a query Bitbucket
cannot parse would be.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = ["BBQLError", "compile_query"]

_CLAUSE = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(!=|>=|<=|=|~|>|<)\s*("(?:[^"\\]|\\.)*"|\S+)\s*$'
)


class BBQLError(ValueError):
    """The query cannot be parsed."""


def _value(text: str) -> Any:
    if text.startswith('"'):
        return text[1:-1].replace('\\"', '"')
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise BBQLError(f"cannot parse value {text!r}") from None


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    if op == "~":
        return isinstance(actual, str) and str(wanted).lower() in actual.lower()
    if op == "=":
        return bool(actual == wanted)
    if op == "!=":
        return bool(actual != wanted)
    if actual is None or wanted is None:
        return False
    try:
        if op == ">=":
            return bool(actual >= wanted)
        if op == "<=":
            return bool(actual <= wanted)
        if op == ">":
            return bool(actual > wanted)
        return bool(actual < wanted)
    except TypeError:
        raise BBQLError(f"cannot compare with {wanted!r}") from None


def compile_query(query: str) -> Callable[[Callable[[str], Any]], bool]:
    """A predicate over a field getter; raises ``BBQLError`` for what it cannot parse."""
    text = query.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    if re.search(r"\bOR\b", text, re.IGNORECASE):
        raise BBQLError("OR is not supported by the fake")
    parts = re.split(r"\s+AND\s+", text, flags=re.IGNORECASE) if text else []
    clauses = []
    for part in parts:
        part = part.strip().strip("()").strip()
        match = _CLAUSE.match(part)
        if match is None:
            raise BBQLError(f"cannot parse {part!r}")
        clauses.append((match.group(1), match.group(2), _value(match.group(3))))

    def predicate(get: Callable[[str], Any]) -> bool:
        return all(_compare(get(name), op, wanted) for name, op, wanted in clauses)

    return predicate
