"""Unified git diff bytes to ``DiffFile``s: what a pull request adds, line by line.

Bitbucket answers a pull request's diff as raw bytes that are not guaranteed
to be UTF-8, so they are decoded with replacement characters: a scan of a
Latin-1 file still sees its ASCII secrets, and no diff is refused for its
encoding.

The work is split in two. A small framer of ours walks the lines, cuts them
into one section per file and reads the git extended headers (renames,
copies, new/deleted file modes, binary markers, quoted paths), because
``unidiff`` 0.7.5 (the oldest version pyproject allows) handles neither
``GIT binary patch`` nor quoted paths nor copies. The framer counts each
hunk's lines by its header, so a removed SQL comment (``--- x``) inside a
hunk is never taken for a file header. Each section's hunks then go to
``unidiff``, which checks them against their headers and numbers the lines;
only API present in 0.7.5 is used (``PatchSet`` over a list of lines,
``Line.is_added``/``is_removed``/``target_line_no``/``value``).

Errors never quote the diff: a "diff" that is not one may be a pasted
``.env`` file, and its first line may be a secret.
"""

from __future__ import annotations

import re

import msgspec
from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

from rcingest.errors import RcingestError
from rcingest.scanning.model import AddedLine, DiffFile, FileStatus

__all__ = ["DiffError", "DiffTooLarge", "parse_diff"]

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_BINARY = re.compile(r"^Binary files (.+) and (.+) differ$")
_DEV_NULL = "/dev/null"
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


class DiffError(RcingestError):
    """The bytes are not a unified diff, or a hunk does not match its header."""


class DiffTooLarge(DiffError):
    """The diff is over the configured size: the pull request is "too large to scan"."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"diff is {size} bytes, over the limit of {limit}: too large to scan")
        self.size = size
        self.limit = limit


class _Section(msgspec.Struct, kw_only=True):
    """One file's lines as the framer found them, before ``unidiff`` reads the hunks."""

    start: int  # 1-based diff line where the file's entry starts
    git: bool
    git_old: str | None = None
    git_new: str | None = None
    minus: str | None = None
    plus: str | None = None
    moved_from: str | None = None
    moved_to: str | None = None
    copied: bool = False
    new_file: bool = False
    deleted_file: bool = False
    binary: bool = False
    hunk_lines: list[str] = []


