"""Descriptions in generated JSON Schemas, independent of how msgspec renders docstrings.

msgspec copies a Struct's docstring into ``description``; 0.22 dedented it and 0.23 keeps
the source indentation. The committed schemas must not change with that, so every
description is normalised here the way :func:`inspect.cleandoc` reads a docstring.
"""

from __future__ import annotations

import inspect
import json
from typing import Any


def clean_descriptions(node: Any) -> Any:
    """``node`` with every schema ``description`` string dedented and stripped."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [clean_descriptions(item) for item in node]
    return node


def dumps(schema: dict[str, Any]) -> str:
    """A schema as committed: indented JSON, keys in generation order, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"
