"""Jira issue keys in free text: pure functions, no I/O.

Two dialects, both from what Atlassian's own tools accept
(``../docs/story-keys.md`` has the sources):

* ``strict`` (default) is what Bitbucket Cloud and Jira link: an uppercase
  project key of a letter then one or more letters, digits or underscores, a
  hyphen, and an issue number that does not start with 0, with no letter or
  digit glued on either side (``xREL-12``, ``REL-12b``, ``caféREL-12`` and
  ``REL-12é`` are not keys; a letter or digit of any script counts, except
  those written without spaces, so ``修复REL-12问题`` holds ``REL-12``).
* ``lenient`` is what Atlassian's GitHub-for-Jira integration accepts:
  case-insensitive, no underscore in the project key, upper-cased afterwards;
  its boundaries are ASCII letters and digits only.

Look-alikes such as ``UTF-8`` or ``SHA-256`` are dropped by an ignore list of
project keys, unless an explicit ``projects`` allow-list is given, which then
decides alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from rcingest.records import StoryKey, StoryKeyOrigin

__all__ = ["DEFAULT_IGNORE", "ORIGIN_ORDER", "KeyExtractor", "merge_story_keys", "ordered_origins"]

Mode = Literal["strict", "lenient"]

#: Project keys that are really standards, algorithms, encodings, time zones or
#: version words: ``UTF-8``, ``SHA-256``, ``ISO-8601``, ``CVE-2021-44228``,
#: ``UTC-7``, and lenient mode's ``release-1``, ``python-3``, ``x86-64``.
#: Single-letter prefixes (``X-509``) never match: a project key has two or
#: more characters.
DEFAULT_IGNORE: tuple[str, ...] = (
    "AES", "ANSI", "ARM", "BASE", "BUILD", "CP", "CRC", "CVE", "CWE", "DES",
    "ECMA", "ES", "GMT", "GPL", "HTTP", "IEC", "IEEE", "ISO", "LGPL", "MD",
    "PEP", "PYTHON", "RC", "RELEASE", "RFC", "RSA", "SHA", "SSL", "TLS", "UTC",
    "UTF", "VERSION", "WIN", "X86",
)  # fmt: skip

#: The documented order of origins (docs/story-keys.md): a key's origins are listed so.
ORIGIN_ORDER: tuple[StoryKeyOrigin, ...] = ("message", "branch", "pr_title", "pr_branch")


def ordered_origins(*groups: Iterable[StoryKeyOrigin]) -> tuple[StoryKeyOrigin, ...]:
    """The origins of ``groups`` united, without repeats, in :data:`ORIGIN_ORDER`."""
    seen = set().union(*groups)
    # A filter over the four known origins beats a keyed sort (this runs per
    # key per commit); an origin outside the list goes last, by name.
    out = tuple(o for o in ORIGIN_ORDER if o in seen)
    if len(out) != len(seen):
        out += tuple(sorted(seen.difference(ORIGIN_ORDER)))
    return out


# A letter or digit of any script that glues onto a key (``caféREL-12`` and
# ``REL-12é`` hold no key): ``[^\W_]`` minus the scripts written without
# spaces between words (kana, CJK ideographs, Hangul), where ``修复REL-12问题``
# is how a key is written.
_GLUE = r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
_STRICT = re.compile(rf"(?<!{_GLUE})([A-Z][A-Z0-9_]+-[1-9][0-9]*)(?!{_GLUE})")
_LENIENT = re.compile(
    r"(?<![A-Za-z0-9])([A-Za-z][A-Za-z0-9]+-[1-9][0-9]*)(?![A-Za-z0-9])", re.ASCII
)


class KeyExtractor:
    """A compiled key finder for one mode and one project filter.

    Build it once per enricher and call :meth:`find` per text; it holds no
    state between calls.
    """

    __slots__ = ("_allowed", "_ignored", "_lenient", "_regex")

    def __init__(
        self,
        mode: Mode = "strict",
        projects: Iterable[str] | None = None,
        ignore: Iterable[str] = DEFAULT_IGNORE,
    ) -> None:
        if mode not in ("strict", "lenient"):
            raise ValueError(f"mode must be 'strict' or 'lenient', not {mode!r}")
        self._lenient = mode == "lenient"
        self._regex = _LENIENT if self._lenient else _STRICT
        self._allowed = None if projects is None else frozenset(p.upper() for p in projects)
        self._ignored = frozenset(p.upper() for p in ignore)

    def find(self, text: str) -> list[str]:
        """The keys in ``text``, in order of first appearance, without repeats."""
        # Fast path: most texts (and most branch names) hold no hyphen at all,
        # and ``in`` on a str runs at memchr speed, far below a regex scan.
        if "-" not in text:
            return []
        found = self._regex.findall(text)
        if not found:
            return []
        out: list[str] = []
        for key in found:
            if self._lenient:
                key = key.upper()
            project = key[: key.index("-")]
            if self._allowed is not None:
                if project not in self._allowed:
                    continue
            elif project in self._ignored:
                continue
            if key not in out:
                out.append(key)
        return out

    def extract(
        self, texts: Iterable[tuple[StoryKeyOrigin, str]]
    ) -> dict[str, list[StoryKeyOrigin]]:
        """Keys of several ``(origin, text)`` pairs, each with its origins in order."""
        keys: dict[str, list[StoryKeyOrigin]] = {}
        for origin, text in texts:
            for key in self.find(text):
                origins = keys.setdefault(key, [])
                if origin not in origins:
                    origins.append(origin)
        return keys


def merge_story_keys(
    existing: Sequence[StoryKey], found: dict[str, list[StoryKeyOrigin]]
) -> list[StoryKey]:
    """``existing`` plus ``found``: one entry per key, origins united.

    Keys already present keep their position; new keys follow in the order
    they were found. A key's origins are listed in :data:`ORIGIN_ORDER`
    (message, branch, pr_title, pr_branch), whatever order they were found
    in. Merging the same keys again changes nothing, so enriching a record
    twice is harmless.
    """
    if not found:
        return list(existing)
    if not existing:
        # The common case (a record enriched once): no positions to keep.
        return [
            StoryKey(key, (origins[0],) if len(origins) == 1 else ordered_origins(origins))
            for key, origins in found.items()
        ]
    merged: dict[str, tuple[StoryKeyOrigin, ...]] = {sk.key: sk.origins for sk in existing}
    for key, origins in found.items():
        have = merged.get(key, ())
        if any(o not in have for o in origins):
            merged[key] = ordered_origins(have, origins)
    return [StoryKey(key, origins) for key, origins in merged.items()]
