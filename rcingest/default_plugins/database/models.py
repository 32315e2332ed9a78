"""The tables, as peewee models built per Database.

Each table is declared once below, unbound; ``make_models(db)`` makes a
fresh subclass of each bound to ``db``, so two sinks in one process (SQLite
and PostgreSQL side by side, or two files) never share a connection through a
module-level binding. ``docs/database.md``
documents every column; a test keeps the two in step.

Timestamps are stored as UTC without an offset (``TIMESTAMP`` in PostgreSQL,
``YYYY-MM-DD HH:MM:SS[.ffffff]`` text in SQLite, which sorts correctly).
JSON values are stored as text so the same query works on both databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, cast

import peewee
from peewee import (
    SQL,
    AutoField,
    BigIntegerField,
    BooleanField,
    CompositeKey,
    DateTimeField,
    IntegerField,
    TextField,
)

from rcingest.default_plugins.database.repo_tables import RepoFindingRow, RepoScan

__all__ = ["Models", "make_models"]

_M = TypeVar("_M", bound=peewee.Model)


# The tables are declared once, here, unbound: mypy (with the stubs peewee
# ships) then knows every model and field, so a misspelled column is a type
# error. ``make_models`` binds a subclass of each to one database; these
# declarations themselves are never queried.
class _Table(peewee.Model):
    class Meta:
        legacy_table_names = False


class SchemaVersion(_Table):
    version = IntegerField(primary_key=True)
    upgraded_at = DateTimeField()

    class Meta:
        table_name = "schema_version"


class Repository(_Table):
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
    # Version 6 (the inventory, issue 14): after the older columns, where an
    # upgrade's ALTER TABLE puts them, so both layouts have one column order.
    web_url = TextField(null=True)
    project = TextField(null=True)
    size = BigIntegerField(null=True)
    created_on = DateTimeField(null=True)
    fork_of = TextField(null=True)
    last_push = DateTimeField(null=True)
    # A database default too: rows implied by a commit or a delivery do not name it.
    state = TextField(default="active", constraints=[SQL("DEFAULT 'active'")])
    state_reason = TextField(null=True)
    renamed_to = TextField(null=True)
    last_synced_at = DateTimeField(null=True)

    class Meta:
        table_name = "repositories"
        indexes = ((("uuid",), False),)


class Commit(_Table):
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
class CommitRepository(_Table):
    commit_hash = TextField()
    repository = TextField()
    first_seen_at = DateTimeField()
    last_seen_at = DateTimeField()

    class Meta:
        table_name = "commit_repositories"
        primary_key = CompositeKey("commit_hash", "repository")


class CommitBranch(_Table):
    commit_hash = TextField()
    repository = TextField()
    branch = TextField()
    first_seen_at = DateTimeField(null=True)

    class Meta:
        table_name = "commit_branches"
        primary_key = CompositeKey("commit_hash", "repository", "branch")


class CommitFile(_Table):
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


class StoryKeyRow(_Table):
    commit_hash = TextField()
    key = TextField()
    origin = TextField()
    # The branch whose name lent the key (origin ``branch``); '' otherwise.
    branch = TextField(default="")

    class Meta:
        table_name = "story_keys"
        primary_key = CompositeKey("commit_hash", "key", "origin", "branch")
        indexes = ((("key",), False),)


class PullRequest(_Table):
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


class PullRequestCommit(_Table):
    repository = TextField()
    pull_request_id = IntegerField()
    commit_hash = TextField()

    class Meta:
        table_name = "pull_request_commits"
        primary_key = CompositeKey("repository", "pull_request_id", "commit_hash")
        indexes = ((("commit_hash",), False),)


class PullRequestStoryKey(_Table):
    repository = TextField()
    pull_request_id = IntegerField()
    key = TextField()
    origin = TextField()

    class Meta:
        table_name = "pull_request_story_keys"
        primary_key = CompositeKey("repository", "pull_request_id", "key", "origin")
        indexes = ((("key",), False),)


class Delivery(_Table):
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


class Run(_Table):
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


class PrScan(_Table):
    """One secret scan of a pull request at one source head (issue 12)."""

    repository = TextField()
    pull_request_id = IntegerField()
    head = TextField()
    state = TextField()
    reason = TextField(null=True)
    scanned_at = DateTimeField()
    title = TextField(null=True)
    source_branch = TextField(null=True)
    destination_branch = TextField(null=True)
    findings = IntegerField()
    allowed = IntegerField()
    scanners = TextField()
    diff_bytes = IntegerField()
    files_scanned = IntegerField()
    first_seen_at = DateTimeField()
    last_seen_at = DateTimeField()

    class Meta:
        table_name = "pr_scans"
        primary_key = CompositeKey("repository", "pull_request_id", "head")


class FindingRow(_Table):
    """A secret found in a pull request's changes: never the secret, only its fingerprint."""

    repository = TextField()
    pull_request_id = IntegerField()
    fingerprint = TextField()
    path = TextField()
    line_start = IntegerField()
    line_end = IntegerField()
    rule_id = TextField()
    rule_name = TextField()
    severity = TextField()
    excerpt = TextField()
    scanner = TextField()
    #: open, fixed (a later head no longer has it) or allowed (allowlist, marker).
    state = TextField()
    first_head = TextField()
    last_head = TextField()
    first_seen_at = DateTimeField()
    last_seen_at = DateTimeField()
    fixed_at = DateTimeField(null=True)
    fixed_head = TextField(null=True)

    class Meta:
        table_name = "findings"
        primary_key = CompositeKey(
            "repository", "pull_request_id", "fingerprint", "path", "line_start"
        )
        indexes = ((("state",), False), (("fingerprint",), False))


