"""Finding the run's secrets in what a sink wrote: files, SQLite tables, a server's dump.

``check_sink_contract`` plants secrets (``samples.CONTRACT_SECRETS``) in the
records and in ``context.secrets``, then searches every byte the sink
produced for each of them, plain and in the encodings that still reveal it.
What the sink's ``read_back`` returns is not enough: a CSV sink whose
``read_back`` returns keys would hide the secret in the file it wrote.

``secret_forms`` and ``find_leak`` are the pure core; ``OutputScan`` does the
file system and SQLite reading for one contract run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import sqlite3
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, quote_plus

__all__ = ["Dump", "Form", "Leak", "OutputScan", "Texts", "find_leak", "mask", "secret_forms"]

#: What a sink that stores on a server (PostgreSQL, HTTP) declares: a callable
#: returning the bytes it stored there, as one value or several (one per table,
#: row or object), sync or async.
Texts = bytes | str | Iterable[bytes | str]
Dump = Callable[[], Texts | Awaitable[Texts]]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_GZIP_MAGIC = b"\x1f\x8b"
#: Base64 of fewer bytes than this is too short to say anything (it would match by chance).
_MIN_BASE64_BYTES = 6


class Form(NamedTuple):
    """One way a secret can appear in written bytes."""

    secret: str
    encoding: str
    needle: bytes


class Leak(NamedTuple):
    """Where a secret was found; ``describe()`` never prints the secret in full."""

    where: str
    form: Form
    offset: int | None = None

    def describe(self, when: str) -> str:
        at = f", at byte {self.offset}" if self.offset is not None else ""
        return (
            f"wrote a value of context.secrets ({mask(self.form.secret)}) to {self.where} "
            f"({self.form.encoding}{at}), found {when}: secrets must be written masked (as ***)"
        )


def mask(secret: str) -> str:
    """Enough of ``secret`` to tell which one it is, never all of it."""
    shown = secret[:4] if len(secret) >= 12 else ""
    return f"{shown + '…'!r} ({len(secret)} chars)"


def _base64_forms(raw: bytes) -> Iterable[tuple[str, bytes]]:
    # Base64 of a text that contains ``raw`` contains, depending on where ``raw``
    # starts modulo 3, the encoding of one of these three aligned slices of it.
    for start in (0, 1, 2):
        chunk = raw[start:]
        chunk = chunk[: len(chunk) // 3 * 3]
        if len(chunk) >= _MIN_BASE64_BYTES:
            yield "base64", base64.b64encode(chunk)
            yield "base64 (URL-safe)", base64.urlsafe_b64encode(chunk)


def secret_forms(secrets: Iterable[str]) -> list[Form]:
    """Each secret plain, JSON-escaped, URL-encoded, quoted, base64 and hex; no duplicates.

    Longest secrets first, so a leak is reported as the secret that leaked
    rather than a shorter one it contains.
    """
    forms: list[Form] = []
    seen: set[bytes] = set()
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        raw = secret.encode()
        as_json = json.dumps(secret, ensure_ascii=False)[1:-1]
        candidates = [
            ("plain", raw),
            ("JSON-escaped", as_json.encode()),
            ("JSON-escaped, ASCII", json.dumps(secret)[1:-1].encode()),
            ("JSON-escaped, slashes too", as_json.replace("/", "\\/").encode()),
            ("JSON-escaped twice", json.dumps(as_json, ensure_ascii=False)[1:-1].encode()),
            ("URL-encoded", quote(secret, safe="").encode()),
            ("URL-encoded, lowercase hex", _lower_hex_escapes(quote(secret, safe="")).encode()),
            ("URL-encoded (path)", quote(secret).encode()),
            ("URL-encoded (form)", quote_plus(secret).encode()),
            ("quotes doubled (CSV)", secret.replace('"', '""').encode()),
            ("quotes doubled (SQL)", secret.replace("'", "''").encode()),
            *_base64_forms(raw),
            ("hex", raw.hex().encode()),
            ("hex, uppercase", raw.hex().upper().encode()),
        ]
        for encoding, needle in candidates:
            if needle and needle not in seen:
                seen.add(needle)
                forms.append(Form(secret, encoding, needle))
    return forms


def _lower_hex_escapes(text: str) -> str:
    parts = text.split("%")
    return parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])


def find_leak(data: bytes, forms: Sequence[Form], where: str) -> Leak | None:
    """The first secret form in ``data`` (the earliest in the file), or None."""
    hits = [(at, form) for form in forms if (at := data.find(form.needle)) >= 0]
    if not hits:
        return None
    at, form = min(hits, key=lambda hit: hit[0])
    return Leak(where, form, at)


def _unpacked(data: bytes) -> bytes | None:
    """The content of a gzip file, which hides every form of a secret from a byte search."""
    if not data.startswith(_GZIP_MAGIC):
        return None
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def _sqlite_tables(path: Path) -> Iterable[tuple[str, bytes]]:
    """Every table's text and blob values (the schema too), one table at a time.

    A long value overflows into several pages, so a secret may be split in the
    raw file; the values read through SQLite are whole, whatever the database's
    text encoding (a UTF-16 database holds no UTF-8 bytes of the secret).
    """
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        names = [
            (name, sql or "")
            for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")
        ]
        yield "schema", "\n".join(f"{n}\n{s}" for n, s in names).encode()
        for name, _sql in names:
            quoted = '"' + name.replace('"', '""') + '"'
            values = bytearray()
            for row in db.execute(f"SELECT * FROM {quoted}"):  # noqa: S608 - names from the db
                for value in row:
                    if isinstance(value, str):
                        values += value.encode() + b"\n"
                    elif isinstance(value, bytes):
                        values += value + b"\n"
            yield f"table {name!r}", bytes(values)
    except sqlite3.Error:
        return  # not a database after all (or a damaged one): its raw bytes were searched
    finally:
        db.close()


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
    except OSError:
        return None  # gone since it was listed (a temporary file renamed into place)


def _files_under(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, _dirs, names in os.walk(root):  # symlinked folders are not followed
        found += [Path(folder, n) for n in names if Path(folder, n).is_file()]
    return sorted(found)


class OutputScan:
    """The bytes one sink run produced, searched for the planted secrets.

    Searched: every file under ``root`` that the run created or changed
    (``root`` is the test's ``tmp_path``; what was there before is the test's
    own), every file an ``outputs`` entry names (a path, a folder or a glob,
    relative to ``root`` or absolute), SQLite databases also table by table,
    gzip files unpacked, and what the sink's ``dump()`` returned.
    """

    def __init__(
        self,
        root: Path,
        secrets: Iterable[str],
        outputs: Sequence[str | Path] = (),
    ) -> None:
        self.root = Path(root)
        self.forms = secret_forms(secrets)
        self.outputs = list(outputs)
        self._before = {p: _digest(p) for p in _files_under(self.root)}
        #: Files searched so far: a sink that left none (and no dump) was not checked.
        self.searched: set[Path] = set()

    def _show(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def _written(self) -> list[Path]:
        return [
            p for p in _files_under(self.root) if (d := _digest(p)) and self._before.get(p) != d
        ]

    def _declared(self) -> tuple[list[Path], str | None]:
        """The files ``outputs`` names, or the entry that names none."""
        files: list[Path] = []
        for entry in self.outputs:
            path = Path(entry) if Path(entry).is_absolute() else self.root / entry
            if path.is_dir():
                matched = _files_under(path)
            elif path.is_file():
                matched = [path]
            else:
                anchor = Path(path.anchor)
                matched = [p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file()]
            if not matched:
                return files, f"outputs entry {str(entry)!r} names no file the sink wrote"
            files += matched
        return files, None

    def _search_file(self, path: Path, tables: bool) -> Leak | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None  # gone between listing and reading (a temporary file renamed)
        self.searched.add(path)
        shown = self._show(path)
        leak = find_leak(data, self.forms, shown)
        if leak is None and (inner := _unpacked(data)) is not None:
            leak = find_leak(inner, self.forms, f"{shown} (gzip content)")
        if leak is None and tables and data.startswith(_SQLITE_MAGIC):
            for table, text in _sqlite_tables(path):
                found = find_leak(text, self.forms, f"{shown} (SQLite {table})")
                if found is not None:
                    return found._replace(offset=None)
        return leak

    def during(self, when: str) -> str | None:
        """Between calls: the raw files, while a SQLite WAL or journal still exists."""
        for path in self._written():
            leak = self._search_file(path, tables=False)
            if leak is not None:
                return leak.describe(when)
        return None

    def after_close(self, dumped: Texts | None) -> str | None:
        """Once closed: every file, SQLite tables, the declared outputs, what ``dump()`` gave."""
        when = "after close"
        declared, missing = self._declared()
        for path in sorted({*self._written(), *declared}):
            leak = self._search_file(path, tables=True)
            if leak is not None:
                return leak.describe(when)
        if missing is not None:
            return missing
        if dumped is not None:
            items = [dumped] if isinstance(dumped, bytes | str) else list(dumped)
            for n, item in enumerate(items, 1):
                where = "what dump() returned" + (f" (item {n})" if len(items) > 1 else "")
                if found := self.search(item, where, when):
                    return found
        return None

    def search(self, data: bytes | str, where: str, when: str) -> str | None:
        """``data`` (what ``dump()`` or ``read_back()`` returned) searched like a file."""
        leak = find_leak(data.encode() if isinstance(data, str) else data, self.forms, where)
        return None if leak is None else leak.describe(when)
