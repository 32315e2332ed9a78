"""Scanning one repository: walk its branches, fetch diffstats and pull requests, emit once.

A commit can be on several branches, so a repository's commits are emitted
only after every branch of it was walked; each commit carries all the
branches it was reached from, its files (diffstat, fetched by workers while
the listing goes on, once per commit) and the pull requests containing it.
Then one checkpoint per walked branch says that branch is complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rcingest.bitbucket import api
from rcingest.bitbucket.client import BitbucketClient, BitbucketError
from rcingest.bitbucket.parse import commit_from_api, files_from_diffstat, pull_request_from_api
from rcingest.bitbucket.window import EarlyStop
from rcingest.interfaces import Stats, Window
from rcingest.records import Checkpoint, Commit, PullRequest, PullRequestRef, Record, Repository

__all__ = ["ScanOptions", "effective_window", "scan_repository", "stream_name"]

_PR_STATES = ["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]


def stream_name(repository: str, branch: str) -> str:
    """The checkpoint stream of one branch: ``workspace/slug@branch``."""
    return f"{repository}@{branch}"


def effective_window(window: Window, branches: Mapping[str, Window]) -> Window:
    """The run window widened to the earliest branch start (``incremental`` may reach back)."""
    start = min([window.start, *(w.start for w in branches.values())])
    return Window(start.astimezone(window.start.tzinfo), window.end)


def _iso(moment: Any) -> str:
    return str(moment.astimezone(UTC).isoformat())


@dataclass
class ScanOptions:
    """What a repository scan fetches and how it stops."""

    window: Window
    commits: bool = True
    diffstat: bool = True
    pull_requests: bool = True
    stop_after: int = 100
    margin: timedelta = timedelta(hours=1)
    workers: int = 8
    run_id: str = ""


@dataclass
class _State:
    commits: dict[str, Commit] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    walked: list[str] = field(default_factory=list)


async def _walk_branch(
    client: BitbucketClient,
    repo: str,
    branch: str,
    window: Window,
    opts: ScanOptions,
    state: _State,
    diff_queue: asyncio.Queue[str | None] | None,
    logger: logging.Logger,
    stats: Stats,
) -> None:
    stop = EarlyStop(window.start, stop_after=opts.stop_after, margin=opts.margin)
    path = f"/repositories/{repo}/commits"
    try:
        async for page in client.typed_pages(path, api.Commit, {"include": branch}):
            for value in page:
                if branch not in state.heads:
                    state.heads[branch] = value.hash
                date = value.date if value.date.tzinfo else value.date.replace(tzinfo=UTC)
                stop.see(date, value.hash, [p.hash for p in value.parents])
                if not (window.start <= date < window.end):
                    continue
                known = state.commits.get(value.hash)
                if known is not None:
                    if branch not in known.branches:
                        known.branches.append(branch)
                    continue
                state.commits[value.hash] = commit_from_api(value, repo, [branch])
                if diff_queue is not None:
                    diff_queue.put_nowait(value.hash)
            if stop.should_stop():
                stats.incr("bitbucket.early_stops")
                break
    except BitbucketError as exc:
        if exc.status != 404:
            raise
        # A configured default branch that this repository does not have.
        logger.warning("%s: branch %r not found, skipped", repo, branch)
        stats.incr("bitbucket.missing_branches")
        return
    state.walked.append(branch)


async def _mark_new_on(
    client: BitbucketClient,
    repo: str,
    branch: str,
    window: Window,
    opts: ScanOptions,
    state: _State,
    mainbranch: str | None,
    stats: Stats,
) -> None:
    """Mark the commits ``branch`` brought: not reachable from main or another walked head.

    A feature branch's listing includes main's history; only its own commits
    may carry its name's story key (``Commit.new_on``).
    """
    exclude = [mainbranch] if mainbranch else []
    exclude += [h for b, h in sorted(state.heads.items()) if b not in (branch, mainbranch)]
    stop = EarlyStop(window.start, stop_after=opts.stop_after, margin=opts.margin)
    params: dict[str, str | int | list[str]] = {"include": branch}
    if exclude:
        params["exclude"] = exclude
    async for page in client.typed_pages(f"/repositories/{repo}/commits", api.Commit, params):
        for value in page:
            date = value.date if value.date.tzinfo else value.date.replace(tzinfo=UTC)
            stop.see(date, value.hash, [p.hash for p in value.parents])
            known = state.commits.get(value.hash)
            if known is not None and branch not in known.new_on:
                known.new_on.append(branch)
        if stop.should_stop():
            stats.incr("bitbucket.early_stops")
            break


async def _diff_worker(
    client: BitbucketClient, repo: str, queue: asyncio.Queue[str | None], state: _State
) -> None:
    while True:
        commit_hash = await queue.get()
        if commit_hash is None:
            return
        values = await client.diffstat(repo, commit_hash)
        state.commits[commit_hash].files = files_from_diffstat(values)


async def _pull_requests(
    client: BitbucketClient, repo: str, window: Window, workers: int
) -> list[PullRequest]:
    q = f"updated_on >= {_iso(window.start)} AND updated_on < {_iso(window.end)}"
    params: dict[str, str | int | list[str]] = {"q": q, "state": _PR_STATES}
    found: list[api.PullRequest] = []
    async for page in client.typed_pages(
        f"/repositories/{repo}/pullrequests", api.PullRequest, params
    ):
        found.extend(page)
    slots = asyncio.Semaphore(workers)

    async def one(value: api.PullRequest) -> PullRequest:
        async with slots:
            hashes = [c["hash"] async for c in client.pullrequest_commits(repo, value.id)]
        return pull_request_from_api(value, repo, hashes)

    return list(await asyncio.gather(*(one(v) for v in found)))


async def _expand_merge_commits(
    client: BitbucketClient, repo: str, prs: list[PullRequest], known: set[str]
) -> None:
    for pr in prs:
        short = pr.merge_commit
        if not short or len(short) >= 40:
            continue
        match = [h for h in known if h.startswith(short)]
        if len(match) == 1:
            pr.merge_commit = match[0]
            continue
        try:
            pr.merge_commit = str((await client.commit(repo, short))["hash"])
        except BitbucketError as exc:
            if exc.status != 404:
                raise
            # A merge commit since rewritten away: keep Bitbucket's short hash.
            continue


async def scan_repository(
    client: BitbucketClient,
    repository: Repository,
    branches: dict[str, Window],
    opts: ScanOptions,
    logger: logging.Logger,
    stats: Stats,
    covered: Mapping[str, datetime] | None = None,
) -> list[Record | Checkpoint]:
    """Everything one repository contributes, in emission order.

    ``branches`` maps each branch still to scan to its window (a part of the
    run window when a cursor covered the rest, or reaching back before it
    for ``incremental``); pull requests are read for the run window widened
    to the earliest branch start. ``covered`` maps a branch to the start its
    new checkpoint records (the union with a contiguous saved cursor;
    default: the branch window's start).
    """
    repo = repository.full_name
    state = _State()
    try:
        prs = await _gather_repository(
            client, repo, repository.mainbranch, branches, opts, state, logger, stats
        )
    except BaseExceptionGroup as group_error:
        # One failure ends the repository scan; report it, not the group.
        first = group_error.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    known = set(state.commits)
    for pr in prs:
        known.update(pr.commit_hashes)
    await _expand_merge_commits(client, repo, prs, known)
    return _emit(repository, branches, opts, state, prs, covered or {})


async def _gather_repository(
    client: BitbucketClient,
    repo: str,
    mainbranch: str | None,
    branches: dict[str, Window],
    opts: ScanOptions,
    state: _State,
    logger: logging.Logger,
    stats: Stats,
) -> list[PullRequest]:
    diff_queue: asyncio.Queue[str | None] | None = asyncio.Queue() if opts.diffstat else None
    prs: list[PullRequest] = []
    async with asyncio.TaskGroup() as group:
        workers = []
        if diff_queue is not None and opts.commits:
            workers = [
                group.create_task(_diff_worker(client, repo, diff_queue, state))
                for _ in range(opts.workers)
            ]
        pr_task = (
            group.create_task(
                _pull_requests(client, repo, effective_window(opts.window, branches), opts.workers)
            )
            if opts.pull_requests
            else None
        )
        if opts.commits:
            await asyncio.gather(
                *(
                    _walk_branch(client, repo, b, w, opts, state, diff_queue, logger, stats)
                    for b, w in branches.items()
                )
            )
            await asyncio.gather(
                *(
                    _mark_new_on(client, repo, b, branches[b], opts, state, mainbranch, stats)
                    for b in state.walked
                    if b != mainbranch
                )
            )
        for _ in workers:
            assert diff_queue is not None
            diff_queue.put_nowait(None)
        if pr_task is not None:
            prs = await pr_task
    return prs


def _emit(
    repository: Repository,
    branches: dict[str, Window],
    opts: ScanOptions,
    state: _State,
    prs: list[PullRequest],
    covered: Mapping[str, datetime],
) -> list[Record | Checkpoint]:
    repo = repository.full_name
    for pr in prs:
        ref = PullRequestRef(id=pr.id, title=pr.title, source_branch=pr.source_branch)
        for commit_hash in pr.commit_hashes:
            commit = state.commits.get(commit_hash)
            if commit is not None and ref not in commit.pull_requests:
                commit.pull_requests.append(ref)
    out: list[Record | Checkpoint] = [repository]
    prs.sort(key=lambda p: p.id)
    out.extend(prs)
    commits = sorted(state.commits.values(), key=lambda c: (c.date, c.hash))
    out.extend(commits)
    for branch in sorted(state.walked):
        window = branches[branch]
        checkpoint_state = {
            "start": _iso(covered.get(branch, window.start)),
            "end": _iso(window.end),
            "head": state.heads.get(branch),
            "run_id": opts.run_id,
        }
        out.append(Checkpoint(stream=stream_name(repo, branch), state=checkpoint_state))
    return out
