"""rcingest-jsonl: a sink that writes every record as one JSON line.

Published the way any third-party rcingest plugin is: its own distribution,
one ``[project.entry-points.rcingest]`` line, and a ``register_sinks`` hook.

    sinks:
      - type: jsonl
        config: {path: out/records.jsonl}   # or "-" for stdout

Lines are the tagged encoding of ``rcingest.records`` (``{"type": "commit", ...}``),
so ``rcingest``'s ``records_file`` source can replay them. Each run appends,
and a batch the runner replays after a crash is appended again (an
at-least-once log: deduplicate by key when reading). Secret values the run
knows (``context.secrets``) are written as ``***``, as rcingest's own sinks do.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

import msgspec

import rcingest
from rcingest.hookspecs import RegisterSink


class JsonlConfig(rcingest.ComponentConfig):
    #: File to append to; "-" writes to stdout.
    path: str = "-"
    #: fsync on every flush, so that a flushed batch survives a power cut.
    fsync: bool = False


class JsonlSink(rcingest.Sink[JsonlConfig]):
    """Appends each record as a JSON line; ``flush`` flushes (and optionally fsyncs) the file."""

    Config = JsonlConfig

    def __init__(self, config: JsonlConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        self._encoder = msgspec.json.Encoder()
        self._fh: IO[bytes] | None = None
        # Each secret as it appears inside a JSON string (escaped), longest
        # first so a secret containing another is masked whole.
        self._secrets = [
            msgspec.json.encode(s)[1:-1]
            for s in sorted(context.secrets, key=len, reverse=True)
            if s
        ]

    async def __aenter__(self) -> JsonlSink:
        if self.config.path == "-":
            self._fh = sys.stdout.buffer
        else:
            path = Path(self.config.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("ab")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self._fh is not sys.stdout.buffer:
                self._fh.close()
            self._fh = None

    async def write(self, batch: rcingest.Batch) -> None:
        assert self._fh is not None, "write() outside 'async with'"
        buf = bytearray()
        for record in batch.records:
            self._encoder.encode_into(record, buf, -1)
            buf += b"\n"
        data = bytes(buf)
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, b"***")
        self._fh.write(data)

    async def flush(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        if self.config.fsync and self._fh is not sys.stdout.buffer:
            os.fsync(self._fh.fileno())


@rcingest.hookimpl
def register_sinks(register: RegisterSink) -> None:
    register("jsonl", JsonlSink)
