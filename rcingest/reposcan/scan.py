"""Secret-scan one repository's main branch content at its head (issue 14, pattern 1).

Clone (``clone.shallow_clone``), walk (``tree.iter_batches``), run every
scanner on every batch, merge as a pull request's scan does (the same rule,
path, line and fingerprint once; findings a scanner's allowlist allows kept
apart as fingerprints). What the clone could not do is the scan's state:
``too_large``, ``timeout``, ``not_found`` or ``failed`` with the redacted
reason; nothing is half-scanned.

Incremental scanning, cheapest first:

1. the caller knows the branch head from REST
   (``GET /repositories/{ws}/{slug}/refs/branches/{main}``, ``target.hash``) and
   does not call this at all when it equals the head of the last scan: no git
   process, no request beyond the one it made;
2. ``target.head`` set and equal to ``previous_head``: ``None`` at once;
3. only ``previous_head``: ``git ls-remote`` of the one branch (one small
   request, no clone), ``None`` when it is unchanged;
4. the head a clone checked out equals ``previous_head`` (pushed back meanwhile): ``None``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rcingest.errors import RcingestError
from rcingest.reposcan.clone import (
    CloneError,
    CloneNotFound,
    CloneTimeout,
    CloneTooLarge,
    credential_values,
    redact,
    remote_head,
    shallow_clone,
)
from rcingest.reposcan.tree import DEFAULT_MAX_FILE_BYTES, TreeStats, iter_batches
from rcingest.scanning.model import DiffFile, Finding
from rcingest.scanning.pullrequest import Scanner
from rcingest.scanning.records import RepositoryScan, RepositoryScanState

__all__ = ["RepositoryTarget", "scan_repository"]

log = logging.getLogger("rcingest.reposcan")

_STATES: tuple[tuple[type[CloneError], RepositoryScanState], ...] = (
    (CloneTimeout, "timeout"),
    (CloneTooLarge, "too_large"),
    (CloneNotFound, "not_found"),
)


@dataclass(frozen=True)
class RepositoryTarget:
    """The branch to scan, as the repository listing describes it."""

    #: ``workspace/slug``.
    repository: str
    #: The main branch (``mainbranch.name``).
    branch: str
    #: The HTTPS clone link (``links.clone`` named ``https``); a user name in it is dropped.
    clone_url: str
    #: The branch head from REST when the caller has it (40 hex characters).
    head: str | None = None


def _state_of(exc: CloneError) -> RepositoryScanState:
    for kind, state in _STATES:
        if isinstance(exc, kind):
            return state
    return "failed"


def _next_batch(batches: Iterator[list[DiffFile]]) -> list[DiffFile] | None:
    return next(batches, None)


async def _remove(path: str) -> None:
    # In a thread, shielded: a cancelled scan still has its directory removed.
    await asyncio.shield(asyncio.to_thread(shutil.rmtree, path, True))


async def scan_repository(
    target: RepositoryTarget,
    scanners: Sequence[Scanner],
    *,
    auth_header: str | None,
    allowed_host: str,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109 (bounds the clone; scanners have their own bounds)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    previous_head: str | None = None,
    secrets: Collection[str] = (),
    git: str = "git",
    workdir: str | None = None,
    now: datetime | None = None,
) -> RepositoryScan | None:
    """Scan ``target``'s branch with every scanner; ``None`` when its head is ``previous_head``.

    Never raises for what git or a scanner reports (cancellation passes
    through, the temporary directory removed). ``max_bytes`` bounds the
    checkout on disk (``.git`` included) and so the text scanned;
    ``workdir`` is where the temporary directory goes (the system's default).
    """
    hidden = credential_values(auth_header, secrets)
    head = target.head or ""

    def result(state: RepositoryScanState, **extra: Any) -> RepositoryScan:
        if "reason" in extra:
            extra["reason"] = redact(str(extra["reason"]), hidden)[:500]
        return RepositoryScan(
            repository=target.repository,
            branch=target.branch,
            head=head,
            state=state,
            scanned_at=now or datetime.now(UTC),
            scanners=[s.name for s in scanners],
            **extra,
        )

    common: dict[str, Any] = {
        "auth_header": auth_header,
        "allowed_host": allowed_host,
        "git": git,
        "secrets": secrets,
    }
    if previous_head is not None:
        if target.head is None:
            try:
                head = await remote_head(
                    target.clone_url, branch=target.branch, timeout=timeout, **common
                )
            except CloneError as exc:
                return result(_state_of(exc), reason=str(exc))
            except OSError as exc:  # git missing or not executable, no temporary space
                return result("failed", reason=f"git: {exc.strerror or exc}")
        if head == previous_head:
            return None

    parent = tempfile.mkdtemp(prefix="rcingest-reposcan-", dir=workdir)
    checkout = os.path.join(parent, "checkout")
    try:
        try:
            head = await shallow_clone(
                target.clone_url,
                checkout,
                branch=target.branch,
                max_bytes=max_bytes,
                timeout=timeout,
                **common,
            )
        except CloneError as exc:
            return result(_state_of(exc), reason=str(exc))
        except OSError as exc:
            return result("failed", reason=f"git: {exc.strerror or exc}")
        if head == previous_head:
            return None
        return await _scan_checkout(checkout, scanners, result, max_file_bytes, max_bytes, target)
    finally:
        await _remove(parent)


async def _scan_checkout(
    checkout: str,
    scanners: Sequence[Scanner],
    result: Callable[..., RepositoryScan],
    max_file_bytes: int,
    max_bytes: int,
    target: RepositoryTarget,
) -> RepositoryScan:
    stats = TreeStats()
    batches = iter_batches(
        checkout, stats, max_file_bytes=max_file_bytes, max_total_bytes=max_bytes
    )
    found: dict[tuple[str, int, str, str], Finding] = {}
    allowed: set[str] = set()
    while True:
        try:
            batch = await asyncio.to_thread(_next_batch, batches)
        except CloneTooLarge as exc:
            return result("too_large", reason=str(exc))
        except OSError as exc:
            return result("failed", reason=f"reading the checkout: {exc.strerror}")
        if batch is None:
            break
        for scanner in scanners:
            try:
                results = await scanner.scan(batch)
            except RcingestError as exc:  # a tool that timed out or failed: not scanned
                return result("failed", reason=f"scanner {scanner.name}: {exc}")
            for finding in results:
                if scanner.allowed(finding):
                    allowed.add(finding.fingerprint)
                    continue
                key = (finding.path, finding.line_start, finding.rule_id, finding.fingerprint)
                found.setdefault(key, finding)
    findings = sorted(found.values(), key=lambda f: (f.path, f.line_start, f.rule_id))
    log.info(
        "reposcan: %s %s: %d files (%d bytes) scanned, %d binary and %d over %d bytes skipped",
        target.repository,
        target.branch,
        stats.files,
        stats.bytes,
        stats.binary_skipped,
        stats.large_skipped,
        max_file_bytes,
    )
    return result(
        "findings" if findings else "clean",
        findings=findings,
        allowed=sorted(allowed),
        files_scanned=stats.files,
        bytes_scanned=stats.bytes,
    )
