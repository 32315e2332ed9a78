"""The one rule for NUL characters in text from Bitbucket: they are removed.

PostgreSQL ``text`` cannot hold U+0000 (an insert fails, so a webhook
delivery carrying one would be refused on every retry), while SQLite stores
it. So that both databases store the same thing, every record built from
Bitbucket JSON (REST pages and webhook payloads alike) goes through
:func:`strip_nul`: each NUL in each text field is dropped, nothing else
changes. Git itself forbids NUL in branch names and paths; in messages and
titles it carries no meaning.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import msgspec

__all__ = ["strip_nul"]

T = TypeVar("T")


_encoder = msgspec.json.Encoder()


def strip_nul(value: T) -> T:
    """``value`` with every NUL character removed from the strings it holds.

    Walks Structs, lists, tuples and dicts; returns ``value`` itself when it
    holds no NUL. The usual case is decided in C: JSON spells NUL only as
    ``\\u0000``, so a value whose encoding lacks it has none, and is returned
    without walking it (walking every field in Python was 15% of the
    normaliser's main thread, bench/README.md).
    """
    try:
        if b"\\u0000" not in _encoder.encode(value):
            return value
    except (TypeError, ValueError, OverflowError):
        pass  # not encodable as JSON (an odd key, a foreign object): walk it
    return cast(T, _strip(value))


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, msgspec.Struct):
        changed = {}
        for name in value.__struct_fields__:
            old = getattr(value, name)
            new = _strip(old)
            if new is not old:
                changed[name] = new
        return msgspec.structs.replace(value, **changed) if changed else value
    if isinstance(value, list | tuple):
        items = [_strip(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        pairs = {_strip(k): _strip(v) for k, v in value.items()}
        same = len(pairs) == len(value) and all(
            k in value and value[k] is v for k, v in pairs.items()
        )
        return value if same else pairs
    return value
