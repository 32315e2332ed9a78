"""Sample data for plugin tests: a run context and one record of each type.

``rcingest.testing.contracts`` runs components over these; plugin authors can
use them in their own tests too.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rcingest.interfaces import RunContext
from rcingest.records import (
    Commit,
    ComplianceEvaluation,
    FileChange,
    PullRequest,
    PullRequestRef,
    Record,
    Repository,
    RepositoryScan,
    StoryKey,
    WebhookDelivery,
)

__all__ = [
    "CONTRACT_PASSWORD",
    "CONTRACT_SECRET",
    "CONTRACT_SECRETS",
    "ZONE",
    "make_test_context",
    "record_key",
    "sample_records",
]

#: A secret value the sink check puts in ``context.secrets`` and in one commit
#: message: what a sink stores must never contain it (writing-plugins.md).
CONTRACT_SECRET = "s3cr3t-contract-token-9f2c"  # noqa: S105 (a fake, public on purpose)
#: A second one, in the merge commit's message, with the characters JSON and URLs
#: escape (quote, backslash, slash, plus, ampersand, space, non-ASCII): a sink
#: that masks the plain value after escaping it still writes this one.
CONTRACT_PASSWORD = 'pw"contract\\7d/1a+&= é'  # noqa: S105
#: Every secret the sink check plants; ``context.secrets`` of its run.
CONTRACT_SECRETS = frozenset({CONTRACT_SECRET, CONTRACT_PASSWORD})
ZONE = ZoneInfo("America/Phoenix")


def make_test_context(tmp_path: Path, **overrides: Any) -> RunContext:
    """A ``RunContext`` like the CLI builds for a scan (``mode="run"``, America/Phoenix)."""
    values: dict[str, Any] = {
        "run_id": "contract-run-1",
        "pipeline_name": "contract",
        "timezone": ZONE,
        "started_at": datetime.now(ZONE),
        "base_dir": Path(tmp_path),
        "source_id": "contract:source",
        "mode": "run",
    }
    values.update(overrides)
    return RunContext(**values)


def sample_records() -> list[Record]:
    """One of each record type, with the shapes sinks get wrong (renames, ``files=None``...).

    Deterministic: the same values every call, fresh objects every call.
    """
    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=ZONE)
    main, fix, merge = "a1" * 20, "b2" * 20, "c3" * 20
    ref = PullRequestRef(7, "REL-12 Fix the café parser", "feature/REL-12-parser")
    ada: dict[str, Any] = {"repository": "acme/api", "author_raw": "Ada L. <ada@example.com>"}
    files = [
        FileChange("src/api/ingest.py", "added", None, 120, 0),
        FileChange("src/api/old.py", "removed", None, 0, 40),
        FileChange("src/api/routes.py", "modified", None, 5, 2),
        FileChange("docs/ingest.md", "renamed", "docs/INGEST.md", 1, 1),
    ]
    return [
        Repository(full_name="acme/api", workspace="acme", name="API", is_private=True),
        Commit(
            **ada,
            hash=main,
            date=t0,
            branches=["main", "release/2026.11"],
            author_name="Ada L.",
            author_account_id="557058:ada",
            message="REL-11 Add the ingest endpoint\n\nUnicode body: naïve — 日本語",
            parents=["0f" * 20],
            files=files,
            story_keys=[StoryKey("REL-11", ("message",))],
        ),
        Commit(
            **ada,
            hash=fix,
            date=t0.replace(hour=11),
            branches=[ref.source_branch],
            # The sink check lists this value in context.secrets: it must be masked.
            message=f"REL-12 parser fix (leaked token={CONTRACT_SECRET})",
            parents=[main],
            files=None,  # not fetched: a webhook push, or diffstat switched off
            pull_requests=[ref],
            story_keys=[StoryKey("REL-12", ("message", "branch", "pr_title", "pr_branch"))],
        ),
        # Fetched, and really touching no file.
        Commit(
            **ada,
            hash=merge,
            date=t0.replace(hour=12),
            message=f"Merge pull request #7 (deploy password: {CONTRACT_PASSWORD})",
            parents=[main, fix],
            files=[],
        ),
        PullRequest(
            id=ref.id,
            repository="acme/api",
            title=ref.title,
            state="MERGED",
            source_branch=ref.source_branch,
            destination_branch="main",
            created_on=t0.replace(hour=11, minute=5),
            updated_on=t0.replace(hour=12),
            merge_commit=merge,
            commit_hashes=[fix],
            story_keys=[StoryKey("REL-12", ("pr_title", "pr_branch"))],
        ),
        WebhookDelivery(
            request_uuid="6d1e3f5a-0000-4000-8000-000000000001",
            event="repo:push",
            received_at=t0.replace(hour=12, minute=1),
            repository="acme/api",
        ),
    ]


def record_key(record: Record) -> str:
    """The identity of a record, as a sink that de-duplicates sees it."""
    if isinstance(record, Commit):
        return f"commit {record.repository}@{record.hash}"
    if isinstance(record, PullRequest):
        return f"pull_request {record.repository}#{record.id}"
    if isinstance(record, Repository):
        return f"repository {record.full_name}"
    if isinstance(record, WebhookDelivery):
        return f"webhook_delivery {record.request_uuid}"
    if isinstance(record, RepositoryScan):
        return f"repo_scan {record.repository}@{record.head}"
    if isinstance(record, ComplianceEvaluation):
        return f"compliance {record.repository}#{record.pull_request_id}@{record.head}"
    return f"pr_scan {record.repository}#{record.pull_request_id}@{record.head}"
