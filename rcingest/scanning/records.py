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

__all__ = ["PullRequestScan", "ScanState"]

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
