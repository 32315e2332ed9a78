"""Cursor storage for pipelines whose sinks do not store cursors themselves.

A JSON file, ``{source_id: {stream: state}}``, replaced atomically on every
save, so a crash leaves either the old or the new content, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rcingest.interfaces import StateStore
from rcingest.records import Checkpoint


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or chunks streamed in order) to a temporary file beside
    ``path``, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in [data] if isinstance(data, bytes) else data:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileStateStore(StateStore):
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    async def load_cursors(self, source_id: str) -> dict[str, dict[str, Any]]:
        return dict(self._read().get(source_id, {}))

    async def save_cursors(self, source_id: str, checkpoints: Sequence[Checkpoint]) -> None:
        durable = [cp for cp in checkpoints if cp.state is not None]
        if not durable:
            return
        data = self._read()
        streams = data.setdefault(source_id, {})
        for cp in durable:
            streams[cp.stream] = cp.state
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode())
