"""Read one pull request's facts from Bitbucket, with as few requests as the rules allow.

Always the single-PR ``GET`` (list endpoints omit participants and
reviewers); the PR's statuses when a ``checks`` rule is in scope (that
listing also carries the head's full hash, which write-back needs); the
effective default reviewers once per repository per ``Gatherer``; the
commits only for ``every_commit`` story keys or ``exclude_last_pusher``. The
full head is resolved with one more read only when nothing else gave it.

A fact that cannot be read (a token without the scope for default reviewers)
is recorded in ``unreadable`` with the reason, and the rule that needs it
fails closed with that message; a 404 on the pull request itself is
``PullRequestGone``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from rcingest.compliance.evaluate import StoryKeyDefaults, evaluate, needs
from rcingest.compliance.facts import (
    Person,
    PullRequestFacts,
    facts_from_api,
    person_from_api,
    statuses_from_api,
)
from rcingest.compliance.policy import Policy, policy_hash
from rcingest.compliance.records import ComplianceEvaluation
from rcingest.errors import RcingestError

__all__ = ["Gatherer", "PullRequestGone"]

_FULL = re.compile(r"[0-9a-f]{40}")
_COMMIT_HREF = re.compile(r"/commit/([0-9a-f]{40})(?:$|[/?#])")
#: Default reviewers change rarely; a daemon re-reads them after this long.
DEFAULT_REVIEWERS_TTL = 600.0
MAX_COMMITS = 250


class PullRequestGone(RcingestError):
    """The pull request (or its repository) answered 404."""


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _reason(exc: BaseException) -> str:
    # BitbucketError messages are redacted by the client that raised them.
    return str(exc).splitlines()[0][:300]


@dataclass
class Gatherer:
    """Facts and evaluations of pull requests through one REST client."""

    client: Any
    policy: Policy
    own_keys: frozenset[str] = frozenset({"rcingest-compliance"})
    story: StoryKeyDefaults = ("strict", None)
    _reviewers: dict[str, tuple[float, list[Person] | None, str | None]] = field(
        default_factory=dict
    )
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    #: Read the head's full hash when nothing else gave it (write-back needs it;
    #: ``rcingest check``, which writes nothing, does not).
    resolve_head: bool = True
    #: Requests made, for the benchmark and the logs.
    requests: int = 0

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        self.requests += 1
        return await self.client.get_json(path, params)

    async def _pages(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        values: list[Any] = []
        page: Any = await self._get(path, {"pagelen": 50, **(params or {})})
        while isinstance(page, dict):
            values += page.get("values") or []
            nxt = page.get("next")
            if not isinstance(nxt, str) or len(values) >= 1000:
                break
            page = await self._get(nxt)  # the client refuses a foreign host
        return values

    async def default_reviewers(self, repository: str) -> tuple[list[Person] | None, str | None]:
        cached = self._reviewers.get(repository)
        if cached is not None and time.monotonic() - cached[0] < DEFAULT_REVIEWERS_TTL:
            return cached[1], cached[2]
        # Pull requests of one repository evaluated at once read the list once.
        lock = self._locks.setdefault(repository, asyncio.Lock())
        async with lock:
            cached = self._reviewers.get(repository)
            if cached is not None and time.monotonic() - cached[0] < DEFAULT_REVIEWERS_TTL:
                return cached[1], cached[2]
            return await self._read_default_reviewers(repository)

    async def _read_default_reviewers(
        self, repository: str
    ) -> tuple[list[Person] | None, str | None]:
        try:
            values = await self._pages(f"/repositories/{repository}/effective-default-reviewers")
            people = [p for v in values if (p := person_from_api(v.get("user"))) is not None]
            result: tuple[list[Person] | None, str | None] = (people, None)
        except RcingestError as exc:
            refused = _status(exc) in (401, 403)
            hint = " (the token needs read access to the repository's settings)"
            result = (None, _reason(exc) + (hint if refused else ""))
            if not refused:
                # A transient failure (retries exhausted): the next evaluation
                # tries again rather than failing for the cache's lifetime.
                return result
        self._reviewers[repository] = (time.monotonic(), *result)
        return result

    async def facts(self, repository: str, pr_id: int) -> PullRequestFacts:
        base = f"/repositories/{repository}/pullrequests/{pr_id}"
        try:
            pr = await self._get(base)
        except RcingestError as exc:
            if _status(exc) == 404:
                raise PullRequestGone(f"{repository} PR #{pr_id}: gone (404)") from None
            raise
        if not isinstance(pr, dict):
            raise RcingestError(f"{repository} PR #{pr_id}: unexpected answer")
        facts = facts_from_api(repository, pr)
        wanted = needs(self.policy, repository, facts.destination_branch)
        unreadable: dict[str, str] = {}
        changes: dict[str, Any] = {}
        head = facts.head or ""
        if "statuses" in wanted:
            try:
                values = await self._pages(f"{base}/statuses")
                changes["statuses"] = statuses_from_api(values)
                head = _full_from_statuses(values, head) or head
            except RcingestError as exc:
                unreadable["statuses"] = _reason(exc)
        if "default_reviewers" in wanted:
            people, why = await self.default_reviewers(repository)
            changes["default_reviewers"] = people
            if why:
                unreadable["default_reviewers"] = why
        if "commits" in wanted:
            try:
                commits = await self._pages(f"{base}/commits")
                commits = commits[:MAX_COMMITS]
                changes["commit_messages"] = [str(c.get("message") or "") for c in commits]
                if commits:
                    author = commits[0].get("author") or {}
                    changes["head_author"] = person_from_api(author.get("user"))
                    full = commits[0].get("hash")
                    if isinstance(full, str) and _FULL.fullmatch(full):
                        head = full
            except RcingestError as exc:
                unreadable["commits"] = _reason(exc)
        if self.resolve_head and head and not _FULL.fullmatch(head):
            try:
                value = await self._get(f"/repositories/{repository}/commit/{head}")
                full = value.get("hash") if isinstance(value, dict) else None
                if isinstance(full, str) and _FULL.fullmatch(full):
                    head = full
            except RcingestError as exc:
                unreadable["head"] = _reason(exc)
        return msgspec.structs.replace(facts, head=head, unreadable=unreadable, **changes)

    async def evaluation(
        self, repository: str, pr_id: int, *, trigger: str = "run"
    ) -> ComplianceEvaluation:
        """Evaluate ``pr_id`` now; a pull request that is gone gives ``not_found``."""
        try:
            facts = await self.facts(repository, pr_id)
        except PullRequestGone as exc:
            return ComplianceEvaluation(
                repository=repository,
                pull_request_id=pr_id,
                head="",
                policy_name=self.policy.name,
                policy_hash=policy_hash(self.policy),
                evaluated_at=datetime.now(UTC),
                verdict="not_found",
                pr_state="UNKNOWN",
                trigger=trigger,
                reason=str(exc),
            )
        return evaluate(
            self.policy, facts, own_keys=self.own_keys, story=self.story, trigger=trigger
        )

    async def open_pull_requests(self, repository: str, head: str | None = None) -> list[int]:
        """Ids of the open pull requests of ``repository`` (whose source head is ``head``)."""
        values = await self._pages(f"/repositories/{repository}/pullrequests", {"state": "OPEN"})
        ids = []
        for v in values:
            commit = ((v.get("source") or {}).get("commit") or {}).get("hash") or ""
            if head is None or (commit and (head.startswith(commit) or commit.startswith(head))):
                ids.append(int(v["id"]))
        return ids


def _full_from_statuses(values: list[Any], head: str) -> str | None:
    """The full hash of ``head`` from a status's commit link, if one names it."""
    for value in values:
        if not isinstance(value, dict):
            continue
        commit = value.get("commit")
        full = commit.get("hash") if isinstance(commit, dict) else None
        if not isinstance(full, str):
            href = ((value.get("links") or {}).get("commit") or {}).get("href") or ""
            match = _COMMIT_HREF.search(href) if isinstance(href, str) else None
            full = match.group(1) if match else None
        if full and _FULL.fullmatch(full) and full.startswith(head):
            return full
    return None
