"""Records to table rows: pure, no database.

A batch becomes one ``Rows``: for every table, the rows keyed by primary key,
so a key that occurs twice in a batch yields one row (PostgreSQL refuses an
``ON CONFLICT DO UPDATE`` statement that touches a row twice).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rcingest.compliance.records import ComplianceEvaluation
from rcingest.default_plugins.database.compliance import evaluation_row
from rcingest.records import (
    Checkpoint,
    Commit,
    PullRequest,
    PullRequestScan,
    Record,
    Repository,
    RepositoryScan,
    WebhookDelivery,
    record_type,
)

Row = tuple[Any, ...]

REPOSITORY_FIELDS = (
    "full_name", "workspace", "uuid", "name", "is_private", "mainbranch", "language",
    "updated_on", "first_seen_at", "last_seen_at", "web_url", "project", "size", "created_on",
    "fork_of", "last_push", "state", "state_reason", "renamed_to", "last_synced_at",
)  # fmt: skip
#: What a record says of its repository's state: always taken as it comes, nulls
#: included (a repository back to ``active`` is no longer ``renamed_to`` anything).
REPOSITORY_STATE_FIELDS = ("state", "state_reason", "renamed_to")
_STATE_AT = frozenset(REPOSITORY_FIELDS.index(n) for n in REPOSITORY_STATE_FIELDS)
_LAST_PUSH_AT = REPOSITORY_FIELDS.index("last_push")
IMPLIED_REPOSITORY_FIELDS = ("full_name", "workspace", "first_seen_at", "last_seen_at")
COMMIT_FIELDS = (
    "hash", "repository", "author_raw", "author_name", "author_account_id", "committed_at",
    "message", "parents", "files_known", "first_seen_at", "last_seen_at",
)  # fmt: skip
COMMIT_REPOSITORY_FIELDS = ("commit_hash", "repository", "first_seen_at", "last_seen_at")
BRANCH_FIELDS = ("commit_hash", "repository", "branch", "first_seen_at")
FILE_FIELDS = ("commit_hash", "path", "old_path", "status", "lines_added", "lines_removed")
STORY_KEY_FIELDS = ("commit_hash", "key", "origin", "branch")
PULL_REQUEST_FIELDS = (
    "repository", "id", "title", "description", "state", "source_branch",
    "destination_branch", "source_repository", "author_name", "author_account_id",
    "merge_commit", "created_on", "updated_on", "first_seen_at", "last_seen_at",
)  # fmt: skip
PR_COMMIT_FIELDS = ("repository", "pull_request_id", "commit_hash")
PR_STORY_KEY_FIELDS = ("repository", "pull_request_id", "key", "origin")
DELIVERY_FIELDS = (
    "request_uuid", "hook_uuid", "event", "attempt", "received_at", "first_seen_at",
    "last_seen_at", "outcome", "repository", "content_key",
)  # fmt: skip
CURSOR_FIELDS = ("source_id", "stream", "state", "updated_at")
PR_SCAN_FIELDS = (
    "repository", "pull_request_id", "head", "state", "reason", "scanned_at", "title",
    "source_branch", "destination_branch", "findings", "allowed", "scanners", "diff_bytes",
    "files_scanned", "first_seen_at", "last_seen_at",
)  # fmt: skip
FINDING_FIELDS = (
    "repository", "pull_request_id", "fingerprint", "path", "line_start", "line_end",
    "rule_id", "rule_name", "severity", "excerpt", "scanner", "state", "first_head",
    "last_head", "first_seen_at", "last_seen_at", "fixed_at", "fixed_head",
)  # fmt: skip
REPO_SCAN_FIELDS = (
    "repository", "branch", "head", "state", "reason", "scanned_at", "findings", "allowed",
    "scanners", "files_scanned", "bytes_scanned", "first_seen_at", "last_seen_at",
)  # fmt: skip
REPO_FINDING_FIELDS = (
    "repository", "branch", "fingerprint", "path", "line_start", "line_end", "rule_id",
    "rule_name", "severity", "excerpt", "scanner", "state", "first_head", "last_head",
    "first_seen_at", "last_seen_at", "fixed_at", "fixed_head",
)  # fmt: skip


@dataclass(frozen=True)
class ScanOutcome:
    """What a completed scan says of the findings stored before it (``findings.py``)."""

    repository: str
    pull_request_id: int
    head: str
    #: The fingerprints the allowlist or a marker allowed at this head.
    allowed: tuple[str, ...]
    now: datetime


def utc(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC without tzinfo, as stored; a naive value is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _workspace(full_name: str) -> str | None:
    return full_name.split("/", 1)[0] if "/" in full_name else None


@dataclass
class Rows:
    """The rows of one batch, per table, keyed by primary key."""

    repositories: dict[str, Row] = field(default_factory=dict)
    implied_repositories: dict[str, Row] = field(default_factory=dict)
    commits: dict[str, Row] = field(default_factory=dict)
    commit_repositories: dict[tuple[str, str], Row] = field(default_factory=dict)
    commit_branches: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    commit_files: dict[tuple[str, str], Row] = field(default_factory=dict)
    story_keys: dict[Row, Row] = field(default_factory=dict)
    pull_requests: dict[tuple[str, int], Row] = field(default_factory=dict)
    pull_request_commits: dict[Row, Row] = field(default_factory=dict)
    pull_request_story_keys: dict[Row, Row] = field(default_factory=dict)
    deliveries: dict[str, Row] = field(default_factory=dict)
    cursors: dict[tuple[str, str], Row] = field(default_factory=dict)
    pr_scans: dict[tuple[str, int, str], Row] = field(default_factory=dict)
    findings: dict[tuple[str, int, str, str, int], Row] = field(default_factory=dict)
    #: Per pull request, the batch's last scan that saw the whole diff: it
    #: closes what it no longer finds (an earlier scan in the batch is superseded).
    scan_outcomes: dict[tuple[str, int], ScanOutcome] = field(default_factory=dict)
    #: Repositories' scans in batch order (a head seen twice: moved to the end),
    #: keyed (repository, branch, head); ``inventory.py`` decides what they change.
    repo_scans: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    #: Their findings, keyed (repository, branch, head, fingerprint, path,
    #: line_start): by scan, so two scans of one batch keep their own.
    repo_findings: dict[tuple[str, str, str, str, str, int], Row] = field(default_factory=dict)
    #: Their allowed fingerprints, keyed and valued (repository, branch, head, fingerprint).
    repo_allowed: dict[tuple[str, str, str, str], Row] = field(default_factory=dict)
    #: Compliance evaluations in batch order (``compliance.py`` decides which
    #: become rows), already cleaned: their JSON is cleaned before encoding.
    compliance_evaluations: list[Row] = field(default_factory=list)
    #: Records per type (``commit``, ``pull_request``...), for the runs table.
    records: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        """How many rows the batch writes, over every table."""
        return sum(
            len(getattr(self, name))
            for name in self.__dataclass_fields__
            if name not in ("records", "implied_repositories", "scan_outcomes", "repo_allowed")
        ) + len(self.implied_repositories)


def _commit(rows: Rows, c: Commit, now: datetime) -> None:
    known = c.files is not None
    previous = rows.commits.get(c.hash)
    if previous is not None:
        # The same commit twice in one batch (a push, then its completion):
        # the later record wins, but a file list seen once stays known.
        known = known or bool(previous[8])
    rows.commits[c.hash] = (
        c.hash, c.repository, c.author_raw, c.author_name, c.author_account_id,
        utc(c.date), c.message, " ".join(c.parents), known, now, now,
    )  # fmt: skip
    rows.commit_repositories[(c.hash, c.repository)] = (c.hash, c.repository, now, now)
    for branch in c.branches:
        rows.commit_branches[(c.hash, c.repository, branch)] = (c.hash, c.repository, branch, now)
    for f in c.files or ():
        rows.commit_files[(c.hash, f.path)] = (
            c.hash, f.path, f.old_path, f.status, f.lines_added, f.lines_removed,
        )  # fmt: skip
    for sk in c.story_keys:
        for origin in sk.origins:
            # One row per branch that lent the key: the evidence an auditor asks for.
            for branch in (sk.branches or ("",)) if origin == "branch" else ("",):
                row: Row = (c.hash, sk.key, origin, branch)
                rows.story_keys[row] = row
    for pr in c.pull_requests:
        row = (pr.repository or c.repository, pr.id, c.hash)
        rows.pull_request_commits[row] = row
    _imply_repository(rows, c.repository, now)


def _pull_request(rows: Rows, pr: PullRequest, now: datetime) -> None:
    updated_on = utc(pr.updated_on)
    previous = rows.pull_requests.get((pr.repository, pr.id))
    # Twice in one batch: the newer snapshot wins, as it does across batches.
    if previous is None or previous[12] is None or updated_on is None or updated_on >= previous[12]:
        rows.pull_requests[(pr.repository, pr.id)] = (
            pr.repository, pr.id, pr.title, pr.description, pr.state,
            pr.source_branch, pr.destination_branch, pr.source_repository, pr.author_name,
            pr.author_account_id, pr.merge_commit,
            utc(pr.created_on), updated_on, now, now,
        )  # fmt: skip
    for commit_hash in pr.commit_hashes:
        row: Row = (pr.repository, pr.id, commit_hash)
        rows.pull_request_commits[row] = row
    for sk in pr.story_keys:
        for origin in sk.origins:
            row = (pr.repository, pr.id, sk.key, origin)
            rows.pull_request_story_keys[row] = row
    _imply_repository(rows, pr.repository, now)


def _pr_scan(rows: Rows, scan: PullRequestScan, now: datetime) -> None:
    key = (scan.repository, scan.pull_request_id, scan.head)
    rows.pr_scans[key] = (
        scan.repository, scan.pull_request_id, scan.head, scan.state, scan.reason,
        utc(scan.scanned_at), scan.title, scan.source_branch, scan.destination_branch,
        len(scan.findings), len(scan.allowed), " ".join(scan.scanners), scan.diff_bytes,
        scan.files_scanned, now, now,
    )  # fmt: skip
    for f in scan.findings:
        fkey = (scan.repository, scan.pull_request_id, f.fingerprint, f.path, f.line_start)
        rows.findings[fkey] = (
            *fkey, f.line_end, f.rule_id, f.rule_name, f.severity, f.excerpt, f.scanner,
            "open", scan.head, scan.head, now, now, None, None,
        )  # fmt: skip
    if scan.state in ("findings", "clean"):  # a scan that saw the whole diff
        outcome = ScanOutcome(
            scan.repository, scan.pull_request_id, scan.head, tuple(scan.allowed), now
        )
        rows.scan_outcomes.pop((scan.repository, scan.pull_request_id), None)
        rows.scan_outcomes[(scan.repository, scan.pull_request_id)] = outcome
    _imply_repository(rows, scan.repository, now)


def _repository(rows: Rows, r: Repository, now: datetime) -> None:
    row: Row = (
        r.full_name, r.workspace or _workspace(r.full_name), r.uuid, r.name, r.is_private,
        r.mainbranch, r.language, utc(r.updated_on), now, now, r.web_url, r.project, r.size,
        utc(r.created_on), r.fork_of, utc(r.last_push), r.state, r.state_reason, r.renamed_to,
        now,
    )  # fmt: skip
    previous = rows.repositories.get(r.full_name)
    if previous is not None:
        # Twice in one batch (a listing, then a webhook's partial copy): merged as
        # across batches: a null keeps the earlier value, the state is the later one's.
        row = tuple(
            new if i in _STATE_AT or new is not None else old
            for i, (old, new) in enumerate(zip(previous, row, strict=True))
        )
        pushes = [p for p in (previous[_LAST_PUSH_AT], row[_LAST_PUSH_AT]) if p is not None]
        if pushes:
            row = (*row[:_LAST_PUSH_AT], max(pushes), *row[_LAST_PUSH_AT + 1 :])
    rows.repositories[r.full_name] = row


def _repo_scan(rows: Rows, scan: RepositoryScan, now: datetime) -> None:
    key = (scan.repository, scan.branch, scan.head)
    if key in rows.repo_scans:
        # The same head twice in one batch: the later record wins, in the later place.
        del rows.repo_scans[key]
        for table in (rows.repo_findings, rows.repo_allowed):
            for old in [k for k in table if k[:3] == key]:
                del table[old]  # type: ignore[arg-type]
    rows.repo_scans[key] = (
        *key, scan.state, scan.reason, utc(scan.scanned_at), len(scan.findings),
        len(scan.allowed), " ".join(scan.scanners), scan.files_scanned, scan.bytes_scanned,
        now, now,
    )  # fmt: skip
    for f in scan.findings:
        fkey = (*key, f.fingerprint, f.path, f.line_start)
        rows.repo_findings[fkey] = (
            *fkey, f.line_end, f.rule_id, f.rule_name, f.severity, f.excerpt, f.scanner,
        )  # fmt: skip
    for fp in scan.allowed:
        rows.repo_allowed[(*key, fp)] = (*key, fp)
    _imply_repository(rows, scan.repository, now)


def _imply_repository(rows: Rows, full_name: str, now: datetime) -> None:
    if full_name not in rows.implied_repositories:
        rows.implied_repositories[full_name] = (full_name, _workspace(full_name), now, now)


def build_rows(
    records: Iterable[Record],
    checkpoints: Iterable[Checkpoint],
    source_id: str,
    now: datetime,
    clean: Callable[[str], str] | None = None,
) -> Rows:
    """The rows that ``records`` and the durable ``checkpoints`` become, stamped ``now`` (UTC).

    ``clean`` (given when secrets are configured) is applied to every string
    of every row except the cursors' state, so no column can carry a secret
    value into the database; see :func:`_scrub`.
    """
    now = utc(now) or now
    rows = Rows()
    for record in records:
        rows.records[record_type(record)] += 1
        if isinstance(record, Commit):
            _commit(rows, record, now)
        elif isinstance(record, PullRequest):
            _pull_request(rows, record, now)
        elif isinstance(record, Repository):
            _repository(rows, record, now)
        elif isinstance(record, RepositoryScan):
            _repo_scan(rows, record, now)
        elif isinstance(record, PullRequestScan):
            _pr_scan(rows, record, now)
        elif isinstance(record, ComplianceEvaluation):
            rows.compliance_evaluations.append(evaluation_row(record, clean))
            _imply_repository(rows, record.repository, now)
        elif isinstance(record, WebhookDelivery):
            d = record
            rows.deliveries[d.request_uuid] = (
                d.request_uuid, d.hook_uuid, d.event, d.attempt, utc(d.received_at), now, now,
                d.outcome, d.repository, d.content_key,
            )  # fmt: skip
            if d.repository:
                _imply_repository(rows, d.repository, now)
    for name in rows.repositories:
        rows.implied_repositories.pop(name, None)
    if clean is not None:
        _scrub(rows, clean)
    for cp in checkpoints:
        if cp.state is not None:
            state = json.dumps(cp.state, sort_keys=True, default=str)
            rows.cursors[(source_id, cp.stream)] = (source_id, cp.stream, state, now)
    return rows


#: The tables whose rows are scrubbed (all but ``cursors``: a source's own
#: resume state, which must come back exactly as it was saved).
_SCRUBBED = (
    "repositories", "implied_repositories", "commits", "commit_repositories", "commit_branches",
    "commit_files", "story_keys", "pull_requests", "pull_request_commits",
    "pull_request_story_keys", "deliveries", "pr_scans", "findings", "repo_scans",
    "repo_findings", "repo_allowed",
)  # fmt: skip


def _scrub(rows: Rows, clean: Callable[[str], str]) -> None:
    """Apply ``clean`` to every string of every row, whatever its column.

    Generic on purpose: a column added later is covered without a thought.
    Rows are re-keyed by their cleaned key columns, so two keys that differ
    only by a secret become one row (PostgreSQL refuses to upsert one row
    twice in a statement).
    """
    for name in _SCRUBBED:
        table: dict[Any, Row] = getattr(rows, name)
        # Fast path (nearly always): no value of the table holds anything to
        # clean, which one call on all of them joined shows. NUL separates
        # them so nothing is found across two values.
        joined = "\0".join([v for row in table.values() for v in row if v.__class__ is str])
        if clean(joined) == joined:
            continue
        cleaned: dict[Any, Row] = {}
        for key, row in table.items():
            new = tuple(clean(v) if isinstance(v, str) else v for v in row)
            if isinstance(key, tuple):
                cleaned[new[: len(key)]] = new
            else:
                cleaned[new[0]] = new
        setattr(rows, name, cleaned)
