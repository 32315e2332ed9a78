"""The read side of :class:`~rcingest.embed.CommitStorage`: stored rows as msgspec Structs.

These run on the storage's database thread (the sink's single writer
thread, where its connection lives), so a read never opens a second
connection in a web server's request thread. Timestamps come back
timezone-aware, in UTC, as the database stores them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from rcingest.default_plugins.database.models import Models

__all__ = ["StoredBranch", "StoredCommit", "StoredFile", "StoredStoryKey"]


class StoredBranch(msgspec.Struct, frozen=True, kw_only=True):
    """A branch of a repository that contains the commit."""

    repository: str
    branch: str


class StoredStoryKey(msgspec.Struct, frozen=True, kw_only=True):
    """One Jira key of a commit and where it was found.

    ``origin``: ``message``, ``branch`` (``branch`` names it), ``pr_title``
    or ``pr_branch``, as in ``docs/database.md`` (table ``story_keys``).
    """

    key: str
    origin: str
    branch: str = ""


class StoredFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file the commit changed (known only when ``StoredCommit.files_known``)."""

    path: str
    status: str
    lines_added: int
    lines_removed: int
    old_path: str | None = None


class StoredCommit(msgspec.Struct, frozen=True, kw_only=True):
    """A commit as stored, with the repositories and branches that hold it."""

    hash: str
    repository: str
    author_raw: str
    author_name: str | None
    author_account_id: str | None
    committed_at: datetime
    message: str
    parents: list[str]
    #: False when the commit came from a webhook payload, which lists no files.
    files_known: bool
    first_seen_at: datetime
    last_seen_at: datetime
    repositories: list[str]
    branches: list[StoredBranch]


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_commit(m: Models, commit_hash: str) -> StoredCommit | None:
    """The commit ``commit_hash`` with its repositories and branches, or None."""
    c = m.commits.get_or_none(m.commits.hash == commit_hash)
    if c is None:
        return None
    cr, cb = m.commit_repositories, m.commit_branches
    repositories = [
        row.repository
        for row in cr.select().where(cr.commit_hash == commit_hash).order_by(cr.repository)
    ]
    query = cb.select().where(cb.commit_hash == commit_hash).order_by(cb.repository, cb.branch)
    branches = [StoredBranch(repository=row.repository, branch=row.branch) for row in query]
    return StoredCommit(
        hash=c.hash,
        repository=c.repository,
        author_raw=c.author_raw,
        author_name=c.author_name,
        author_account_id=c.author_account_id,
        committed_at=_aware(c.committed_at),
        message=c.message,
        parents=c.parents.split() if c.parents else [],
        files_known=bool(c.files_known),
        first_seen_at=_aware(c.first_seen_at),
        last_seen_at=_aware(c.last_seen_at),
        repositories=repositories or [c.repository],
        branches=branches,
    )


def read_story_keys(m: Models, commit_hash: str) -> list[StoredStoryKey]:
    """The story keys of ``commit_hash`` (empty when none, or no such commit)."""
    sk = m.story_keys
    query = sk.select().where(sk.commit_hash == commit_hash).order_by(sk.key, sk.origin, sk.branch)
    return [StoredStoryKey(key=row.key, origin=row.origin, branch=row.branch) for row in query]


def read_files(m: Models, commit_hash: str) -> list[StoredFile]:
    """The files ``commit_hash`` changed, by path (empty when not known)."""
    f = m.commit_files
    query = f.select().where(f.commit_hash == commit_hash).order_by(f.path)
    return [
        StoredFile(
            path=row.path,
            status=row.status,
            lines_added=row.lines_added,
            lines_removed=row.lines_removed,
            old_path=row.old_path,
        )
        for row in query
    ]