def parse_diff(data: bytes, *, max_bytes: int | None = None) -> list[DiffFile]:
    """Every file of the diff ``data``; ``[]`` for an empty diff.

    Raises ``DiffTooLarge`` (before decoding anything) when ``data`` is over
    ``max_bytes``, and ``DiffError`` for text that is not a unified diff or
    a hunk that does not match its header.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise DiffTooLarge(len(data), max_bytes)
    text = data.decode("utf-8", errors="replace")
    lines = _split_lines(text)
    sections = _frame(lines)
    if not sections:
        _refuse_non_diff(lines)
        return []
    return [_to_file(section) for section in sections]


def _split_lines(text: str) -> list[str]:
    # Only "\n" ends a line: str.splitlines would also split at "\r", form
    # feeds and U+2028 inside a line's content and shift every line number.
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1] + "\n")
    return lines


def _refuse_non_diff(lines: list[str]) -> None:
    for number, line in enumerate(lines, 1):
        if line.strip():
            hint = {"<": " (it looks like HTML or XML)", "{": " (it looks like JSON)"}
            raise DiffError(
                f"not a unified diff: line {number} of {len(lines)} is text before any "
                f"'diff --git', '---'/'+++' or hunk header{hint.get(line.lstrip()[0], '')}"
            )


def _frame(lines: list[str]) -> list[_Section]:
    sections: list[_Section] = []
    current: _Section | None = None
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        header = line.rstrip("\r\n")
        if header.startswith("diff --git "):
            current = _Section(start=index + 1, git=True)
            current.git_old, current.git_new = _git_header_paths(header[len("diff --git ") :])
            sections.append(current)
        elif (
            header.startswith("--- ") and index + 1 < count and lines[index + 1].startswith("+++ ")
        ):
            if current is None or not current.git or current.minus is not None:
                current = _Section(start=index + 1, git=False)
                sections.append(current)
            elif current.hunk_lines or current.binary:
                current = _Section(start=index + 1, git=False)
                sections.append(current)
            current.minus = _header_path(header[4:])
            current.plus = _header_path(lines[index + 1].rstrip("\r\n")[4:])
            index += 1
        elif header.startswith("@@ ") and current is not None and not current.binary:
            index = _take_hunk(lines, index, current)
            continue
        elif header == "GIT binary patch" and current is not None:
            # The base85 payload that follows never starts with "diff --git",
            # "---" or "@@", so the loop skips it as unrecognised lines.
            current.binary = True
        elif match := _BINARY.match(header):
            if current is None or current.hunk_lines or current.binary or not current.git:
                current = _Section(start=index + 1, git=False)
                current.git_old, current.git_new = _header_path(match[1]), _header_path(match[2])
                sections.append(current)
            current.binary = True
        elif current is not None and current.git and not current.hunk_lines:
            _git_extended_header(header, current)
        # Anything else (mail headers before the first file, "index" lines,
        # a format-patch signature) carries nothing to scan: git apply skips it too.
        index += 1
    return sections


def _take_hunk(lines: list[str], index: int, section: _Section) -> int:
    """Append the hunk at ``lines[index]`` to ``section``; the index after it."""
    match = _HUNK.match(lines[index])
    if match is None:
        raise DiffError(f"malformed hunk header at diff line {index + 1}")
    old_left = 1 if match[2] is None else int(match[2])
    new_left = 1 if match[4] is None else int(match[4])
    end = index + 1
    while (old_left > 0 or new_left > 0) and end < len(lines):
        kind = lines[end][0]
        if kind == " " or lines[end] in ("\n", "\r\n"):
            old_left, new_left = old_left - 1, new_left - 1
        elif kind == "-":
            old_left -= 1
        elif kind == "+":
            new_left -= 1
        elif kind != "\\":
            break  # short hunk: unidiff reports it against its header
        end += 1
    if end < len(lines) and lines[end].startswith("\\"):
        end += 1  # "\ No newline at end of file" after the hunk's last line
    section.hunk_lines.extend(lines[index:end])
    return end


def _git_extended_header(header: str, section: _Section) -> None:
    if header.startswith("new file mode "):
        section.new_file = True
    elif header.startswith("deleted file mode "):
        section.deleted_file = True
    elif header.startswith(("rename from ", "copy from ")):
        section.moved_from = _unquote(header.split(" ", 2)[2])
        section.copied = header.startswith("copy")
    elif header.startswith(("rename to ", "copy to ")):
        section.moved_to = _unquote(header.split(" ", 2)[2])


def _git_header_paths(rest: str) -> tuple[str | None, str | None]:
    """Old and new path of ``diff --git <a> <b>``, prefixes removed.

    Unquoted paths with spaces make the line ambiguous; git itself resolves
    it by taking the split where both halves name the same file, and the
    ``---``/``+++`` or ``rename`` lines, when present, override this anyway.
    """
    if rest.startswith('"'):
        end = _quoted_end(rest)
        old, tail = rest[:end], rest[end + 1 :]
        return _strip_prefix(_unquote(old), "a/"), _strip_prefix(_unquote(tail), "b/")
    if ' "' in rest:
        old, new = rest.split(' "', 1)
        return _strip_prefix(old, "a/"), _strip_prefix(_unquote('"' + new), "b/")
    half = (len(rest) - 1) // 2
    if len(rest) % 2 == 1 and rest[half] == " ":
        old, new = _strip_prefix(rest[:half], "a/"), _strip_prefix(rest[half + 1 :], "b/")
        if old == new:
            return old, new
    if " b/" in rest:
        old, new = rest.rsplit(" b/", 1)
        return _strip_prefix(old, "a/"), new
    return None, None


def _header_path(raw: str) -> str:
    # git appends a tab to ---/+++ paths that contain a space; other tools
    # put a timestamp after the tab.
    path = raw.split("\t", 1)[0]
    path = _unquote(path) if path.startswith('"') else path
    if path == _DEV_NULL:
        return path
    return _strip_prefix(_strip_prefix(path, "a/"), "b/")


def _strip_prefix(path: str, prefix: str) -> str:
    return path[len(prefix) :] if path.startswith(prefix) else path


def _quoted_end(text: str) -> int:
    """Index just after the closing quote of the C-quoted string starting ``text``."""
    position = 1
    while position < len(text):
        if text[position] == "\\":
            position += 2
            continue
        if text[position] == '"':
            return position + 1
        position += 1
    return len(text)


def _unquote(text: str) -> str:
    """git's C-style quoting (``"a/caf\\303\\251 x"``) undone, UTF-8 with replacement."""
    if not (len(text) >= 2 and text.startswith('"') and text.endswith('"')):
        return text
    body, out, position = text[1:-1], bytearray(), 0
    while position < len(body):
        char = body[position]
        if char != "\\" or position + 1 == len(body):
            out += char.encode("utf-8")
            position += 1
            continue
        escape = body[position + 1]
        octal = body[position + 1 : position + 4]
        if len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(int(octal, 8) & 0xFF)
            position += 4
        else:
            out.append(_ESCAPES.get(escape, ord(escape) if escape.isascii() else 63))
            position += 2
    return out.decode("utf-8", errors="replace")


def _to_file(section: _Section) -> DiffFile:
    old = section.moved_from or _real(section.minus) or section.git_old
    new = section.moved_to or _real(section.plus) or section.git_new
    deleted = section.deleted_file or section.plus == _DEV_NULL
    created = section.new_file or section.minus == _DEV_NULL
    path = (old if deleted else new) or old or new or ""
    moved = section.moved_from is not None or (
        not deleted and not created and old is not None and old != new
    )
    status: FileStatus = "modified"
    if section.binary:
        status = "binary"
    elif deleted:
        status = "deleted"
    elif created or section.copied:
        # A copy is a new file at ``path``; ``old_path`` says where it came from.
        status = "added"
    elif moved:
        status = "renamed"
    added, removed = _read_hunks(section, path)
    return DiffFile(
        path=path,
        old_path=old if moved else None,
        status=status,
        binary=section.binary,
        added=added,
        removed=removed,
    )


def _real(path: str | None) -> str | None:
    return None if path == _DEV_NULL else path


def _read_hunks(section: _Section, path: str) -> tuple[list[AddedLine], int]:
    if not section.hunk_lines:
        return [], 0
    # unidiff gets fixed headers: only its hunk reading is relied on, the
    # file headers having been read (quoted, renamed, copied) above.
    feed = ["--- a/file\n", "+++ b/file\n", *section.hunk_lines]
    try:
        patch = PatchSet(feed)
    except UnidiffParseError as exc:
        # unidiff's messages end with the offending line: keep only the reason.
        reason = str(exc).split(":", 1)[0]
        raise DiffError(
            f"malformed hunk in {path!r} (file at diff line {section.start}): {reason}"
        ) from None
    added: list[AddedLine] = []
    removed = 0
    for hunk in patch[0] if patch else []:
        for line in hunk:
            if line.is_added and line.target_line_no is not None:
                text = line.value[:-1] if line.value.endswith("\n") else line.value
                added.append(AddedLine(line=line.target_line_no, text=text))
            elif line.is_removed:
                removed += 1
    return added, removed
