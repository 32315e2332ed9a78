"""Lenient msgspec Structs for Bitbucket Cloud API JSON: only the fields rcingest reads.

Unknown fields are ignored (Bitbucket adds fields freely); every field used
has a default where real payloads were seen without it (``author.user`` is
absent when the commit e-mail is not linked to an account).
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")

__all__ = [
    "Account",
    "Author",
    "Branch",
    "Commit",
    "DiffStat",
    "Page",
    "PullRequest",
    "Repository",
]


class Account(msgspec.Struct):
    """A Bitbucket user or app user (``author.user``, ``pullrequest.author``)."""

    display_name: str | None = None
    account_id: str | None = None
    uuid: str | None = None
    nickname: str | None = None


class Author(msgspec.Struct):
    """A commit author: the raw ``Name <email>`` and, when linked, the account."""

    raw: str = ""
    user: Account | None = None


class HashRef(msgspec.Struct):
    """``{"hash": ...}`` as found in ``parents``, ``merge_commit``, PR endpoints."""

    hash: str


class Commit(msgspec.Struct):
    """A commit value of ``/commits``, ``/commit/{rev}`` or a push payload."""

    hash: str
    date: datetime
    author: Author = msgspec.field(default_factory=Author)
    message: str = ""
    parents: list[HashRef] = []


class FilePath(msgspec.Struct):
    """``old``/``new`` side of a diffstat entry."""

    path: str = ""


class DiffStat(msgspec.Struct):
    """One entry of ``/diffstat/{spec}``."""

    status: str = "modified"
    lines_added: int | None = 0
    lines_removed: int | None = 0
    old: FilePath | None = None
    new: FilePath | None = None


class BranchName(msgspec.Struct):
    name: str = ""


class RepositoryName(msgspec.Struct):
    full_name: str = ""


class Endpoint(msgspec.Struct):
    """``source``/``destination`` of a pull request."""

    branch: BranchName = msgspec.field(default_factory=BranchName)
    commit: HashRef | None = None
    #: The repository of the branch: a fork for a pull request from a fork.
    repository: RepositoryName | None = None


class PullRequest(msgspec.Struct):
    """A pull request value of ``/pullrequests`` or a webhook payload."""

    id: int
    title: str
    state: str
    created_on: datetime
    updated_on: datetime
    source: Endpoint = msgspec.field(default_factory=Endpoint)
    destination: Endpoint = msgspec.field(default_factory=Endpoint)
    description: str | None = ""
    author: Account | None = None
    merge_commit: HashRef | None = None


class WorkspaceRef(msgspec.Struct):
    slug: str | None = None


class Href(msgspec.Struct):
    href: str | None = None


class RepositoryLinks(msgspec.Struct):
    html: Href | None = None


class ProjectRef(msgspec.Struct):
    key: str | None = None


class Repository(msgspec.Struct):
    """A repository value of ``/repositories/{workspace}[/{slug}]``."""

    full_name: str
    uuid: str | None = None
    name: str | None = None
    slug: str | None = None
    is_private: bool | None = None
    mainbranch: BranchName | None = None
    language: str | None = None
    updated_on: datetime | None = None
    workspace: WorkspaceRef | None = None
    created_on: datetime | None = None
    size: int | None = None
    links: RepositoryLinks | None = None
    project: ProjectRef | None = None
    #: The repository this one is a fork of.
    parent: RepositoryName | None = None


class BranchTarget(msgspec.Struct):
    hash: str = ""


class Branch(msgspec.Struct):
    """A value of ``/refs/branches``."""

    name: str
    target: BranchTarget | None = None


class Page(msgspec.Struct, Generic[T]):
    """A paginated envelope; ``next`` is absent on the last page."""

    values: list[T] = []
    next: str | None = None


class ErrorDetail(msgspec.Struct):
    message: str = ""
    detail: str | None = None


class Error(msgspec.Struct):
    """``{"type": "error", "error": {"message": ...}}``."""

    error: ErrorDetail = msgspec.field(default_factory=ErrorDetail)
