"""The repository-scope scan tables (schema version 6), unbound like those of ``models.py``.

Kept apart from ``models.py`` only for size; ``make_models`` binds them with
the rest. ``repo_findings`` has the columns and states of ``findings`` with
the branch in place of the pull request: a separate table rather than a
scope column, because ``findings``' key holds a pull-request id that a
repository's finding does not have, and its documented semantics (and ready
queries) are about pull requests.
"""

from __future__ import annotations

import peewee
from peewee import BigIntegerField, CompositeKey, DateTimeField, IntegerField, TextField

__all__ = ["RepoFindingRow", "RepoScan"]


class _Table(peewee.Model):
    class Meta:
        legacy_table_names = False


class RepoScan(_Table):
    """One secret scan of a repository's branch content at one head (issue 14)."""

    repository = TextField()
    branch = TextField()
    head = TextField()
    state = TextField()
    reason = TextField(null=True)
    scanned_at = DateTimeField()
    findings = IntegerField()
    allowed = IntegerField()
    scanners = TextField()
    files_scanned = IntegerField()
    bytes_scanned = BigIntegerField()
    first_seen_at = DateTimeField()
    last_seen_at = DateTimeField()

    class Meta:
        table_name = "repo_scans"
        primary_key = CompositeKey("repository", "branch", "head")
        indexes = ((("repository", "branch", "scanned_at"), False),)


class RepoFindingRow(_Table):
    """A secret found in a repository's branch content: never the secret, only its fingerprint."""

    repository = TextField()
    branch = TextField()
    fingerprint = TextField()
    path = TextField()
    line_start = IntegerField()
    line_end = IntegerField()
    rule_id = TextField()
    rule_name = TextField()
    severity = TextField()
    excerpt = TextField()
    scanner = TextField()
    #: open, fixed (a later complete scan no longer has it) or allowed.
    state = TextField()
    first_head = TextField()
    last_head = TextField()
    first_seen_at = DateTimeField()
    last_seen_at = DateTimeField()
    fixed_at = DateTimeField(null=True)
    fixed_head = TextField(null=True)

    class Meta:
        table_name = "repo_findings"
        primary_key = CompositeKey("repository", "branch", "fingerprint", "path", "line_start")
        indexes = ((("state",), False), (("fingerprint",), False))
