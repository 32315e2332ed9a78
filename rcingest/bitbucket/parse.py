"""Sans-I/O conversion of Bitbucket API JSON into rcingest records, and page parsing.

Every function here is pure: JSON (as ``dict`` or as the lenient Structs of
``rcingest.bitbucket.api``) in, records out. The REST source and the webhook
daemon both call them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar, cast, get_args

import msgspec

from rcingest.bitbucket import api
from rcingest.nul import strip_nul
from rcingest.records import Commit, FileChange, FileStatus, PullRequest, Repository

__all__ = [
    "commit_from_api",
    "error_message",
    "files_from_diffstat",
    "page_next",
    "pull_request_from_api",
    "repository_from_api",
]

T = TypeVar("T")
_STATUSES: frozenset[str] = frozenset(get_args(FileStatus))
_PR_STATES = frozenset({"OPEN", "MERGED", "DECLINED", "SUPERSEDED"})
_RAW_NAME = re.compile(r"^\s*(.*?)\s*<[^>]*>\s*$")


def _as(value: Any, kind: type[T]) -> T:
    if isinstance(value, kind):
        return value
    return msgspec.convert(value, kind)


def _aware(moment: datetime) -> datetime:
    # Bitbucket always sends an offset; a naive value can only come from a
    # hand-made payload, and UTC is the only sensible reading of it.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def author_name_from_raw(raw: str) -> str | None:
    """``"Jane Doe <jane@example.com>"`` → ``"Jane Doe"``; ``None`` when there is no name."""
    match = _RAW_NAME.match(raw)
    name = match.group(1) if match else raw.strip()
    return name or None


def commit_from_api(
    value: dict[str, Any] | api.Commit, repository: str, branches: list[str]
) -> Commit:
    """A ``Commit`` record from a commit value (REST list, single commit or push payload).

    ``files`` is left ``None`` (not fetched); the caller adds the diffstat.
    """
    c = _as(value, api.Commit)
    user = c.author.user
    name = (user.display_name if user else None) or author_name_from_raw(c.author.raw)
    return strip_nul(
        Commit(
            hash=c.hash,
            repository=repository,
            date=_aware(c.date),
            branches=list(branches),
            author_raw=c.author.raw,
            author_name=name,
            author_account_id=user.account_id if user else None,
            message=c.message,
            parents=[p.hash for p in c.parents],
        )
    )


def file_from_diffstat(value: dict[str, Any] | api.DiffStat) -> FileChange:
    """One ``FileChange`` from one diffstat entry (renames keep the old path)."""
    d = _as(value, api.DiffStat)
    old = d.old.path if d.old is not None and d.old.path else None
    new = d.new.path if d.new is not None and d.new.path else None
    status = d.status if d.status in _STATUSES else "modified"
    path = new or old or ""
    return strip_nul(
        FileChange(
            path=path,
            status=cast(FileStatus, status),
            old_path=old if old is not None and old != path else None,
            lines_added=d.lines_added or 0,
            lines_removed=d.lines_removed or 0,
        )
    )


def files_from_diffstat(values: list[dict[str, Any]] | list[api.DiffStat]) -> list[FileChange]:
    """The files a commit changed, from the ``values`` of its diffstat pages."""
    return [file_from_diffstat(v) for v in values]


def pull_request_from_api(
    value: dict[str, Any] | api.PullRequest, repository: str, commit_hashes: list[str]
) -> PullRequest:
    """A ``PullRequest`` record; ``merge_commit`` keeps Bitbucket's hash (12 characters)."""
    p = _as(value, api.PullRequest)
    state = p.state if p.state in _PR_STATES else "OPEN"
    return strip_nul(
        PullRequest(
            id=p.id,
            repository=repository,
            title=p.title,
            state=state,  # type: ignore[arg-type]
            source_branch=p.source.branch.name,
            destination_branch=p.destination.branch.name,
            # As the payload says it (a fork's full name for a pull request from a fork).
            source_repository=(p.source.repository.full_name or None)
            if p.source.repository
            else None,
            created_on=_aware(p.created_on),
            updated_on=_aware(p.updated_on),
            description=p.description or "",
            author_name=p.author.display_name if p.author else None,
            author_account_id=p.author.account_id if p.author else None,
            merge_commit=p.merge_commit.hash if p.merge_commit else None,
            commit_hashes=list(commit_hashes),
        )
    )


def repository_from_api(value: dict[str, Any] | api.Repository) -> Repository:
    """A ``Repository`` record from a repository value."""
    r = _as(value, api.Repository)
    # ``full_name`` is authoritative; ``workspace.slug`` only when it has no slash.
    if "/" in r.full_name:
        workspace: str | None = r.full_name.split("/", 1)[0]
    else:
        workspace = r.workspace.slug if r.workspace else None
    return strip_nul(
        Repository(
            full_name=r.full_name,
            uuid=r.uuid,
            name=r.name,
            workspace=workspace,
            is_private=r.is_private,
            mainbranch=r.mainbranch.name if r.mainbranch and r.mainbranch.name else None,
            language=r.language or None,
            updated_on=_aware(r.updated_on) if r.updated_on else None,
            web_url=r.links.html.href if r.links and r.links.html and r.links.html.href else None,
            project=r.project.key if r.project and r.project.key else None,
            size=r.size,
            created_on=_aware(r.created_on) if r.created_on else None,
            fork_of=r.parent.full_name if r.parent and r.parent.full_name else None,
        )
    )


def page_next(page: api.Page[Any]) -> str | None:
    """The ``next`` URL of a page, or ``None`` when this is the last page.

    An empty ``values`` ends the listing even when ``next`` is present
    (Bitbucket sends ``next`` on some empty last pages, BCLOUD-22441).
    """
    if not page.values or not page.next:
        return None
    return page.next


_ERROR = msgspec.json.Decoder(api.Error)


def error_message(body: bytes, limit: int = 300) -> str:
    """Bitbucket's own message from an error body: the JSON envelope, else the text."""
    try:
        detail = _ERROR.decode(body).error
        text = detail.message + (f" ({detail.detail})" if detail.detail else "")
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = ""
    if not text:
        text = body.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")
