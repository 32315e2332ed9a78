"""Dates and times written by people, read the same way in YAML and on the command line.

msgspec wants RFC 3339 with seconds (``2026-11-01T00:00:00``); people write
``2026-11-01`` or ``2026-11-01T08:00``. ``--since``/``--until`` and any
``datetime`` field of a config file go through :func:`iso_moment`, so both
mean the same instant: a date alone is the start of that day, and a value
without an offset stays naive, to be read in the pipeline's timezone.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

import msgspec

__all__ = ["iso_moment", "normalise_moments"]


def iso_moment(value: str | date) -> str:
    """``value`` as the RFC 3339 text msgspec reads; ``ValueError`` if it is no ISO 8601 moment."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return datetime.combine(value, time()).isoformat()
    return datetime.fromisoformat(value.strip()).isoformat()


def _wants_datetime(info: msgspec.inspect.Type) -> bool:
    if isinstance(info, msgspec.inspect.DateTimeType):
        return True
    if isinstance(info, msgspec.inspect.UnionType):
        return any(isinstance(t, msgspec.inspect.DateTimeType) for t in info.types)
    return False


def _normalise(value: Any, info: msgspec.inspect.Type) -> Any:
    if isinstance(info, msgspec.inspect.UnionType):
        # A nested Struct or a list inside ``X | None``: recurse into the branch that fits.
        for branch in info.types:
            if isinstance(branch, msgspec.inspect.StructType) and isinstance(value, dict):
                return _normalise(value, branch)
            if isinstance(branch, msgspec.inspect.ListType) and isinstance(value, list):
                return _normalise(value, branch)
    if _wants_datetime(info) and isinstance(value, str | date):
        try:
            return iso_moment(value)
        except ValueError:
            return value  # left for validation, which names the field
    if isinstance(info, msgspec.inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        return {k: _normalise(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(info, msgspec.inspect.ListType) and isinstance(value, list):
        return [_normalise(v, info.item_type) for v in value]
    return value


def normalise_moments(data: Any, struct_type: type) -> Any:
    """``data`` with every value of a ``datetime`` field of ``struct_type`` made RFC 3339.

    Values that are no ISO 8601 date or time are left alone for validation to
    report; so is everything that is not a datetime field.
    """
    return _normalise(data, msgspec.inspect.type_info(struct_type))