class ComplianceEvaluationRow(_Table):
    """A pull request's compliance evaluation (issue 13): one row per change, never rewritten.

    An auto-increment key, not a natural one: the table is an audit history,
    and the same (PR, head, policy) can come back to an earlier verdict.
    ``compliance.py`` decides when a row is added.
    """

    id = AutoField()
    repository = TextField()
    pull_request_id = IntegerField()
    head = TextField()
    policy_name = TextField()
    policy_hash = TextField()
    verdict = TextField()
    pr_state = TextField()
    frozen = BooleanField()
    trigger = TextField()
    title = TextField(null=True)
    source_branch = TextField(null=True)
    destination_branch = TextField(null=True)
    first_evaluated_at = DateTimeField()
    last_evaluated_at = DateTimeField()
    outcomes = TextField()
    facts = TextField(null=True)
    digest = TextField()

    class Meta:
        table_name = "compliance_evaluations"
        indexes = ((("repository", "pull_request_id", "id"), False),)


class SourceCursor(_Table):
    source_id = TextField()
    stream = TextField()
    state = TextField()
    updated_at = DateTimeField()

    class Meta:
        table_name = "source_cursors"
        primary_key = CompositeKey("source_id", "stream")


@dataclass(frozen=True)
class Models:
    """The model classes of one database, by table."""

    schema_version: type[SchemaVersion]
    repositories: type[Repository]
    commits: type[Commit]
    commit_repositories: type[CommitRepository]
    commit_branches: type[CommitBranch]
    commit_files: type[CommitFile]
    story_keys: type[StoryKeyRow]
    pull_requests: type[PullRequest]
    pull_request_commits: type[PullRequestCommit]
    pull_request_story_keys: type[PullRequestStoryKey]
    deliveries: type[Delivery]
    runs: type[Run]
    source_cursors: type[SourceCursor]
    pr_scans: type[PrScan]
    findings: type[FindingRow]
    compliance_evaluations: type[ComplianceEvaluationRow]
    repo_scans: type[RepoScan]
    repo_findings: type[RepoFindingRow]

    def all(self) -> list[type[peewee.Model]]:
        """Every model, in creation order."""
        return [getattr(self, name) for name in self.__dataclass_fields__]


def _bind(model: type[_M], db: peewee.Database) -> type[_M]:
    """A subclass of ``model`` bound to ``db``, with the same table, columns and keys.

    peewee copies the fields, keys and indexes into a subclass, but not the
    table name, which would otherwise be derived from the class name.
    """
    meta = type("Meta", (), {"database": db, "table_name": model._meta.table_name})
    bound = type(model.__name__, (model,), {"Meta": meta, "__module__": model.__module__})
    return cast("type[_M]", bound)


def make_models(db: peewee.Database) -> Models:
    """A new set of model classes bound to ``db``."""
    return Models(
        schema_version=_bind(SchemaVersion, db),
        repositories=_bind(Repository, db),
        commits=_bind(Commit, db),
        commit_repositories=_bind(CommitRepository, db),
        commit_branches=_bind(CommitBranch, db),
        commit_files=_bind(CommitFile, db),
        story_keys=_bind(StoryKeyRow, db),
        pull_requests=_bind(PullRequest, db),
        pull_request_commits=_bind(PullRequestCommit, db),
        pull_request_story_keys=_bind(PullRequestStoryKey, db),
        deliveries=_bind(Delivery, db),
        runs=_bind(Run, db),
        source_cursors=_bind(SourceCursor, db),
        pr_scans=_bind(PrScan, db),
        findings=_bind(FindingRow, db),
        compliance_evaluations=_bind(ComplianceEvaluationRow, db),
        repo_scans=_bind(RepoScan, db),
        repo_findings=_bind(RepoFindingRow, db),
    )
