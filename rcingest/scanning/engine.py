"""The built-in secrets engine: compiled rules over the lines a change adds, in process.

Consecutive added lines form a block; each rule whose keywords occur in the
block (one lower-cased copy per block, ``str.find`` per keyword) runs its
regular expression over the block, so a private key spanning lines is one
match with its line span. A match becomes a finding unless:

* the secret is below the rule's ``min_entropy`` (Shannon bits/character);
* it is a look-alike: contains ``EXAMPLE`` (AWS's documented keys) or a
  placeholder word, is a run of one character or of ``x``, or (for generic
  rules) is only hex digits or a UUID: hashes and ids, not credentials;
* it is a generic rule's match overlapping text a specific rule already
  reported (one secret, one finding, under its most precise name).

A finding carries the keyed fingerprint of rule and secret and the line with
the secret replaced by its redacted form, so no field holds more than four
characters of it. Allowed findings (allowlist, inline marker) are returned
too, marked in ``allowed_fingerprints``; the scanner reports them apart.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

from rcingest.scanning.allowlist import Allowlist, marker_allows
from rcingest.scanning.model import AddedLine, DiffFile, Finding, fingerprint, redact_secret
from rcingest.scanning.rules import CompiledRule

__all__ = ["MAX_EXCERPT", "SecretsEngine", "entropy", "is_lookalike"]

MAX_EXCERPT = 160
_PLACEHOLDERS = (
    "example", "placeholder", "changeme", "change_me", "your_", "your-", "<your", "redacted",
    "dummy", "sample", "xxxxxx", "******", "${", "{{",
)  # fmt: skip
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def is_lookalike(secret: str, generic: bool) -> bool:
    """Documented example keys, placeholders, repeated characters; generic rules: hashes, ids."""
    lowered = secret.lower()
    if any(word in lowered for word in _PLACEHOLDERS):
        return True
    body = re.sub(r"^[A-Za-z]+[_-]", "", secret)  # ghp_xxxx...: the part after the prefix
    if len(set(body)) <= 2:
        return True
    return generic and (bool(_HEX.match(secret)) or bool(_UUID.match(secret)))


def _blocks(added: Sequence[AddedLine]) -> Iterator[list[AddedLine]]:
    """Runs of consecutive line numbers: the text a multi-line secret can span."""
    block: list[AddedLine] = []
    for line in added:
        if block and line.line != block[-1].line + 1:
            yield block
            block = []
        block.append(line)
    if block:
        yield block


class SecretsEngine:
    """Rules, a fingerprint key and an allowlist; ``scan`` is pure and thread-safe."""

    def __init__(
        self, rules: Sequence[CompiledRule], key: bytes, allowlist: Allowlist | None = None
    ) -> None:
        self.rules = list(rules)
        self.key = key
        self.allowlist = allowlist or Allowlist()
        self._always = [r for r in self.rules if not r.keywords]
        self._keyed = [r for r in self.rules if r.keywords]

    def scan(self, files: Iterable[DiffFile]) -> tuple[list[Finding], set[str]]:
        """Findings of every file's added lines, and the fingerprints allowed among them."""
        found: list[Finding] = []
        allowed: set[str] = set()
        for file in files:
            if file.binary or not file.added:
                continue
            for block in _blocks(file.added):
                self._scan_block(file.path, block, found, allowed)
        return found, allowed

    def scan_text(self, path: str, text: str) -> tuple[list[Finding], set[str]]:
        """A whole file's content (a repository scan): every line counts as added."""
        lines = [AddedLine(i, t) for i, t in enumerate(text.split("\n"), start=1)]
        return self.scan([DiffFile(path=path, status="added", added=lines)])

    def _scan_block(
        self, path: str, block: list[AddedLine], found: list[Finding], allowed: set[str]
    ) -> None:
        text = "\n".join(line.text for line in block)
        lowered = text.lower()
        rules = self._always + [r for r in self._keyed if any(k in lowered for k in r.keywords)]
        if not rules:
            return
        # Specific rules first: a generic assignment rule that matches the same text
        # as, say, the Stripe rule would otherwise report one secret twice.
        rules.sort(key=lambda r: r.generic)
        claimed: list[tuple[int, int]] = []
        starts = [0]
        for line in block[:-1]:
            starts.append(starts[-1] + len(line.text) + 1)
        seen: set[tuple[int, str, str]] = set()
        for rule in rules:
            for match in rule.regex.finditer(text):
                secret = rule.secret(match)
                if rule.min_entropy is not None and entropy(secret) < rule.min_entropy:
                    continue
                if is_lookalike(secret, rule.generic):
                    continue
                begin, end = rule.span(match)
                if rule.generic and any(b < end and begin < e for b, e in claimed):
                    continue
                first = bisect.bisect_right(starts, begin) - 1
                last = bisect.bisect_right(starts, max(begin, end - 1)) - 1
                fp = fingerprint(self.key, rule.id, secret)
                line = block[first]
                if (line.line, rule.id, fp) in seen:
                    continue
                seen.add((line.line, rule.id, fp))
                if not rule.generic:
                    claimed.append((begin, end))
                finding = Finding(
                    path=path,
                    line_start=line.line,
                    line_end=block[last].line,
                    rule_id=rule.id,
                    rule_name=rule.name,
                    severity=rule.severity,
                    fingerprint=fp,
                    excerpt=_excerpt(line.text, secret, begin - starts[first]),
                )
                if marker_allows(line.text, rule.id) or self.allowlist.allows(path, rule.id, fp):
                    allowed.add(fp)
                found.append(finding)


def _excerpt(line: str, secret: str, column: int) -> str:
    """``line`` around the secret, the secret (and any repeat of it) redacted."""
    first_line = secret.split("\n", 1)[0]
    shown = line.replace(first_line, redact_secret(secret)) if first_line else line
    if len(shown) <= MAX_EXCERPT:
        return shown.strip()
    start = max(0, min(column, len(shown)) - MAX_EXCERPT // 2)
    return ("…" if start else "") + shown[start : start + MAX_EXCERPT].strip() + "…"
