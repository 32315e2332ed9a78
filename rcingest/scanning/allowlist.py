"""What a team decided is not a secret: allowlisted paths, rules, fingerprints; inline markers.

* ``paths``: glob patterns (``tests/fixtures/**``, ``*.lock``) of files whose
  findings are allowed;
* ``rules``: rule ids allowed everywhere (``rc.generic.1``);
* ``fingerprints``: single findings, by the fingerprint a report shows;
* an inline marker on the line itself: ``rcingest:allow`` allows every rule
  there, ``rcingest:allow np.aws.1 np.github.1`` only those.

Allowed findings are kept apart (``PullRequestScan.allowed``, the database's
``allowed`` state): never reported, never silently dropped.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

import msgspec

__all__ = ["MARKER", "Allowlist", "marker_allows"]

MARKER = "rcingest:allow"
_MARKER = re.compile(r"rcingest:allow((?:[ \t]+[A-Za-z0-9]+(?:[.-][A-Za-z0-9]+)*)*)")


class Allowlist(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``allowlist:`` of the ``secrets`` scanner."""

    #: Glob patterns of paths (``**`` spans folders).
    paths: list[str] = []
    rules: list[str] = []
    fingerprints: list[str] = []

    def allows(self, path: str, rule_id: str, fingerprint: str) -> bool:
        return (
            rule_id in self.rules
            or fingerprint in self.fingerprints
            or any(_glob(path, pattern) for pattern in self.paths)
        )


def _glob(path: str, pattern: str) -> bool:
    # fnmatch's * already crosses "/"; "**/" also matches no folder at all.
    return fnmatchcase(path, pattern) or fnmatchcase(path, pattern.replace("**/", ""))


def marker_allows(line: str, rule_id: str) -> bool:
    """True when ``line`` carries an ``rcingest:allow`` marker for ``rule_id`` (or for all)."""
    if MARKER not in line:
        return False
    for match in _MARKER.finditer(line):
        named = match.group(1).split()
        if not named or rule_id in named:
            return True
    return False
