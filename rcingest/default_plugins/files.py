"""Built-in ``records_file`` source: replay records from a JSON Lines file.

Each line is one tagged record as the ``rcingest.records`` Structs encode it
(``{"type": "commit", ...}``), e.g. the output of the rcingest-jsonl sink. The
source checkpoints its line number every ``checkpoint_every`` records, so an
interrupted replay resumes where the sinks last flushed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

from rcingest.errors import RunFailed
from rcingest.hookspecs import RegisterSource, hookimpl
from rcingest.interfaces import ComponentConfig, Source
from rcingest.records import Checkpoint, Record

_decode = msgspec.json.Decoder(Record).decode


class RecordsFileConfig(ComponentConfig):
    path: str
    checkpoint_every: Annotated[int, msgspec.Meta(ge=1)] = 1000


class RecordsFileSource(Source[RecordsFileConfig]):
    """Replays tagged records from a JSON Lines file, resumably."""

    Config = RecordsFileConfig

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[Record | Checkpoint]:
        path = Path(self.config.path)
        stream = f"file:{path.name}"
        done = int(cursors.get(stream, {}).get("line", 0))
        self.context.source_info = {"type": "records_file", "path": str(path)}
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise RunFailed(f"{path}: cannot open: {exc.strerror}") from None
        line_no = 0
        with fh:
            for line_no, line in enumerate(fh, start=1):
                if line_no <= done or not line.strip():
                    continue
                try:
                    yield _decode(line)
                except msgspec.DecodeError as exc:
                    raise RunFailed(f"{path}:{line_no}: not a record: {exc}") from None
                if line_no % self.config.checkpoint_every == 0:
                    yield Checkpoint(stream, {"line": line_no})
        yield Checkpoint(stream, {"line": max(line_no, done)})


@hookimpl
def register_sources(register: RegisterSource) -> None:
    register("records_file", RecordsFileSource)
