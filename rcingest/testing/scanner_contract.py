"""The contract check for scanner plugins (``register_scanners``).

A scanner passes when, for a diff you give with a secret it must find on an
added line:

* it finds it, at that path and line, and names a rule;
* no field of any finding holds more than four characters of the secret
  (the fingerprint and the excerpt included), and the excerpt shows at most
  the redacted form;
* the fingerprint is stable: the same secret at another line gives the same
  fingerprint, another key gives another;
* a secret on a removed line, and files without added lines, give nothing;
* the constructor did no I/O (it is built with a key-less context and a
  scan directory that does not exist).

::

    async def test_my_scanner(tmp_path):
        await check_scanner_contract(
            lambda ctx: MyScanner(MyScanner.Config(), ctx),
            secret="acme_" + "0f" * 16,
            line_text="TOKEN = 'acme_" + "0f" * 16 + "'",
            tmp_path=tmp_path,
        )
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from rcingest.interfaces import Scanner
from rcingest.scanning.model import MAX_SHOWN, AddedLine, DiffFile
from rcingest.scanning.settings import ScanningConfig
from rcingest.testing.samples import make_test_context

__all__ = ["check_scanner_contract"]


def _context(tmp_path: Path, key: str) -> Any:
    context = make_test_context(tmp_path)
    context.scanning = ScanningConfig(fingerprint_key=key, key_file=str(tmp_path / "no.key"))
    return context


def _leaks(text: str, secret: str) -> bool:
    """True when ``text`` holds more than ``MAX_SHOWN`` consecutive characters of ``secret``."""
    n = MAX_SHOWN + 1
    return any(secret[i : i + n] in text for i in range(len(secret) - n + 1))


async def check_scanner_contract(
    make: Callable[[Any], Scanner[Any]],
    *,
    secret: str,
    line_text: str,
    tmp_path: Path,
    path: str = "src/settings.py",
) -> None:
    """Fail with an ``AssertionError`` naming the rule a scanner breaks (see the module doc)."""
    assert secret in line_text, "line_text must contain the secret"
    scanner = make(_context(tmp_path, "contract-key-one-0123456789"))
    name = type(scanner).__name__
    scanner.name = scanner.name or "contract"
    files = [
        DiffFile(
            path=path,
            added=[AddedLine(1, "import os"), AddedLine(7, line_text)],
            removed=1,
        ),
        DiffFile(path="docs/old.md", status="deleted", removed=3),
    ]
    found = await scanner.scan(files)
    hits = [f for f in found if f.path == path and f.line_start <= 7 <= f.line_end]
    assert hits, f"{name}: did not find the secret at {path}:7"
    assert all(f.rule_id and f.rule_name for f in hits), f"{name}: a finding without a rule"
    for finding in found:
        encoded = msgspec.json.encode(finding).decode()
        assert not _leaks(encoded, secret), f"{name}: a finding holds the secret: {finding.rule_id}"
    moved = await scanner.scan([DiffFile(path=path, added=[AddedLine(40, line_text)])])
    assert moved and moved[0].fingerprint == hits[0].fingerprint, (
        f"{name}: the same secret at another line has another fingerprint"
    )
    other = make(_context(tmp_path, "contract-key-two-9876543210"))
    other.name = scanner.name
    rekeyed = await other.scan([DiffFile(path=path, added=[AddedLine(7, line_text)])])
    assert rekeyed and rekeyed[0].fingerprint != hits[0].fingerprint, (
        f"{name}: the fingerprint does not depend on the key (it must be keyed)"
    )
    removed_only = await scanner.scan([DiffFile(path=path, removed=1)])
    assert removed_only == [], f"{name}: a finding without any added line"
