"""What a policy is checked against: one pull request's facts, read from Bitbucket's JSON.

Pure parsing (no I/O): the single-PR representation (the only one with
``participants`` and ``reviewers``), the statuses on the source head, the
effective default reviewers and, when a rule needs them, the commits. The
facts are stored with each evaluation, so an auditor sees what a verdict was
based on (who approved and when, which statuses were in which state).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = [
    "Participant",
    "Person",
    "PullRequestFacts",
    "Status",
    "facts_from_api",
    "person_from_api",
    "statuses_from_api",
]


class Person(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An account as Bitbucket shows it; a policy may name it by any of the ids."""

    account_id: str | None = None
    uuid: str | None = None
    nickname: str | None = None
    display_name: str | None = None

    def is_(self, name: str) -> bool:
        """True when ``name`` (``{uuid}``, account id or nickname) names this account."""
        return name in (self.account_id, self.uuid, self.nickname) and bool(name)

    @property
    def ident(self) -> str:
        """The most stable id there is, for comparing accounts."""
        return self.uuid or self.account_id or self.nickname or self.display_name or "?"

    @property
    def shown(self) -> str:
        return self.display_name or self.nickname or self.account_id or self.uuid or "someone"


class Participant(msgspec.Struct, kw_only=True, omit_defaults=True):
    user: Person
    role: str = "PARTICIPANT"
    approved: bool = False
    #: ``approved``, ``changes_requested`` or None.
    state: str | None = None
    participated_on: datetime | None = None


class Status(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    state: str
    name: str | None = None
    updated_on: datetime | None = None


class PullRequestFacts(msgspec.Struct, kw_only=True):
    repository: str
    pull_request_id: int
    title: str = ""
    description: str = ""
    #: ``OPEN``, ``MERGED``, ``DECLINED``, ``SUPERSEDED``.
    state: str = "OPEN"
    author: Person | None = None
    source_branch: str | None = None
    #: ``workspace/slug`` of the source branch's repository (a fork's, for a fork).
    source_repository: str | None = None
    destination_branch: str | None = None
    #: Source head, full hash when known.
    head: str | None = None
    reviewers: list[Person] = []
    participants: list[Participant] = []
    #: None: not read (no rule needs them) or could not be read (see ``unreadable``).
    default_reviewers: list[Person] | None = None
    statuses: list[Status] = []
    #: Commit messages, newest first; None when not read.
    commit_messages: list[str] | None = None
    #: Author of the source head commit (the nearest Bitbucket has to a last pusher).
    head_author: Person | None = None
    merge_commit: str | None = None
    closed_by: Person | None = None
    updated_on: datetime | None = None
    #: What could not be read and why (``default_reviewers: 403 ...``), never a secret.
    unreadable: dict[str, str] = {}


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def person_from_api(value: Any) -> Person | None:
    """A ``user`` object (or ``None``)."""
    if not isinstance(value, dict):
        return None
    return Person(
        account_id=_str(value.get("account_id")),
        uuid=_str(value.get("uuid")),
        nickname=_str(value.get("nickname")),
        display_name=_str(value.get("display_name")),
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _ref(pr: dict[str, Any], side: str) -> dict[str, Any]:
    value = pr.get(side)
    return value if isinstance(value, dict) else {}


def _name(value: Any, *path: str) -> str | None:
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return _str(value)


def statuses_from_api(values: list[Any]) -> list[Status]:
    """``GET .../statuses`` values; the newest status of each key wins."""
    latest: dict[str, Status] = {}
    for value in values:
        if not isinstance(value, dict) or not _str(value.get("key")):
            continue
        status = Status(
            key=value["key"],
            state=str(value.get("state") or "UNKNOWN"),
            name=_str(value.get("name")),
            updated_on=_time(value.get("updated_on") or value.get("created_on")),
        )
        known = latest.get(status.key)
        if known is None or (status.updated_on or _EPOCH) >= (known.updated_on or _EPOCH):
            latest[status.key] = status
    return sorted(latest.values(), key=lambda s: s.key)


def facts_from_api(repository: str, pr: dict[str, Any]) -> PullRequestFacts:
    """The facts of a single-PR ``GET`` (or a webhook's ``pullrequest``) value."""
    source, destination = _ref(pr, "source"), _ref(pr, "destination")
    participants = []
    for value in pr.get("participants") or []:
        user = person_from_api(value.get("user")) if isinstance(value, dict) else None
        if user is None:
            continue
        participants.append(
            Participant(
                user=user,
                role=str(value.get("role") or "PARTICIPANT"),
                approved=bool(value.get("approved")),
                state=_str(value.get("state")),
                participated_on=_time(value.get("participated_on")),
            )
        )
    reviewers = [p for p in map(person_from_api, pr.get("reviewers") or []) if p is not None]
    merge = pr.get("merge_commit")
    return PullRequestFacts(
        repository=repository,
        pull_request_id=int(pr.get("id") or 0),
        title=str(pr.get("title") or ""),
        description=str(pr.get("description") or ""),
        state=str(pr.get("state") or "OPEN"),
        author=person_from_api(pr.get("author")),
        source_branch=_name(source, "branch", "name"),
        source_repository=_name(source, "repository", "full_name"),
        destination_branch=_name(destination, "branch", "name"),
        head=_name(source, "commit", "hash"),
        reviewers=reviewers,
        participants=participants,
        merge_commit=_name(merge, "hash") if isinstance(merge, dict) else None,
        closed_by=person_from_api(pr.get("closed_by")),
        updated_on=_time(pr.get("updated_on")),
    )
