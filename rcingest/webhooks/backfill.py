"""Durable backfill: network work a delivery leaves behind, done after its 2xx.

A truncated push (Bitbucket lists at most 5 commits per change) and a pull
request (whose payload has no commit list) need REST calls. Those must not
hold the acknowledgement hostage, so the handler records a job here, in a
small SQLite file of its own, *before* it answers; the worker then fetches
from the configured API host only (hashes from the payload, never a URL from
it), hands the completed records to the pipeline like a delivery, and marks
the job done once the pipeline acknowledged them. Jobs survive a restart; a
failing job is retried with exponential delays and given up after
``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from rcingest.bitbucket.client import BitbucketClient
from rcingest.bitbucket.parse import commit_from_api
from rcingest.records import Commit, Record
from rcingest.webhooks.decode import BackfillJob, commit_with_pull_request

# The worker has its own module (it needs the store's types only for typing);
# re-exported here, where callers have always found it.
from rcingest.webhooks.worker import Announce, BackfillWorker, Deliver, Fetch, Observe

__all__ = [
    "Announce",
    "BackfillStore",
    "BackfillWorker",
    "Deliver",
    "Fetch",
    "Observe",
    "StoredJob",
    "fetch_job",
]

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(BackfillJob).decode
logger = logging.getLogger("rcingest.webhooks")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS backfill_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    job BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS backfill_jobs_due ON backfill_jobs (state, not_before);
"""


class StoredJob(msgspec.Struct, frozen=True):
    """A job as stored: its row id and attempts so far."""

    id: int
    job: BackfillJob
    attempts: int


