"""Scan one pull request at one head: fetch the diff, parse it, run the scanners.

The I/O is behind two small protocols (the REST client implements
``PullRequestAPI``; each scanner plugin implements ``Scanner``), so this
module decides only what a scan concludes:

* the 12-character head of a webhook payload is resolved to the full hash
  (statuses and reports are keyed by it);
* a diff over ``max_diff_bytes`` is ``too_large`` (never half-scanned), a 555
  is ``diff_timeout``, a 404 is ``not_found`` (the PR or its branch is gone),
  anything else the API refuses is ``failed`` with the redacted reason;
* findings of every scanner are merged (the same rule, line and fingerprint
  once), and those the allowlist or an inline marker allows are kept apart.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from rcingest.errors import RcingestError
from rcingest.scanning.model import DiffFile, Finding
from rcingest.scanning.records import PullRequestScan

__all__ = ["PullRequestAPI", "PullRequestTarget", "Scanner", "scan_pull_request"]

log = logging.getLogger("rcingest.scanning")
_FULL_HASH = re.compile(r"[0-9a-f]{40}")


class PullRequestAPI(Protocol):
    """What a scan needs of Bitbucket (``rcingest.bitbucket.client.BitbucketClient``)."""

    async def commit(self, repo: str, rev: str) -> dict[str, Any]: ...

    async def pullrequest_diff(self, repo: str, pr_id: int, *, max_bytes: int) -> bytes: ...


class Scanner(Protocol):
    """A scanner plugin: findings for the added lines of some files."""

    #: Shown in findings and reports (``secrets``, ``sarif:gitleaks``).
    name: str

    async def scan(self, files: Sequence[DiffFile]) -> list[Finding]: ...

    def allowed(self, finding: Finding) -> bool:
        """True when the scanner's allowlist allows this finding."""
        ...


@dataclass(frozen=True)
class PullRequestTarget:
    """The pull request to scan, as a delivery or a listing describes it."""

    repository: str
    pull_request_id: int
    #: The source head, 12 or 40 hex characters.
    head: str
    title: str | None = None
    source_branch: str | None = None
    destination_branch: str | None = None


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


async def full_head(api: PullRequestAPI, repo: str, head: str) -> str:
    """The 40-character hash of ``head`` (returned as is when it already is one)."""
    if _FULL_HASH.fullmatch(head):
        return head
    value = await api.commit(repo, head)
    full = value.get("hash")
    if not isinstance(full, str) or not _FULL_HASH.fullmatch(full):
        raise ValueError(f"commit {head} of {repo}: no full hash in the answer")
    return full


async def scan_pull_request(
    api: PullRequestAPI,
    scanners: Sequence[Scanner],
    target: PullRequestTarget,
    *,
    max_diff_bytes: int,
    now: datetime | None = None,
) -> PullRequestScan:
    """Scan ``target``'s diff with every scanner; never raises for what the API answers."""
    from rcingest.scanning.diff import DiffError, DiffTooLarge, parse_diff

    def result(state: Any, head: str, **extra: Any) -> PullRequestScan:
        return PullRequestScan(
            repository=target.repository,
            pull_request_id=target.pull_request_id,
            head=head,
            state=state,
            scanned_at=now or datetime.now(UTC),
            title=target.title,
            source_branch=target.source_branch,
            destination_branch=target.destination_branch,
            scanners=[s.name for s in scanners],
            **extra,
        )

    head = target.head
    try:
        head = await full_head(api, target.repository, target.head)
        raw = await api.pullrequest_diff(
            target.repository, target.pull_request_id, max_bytes=max_diff_bytes
        )
    except DiffTooLarge as exc:
        return result("too_large", head, reason=str(exc))
    except (RcingestError, ValueError) as exc:  # what the API answered is the outcome
        status = _status_of(exc)
        if status == 555:
            return result("diff_timeout", head, reason="Bitbucket timed out generating the diff")
        if status == 404:
            return result("not_found", head, reason="the pull request or its head is gone (404)")
        # BitbucketError messages are redacted by the client that raised them.
        return result("failed", head, reason=str(exc)[:500])
    try:
        files = parse_diff(raw, max_bytes=max_diff_bytes)
    except DiffTooLarge as exc:
        return result("too_large", head, reason=str(exc), diff_bytes=len(raw))
    except DiffError as exc:
        return result("failed", head, reason=str(exc)[:500], diff_bytes=len(raw))
    scannable = [f for f in files if not f.binary and f.added]
    found: dict[tuple[str, int, str, str], Finding] = {}
    allowed: set[str] = set()
    for scanner in scanners:
        try:
            results = await scanner.scan(scannable)
        except RcingestError as exc:  # a tool that timed out or failed: not scanned
            reason = f"scanner {scanner.name}: {exc}"[:500]
            return result("failed", head, reason=reason, diff_bytes=len(raw))
        for finding in results:
            if scanner.allowed(finding):
                allowed.add(finding.fingerprint)
                continue
            found.setdefault(
                (finding.path, finding.line_start, finding.rule_id, finding.fingerprint), finding
            )
    findings = sorted(found.values(), key=lambda f: (f.path, f.line_start, f.rule_id))
    return result(
        "findings" if findings else "clean",
        head,
        findings=findings,
        allowed=sorted(allowed),
        diff_bytes=len(raw),
        files_scanned=len(scannable),
    )
