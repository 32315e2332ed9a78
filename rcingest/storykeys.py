"""Jira issue keys in free text: pure functions, no I/O.

One grammar, two dialects (``../docs/story-keys.md`` has the rules, the
sources and every deliberate disagreement with the peer tools):

* a project key is a letter, then one or more letters, digits or
  underscores (Jira's rule for custom keys, so ``MY_PROJ`` and ``EXT_EXT``);
  a hyphen; an issue number that does not start with 0;
* the key is the whole run of letters, digits and underscores before the
  hyphen: a key never starts inside a word, also not after an underscore
  glued to one (``3EXT_EXT-1234``, ``my_PROJ-4`` and ``bugfix_REL-7`` hold no
  ``EXT-1234``, ``PROJ-4`` or ``REL-7``); underscores that open the run are
  punctuation (``_REL-7_`` holds ``REL-7``);
* no letter or digit glued after the number (``REL-12b``), and no ``.`` and
  a digit after it: ``BP-1.7``, ``JDK-11.0.2`` and ``MPL-2.0`` are version
  numbers, not keys (Jenkins' default pattern rejects them too).

``strict`` (default) is what Bitbucket Cloud and Jira link: uppercase only;
letters and digits of any script glue onto a key, except the scripts written
without spaces (``修复REL-12问题`` holds ``REL-12``). ``lenient`` is
case-insensitive, then upper-cased (GitHub for Jira, the Jenkins JIRA plugin);
its boundaries are ASCII letters and digits only.

Look-alikes such as ``UTF-8``, ``SHA-256`` or Bitbucket's automatic branch
words (``patch-2``, ``...-edited-online-with-bitbucket-1560433073473``) are
dropped by an ignore list of project keys, unless an explicit ``projects``
allow-list is given, which then decides alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

from rcingest.records import StoryKey, StoryKeyOrigin

__all__ = [
    "DEFAULT_IGNORE",
    "ORIGIN_ORDER",
    "PROJECT_KEY_PATTERN",
    "KeyExtractor",
    "merge_story_keys",
    "ordered_origins",
]

Mode = Literal["strict", "lenient"]

#: What Jira allows as a project key (a letter, then one or more letters,
#: digits or underscores), any case: ``projects`` and ``ignore`` entries must
#: match it, or they could never match a key.
PROJECT_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_]+$"

#: Project keys that are really standards, algorithms, encodings, time zones,
#: version words or words of automatic branch names: ``UTF-8``, ``SHA-256``,
#: ``ISO-8601``, ``CVE-2021-44228``, ``UTC-7``, and lenient mode's
#: ``release-1``, ``python-3``, ``x86-64``, ``patch-2`` (GitHub's web editor),
#: ``...-edited-online-with-bitbucket-1560433073473`` (Bitbucket's) and
#: ``issue-819`` (the repository's own issue tracker, not Jira).
#: Single-letter prefixes (``X-509``) never match: a project key has two or
#: more characters.
DEFAULT_IGNORE: tuple[str, ...] = (
    "AES", "ANSI", "ARM", "BASE", "BITBUCKET", "BUILD", "CP", "CRC", "CVE",
    "CWE", "DES", "ECMA", "ES", "GMT", "GPL", "HTTP", "IEC", "IEEE", "ISO",
    "ISSUE", "LGPL", "MD", "PATCH", "PEP", "PYTHON", "RC", "RELEASE", "RFC",
    "RSA", "SHA", "SSL", "TLS", "UTC", "UTF", "VERSION", "WIN", "X86",
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


# Scripts written without spaces between words (kana, CJK ideographs,
# Hangul): ``修复REL-12问题`` is how a key is written there, so they never glue.
_SPACELESS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# After the number: a letter or digit of any script glues (``REL-12é`` is no
# key), an underscore does not (``bugfix/OPS-7_timeout`` holds ``OPS-7``).
_GLUE_AFTER = rf"[^\W_{_SPACELESS}]"
# Before the key: the same plus the underscore, a key character in Jira, so a
# key is never the tail of a longer run (``my_PROJ-4`` holds no ``PROJ-4``).
_GLUE_BEFORE = rf"[^\W{_SPACELESS}]"
# ``_*`` lets underscores that open a run stand as punctuation (``_REL-7_``);
# findall returns only the group. ``\.[0-9]`` after the number is a version
# (``JDK-11.0.2``), while a full stop ending a sentence (``DOT-5.``) is not.
_STRICT = re.compile(
    rf"(?<!{_GLUE_BEFORE})_*([A-Z][A-Z0-9_]+-[1-9][0-9]*)(?!{_GLUE_AFTER}|\.[0-9])"
)
_LENIENT = re.compile(
    r"(?<![A-Za-z0-9_])_*([A-Za-z][A-Za-z0-9_]+-[1-9][0-9]*)(?![A-Za-z0-9]|\.[0-9])",
    re.ASCII,
)
_PROJECT_KEY = re.compile(PROJECT_KEY_PATTERN)


def _project_keys(option: str, keys: Iterable[str]) -> frozenset[str]:
    """``keys`` upper-cased, each checked against Jira's project-key rule."""
    out = set()
    for key in keys:
        if not isinstance(key, str) or not _PROJECT_KEY.fullmatch(key):
            raise ValueError(
                f"{option}: {key!r} is not a Jira project key (a letter, then one or more"
                " letters, digits or underscores, without the issue number)"
            )
        out.add(key.upper())
    return frozenset(out)


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
        # Upper-cased: strict keys are uppercase anyway, and lenient keys are
        # upper-cased before the lookup, so ``projects: [my_proj]`` matches
        # ``MY_PROJ-4`` in both modes.
        self._allowed = None if projects is None else _project_keys("projects", projects)
        self._ignored = _project_keys("ignore", ignore)

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
