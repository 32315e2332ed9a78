"""Turn a mapping plus a msgspec Struct type into every problem, each with a YAML path.

msgspec stops at the first error, so the "show me everything" path validates
against the JSON Schema that msgspec generates, with jsonschema. A valid
mapping (the common case) is accepted by msgspec alone, and jsonschema is
imported only once there is something to report: ``rcingest validate`` on a
good file does not pay for it (issue 11: start-up). Messages are built here
from the error's kind, never from the offending value, because a value may be
a secret that came from the environment. An unknown key gets the closest
field name of its Struct ("did you mean"), a key being the user's own text.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import jsonschema

_JSON_TYPES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "array": "list",
    "object": "mapping",
    "null": "null",
}


def _py_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def yaml_path(prefix: str, parts: Iterable[Any]) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def did_you_mean(given: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``given``, or ``""`` if none is close."""
    close = difflib.get_close_matches(given, sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_field(key: Any, known: Iterable[str]) -> str:
    """The message for an unknown key among the ``known`` field names."""
    return "unknown field" + (did_you_mean(key, known) if isinstance(key, str) else "")


@functools.cache
def _validator(struct_type: type) -> jsonschema.Draft202012Validator:
    import jsonschema

    schema = msgspec.json.schema(struct_type)
    return jsonschema.Draft202012Validator(schema)


def _types_of(schema: dict[str, Any]) -> list[str]:
    if "type" in schema:
        t = schema["type"]
        return [t] if isinstance(t, str) else list(t)
    out: list[str] = []
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        out.extend(_types_of(sub))
    if "$ref" in schema:
        out.append("object")
    if "enum" in schema:
        out.append("one of " + ", ".join(repr(v) for v in schema["enum"]))
    return out


def _describe(error: jsonschema.ValidationError) -> list[tuple[list[Any], str]]:
    where = list(error.absolute_path)
    v = error.validator
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if v == "additionalProperties" and isinstance(error.instance, dict):
        known = set(schema.get("properties", {}))
        return [([*where, k], unknown_field(k, known)) for k in error.instance if k not in known]
    if v == "required" and isinstance(error.instance, dict):
        wanted = error.validator_value if isinstance(error.validator_value, list) else []
        return [([*where, k], "missing required field") for k in wanted if k not in error.instance]
    if v in ("anyOf", "oneOf"):
        fitting = _fitting_branch(error)
        if fitting:
            return [found for sub in fitting for found in _describe(sub)]
    if v == "type" or v in ("anyOf", "oneOf"):
        wanted = _types_of(schema)
        names = [_JSON_TYPES.get(t, t) for t in wanted]
        if names:
            return [
                (
                    where,
                    f"expected {' or '.join(dict.fromkeys(names))}, got {_py_type(error.instance)}",
                )
            ]
    if v in ("enum", "const"):
        value: Any = error.validator_value
        allowed = list(value) if v == "enum" else [value]
        return [(where, "expected one of " + ", ".join(repr(a) for a in allowed))]
    simple = {
        "minimum": "must be >= {}",
        "maximum": "must be <= {}",
        "exclusiveMinimum": "must be > {}",
        "exclusiveMaximum": "must be < {}",
        "minLength": "must have at least {} characters",
        "maxLength": "must have at most {} characters",
        "minItems": "must have at least {} items",
        "maxItems": "must have at most {} items",
        "pattern": "must match the pattern {}",
        "multipleOf": "must be a multiple of {}",
        "minProperties": "must have at least {} entries",
        "maxProperties": "must have at most {} entries",
    }
    if v in simple:
        return [(where, simple[str(v)].format(error.validator_value))]
    if v == "uniqueItems":
        return [(where, "must not repeat an item")]
    return [(where, f"invalid ({v})")]


def _fitting_branch(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The errors of the union branch whose type the value has, if one has it.

    ``hours: -4.0`` against ``float > 0 | None`` fails both branches; the
    ``null`` branch on the type, the number branch on its bound. Only the
    bound says what is wrong ("must be > 0"); "expected float or null" would not.
    """
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context or ():
        if sub.relative_schema_path:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    for errors in branches.values():
        wrong_type = any(e.validator == "type" and not e.relative_path for e in errors)
        if not wrong_type:
            return errors
    return []


def struct_problem(exc: msgspec.ValidationError, prefix: str) -> str:
    """One msgspec error rewritten as ``$.path: message`` under ``prefix``."""
    text = str(exc)
    message, _, path = text.rpartition(" - at `")
    if not message:
        message, path = text, "$`"
    path = path.rstrip("`")
    full = prefix + path[1:]
    message = message.replace("`", "")
    unknown = re.match(r"Object contains unknown field (\S+)", message)
    if unknown:
        # Not reached through errors_for (the schema names unknown keys, with a
        # suggestion, first); kept for callers converting on their own.
        return f"{full}.{unknown.group(1)}: unknown field"
    missing = re.match(r"Object missing required field (\S+)", message)
    if missing:
        return f"{full}.{missing.group(1)}: missing required field"
    return f"{full}: {message[:1].lower()}{message[1:]}"


def errors_for(data: Any, struct_type: type, prefix: str) -> list[str]:
    """Every problem of ``data`` against ``struct_type``, as ``$.path: message`` lines."""
    try:
        msgspec.convert(data, struct_type)
    except msgspec.ValidationError as exc:
        # The schema says nothing msgspec would not: what msgspec accepts has no
        # schema errors either, so the schema is consulted only from here on.
        first = struct_problem(exc, prefix)
    else:
        return []
    found: list[str] = []
    for error in sorted(_validator(struct_type).iter_errors(data), key=lambda e: list(e.path)):
        for where, message in _describe(error):
            found.append(f"{yaml_path(prefix, where)}: {message}")
    # Else a check the schema cannot express (a cross-field rule in __post_init__).
    return list(dict.fromkeys(found)) if found else [first]
