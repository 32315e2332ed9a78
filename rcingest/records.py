"""The records that flow from sources through enrichers to sinks.

These msgspec Structs are shared by every plugin: a source produces them, an
enricher returns changed copies (``msgspec.structs.replace``), a sink stores
them. They are the single source of truth for the shapes; ``docs/records.md``
describes them and a test keeps that page in sync.

Timestamps are timezone-aware ``datetime`` objects. Commit hashes are full
40-character SHA-1 hex strings wherever the source could learn them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from rcingest.compliance.records import ComplianceEvaluation
from rcingest.scanning.records import PullRequestScan, RepositoryScan

__all__ = [
    "Checkpoint",
    "Commit",
    "ComplianceEvaluation",
    "FileChange",
    "PullRequest",
    "PullRequestRef",
    "PullRequestScan",
    "Record",
    "Repository",
    "RepositoryScan",
    "StoryKey",
    "StoryKeyOrigin",
    "WebhookDelivery",
    "record_type",
]

StoryKeyOrigin = Literal["message", "branch", "pr_title", "pr_branch"]
FileStatus = Literal["added", "removed", "modified", "renamed"]


class StoryKey(msgspec.Struct, frozen=True):
    """A Jira issue key and every place it was found (one key, many origins).

    ``branches`` is the evidence for the ``branch`` origin: the names of the
    branches that lent the key (empty when ``branch`` is not an origin).
    """

    key: str
    origins: tuple[StoryKeyOrigin, ...]
    branches: tuple[str, ...] = ()


class FileChange(msgspec.Struct, frozen=True):
    """One file a commit touched, from Bitbucket's diffstat (first parent for merges)."""

    path: str
    status: FileStatus
    old_path: str | None = None
    lines_added: int = 0
    lines_removed: int = 0


class PullRequestRef(msgspec.Struct, frozen=True):
    """What a commit needs to know of a pull request that contains it.

    Carried on the commit so that an enricher, a pure function of one record,
    can take story keys from the PR title and source branch.
    """

    id: int
    title: str
    source_branch: str
    #: The pull request's repository when it is not the commit's: a commit of
    #: a pull request from a fork is in the fork, the pull request is not.
    repository: str | None = None


class Repository(msgspec.Struct, tag="repository", kw_only=True):
    """A Bitbucket repository; ``full_name`` is ``workspace/slug``."""

    full_name: str
    uuid: str | None = None
    name: str | None = None
    workspace: str | None = None
    is_private: bool | None = None
    mainbranch: str | None = None
    language: str | None = None
    updated_on: datetime | None = None
    #: The repository's web page (``links.html.href``): Chariot's asset group.
    web_url: str | None = None
    #: The key of the Bitbucket project it is in.
    project: str | None = None
    #: Size in bytes, as Bitbucket reports it.
    size: int | None = None
    created_on: datetime | None = None
    #: ``workspace/slug`` of the repository this one is a fork of.
    fork_of: str | None = None
    #: The last push seen (a ``repo:push`` delivery, else the listing's ``updated_on``).
    last_push: datetime | None = None
    #: ``active``; ``deleted``: tombstoned (gone, or renamed: ``renamed_to``);
    #: ``filtered``: listed but kept out by the source's filters (``state_reason`` says which).
    state: Literal["active", "deleted", "filtered"] = "active"
    state_reason: str | None = None
    #: Set on the tombstone of a renamed repository (the same UUID under a new name).
    renamed_to: str | None = None


class Commit(msgspec.Struct, tag="commit", kw_only=True):
    """A commit seen on one or more branches of a repository.

    ``branches`` lists every branch the commit was seen on (containment);
    ``new_on`` only those that brought it: the commit is not reachable from
    the repository's main branch or the other branches' heads. Only a
    ``new_on`` branch lends its name's story key, so creating
    ``feature/REL-12`` at an old commit tags no old work with ``REL-12``.

    ``files`` is ``None`` when the file list was not fetched (diffstat switched
    off, or a webhook delivery), and ``[]`` when the commit really touched no
    file.
    """

    hash: str
    repository: str
    date: datetime
    branches: list[str] = []
    new_on: list[str] = []
    author_raw: str = ""
    author_name: str | None = None
    author_account_id: str | None = None
    message: str = ""
    parents: list[str] = []
    files: list[FileChange] | None = None
    pull_requests: list[PullRequestRef] = []
    story_keys: list[StoryKey] = []

    @property
    def summary(self) -> str:
        """The first line of the message."""
        return self.message.split("\n", 1)[0].strip()


class PullRequest(msgspec.Struct, tag="pull_request", kw_only=True):
    """A pull request; ``id`` is unique within its repository only."""

    id: int
    repository: str
    title: str
    state: Literal["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]
    source_branch: str
    destination_branch: str
    created_on: datetime
    updated_on: datetime
    #: The repository the source branch is in (``workspace/slug``): a fork's
    #: for a pull request from a fork; None when the source did not say.
    source_repository: str | None = None
    description: str = ""
    author_name: str | None = None
    author_account_id: str | None = None
    merge_commit: str | None = None
    commit_hashes: list[str] = []
    story_keys: list[StoryKey] = []


class WebhookDelivery(msgspec.Struct, tag="webhook_delivery", kw_only=True):
    """One webhook request as received, recorded for audit and de-duplication."""

    request_uuid: str
    event: str
    received_at: datetime
    hook_uuid: str | None = None
    attempt: int = 1
    repository: str | None = None
    outcome: str = "stored"
    content_key: str | None = None


#: ``PullRequestScan`` (``rcingest.scanning.records``): a pull request's secret scan;
#: ``ComplianceEvaluation`` (``rcingest.compliance.records``): a pull request's
#: evaluation against a policy.
Record = (
    Repository
    | Commit
    | PullRequest
    | WebhookDelivery
    | PullRequestScan
    | ComplianceEvaluation
    | RepositoryScan
)


def record_type(record: Record) -> str:
    """The tag of a record (``commit``, ``pull_request``...), used in summaries."""
    tag = type(record).__struct_config__.tag
    return str(tag)


class Checkpoint(msgspec.Struct, frozen=True):
    """A marker a source puts between records: everything before it is complete.

    The runner passes it to every sink in the batch that holds it and, once all
    sinks have flushed, saves ``state`` as the cursor of ``stream`` (a sink that
    is a cursor store saves it in the same transaction as the rows) and calls
    the source's ``acknowledge``. ``state=None`` means nothing to save, only an
    acknowledgement to deliver (a webhook delivery waiting for its 2xx).
    """

    stream: str
    state: dict[str, Any] | None = None
    token: int = 0
