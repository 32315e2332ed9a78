"""Turn the ``database`` setting into a peewee Database, and keep its password out of sight.

``database`` is a file path (SQLite) or a ``postgresql://user:pass@host:port/db``
URL. Every message about a database names it through :func:`redact`, which
replaces the password with ``***``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from rcingest.errors import ConfigError
from rcingest.runtime import redact as _redact

if TYPE_CHECKING:
    import peewee

__all__ = ["check_database", "is_postgres", "open_database", "redact", "scrub", "url_secrets"]

_PG_SCHEMES = ("postgresql", "postgres")


def is_postgres(spec: str) -> bool:
    """Whether ``spec`` is a PostgreSQL URL rather than a SQLite path."""
    return spec.split("://", 1)[0].lower() in _PG_SCHEMES and "://" in spec


def redact(spec: str) -> str:
    """``spec`` with the credentials of a URL replaced by ``***``; a path unchanged."""
    return _redact(spec)


def scrub(text: str, secrets: set[str] | frozenset[str]) -> str:
    """``text`` without any of ``secrets`` and without credentials in URLs."""
    return _redact(text, secrets)


def url_secrets(spec: str) -> set[str]:
    """The password a database URL carries, to keep out of messages: the user
    part's, as written and decoded, and a ``?password=`` parameter's."""
    if "://" not in spec:
        return set()
    try:
        parts = urlsplit(spec)
        written = parts.password or ""
    except ValueError:
        return set()
    query = dict(parse_qsl(parts.query))
    return {s for s in (written, unquote(written), query.get("password", "")) if s}


def check_database(spec: str, *, create_folders: bool = True) -> None:
    """Raise the ``ConfigError`` :func:`open_database` would raise, without importing peewee.

    ``rcingest validate`` calls it with ``create_folders=False`` (folders only
    checked to be creatable), so validating a pipeline loads no database layer.
    """
    if is_postgres(spec):
        _postgres_params(spec)
    else:
        _sqlite_path(spec, create_folders)


def open_database(
    spec: str,
    *,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    busy_timeout_ms: int = 5000,
    create_folders: bool = True,
) -> tuple[peewee.Database, str | None]:
    """A not-yet-connected peewee Database for ``spec``, and its password (or None).

    SQLite gets WAL, the busy timeout and ``synchronous``; its parent folders
    are created (``create_folders=False``, for ``rcingest validate``: only
    checked to be creatable). The password (of the URL's credentials, or its
    ``?password=`` query parameter, which libpq prefers) is returned so callers
    can scrub driver messages.
    """
    import peewee

    if is_postgres(spec):
        name, params, password = _postgres_params(spec)
        return peewee.PostgresqlDatabase(name, **params), password
    path = _sqlite_path(spec, create_folders)
    pragmas: dict[str, Any] = {
        "journal_mode": "wal",
        "synchronous": synchronous,
        "busy_timeout": busy_timeout_ms,
        # 64 MB page cache: upserts into a filled database touch many index pages.
        "cache_size": -64000,
        # When the WAL is rewound (checkpointer.py), cut its file back to 64 MB:
        # a burst must not leave a gigabyte-sized WAL behind.
        "journal_size_limit": 64 * 1024 * 1024,
    }
    # IMMEDIATE: take the write lock at BEGIN, so a second writer waits out the
    # busy timeout instead of failing on a read-to-write lock upgrade.
    db = peewee.SqliteDatabase(
        str(path) if spec != ":memory:" else spec,
        pragmas=pragmas,
        timeout=busy_timeout_ms / 1000,
        lock_type="IMMEDIATE",
    )
    return db, None


def _sqlite_path(spec: str, create_folders: bool) -> Path:
    """The SQLite file of ``spec``, its folder made (or checked to be creatable)."""
    if "://" in spec:
        raise ConfigError(
            f"database {redact(spec)!r}: unsupported URL scheme; use a file path for "
            "SQLite or postgresql://user:password@host:port/dbname"
        )
    path = Path(spec).expanduser()
    if spec != ":memory:" and not create_folders:
        if not _creatable(path.parent):
            raise ConfigError(
                f"database {spec!r}: cannot create folder {str(path.parent)!r}: "
                "a parent is not a writable folder"
            )
    elif spec != ":memory:":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"database {spec!r}: cannot create folder {str(path.parent)!r}: {exc.strerror}"
            ) from None
    return path


def _creatable(folder: Path) -> bool:
    """Whether ``folder`` exists or could be made: its nearest existing ancestor is writable."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def _postgres_params(spec: str) -> tuple[str, dict[str, Any], str | None]:
    """The database name, the connection parameters and the password of a PostgreSQL URL."""
    parts = urlsplit(spec)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ConfigError(f"database {redact(spec)!r}: the URL names no database (…/dbname)")
    try:
        import psycopg2  # noqa: F401 - only to fail early with a useful hint
    except ImportError:
        raise ConfigError(
            f"database {redact(spec)!r}: PostgreSQL needs the psycopg2 driver; "
            "install it with `pip install 'rcingest[postgres]'`"
        ) from None
    password = unquote(parts.password) if parts.password else None
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"database {redact(spec)!r}: invalid port") from None
    params: dict[str, Any] = {
        "user": unquote(parts.username) if parts.username else None,
        "password": password,
        "host": parts.hostname,
        "port": port,
        "connect_timeout": 10,
    }
    # libpq options such as ?sslmode=require pass through unchanged; so does
    # ?password=, which then is the password to keep out of messages.
    query = dict(parse_qsl(parts.query))
    params.update(query)
    password = query.get("password") or password
    return name, {k: v for k, v in params.items() if v is not None}, password
