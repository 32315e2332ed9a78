"""Entry for the serve-mode subprocess test: the rcingest CLI plus a ticking server-like source."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import rcingest
from rcingest.cli import build_cli
from rcingest.plugins import make_plugin_manager


class TickSource(rcingest.Source[rcingest.ComponentConfig]):
    """Yields one repository record every 20 ms until stopped, then a last checkpoint."""

    low_latency = True

    def __init__(self, config: rcingest.ComponentConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        self._stopped = asyncio.Event()

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[rcingest.Record | rcingest.Checkpoint]:
        i = int(cursors.get("tick", {}).get("n", 0))
        print("ready", flush=True)
        while not self._stopped.is_set():
            i += 1
            yield rcingest.Repository(full_name=f"ws/r{i}")
            yield rcingest.Checkpoint("tick", {"n": i})
            await asyncio.sleep(0.02)
        print("drained", flush=True)

    async def stop(self) -> None:
        self._stopped.set()


class Plugin:
    @rcingest.hookimpl
    def register_sources(self, register: Any) -> None:
        register("tick", TickSource)


if __name__ == "__main__":
    manager = make_plugin_manager(extra=[("tick", Plugin())])
    build_cli(manager).main(sys.argv[1:], obj=manager, prog_name="rcingest")
