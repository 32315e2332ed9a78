"""The record a pull-request scan produces: what was scanned, the verdict, the findings.

It flows to sinks like every other record (``rcingest.records.Record``): the
database keeps findings with their first/last seen and state, the JSON
artifact lists them, and the write-back sinks report them on the pull
request. Keyed by (repository, pull request, head): a head already scanned is
not scanned again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from rcingest.scanning.model import Finding

__all__ = ["PullRequestScan", "RepositoryScan", "RepositoryScanState", "ScanState"]

#: ``scanning``: started (write-back shows INPROGRESS); ``findings``/``clean``:
#: scanned; the others: not scanned, and why.
ScanState = Literal[
    "scanning", "findings", "clean", "too_large", "diff_timeout", "not_found", "failed"
]


class PullRequestScan(msgspec.Struct, tag="pr_scan", kw_only=True):
    """One scan of a pull request's diff at one source head."""

    #: ``workspace/slug``.
    repository: str
    pull_request_id: int
    #: The full 40-character source head hash the diff was taken at.
    head: str
    state: ScanState
    scanned_at: datetime
    title: str | None = None
    source_branch: str | None = None
    destination_branch: str | None = None
    #: Why it was not scanned (``too_large``, ``failed``...); never a secret.
    reason: str | None = None
    #: Open findings at this head (allowed ones excluded).
    findings: list[Finding] = []
    #: Fingerprints that matched the allowlist or an inline marker at this head.
    allowed: list[str] = []
    #: Names of the scanners that ran (``secrets``, ``sarif:gitleaks``).
    scanners: list[str] = []
    diff_bytes: int = 0
    files_scanned: int = 0


#: ``findings``/``clean``: scanned; ``too_large``/``timeout``: the clone passed
#: its bound (killed, not half-scanned); ``not_found``: the repository or its
#: branch is gone; ``failed``: anything else, with the reason.
RepositoryScanState = Literal["findings", "clean", "too_large", "timeout", "not_found", "failed"]


class RepositoryScan(msgspec.Struct, tag="repo_scan", kw_only=True):
    """One secret scan of a repository's main branch content at one head (pattern 1).

    Findings carry the same fields as a pull request's (never the secret); a
    finding of the previous scan that this one no longer has is fixed.
    """

    #: ``workspace/slug``.
    repository: str
    branch: str
    #: The full 40-character head of ``branch`` that was scanned.
    head: str
    state: RepositoryScanState
    scanned_at: datetime
    reason: str | None = None
    findings: list[Finding] = []
    allowed: list[str] = []
    scanners: list[str] = []
    files_scanned: int = 0
    bytes_scanned: int = 0
