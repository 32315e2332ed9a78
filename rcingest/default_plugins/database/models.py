"""The tables, as peewee models built per Database.

``make_models(db)`` defines a fresh set of model classes bound to ``db``, so
two sinks in one process (SQLite and PostgreSQL side by side, or two files)
never share a connection through a module-level binding. ``docs/database.md``
documents every column; a test keeps the two in step.

Timestamps are stored as UTC without an offset (``TIMESTAMP`` in PostgreSQL,
``YYYY-MM-DD HH:MM:SS[.ffffff]`` text in SQLite, which sorts correctly).
JSON values are stored as text so the same query works on both databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee
from peewee import (
    BooleanField,
    CompositeKey,
    DateTimeField,
    IntegerField,
    TextField,
)

__all__ = ["Models", "make_models"]


@dataclass(frozen=True)
class Models:
    """The model classes of one database, by table."""

    schema_version: Any
    repositories: Any
    commits: Any
    commit_repositories: Any
    commit_branches: Any
    commit_files: Any
    story_keys: Any
    pull_requests: Any
    pull_request_commits: Any
    pull_request_story_keys: Any
    deliveries: Any
    runs: Any
    source_cursors: Any

    def all(self) -> list[Any]:
        """Every model, in creation order."""
        return [getattr(self, name) for name in self.__dataclass_fields__]


def make_models(db: peewee.Database) -> Models:
    """A new set of model classes bound to ``db``."""

    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class SchemaVersion(Base):
        version = IntegerField(primary_key=True)
        upgraded_at = DateTimeField()

        class Meta:
            table_name = "schema_version"

    class Repository(Base):
        full_name = TextField(primary_key=True)
        workspace = TextField(null=True)
        uuid = TextField(null=True)
        name = TextField(null=True)
        is_private = BooleanField(null=True)
        mainbranch = TextField(null=True)
        language = TextField(null=True)
        updated_on = DateTimeField(null=True)
        first_seen_at = DateTimeField()
        last_seen_at = DateTimeField()

        class Meta:
            table_name = "repositories"

    class Commit(Base):
        hash = TextField(primary_key=True)
        repository = TextField()
        author_raw = TextField()
        author_name = TextField(null=True)
        author_account_id = TextField(null=True)
        committed_at = DateTimeField()
        message = TextField()
        parents = TextField()
        files_known = BooleanField()
        first_seen_at = DateTimeField()
        last_seen_at = DateTimeField()

        class Meta:
            table_name = "commits"
            indexes = ((("repository", "committed_at"), False), (("committed_at",), False))

    # A commit can be in several repositories (a fork holds its upstream's
    # commits): ``commits`` has one row per hash, these two say where.
    class CommitRepository(Base):
        commit_hash = TextField()
        repository = TextField()
        first_seen_at = DateTimeField()
        last_seen_at = DateTimeField()

        class Meta:
            table_name = "commit_repositories"
            primary_key = CompositeKey("commit_hash", "repository")

    class CommitBranch(Base):
        commit_hash = TextField()
        repository = TextField()
        branch = TextField()
        first_seen_at = DateTimeField(null=True)

        class Meta:
            table_name = "commit_branches"
            primary_key = CompositeKey("commit_hash", "repository", "branch")

    class CommitFile(Base):
        commit_hash = TextField()
        path = TextField()
        old_path = TextField(null=True)
        status = TextField()
        lines_added = IntegerField()
        lines_removed = IntegerField()

        class Meta:
            table_name = "commit_files"
            primary_key = CompositeKey("commit_hash", "path")
            indexes = ((("path",), False),)

    class StoryKeyRow(Base):
        commit_hash = TextField()
        key = TextField()
        origin = TextField()
        # The branch whose name lent the key (origin ``branch``); '' otherwise.
        branch = TextField(default="")

        class Meta:
            table_name = "story_keys"
            primary_key = CompositeKey("commit_hash", "key", "origin", "branch")
            indexes = ((("key",), False),)

    class PullRequest(Base):
        repository = TextField()
        id = IntegerField()
        title = TextField()
        description = TextField()
        state = TextField()
        source_branch = TextField()
        destination_branch = TextField()
        source_repository = TextField(null=True)
        author_name = TextField(null=True)
        author_account_id = TextField(null=True)
        merge_commit = TextField(null=True)
        created_on = DateTimeField()
        updated_on = DateTimeField()
        first_seen_at = DateTimeField()
        last_seen_at = DateTimeField()

        class Meta:
            table_name = "pull_requests"
            primary_key = CompositeKey("repository", "id")

    class PullRequestCommit(Base):
        repository = TextField()
        pull_request_id = IntegerField()
        commit_hash = TextField()

        class Meta:
            table_name = "pull_request_commits"
            primary_key = CompositeKey("repository", "pull_request_id", "commit_hash")
            indexes = ((("commit_hash",), False),)

    class PullRequestStoryKey(Base):
        repository = TextField()
        pull_request_id = IntegerField()
        key = TextField()
        origin = TextField()

        class Meta:
            table_name = "pull_request_story_keys"
            primary_key = CompositeKey("repository", "pull_request_id", "key", "origin")
            indexes = ((("key",), False),)

    class Delivery(Base):
        request_uuid = TextField(primary_key=True)
        hook_uuid = TextField(null=True)
        event = TextField()
        attempt = IntegerField()
        received_at = DateTimeField()
        first_seen_at = DateTimeField()
        last_seen_at = DateTimeField()
        outcome = TextField()
        repository = TextField(null=True)
        content_key = TextField(null=True)

        class Meta:
            table_name = "deliveries"
            indexes = ((("content_key",), False),)

    class Run(Base):
        id = TextField(primary_key=True)
        pipeline = TextField()
        source_id = TextField()
        mode = TextField()
        git_sha = TextField(null=True)
        started_at = DateTimeField()
        finished_at = DateTimeField(null=True)
        window_start = DateTimeField(null=True)
        window_end = DateTimeField(null=True)
        status = TextField()
        counts = TextField()
        # Where the run's process lives, so a later run can tell it died (runs.py).
        host = TextField(null=True)
        pid = IntegerField(null=True)
        noticed_at = DateTimeField(null=True)

        class Meta:
            table_name = "runs"

    class SourceCursor(Base):
        source_id = TextField()
        stream = TextField()
        state = TextField()
        updated_at = DateTimeField()

        class Meta:
            table_name = "source_cursors"
            primary_key = CompositeKey("source_id", "stream")

    return Models(
        schema_version=SchemaVersion,
        repositories=Repository,
        commits=Commit,
        commit_repositories=CommitRepository,
        commit_branches=CommitBranch,
        commit_files=CommitFile,
        story_keys=StoryKeyRow,
        pull_requests=PullRequest,
        pull_request_commits=PullRequestCommit,
        pull_request_story_keys=PullRequestStoryKey,
        deliveries=Delivery,
        runs=Run,
        source_cursors=SourceCursor,
    )
