"""The JSON artifact of a run: its types, and the JSON Schema generated from them.

``RunArtifact`` is what the ``json_artifact`` sink writes (``scan_<run_id>.json``,
or ``webhook_<YYYYMMDDTHH>.json`` per hour in serve mode). ``run_schema()``
generates ``schemas/run.schema.json`` from these Structs; a test keeps the
committed file (and its copy beside the artifacts) identical to it.

Every timestamp carries the pipeline zone's offset (``2026-11-23T01:00:00-07:00``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from rcingest.compliance.facts import PullRequestFacts
from rcingest.compliance.records import Outcome, Verdict
from rcingest.records import StoryKeyOrigin
from rcingest.schema_text import clean_descriptions

__all__ = [
    "ARTIFACT_SCHEMA_COPY",
    "SCHEMA_ID",
    "ArtifactCompliance",
    "ArtifactCounts",
    "ArtifactRuleOutcome",
    "ArtifactSource",
    "ArtifactWindow",
    "CommitAuthor",
    "CommitSummary",
    "RunArtifact",
    "SummaryStoryKey",
    "run_schema",
]

SCHEMA_ID = "https://rcingest.dev/schemas/run.schema.json"
#: Where a copy of ``schemas/run.schema.json`` lives beside the default artifacts.
ARTIFACT_SCHEMA_COPY = "artifacts/issues/wave3/bitbucket/run.schema.json"

#: ISO 8601 with seconds and an offset, which is what msgspec writes for an aware datetime.
OFFSET_DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
#: A timestamp with a UTC offset; naive values are refused.
AwareDatetime = Annotated[
    datetime, msgspec.Meta(tz=True, extra_json_schema={"pattern": OFFSET_DATETIME})
]
Count = Annotated[int, msgspec.Meta(ge=0)]


class ArtifactWindow(msgspec.Struct, forbid_unknown_fields=True):
    """The half-open time window ``[start, end)`` the run covered."""

    start: AwareDatetime
    end: AwareDatetime


class ArtifactSource(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the source read: its type, workspace, repositories and branches."""

    type: str | None = None
    workspace: str | None = None
    repositories: list[str] = []
    branches: list[str] = []
    #: Anything else the source reported (a webhook source's host, port, path).
    extra: dict[str, str | int | float | bool | None] = {}


class ArtifactCounts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the run produced and what it cost.

    ``commits`` counts distinct commits, ``files`` the file changes of those
    commits, ``keys`` the distinct story keys on commits and pull requests,
    ``requests``/``retries`` the HTTP requests and retries of the source.
    """

    repositories: Count = 0
    commits: Count = 0
    files: Count = 0
    keys: Count = 0
    pull_requests: Count = 0
    deliveries: Count = 0
    requests: Count = 0
    retries: Count = 0


class CommitAuthor(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A commit's author: the raw ``Name <email>`` and, when linked, the Bitbucket account."""

    raw: str
    name: str | None = None
    account_id: str | None = None


class SummaryStoryKey(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A story key and every place it was found.

    ``branches`` names the branches that lent it (origin ``branch``): only a
    branch that brought the commit lends its key.
    """

    key: str
    origins: list[StoryKeyOrigin]
    branches: list[str] = []


class ArtifactFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One file a commit touched, so an auditor sees what changed without the database."""

    path: str
    status: Literal["added", "removed", "modified", "renamed"]
    old_path: str | None = None
    lines_added: Count = 0
    lines_removed: Count = 0


class CommitSummary(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One commit, as an auditor needs it without the database."""

    hash: str
    repository: str
    branches: list[str]
    author: CommitAuthor
    date: AwareDatetime
    #: The first line of the message.
    summary: str
    #: Number of files changed; null when the file list was not fetched.
    files_changed: Count | None
    #: The files themselves; null when the file list was not fetched.
    files: list[ArtifactFile] | None = None
    story_keys: list[SummaryStoryKey]


class ArtifactFinding(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A possible secret in a pull request's changes: never the secret itself."""

    path: str
    line_start: Count
    line_end: Count
    rule_id: str
    rule_name: str
    severity: Literal["critical", "high", "medium", "low", "info"]
    #: Keyed HMAC-SHA256 of rule and secret (32 hex characters): stable, not reversible.
    fingerprint: str
    #: The line with the secret redacted: at most four of its characters.
    excerpt: str
    scanner: str


class ArtifactScan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A pull request's secret scan at one source head (the last one of the run per head)."""

    repository: str
    pull_request_id: Count
    head: str
    state: Literal[
        "scanning", "findings", "clean", "too_large", "diff_timeout", "not_found", "failed"
    ]
    scanned_at: AwareDatetime
    reason: str | None = None
    findings: list[ArtifactFinding] = []
    #: Findings the allowlist or an inline marker allowed (fingerprints).
    allowed: list[str] = []
    scanners: list[str] = []


class ArtifactRuleOutcome(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One rule's outcome in a compliance evaluation."""

    rule_id: str
    type: str
    level: Literal["required", "advisory"]
    #: ``not_applicable``: out of the rule's scope; ``error``: a fact could not be read.
    outcome: Outcome
    message: str
    #: How to make it pass; null when it passes.
    fix: str | None = None
    #: What the outcome rests on (approvers, statuses, keys found...).
    facts: dict[str, Any] = {}


class ArtifactCompliance(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A pull request's compliance evaluation: the latest of the run (the merge's, once frozen)."""

    repository: str
    pull_request_id: Count
    #: The source head evaluated, the full hash when it could be resolved.
    head: str
    policy_name: str
    #: SHA-256 of the canonical policy: which version of the rules decided.
    policy_hash: str
    verdict: Verdict
    #: The final evaluation of a merged pull request: nothing later replaces it.
    frozen: bool
    #: The pull request's state then (``OPEN``, ``MERGED``...).
    pr_state: str
    #: What caused it: a webhook event key, ``check`` or ``run``.
    trigger: str
    evaluated_at: AwareDatetime
    title: str | None = None
    source_branch: str | None = None
    destination_branch: str | None = None
    reason: str | None = None
    outcomes: list[ArtifactRuleOutcome] = []
    #: What the verdict rests on; null when the pull request was not found.
    facts: PullRequestFacts | None = None


class RunArtifact(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One run's evidence (a scan), or one hour of a webhook daemon's."""

    kind: Literal["scan", "webhook"]
    run_id: str
    pipeline: str
    #: The commit of the git checkout the run started in; null outside one.
    git_sha: str | None
    #: The pipeline's IANA time zone; every timestamp here carries its offset.
    timezone: str
    generated_at: AwareDatetime
    window: ArtifactWindow | None
    source: ArtifactSource
    counts: ArtifactCounts
    status: Literal["running", "succeeded", "failed", "interrupted"]
    #: Pull-request secret scans (the PR security bot), one per repository, PR and head.
    pull_request_scans: list[ArtifactScan] = []
    #: Compliance evaluations, the latest per repository and pull request.
    compliance_evaluations: list[ArtifactCompliance] = []
    #: Commit summaries (empty when the sink's ``include_payload`` is false). Last field:
    #: the sink streams it.
    payload: list[CommitSummary]


def run_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`RunArtifact`, as committed in ``schemas/``."""
    generated = msgspec.json.schema(RunArtifact)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "rcingest run artifact",
        "description": (
            "One scan_<run_id>.json or webhook_<YYYYMMDDTHH>.json written by the "
            "json_artifact sink. Generated from rcingest.artifact; do not edit."
        ),
        **generated,
    }
    result: dict[str, Any] = clean_descriptions(schema)
    return result
