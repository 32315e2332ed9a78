"""Shapes shared by the diff parser, the scanners and the sinks that report findings.

A scanner reads ``DiffFile``s (only what a change *adds* is scanned: a secret
on a removed line is already in history and is not this change's doing) and
returns ``Finding``s. A finding never holds the secret: ``fingerprint`` is a
keyed hash of rule and secret (so the same secret is recognised across heads
without being stored), and ``excerpt`` shows at most four of its characters.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

import msgspec

__all__ = [
    "MAX_SHOWN",
    "AddedLine",
    "DiffFile",
    "Finding",
    "Severity",
    "fingerprint",
    "redact_secret",
]

Severity = Literal["critical", "high", "medium", "low", "info"]
FileStatus = Literal["added", "modified", "deleted", "renamed", "binary"]
#: At most this many characters of a secret appear in an excerpt.
MAX_SHOWN = 4


class AddedLine(msgspec.Struct, frozen=True):
    """One line a diff adds, with its 1-based line number in the new file."""

    line: int
    text: str


class DiffFile(msgspec.Struct, kw_only=True):
    """One file of a unified git diff."""

    #: Path in the new tree (the old path for a deleted file).
    path: str
    #: Path before a rename or copy; ``None`` otherwise.
    old_path: str | None = None
    status: FileStatus = "modified"
    #: True for "Binary files ... differ" and GIT binary patches: nothing to scan.
    binary: bool = False
    added: list[AddedLine] = []
    #: Number of removed lines (counted, not kept: they are not scanned).
    removed: int = 0


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One secret found, without the secret.

    Where it was found (repository, pull request, head hash) is added by the
    pipeline that ran the scan; a scanner knows only paths and lines.
    """

    path: str
    line_start: int
    line_end: int
    rule_id: str
    rule_name: str
    severity: Severity
    #: ``fingerprint(key, rule_id, secret)``: stable across heads, not reversible.
    fingerprint: str
    #: The line with the secret replaced by ``redact_secret(secret)``, shortened.
    excerpt: str
    #: Which scanner produced it (``secrets``, ``sarif:gitleaks``, ...).
    scanner: str = "secrets"


def fingerprint(key: bytes, rule_id: str, secret: str) -> str:
    """HMAC-SHA256 of rule id and secret under ``key``, hex, 32 characters.

    Keyed, so a fingerprint published in a report or sent to Chariot cannot
    be confirmed by hashing guessed secrets without the key.
    """
    message = rule_id.encode() + b"\x00" + secret.encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def redact_secret(secret: str) -> str:
    """The secret as shown in excerpts: at most ``MAX_SHOWN`` leading characters, then ``***``.

    Short secrets show less (a quarter, rounded down), so that an 8-character
    password does not lose half of itself.
    """
    shown = min(MAX_SHOWN, len(secret) // 4)
    return secret[:shown] + "***"