class BackfillStore:
    """The durable job queue: one SQLite file, all access on one thread.

    WAL with ``synchronous=NORMAL`` survives a killed process; ``FULL`` also
    survives power loss, at one fsync per commit.
    """

    def __init__(self, path: Path, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rcingest-backfill")
        self._db: sqlite3.Connection | None = None
        self._secrets: tuple[str, ...] = ()

    def mask(self, secrets: Iterable[str]) -> None:
        """Keep these values out of the file, as the main tables do (issue 15, defect 8).

        Only what the job does not need to run is masked: its key (a
        de-duplication label) and a pull request's free text (title,
        description, author name), which the database sink masks anyway when
        the job's records arrive. Repository names, hashes and branch names
        are kept as they are: they build the API path or are compared with
        what the API lists, and a masked one would break the job.
        """
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def _masked(self, job: BackfillJob) -> BackfillJob:
        if not self._secrets:
            return job
        pr = job.pull_request
        if pr is not None:
            pr = msgspec.structs.replace(
                pr,
                title=self._clean(pr.title),
                description=self._clean(pr.description),
                author_name=None if pr.author_name is None else self._clean(pr.author_name),
            )
        return msgspec.structs.replace(job, key=self._clean(job.key), pull_request=pr)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        self._db = db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise RuntimeError("backfill store is closed")
            with self._db:  # one transaction per call
                return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def open(self) -> None:
        """Create the file and table if needed."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    async def add(self, jobs: Sequence[BackfillJob]) -> int:
        """Record ``jobs`` durably; a job whose key is already known is not added again."""
        now = time.time()
        masked = [self._masked(job) for job in jobs]
        rows = [(job.key, _encode(job), now) for job in masked]

        def insert(db: sqlite3.Connection) -> int:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO backfill_jobs (key, job, created_at) VALUES (?, ?, ?)", rows
            )
            return db.total_changes - before

        return await self._run(insert)

    async def next_due(self) -> StoredJob | None:
        """The oldest pending job whose retry delay has passed."""

        def pick(db: sqlite3.Connection) -> StoredJob | None:
            row = db.execute(
                "SELECT id, job, attempts FROM backfill_jobs WHERE state = 'pending' "
                "AND not_before <= ? ORDER BY id LIMIT 1",
                (time.time(),),
            ).fetchone()
            return StoredJob(row[0], _decode_job(row[1]), row[2]) if row else None

        return await self._run(pick)

    async def seconds_to_next(self) -> float | None:
        """Seconds until the earliest pending job is due (0 if one is due), None if none."""

        def earliest(db: sqlite3.Connection) -> float | None:
            row = db.execute(
                "SELECT MIN(not_before) FROM backfill_jobs WHERE state = 'pending'"
            ).fetchone()
            return None if row is None or row[0] is None else max(0.0, row[0] - time.time())

        return await self._run(earliest)

    async def done(self, job_id: int) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE backfill_jobs SET state = 'done', last_error = NULL WHERE id = ?", (job_id,)
            )
        )

    async def finish(self, key: str) -> None:
        """Mark the job with ``key`` done (a job run outside the worker)."""
        key = self._clean(key)  # stored masked by add()
        await self._run(
            lambda db: db.execute(
                "UPDATE backfill_jobs SET state = 'done', last_error = NULL WHERE key = ?", (key,)
            )
        )

    async def retry(self, job_id: int, error: str, delay: float, *, give_up: bool) -> None:
        """Count a failed attempt; try again after ``delay`` seconds, or mark it failed."""
        state = "failed" if give_up else "pending"
        await self._run(
            lambda db: db.execute(
                "UPDATE backfill_jobs SET attempts = attempts + 1, state = ?, not_before = ?, "
                "last_error = ? WHERE id = ?",
                (state, time.time() + delay, self._clean(error)[:500], job_id),
            )
        )

    async def counts(self) -> dict[str, int]:
        """Jobs per state."""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT state, COUNT(*) FROM backfill_jobs GROUP BY state"
            ).fetchall()
        )
        return {state: n for state, n in rows}


async def fetch_job(client: BitbucketClient, job: BackfillJob, max_commits: int) -> list[Record]:
    """The records a job completes: the commits of the range, or of the pull request.

    At most ``max_commits`` commits are listed: a created branch's range has
    no ``exclude`` and would otherwise walk the whole history.
    """
    if job.kind == "push_range":
        return await _push_range(client, job, max_commits)
    pr = job.pull_request
    if pr is None:
        return []
    out: list[Commit] = []
    listing = client.pullrequest_commits(job.repository, pr.id)
    # A PR's commits are on its source branch until merged, and that branch
    # is in the source repository: a fork's, for a pull request from a fork.
    source = job.source_repository or job.repository
    async for value in listing:
        # Bitbucket lists a pull request's commits as its source branch minus its
        # destination. They may still be on another branch (a feature branched
        # off another), so the source branch is not ``new_on`` here: its key
        # reaches them as ``pr_branch``, and as ``branch`` only through the
        # push job, which excludes every other head.
        commit = commit_from_api(value, source, [pr.source_branch])
        out.append(commit_with_pull_request(commit, pr))
        if len(out) >= max_commits:
            break
    await _close(listing)
    completed = msgspec.structs.replace(pr, commit_hashes=[c.hash for c in out])
    return [*out, completed]


#: At most this many other branch heads are excluded in one listing (they go
#: into the URL); past it only the main branch is, and the log says so.
MAX_EXCLUDED_HEADS = 100


async def _push_range(client: BitbucketClient, job: BackfillJob, max_commits: int) -> list[Record]:
    """The commits of a push range; on a non-main branch, only those the branch brought.

    Those are not reachable from the main branch or any other branch's head
    (``exclude=``), so they, and only they, are ``new_on`` the branch and may
    carry its name's story key. A created branch at an existing commit brings
    none.
    """
    repo, branch = job.repository, job.branch
    exclude, new_on = list(job.exclude), []
    if branch is not None:
        main = await _main_branch(client, repo)
        if branch == main:
            # Everything on main is reachable from main: it lends no key, and
            # only a truncated change has commits left to list.
            if not job.truncated:
                return []
        else:
            new_on = [branch]
            exclude.extend(await _other_heads(client, repo, branch, main))
    commits: list[Record] = []
    listing = client.commits(repo, job.include, exclude)
    async for value in listing:
        commit = commit_from_api(value, repo, [branch] if branch else [])
        commit.new_on = list(new_on)
        commits.append(commit)
        if len(commits) >= max_commits:
            break
    await _close(listing)
    return commits


async def _main_branch(client: BitbucketClient, repo: str) -> str | None:
    value = await client.get_json(f"/repositories/{repo}")
    main = value.get("mainbranch") if isinstance(value, dict) else None
    name = main.get("name") if isinstance(main, dict) else None
    return name if isinstance(name, str) and name else None


async def _other_heads(
    client: BitbucketClient, repo: str, branch: str, main: str | None
) -> list[str]:
    """What to exclude for ``branch``: the main branch, and the other branches' heads."""
    heads: list[str] = []
    async for values in client.pages(f"/repositories/{repo}/refs/branches", {"pagelen": 100}):
        for value in values:
            name = value.get("name")
            target = value.get("target")
            head = target.get("hash") if isinstance(target, dict) else None
            if name in (branch, main) or not isinstance(head, str) or head in heads:
                continue
            heads.append(head)
    base = [main] if main else []
    if len(heads) > MAX_EXCLUDED_HEADS:
        logger.warning(
            "%s: %d other branches, more than the %d excluded per listing: commits of %r "
            "are told apart from the main branch only",
            repo,
            len(heads),
            MAX_EXCLUDED_HEADS,
            branch,
        )
        return base
    return base + heads


async def _close(gen: Any) -> None:
    with contextlib.suppress(Exception):
        await gen.aclose()
