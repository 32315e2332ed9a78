"""Reading a pipeline file's YAML: one clear message for any syntax error.

Timestamps stay strings (msgspec parses them, in the pipeline's zone), and
``${VAR}`` references survive parsing wherever they are written, flow
mappings included, for ``rcingest.config.interpolate`` to replace.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rcingest.errors import ConfigError

__all__ = ["read_yaml"]


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings: msgspec parses them, in the pipeline's zone."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# ``${VAR}`` is hidden from the YAML parser: in a flow mapping (``auth: {email:
# ${EMAIL}}``) its braces would be read as YAML. Each reference becomes a
# placeholder of private-use characters of the same length (so the line and
# column of a YAML error stay right), and comes back, verbatim, in the parsed
# strings, where ``interpolate`` replaces it.
_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}\n]*)?\}")
_MARK, _FILL, _DIGIT0, _BASE = "\ue000", "\ue001", 0xE100, 0x1000
_HIDDEN = re.compile(f"{_MARK}([{chr(_DIGIT0)}-{chr(_DIGIT0 + _BASE - 1)}]{{2}}){_FILL}*")
_PRIVATE = re.compile(f"[{_MARK}-{chr(_DIGIT0 + _BASE - 1)}]")


def _hide_references(text: str) -> tuple[str, list[str]]:
    refs: list[str] = []
    if _PRIVATE.search(text):
        return text, refs  # the file uses these characters itself: parse it as it is

    def hide(match: re.Match[str]) -> str:
        index = len(refs)
        refs.append(match.group(0))
        digits = chr(_DIGIT0 + index // _BASE) + chr(_DIGIT0 + index % _BASE)
        return _MARK + digits + _FILL * (len(match.group(0)) - 3)

    hidden = _REF.sub(hide, text)
    return (hidden, refs) if len(refs) <= _BASE * _BASE else (text, [])


def _restore_references(node: Any, refs: list[str]) -> Any:
    if not refs:
        return node
    if isinstance(node, dict):
        return {_restore_references(k, refs): _restore_references(v, refs) for k, v in node.items()}
    if isinstance(node, list):
        return [_restore_references(v, refs) for v in node]
    if isinstance(node, str) and _MARK in node:

        def restore(match: re.Match[str]) -> str:
            high, low = (ord(c) - _DIGIT0 for c in match.group(1))
            return refs[high * _BASE + low]

        return _HIDDEN.sub(restore, node)
    return node


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; errors name the file, line and column, in one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start + 1})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    hidden, refs = _hide_references(text)
    try:
        data = yaml.load(hidden, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "cannot be parsed"
        raise ConfigError(f"{path}: invalid YAML at {where}: {problem}") from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(
            f"{path}: invalid YAML at line {line}, column {column}: "
            f"character U+{char:04X} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[:1] or ["cannot be parsed"]
        raise ConfigError(f"{path}: invalid YAML: {first[0]}") from None
    return _restore_references(data, refs)
