"""The ``bitbucket_repositories`` source: the workspace's repositories as an inventory.

Lists the workspace (``GET /repositories/{workspace}``, 100 per page, BBQL
``q`` passed through) and emits one ``Repository`` per repository: kept ones
``active``, the ones ``filters`` keep out ``filtered`` with the reason, and
tombstones (``deleted``) for repositories gone or renamed since the last
full sync (``rcingest.inventory.sync``). ``sync: incremental`` lists only
repositories updated since the last sync.

With ``scan: true`` and the pipeline's ``scanners:``, each active repository
whose main branch changed is shallow-cloned and secret-scanned
(``RepositoryScan``); one that vanished between listing and scanning is
tombstoned. The state (known repositories, their last scanned heads) is the
source's cursor, saved after every sink flushed. See docs/inventory.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from rcingest.bitbucket import api
from rcingest.bitbucket.config import ClientConfig, check_client_config
from rcingest.bitbucket.parse import repository_from_api
from rcingest.errors import ConfigError
from rcingest.hookspecs import hookimpl
from rcingest.interfaces import RunContext, Source
from rcingest.inventory.filters import RepositoryFilters, filtered_reason
from rcingest.inventory.sync import InventoryState, sync
from rcingest.records import Checkpoint, Record, Repository

if TYPE_CHECKING:
    from rcingest.hookspecs import RegisterSource

__all__ = ["CloneSettings", "RepositoriesConfig", "RepositoriesSource"]


class CloneSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Bounds of each shallow clone of a main branch."""

    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 500 * 1024 * 1024
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    #: Larger files are skipped (counted), not scanned.
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1024 * 1024
    #: The git executable.
    git: str = "git"
    #: HTTPS clone URL of each repository; ``{full_name}`` is ``workspace/slug``.
    #: Credentials go in a header, never in the URL (refused if present).
    url: str = "https://bitbucket.org/{full_name}.git"


class RepositoriesConfig(ClientConfig, kw_only=True):
    """``source.config`` of ``type: bitbucket_repositories``."""

    #: Workspace slug (or ``{uuid}``).
    workspace: str
    #: BBQL filter for the listing (``project.key = "REL"``): what it excludes is never seen.
    q: str | None = None
    filters: RepositoryFilters = msgspec.field(default_factory=RepositoryFilters)
    #: ``full``: list everything, tombstone what is gone; ``incremental``: only what changed.
    sync: Literal["full", "incremental"] = "full"
    #: Secret-scan each changed main branch with the pipeline's scanners.
    scan: bool = False
    clone: CloneSettings = msgspec.field(default_factory=CloneSettings)


def _check_scan(config: RepositoriesConfig, context: RunContext) -> None:
    if config.scan and not context.scanners:
        raise ConfigError("scan: true needs the pipeline's `scanners:` (e.g. type: secrets)")


def stream_name(workspace: str) -> str:
    return f"repositories:{workspace}"


class RepositoriesSource(Source[RepositoriesConfig]):
    """The inventory of one workspace; see the module docstring."""

    Config = RepositoriesConfig

    def __init__(self, config: RepositoriesConfig, context: RunContext) -> None:
        from rcingest.bitbucket.client import BitbucketClient

        super().__init__(config, context)
        _check_scan(config, context)
        self.client = BitbucketClient(
            config, context.stats, context.logger, secrets=context.secrets
        )

    @classmethod
    def preflight(cls, config: RepositoriesConfig, context: RunContext) -> None:
        check_client_config(config, context.logger)
        _check_scan(config, context)

    def _params(self, state: InventoryState, full: bool) -> dict[str, str | int | list[str]]:
        clauses = [f"({self.config.q})"] if self.config.q else []
        if not full and state.last_sync is not None:
            since = state.last_sync.astimezone(UTC).isoformat()
            clauses.append(f"updated_on >= {since}")
        params: dict[str, str | int | list[str]] = {"pagelen": 100}
        if clauses:
            params["q"] = " AND ".join(clauses)
        return params

    async def _listing(self, state: InventoryState, full: bool) -> list[Repository]:
        now = self.context.started_at
        out: list[Repository] = []
        path = f"/repositories/{self.config.workspace}"
        async for page in self.client.typed_pages(path, api.Repository, self._params(state, full)):
            for value in page:
                repo = repository_from_api(value)
                # Bitbucket updates ``updated_on`` on every push: the listing's
                # last activity until a repo:push delivery says more.
                repo.last_push = repo.updated_on
                reason = filtered_reason(repo, self.config.filters, now)
                if reason is not None:
                    repo.state, repo.state_reason = "filtered", reason
                out.append(repo)
        return out

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[Record | Checkpoint]:
        stream = stream_name(self.config.workspace)
        state = InventoryState.from_cursor(cursors.get(stream))
        # Nothing to be incremental from: the first sync is a full one.
        full = self.config.sync == "full" or state.last_full_sync is None
        ctx = self.context
        async with self.client:
            listed = await self._listing(state, full)
            records, new_state = sync(state, listed, full=full, now=ctx.started_at)
            ctx.source_info = {
                "type": "bitbucket_repositories",
                "workspace": self.config.workspace,
                "sync": "full" if full else "incremental",
                "listed": len(listed),
            }
            ctx.stats.incr("inventory.listed", len(listed))
            for record in records:
                ctx.stats.incr(f"inventory.{record.state}")
                yield record
            if self.config.scan:
                async for item in self._scans(state, new_state, listed):
                    yield item
        yield Checkpoint(stream=stream, state=new_state.to_cursor())

    async def _scans(
        self, before: InventoryState, after: InventoryState, listed: list[Repository]
    ) -> AsyncIterator[Record]:
        from rcingest.inventory.scanning import scan_changed

        async for item in scan_changed(self, before, after, listed):
            yield item


@hookimpl
def register_sources(register: RegisterSource) -> None:
    """Register the ``bitbucket_repositories`` source type."""
    register("bitbucket_repositories", RepositoriesSource)
