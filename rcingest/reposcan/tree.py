"""A checkout's files as ``DiffFile``s in which every line is added: what the scanners read.

The walk never leaves the checkout: ``.git`` is skipped, symbolic links are
neither followed nor read (a repository may hold ``creds -> /etc/shadow`` or
a link into the daemon's own files), and only regular files are opened.
Binary files (a NUL in the first 8 KB, git's own test) and files over
``max_file_bytes`` are skipped and counted. The files come in batches of
about ``batch_bytes`` so that a large repository is never held in memory
as lines all at once; ``max_total_bytes`` bounds what is read in all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from rcingest.reposcan.clone import CloneTooLarge
from rcingest.scanning.model import AddedLine, DiffFile

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_MAX_FILE_BYTES",
    "TreeStats",
    "TreeTooLarge",
    "file_of",
    "iter_batches",
    "read_tree",
]

#: A file larger than this is not scanned (generated, vendored or data, rarely a secret's home).
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
#: git's heuristic (``buffer_is_binary``): a NUL within the first 8000 bytes.
_SNIFF_BYTES = 8000


class TreeTooLarge(CloneTooLarge):
    """The text files of a checkout passed ``max_total_bytes``."""


@dataclass
class TreeStats:
    """What a walk read and skipped; filled in while the batches are consumed."""

    files: int = 0
    bytes: int = 0
    binary_skipped: int = 0
    large_skipped: int = 0
    #: Symbolic links, sockets, submodule folders' absent content...: not regular files.
    other_skipped: int = 0


def file_of(path: str, data: bytes) -> DiffFile:
    """``data`` as an added file: UTF-8 with replacement, 1-based lines split only at ``\\n``."""
    text = data.decode("utf-8", errors="replace")
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()  # the newline ending the last line starts no line
    added = [AddedLine(n, part.removesuffix("\r")) for n, part in enumerate(parts, start=1)]
    return DiffFile(path=path, status="added", added=added)


def _paths(root: str) -> Iterator[tuple[str, str]]:
    """(absolute, relative posix) paths of everything under ``root`` but ``.git``, sorted."""
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not (folder == root and d == ".git"))
        # A link to a folder is listed with the folders (never entered): count it as skipped.
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        dirs[:] = [d for d in dirs if d not in links]
        for name in sorted(names + links):
            full = os.path.join(folder, name)
            yield full, os.path.relpath(full, root).replace(os.sep, "/")


def _read_regular(full: str, limit: int) -> bytes | None:
    """The file's bytes, or None when it is not a regular file; at most ``limit + 1`` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(full, flags)  # O_NOFOLLOW: a link swapped in after lstat is not followed
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(limit + 1)


def iter_batches(
    root: str,
    stats: TreeStats,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_total_bytes: int | None = None,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[list[DiffFile]]:
    """Batches of the checkout's text files (each batch non-empty), counting into ``stats``.

    Raises ``TreeTooLarge`` as soon as the text read passes ``max_total_bytes``.
    """
    batch: list[DiffFile] = []
    size = 0
    for full, relative in _paths(root):
        try:
            info = os.lstat(full)
        except OSError:
            stats.other_skipped += 1
            continue
        if not stat.S_ISREG(info.st_mode):
            stats.other_skipped += 1
            continue
        if info.st_size > max_file_bytes:
            stats.large_skipped += 1
            continue
        data = _read_regular(full, max_file_bytes)
        if data is None:
            stats.other_skipped += 1
            continue
        if len(data) > max_file_bytes:  # grew since lstat
            stats.large_skipped += 1
            continue
        if b"\x00" in data[:_SNIFF_BYTES]:
            stats.binary_skipped += 1
            continue
        stats.files += 1
        stats.bytes += len(data)
        if max_total_bytes is not None and stats.bytes > max_total_bytes:
            raise TreeTooLarge(f"the checkout's text files pass {max_total_bytes} bytes")
        batch.append(file_of(relative, data))
        size += len(data)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def read_tree(
    root: str,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_total_bytes: int | None = None,
) -> tuple[list[DiffFile], TreeStats]:
    """Every text file of the checkout at once (small checkouts, tests)."""
    stats = TreeStats()
    files = [
        f
        for batch in iter_batches(
            root, stats, max_file_bytes=max_file_bytes, max_total_bytes=max_total_bytes
        )
        for f in batch
    ]
    return files, stats
