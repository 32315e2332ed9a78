"""The ``bitbucket_rest`` source: a scheduled scan of a Bitbucket Cloud workspace.

Walks the chosen repositories and branches newest first within the window
(``hours`` or ``since``/``until``, in the pipeline's timezone), and emits per
repository: the ``Repository``, its ``PullRequest`` records updated in the
window, each commit once (with every branch it was reached from, its files
and the pull requests containing it), then a ``Checkpoint`` per branch.
``docs/bitbucket-rest.md`` is the user's guide.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from rcingest.bitbucket import api
from rcingest.bitbucket.config import ClientConfig, check_client_config
from rcingest.bitbucket.parse import repository_from_api
from rcingest.bitbucket.window import branch_window, covered_start, resolve_window
from rcingest.hookspecs import hookimpl
from rcingest.interfaces import RunContext, Source, Window
from rcingest.records import Checkpoint, Record, Repository

# The client and the scan import aiohttp, yarl and backoff: they are imported
# when a source is built for a run, not when plugins are discovered or a
# pipeline is validated (issue 11: start-up).
if TYPE_CHECKING:
    import click

    from rcingest.hookspecs import RegisterSource

__all__ = ["BitbucketRestConfig", "BitbucketRestSource"]


class BitbucketRestConfig(ClientConfig, kw_only=True):
    """``source.config`` of ``type: bitbucket_rest`` (plus the client fields it inherits)."""

    #: Workspace slug (or ``{uuid}``).
    workspace: str
    #: Slugs or ``workspace/slug``; omitted = every repository matching the filters below.
    repositories: list[str] | None = None
    #: BBQL filter for the repository listing, e.g. ``project.key = "REL"``.
    q: str | None = None
    role: Literal["member", "contributor", "admin", "owner"] | None = None
    is_private: bool | None = None
    language: str | None = None
    #: Only repositories updated in the last N days.
    updated_within_days: Annotated[float, msgspec.Meta(gt=0)] | None = None
    #: Branches to scan in every repository; omitted = each repository's main branch.
    default_branches: list[str] | None = None
    #: Window: the last N hours (up to ``until`` or now) ...
    hours: Annotated[float, msgspec.Meta(gt=0)] | None = None
    #: ... or from ``since`` to ``until`` (naive values are in the pipeline's timezone).
    since: datetime | None = None
    until: datetime | None = None
    commits: bool = True
    diffstat: bool = True
    pull_requests: bool = True
    #: Start each branch at the end of its last successful scan (minus the overlap).
    incremental: bool = False
    overlap_minutes: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    #: Not incremental: skip the part of the window a saved cursor already covers.
    resume: bool = False
    #: Early stop: this many consecutive commits older than the window start ...
    early_stop_commits: Annotated[int, msgspec.Meta(ge=1)] = 100
    #: ... the last of them older than the start by this margin.
    early_stop_margin_minutes: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    #: Repositories scanned at the same time (each holds its window's commits).
    parallel_repositories: Annotated[int, msgspec.Meta(ge=1)] = 4

    def __post_init__(self) -> None:
        if self.hours is not None and self.since is not None:
            raise ValueError("hours and since exclude each other; set one")
        if self.since is not None and self.until is not None:
            since, until = self.since, self.until
            if (since.tzinfo is None) == (until.tzinfo is None) and since >= until:
                raise ValueError("since must be before until")


def _window(config: BitbucketRestConfig, context: RunContext) -> Window:
    return resolve_window(
        context.started_at,
        context.timezone,
        hours=config.hours,
        since=config.since,
        until=config.until,
    )


def _full_name(workspace: str, entry: str) -> str:
    entry = entry.strip().strip("/")
    return entry if "/" in entry else f"{workspace}/{entry}"


def _unique(repos: list[Repository]) -> list[Repository]:
    """``repos`` without repeats (Bitbucket names are case-insensitive), first one kept."""
    seen: dict[str, Repository] = {}
    for repo in repos:
        seen.setdefault(repo.full_name.lower(), repo)
    return list(seen.values())


class BitbucketRestSource(Source[BitbucketRestConfig]):
    """Scans Bitbucket Cloud over REST; see the module docstring."""

    Config = BitbucketRestConfig

    def __init__(self, config: BitbucketRestConfig, context: RunContext) -> None:
        from rcingest.bitbucket.client import BitbucketClient

        super().__init__(config, context)
        # Fail at build time, before any request, on a bad window or auth mix.
        self.window = _window(config, context)
        self.client = BitbucketClient(
            config, context.stats, context.logger, secrets=context.secrets
        )

    @classmethod
    def preflight(cls, config: BitbucketRestConfig, context: RunContext) -> None:
        """``rcingest validate``: what the constructor refuses, without importing the client."""
        _window(config, context)
        check_client_config(config, context.logger)

    async def _repositories(self) -> list[Repository]:
        cfg = self.config
        if cfg.repositories is not None:
            # ``service-00`` and ``acme/service-00`` (or a name given twice)
            # are one repository: fetched, scanned and emitted once.
            by_key: dict[str, str] = {}
            for entry in cfg.repositories:
                name = _full_name(cfg.workspace, entry)
                by_key.setdefault(name.lower(), name)
            names = list(by_key.values())
            filters = [
                f
                for f in ("q", "role", "is_private", "language", "updated_within_days")
                if getattr(cfg, f) is not None
            ]
            if filters:
                self.context.logger.warning(
                    "repositories is set: %s only filter the workspace listing "
                    "and are ignored here",
                    ", ".join(filters),
                )
            values = await asyncio.gather(
                *(self.client.get_bytes(f"/repositories/{name}") for name in names)
            )
            # Two names may still reach one repository (a rename redirects).
            return _unique(
                [repository_from_api(msgspec.json.decode(v, type=api.Repository)) for v in values]
            )
        clauses = [f"({cfg.q})"] if cfg.q else []
        if cfg.is_private is not None:
            clauses.append(f"is_private = {str(cfg.is_private).lower()}")
        if cfg.language:
            clauses.append(f'language = "{cfg.language}"')
        if cfg.updated_within_days is not None:
            since = self.context.started_at - timedelta(days=cfg.updated_within_days)
            clauses.append(f"updated_on >= {since.astimezone(UTC).isoformat()}")
        params: dict[str, str | int | list[str]] = {}
        if clauses:
            params["q"] = " AND ".join(clauses)
        if cfg.role:
            params["role"] = cfg.role
        found: list[Repository] = []
        path = f"/repositories/{cfg.workspace}"
        async for page in self.client.typed_pages(path, api.Repository, params):
            found.extend(repository_from_api(v) for v in page)
        return sorted(_unique(found), key=lambda r: r.full_name)

    def _branches(
        self, repo: Repository, cursors: Mapping[str, dict[str, Any]]
    ) -> tuple[dict[str, Window], dict[str, datetime]]:
        """Each branch still to scan with its window, and the start its checkpoint covers."""
        from rcingest.default_plugins.bitbucket_rest.scan import stream_name

        names = self.config.default_branches or ([repo.mainbranch] if repo.mainbranch else [])
        out: dict[str, Window] = {}
        covered: dict[str, datetime] = {}
        for name in dict.fromkeys(names):
            cursor = cursors.get(stream_name(repo.full_name, name))
            window = branch_window(
                self.window,
                cursor,
                incremental=self.config.incremental,
                overlap=timedelta(minutes=self.config.overlap_minutes),
                resume=self.config.resume,
            )
            if window is None:
                self.context.stats.incr("bitbucket.branches_resumed")
            else:
                out[name] = window
                covered[name] = covered_start(window, cursor)
        return out, covered

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[Record | Checkpoint]:
        """Repositories, pull requests and commits in the window, a checkpoint per branch."""
        from rcingest.default_plugins.bitbucket_rest.scan import (
            ScanOptions,
            effective_window,
            scan_repository,
        )

        cfg, ctx = self.config, self.context
        ctx.window = self.window
        async with self.client:
            repos = await self._repositories()
            branch_names = sorted(
                {b for r in repos for b in (cfg.default_branches or [r.mainbranch or ""]) if b}
            )
            ctx.source_info = {
                "type": "bitbucket_rest",
                "workspace": cfg.workspace,
                "repositories": [r.full_name for r in repos],
                "branches": branch_names,
            }
            if not repos:
                ctx.logger.warning("workspace %s: no repository matched", cfg.workspace)
            plans = {r.full_name: self._branches(r, cursors) for r in repos}
            # The progress display's total (rcingest.progress.PLANNED_BRANCHES).
            ctx.stats.incr("plan.branches", sum(len(b) for b, _ in plans.values()))
            # ``incremental`` may reach back before the run window: report the
            # window actually read (pull requests are fetched for it too).
            widest: dict[str, Window] = {
                f"{repo}@{b}": w for repo, (bw, _) in plans.items() for b, w in bw.items()
            }
            ctx.window = effective_window(self.window, widest)
            opts = ScanOptions(
                window=self.window,
                commits=cfg.commits,
                diffstat=cfg.diffstat,
                pull_requests=cfg.pull_requests,
                stop_after=cfg.early_stop_commits,
                margin=timedelta(minutes=cfg.early_stop_margin_minutes),
                workers=cfg.concurrency,
                run_id=ctx.run_id,
            )
            # Results wait here in completion order; the bound keeps at most a
            # few repositories' commits in memory while the sinks catch up.
            results: asyncio.Queue[list[Record | Checkpoint] | BaseException] = asyncio.Queue(
                maxsize=1
            )
            slots = asyncio.Semaphore(cfg.parallel_repositories)

            async def one(repo: Repository) -> None:
                try:
                    async with slots:
                        branches, covered = plans[repo.full_name]
                        items = await scan_repository(
                            self.client, repo, branches, opts, ctx.logger, ctx.stats, covered
                        )
                        await results.put(items)
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    await results.put(exc)

            tasks = [asyncio.create_task(one(r), name=f"scan {r.full_name}") for r in repos]
            try:
                for _ in tasks:
                    item = await results.get()
                    if isinstance(item, BaseException):
                        raise item
                    for record in item:
                        yield record
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task


@hookimpl
def register_sources(register: RegisterSource) -> None:
    """Register the ``bitbucket_rest`` source type."""
    register("bitbucket_rest", BitbucketRestSource)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``rcingest demo`` (imported when it runs: it needs the runner and the fake)."""
    from rcingest.default_plugins.lazy_command import LazyCommand

    cli.add_command(LazyCommand("demo", "rcingest.demo:demo", DEMO_SUMMARY))


#: ``rcingest --help``'s line for ``demo``: the first paragraph of its docstring
#: (``tests/test_startup.py`` checks that the two agree).
DEMO_SUMMARY = "Run the example scan against a fake Bitbucket on loopback (no account, no network)."
