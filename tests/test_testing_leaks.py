"""The sink contract searches the bytes a sink wrote, not only what its read_back returns.

Each leaking sink here has a read_back that returns keys only (the hole this
closes): the secret is in the file, the SQLite table, the WAL or the server.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote_plus

import msgspec
import pytest

import rcingest
from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.records import Commit
from rcingest.testing import (
    CONTRACT_PASSWORD,
    CONTRACT_SECRET,
    CONTRACT_SECRETS,
    check_sink_contract,
    record_key,
)
from rcingest.testing.leaks import find_leak, mask, secret_forms

Encoding = Literal["plain", "json", "url", "base64", "gzip"]


def _masked(text: str, secrets: frozenset[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _keys_in_csv(path: Path) -> list[str]:
    """What a careless read_back returns: the first column, never the values."""
    data = path.read_bytes()
    text = (gzip.decompress(data) if data.startswith(b"\x1f\x8b") else data).decode()
    return [line.split(",", 1)[0] for line in text.splitlines()]


class CsvConfig(rcingest.ComponentConfig):
    path: str
    encode: Encoding = "plain"
    #: Mask the secrets before encoding, after it (too late for escaped ones), or never.
    mask: Literal["before", "after", "never"] = "never"


class CsvSink(rcingest.Sink[CsvConfig]):
    """Rewrites a ``key,message`` file at each flush (unquoted: messages are one line here)."""

    Config = CsvConfig

    def __init__(self, config: CsvConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        self.rows: dict[str, str] = {}

    async def write(self, batch: rcingest.Batch) -> None:
        for record in batch.records:
            text = record.message.replace("\n", " ") if isinstance(record, Commit) else ""
            if self.config.mask == "before":
                text = _masked(text, self.context.secrets)
            encoded = {
                "plain": text,
                "gzip": text,
                "json": json.dumps(text),  # ASCII: é becomes \u00e9, " becomes \"
                "url": quote_plus(text),
                "base64": base64.b64encode(text.encode()).decode(),
            }[self.config.encode]
            if self.config.mask == "after":
                encoded = _masked(encoded, self.context.secrets)
            self.rows[record_key(record)] = encoded

    async def flush(self) -> None:
        data = "".join(f"{key},{value}\n" for key, value in self.rows.items()).encode()
        path = Path(self.config.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if self.config.encode == "gzip" else data)


def csv_sink(path: Path, encode: Encoding = "plain", mask: str = "never") -> Any:
    config = msgspec.convert({"path": str(path), "encode": encode, "mask": mask}, CsvConfig)
    return lambda ctx: CsvSink(config, ctx)


async def test_a_csv_sink_that_writes_a_secret_fails_though_read_back_returns_keys(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out" / "records.csv"
    with pytest.raises(AssertionError) as failed:
        await check_sink_contract(
            csv_sink(out), tmp_path=tmp_path, read_back=lambda: _keys_in_csv(out)
        )
    message = str(failed.value)
    assert re.match(
        r"^sink 'CsvSink': wrote a value of context\.secrets \('s3cr…' \(26 chars\)\) "
        r"to out/records\.csv \(plain, at byte \d+\), found after flush\(\) after write\(\): "
        r"secrets must be written masked \(as \*\*\*\)$",
        message,
    )
    assert CONTRACT_SECRET not in message and CONTRACT_PASSWORD not in message


@pytest.mark.parametrize(
    ("encode", "mask", "where", "form"),
    [
        # Masked after escaping: the plain token is gone, the escaped password is not.
        ("json", "after", "records.csv", "JSON-escaped, ASCII"),
        ("url", "after", "records.csv", "URL-encoded (form)"),
        ("base64", "after", "records.csv", "base64"),
        ("gzip", "never", "records.csv.gz (gzip content)", "plain"),
    ],
)
async def test_an_encoded_secret_is_found(
    tmp_path: Path, encode: Encoding, mask: str, where: str, form: str
) -> None:
    out = tmp_path / f"records.csv{'.gz' if encode == 'gzip' else ''}"
    with pytest.raises(AssertionError, match=rf" to {re.escape(where)} \({re.escape(form)}, at"):
        await check_sink_contract(
            csv_sink(out, encode, mask), tmp_path=tmp_path, read_back=lambda: _keys_in_csv(out)
        )


@pytest.mark.parametrize("encode", ["plain", "json", "url", "base64", "gzip"])
async def test_a_csv_sink_that_masks_passes(tmp_path: Path, encode: Encoding) -> None:
    # A file of the test's own under tmp_path holding a secret is not the sink's doing.
    (tmp_path / "input.txt").write_text(CONTRACT_SECRET)
    out = tmp_path / "out" / "records.csv"
    await check_sink_contract(
        csv_sink(out, encode, "before"), tmp_path=tmp_path, read_back=lambda: _keys_in_csv(out)
    )
    assert out.stat().st_size > 0


class NotesConfig(rcingest.ComponentConfig):
    path: str
    mask: bool = False
    utf16: bool = False
    #: Write the secret, then overwrite it masked at close: it sat in the WAL meanwhile.
    mask_late: bool = False


class NotesSink(rcingest.Sink[NotesConfig]):
    """Stores ``key, message`` rows in a SQLite file."""

    Config = NotesConfig

    async def __aenter__(self) -> NotesSink:
        Path(self.config.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.config.path)
        if self.config.utf16:
            self.db.execute("PRAGMA encoding = 'UTF-16le'")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, message TEXT)")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.config.mask_late:
            for key, message in self.db.execute("SELECT key, message FROM notes").fetchall():
                masked = _masked(message, self.context.secrets)
                self.db.execute("UPDATE notes SET message = ? WHERE key = ?", (masked, key))
            self.db.commit()
        self.db.close()

    async def write(self, batch: rcingest.Batch) -> None:
        for record in batch.records:
            text = record.message if isinstance(record, Commit) else ""
            if self.config.mask:
                text = _masked(text, self.context.secrets)
            row = (record_key(record), text)
            self.db.execute("INSERT OR REPLACE INTO notes VALUES (?, ?)", row)

    async def flush(self) -> None:
        self.db.commit()


def notes_sink(path: Path, **options: bool) -> Any:
    return lambda ctx: NotesSink(NotesConfig(path=str(path), **options), ctx)


def _keys_in_db(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [key for (key,) in db.execute("SELECT key FROM notes")]


async def test_a_sqlite_sink_that_stores_a_secret_fails(tmp_path: Path) -> None:
    db = tmp_path / "db" / "notes.db"
    with pytest.raises(AssertionError, match=r"^sink 'NotesSink': .* to db/notes\.db\S* \(plain"):
        await check_sink_contract(
            notes_sink(db), tmp_path=tmp_path, read_back=lambda: _keys_in_db(db)
        )


async def test_a_secret_left_in_the_wal_fails_though_the_database_is_clean_after_close(
    tmp_path: Path,
) -> None:
    db = tmp_path / "notes.db"
    wal = r" to notes\.db-wal \(plain, at byte \d+\), found after flush\(\) after write\(\)"
    with pytest.raises(AssertionError, match=wal):
        await check_sink_contract(
            notes_sink(db, mask_late=True), tmp_path=tmp_path, read_back=lambda: _keys_in_db(db)
        )
    with sqlite3.connect(db) as conn:
        stored = "".join(m for (m,) in conn.execute("SELECT message FROM notes"))
    assert "***" in stored and not any(secret in stored for secret in CONTRACT_SECRETS)


async def test_a_secret_in_a_utf16_database_is_found_through_its_tables(tmp_path: Path) -> None:
    # The raw file holds UTF-16: only reading the tables finds the secret.
    db = tmp_path / "notes.db"
    with pytest.raises(AssertionError, match=r" to notes\.db \(SQLite table 'notes'\) \(plain\)"):
        await check_sink_contract(
            notes_sink(db, utf16=True), tmp_path=tmp_path, read_back=lambda: _keys_in_db(db)
        )
    assert not any(f.needle in db.read_bytes() for f in secret_forms(CONTRACT_SECRETS))


async def test_a_sqlite_sink_that_masks_passes(tmp_path: Path) -> None:
    db = tmp_path / "db" / "notes.db"
    await check_sink_contract(
        notes_sink(db, mask=True), tmp_path=tmp_path, read_back=lambda: _keys_in_db(db)
    )


async def test_declared_outputs_outside_tmp_path_are_searched(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    out = elsewhere / "records.csv"
    with pytest.raises(AssertionError, match=rf" to {re.escape(str(out))} \(plain"):
        await check_sink_contract(csv_sink(out), tmp_path=tmp_path, outputs=[elsewhere / "*.csv"])
    await check_sink_contract(csv_sink(out, mask="before"), tmp_path=tmp_path, outputs=[str(out)])


async def test_an_outputs_entry_that_names_no_file_fails(tmp_path: Path) -> None:
    out = tmp_path / "out" / "records.csv"
    with pytest.raises(AssertionError, match=r"outputs entry 'out/\*\.jsonl' names no file"):
        await check_sink_contract(
            csv_sink(out, mask="before"), tmp_path=tmp_path, outputs=["out/*.jsonl"]
        )


SERVER: dict[str, str] = {}


class ServerConfig(rcingest.ComponentConfig):
    mask: bool = False


class ServerSink(rcingest.Sink[ServerConfig]):
    """Stands for a sink that stores on a server (PostgreSQL, an HTTP API)."""

    Config = ServerConfig

    async def write(self, batch: rcingest.Batch) -> None:
        for record in batch.records:
            if self.config.mask and isinstance(record, Commit):
                # Masked before encoding: JSON escapes the password's quote and backslash.
                masked = _masked(record.message, self.context.secrets)
                record = msgspec.structs.replace(record, message=masked)
            SERVER[record_key(record)] = msgspec.json.encode(record).decode()


async def test_a_server_sink_is_searched_through_its_dump(tmp_path: Path) -> None:
    SERVER.clear()
    with pytest.raises(AssertionError, match=r" to what dump\(\) returned \(item \d+\) \(plain"):
        await check_sink_contract(
            lambda ctx: ServerSink(ServerConfig(), ctx),
            tmp_path=tmp_path,
            dump=lambda: list(SERVER.values()),
        )
    SERVER.clear()

    async def dump() -> str:  # async works too
        return "\n".join(SERVER.values())

    await check_sink_contract(
        lambda ctx: ServerSink(ServerConfig(mask=True), ctx), tmp_path=tmp_path, dump=dump
    )
    assert SERVER


@pytest.mark.postgres
async def test_database_sink_passes_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    import psycopg2

    def dump() -> list[str]:
        """Every column of every table, as text: the bytes the server holds."""
        with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            )
            columns = cur.fetchall()
            texts: list[str] = []
            for table, column in columns:
                cur.execute(f'SELECT "{column}"::text FROM "{table}"')
                texts += [value for (value,) in cur.fetchall() if value is not None]
        conn.close()
        return texts

    await check_sink_contract(
        lambda ctx: DatabaseSink(DatabaseConfig(database=postgres_url), ctx),
        tmp_path=tmp_path,
        dump=dump,
    )
    assert any("***" in text for text in dump())  # the dump really sees the stored messages


# --- the search itself ------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc", "Authorization: Basic x"])
def test_base64_of_a_text_holding_a_secret_is_found_at_any_alignment(prefix: str) -> None:
    forms = secret_forms([CONTRACT_SECRET])
    for secret in CONTRACT_SECRETS:
        data = base64.b64encode(f"{prefix}{secret} and more".encode())
        leak = find_leak(data, secret_forms([secret]), "x")
        assert leak is not None and leak.form.encoding == "base64"
    # Half of it is not found (nor is it much of a secret any more).
    assert find_leak(base64.b64encode(CONTRACT_SECRET[:13].encode()), forms, "x") is None


def test_escaped_forms_of_the_password_are_found() -> None:
    forms = secret_forms(CONTRACT_SECRETS)
    found = {
        "JSON-escaped": json.dumps(CONTRACT_PASSWORD, ensure_ascii=False),
        "JSON-escaped, ASCII": json.dumps(CONTRACT_PASSWORD),
        "JSON-escaped twice": json.dumps(
            json.dumps(CONTRACT_PASSWORD, ensure_ascii=False), ensure_ascii=False
        ),
        "URL-encoded": "q=" + quote_plus(CONTRACT_PASSWORD).replace("+", "%20"),
        "URL-encoded (form)": "q=" + quote_plus(CONTRACT_PASSWORD),
        "hex": CONTRACT_PASSWORD.encode().hex(),
        "quotes doubled (CSV)": '"' + CONTRACT_PASSWORD.replace('"', '""') + '"',
    }
    for encoding, text in found.items():
        leak = find_leak(text.encode(), forms, "x")
        assert leak is not None and leak.form.encoding == encoding, encoding
        assert leak.form.secret == CONTRACT_PASSWORD
    assert find_leak(b"nothing *** here", forms, "x") is None


def test_mask_never_shows_a_whole_secret() -> None:
    assert mask(CONTRACT_SECRET) == "'s3cr…' (26 chars)"
    assert mask("short-pw") == "'…' (8 chars)"
    for secret in CONTRACT_SECRETS:
        assert secret not in mask(secret)
