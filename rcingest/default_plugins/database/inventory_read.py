"""Reading the inventory back (``rcingest assets``): read-only, never creating anything.

A SQLite file is opened read-only (``mode=ro``), so a mistyped path is an
error, not a new empty database; a PostgreSQL session is set read-only. The
schema is checked, not upgraded: a database before version 6 has no
inventory, and the next run of a pipeline with the ``database`` sink
upgrades it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from rcingest.default_plugins.database.connect import is_postgres, redact, scrub
from rcingest.errors import ConfigError, RunFailed

if TYPE_CHECKING:
    import peewee

    from rcingest.default_plugins.database.models import Models

__all__ = ["Asset", "InventoryUnavailable", "LastScan", "StateFilter", "read_inventory"]

StateFilter = Literal["active", "deleted", "filtered", "all"]
#: The schema version that added the inventory's columns.
INVENTORY_VERSION = 6


class InventoryUnavailable(ConfigError):
    """The database does not exist, cannot be opened, or holds no inventory (exit 2)."""


class LastScan(msgspec.Struct, kw_only=True):
    """The repository's latest scan, whatever its state."""

    branch: str
    head: str
    state: str
    scanned_at: datetime


class Asset(msgspec.Struct, kw_only=True):
    """One repository of the inventory, as ``rcingest assets`` shows it."""

    full_name: str
    state: str
    state_reason: str | None
    renamed_to: str | None
    #: ``private``, ``public`` or None (not known: a row only a commit implied).
    visibility: str | None
    language: str | None
    project: str | None
    mainbranch: str | None
    web_url: str | None
    uuid: str | None
    last_push: datetime | None
    last_synced_at: datetime | None
    #: Open findings of its branch content (``repo_findings``).
    open_findings: int
    last_scan: LastScan | None


def _aware(moment: datetime | None) -> datetime | None:
    """A stored (naive UTC) time as an aware one, so JSON says ``Z``."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def _open(spec: str) -> tuple[peewee.Database, set[str]]:
    """A connected, read-only Database for ``spec`` and the secrets to scrub from messages."""
    import peewee

    from rcingest.default_plugins.database.connect import check_database, open_database

    where = redact(spec)
    if is_postgres(spec):
        db, password = open_database(spec)
        secrets = {password} if password else set()
        try:
            db.connect()
            db.execute_sql(  # type: ignore[no-untyped-call]
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
            )
        except peewee.PeeweeException as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}".strip(), secrets)
            raise InventoryUnavailable(f"database {where}: cannot open it: {detail}") from None
        return db, secrets
    if "://" in spec:
        check_database(spec)  # a URL of another scheme: the sink's own message
    path = Path(spec).expanduser()
    if spec == ":memory:" or not path.is_file():
        raise InventoryUnavailable(
            f"database {spec!r}: no such file (nothing was created); name the database "
            "with --database PATH_OR_URL or --config FILE"
        )
    db = peewee.SqliteDatabase(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
    try:
        db.connect()
    except peewee.PeeweeException as exc:
        raise InventoryUnavailable(f"database {spec!r}: cannot open it: {exc}") from None
    return db, set()


def _check_schema(db: peewee.Database, models: Models, where: str) -> None:
    from rcingest.default_plugins.database.schema import read_version

    tables = set(db.get_tables())
    if "repositories" not in tables or "schema_version" not in tables:
        raise InventoryUnavailable(f"database {where}: not an rcingest database (no inventory)")
    version = read_version(db, models) or 0
    if version < INVENTORY_VERSION:
        raise InventoryUnavailable(
            f"database {where}: schema version {version} has no inventory (it came in version "
            f"{INVENTORY_VERSION}); the next run of a pipeline with the database sink upgrades it"
        )


def _assets(models: Models, state: StateFilter) -> list[Asset]:
    from peewee import fn

    repo, f, s = models.repositories, models.repo_findings, models.repo_scans
    open_rows: Any = (
        f.select(f.repository, fn.COUNT(f.repository))
        .where(f.state == "open")
        .group_by(f.repository)
        .tuples()
    )
    open_counts = {name: int(n) for name, n in open_rows}
    newest = s.select(s.repository, fn.MAX(s.scanned_at).alias("at")).group_by(s.repository)
    newest = newest.alias("newest")
    scan_rows: Any = (
        s.select(s.repository, s.branch, s.head, s.state, s.scanned_at)
        .join(newest, on=(s.repository == newest.c.repository) & (s.scanned_at == newest.c.at))
        .order_by(s.repository, s.branch)
        .tuples()
    )
    last_scans = {
        name: LastScan(branch=branch, head=head, state=st, scanned_at=at.replace(tzinfo=UTC))
        for name, branch, head, st, at in scan_rows
    }
    query = repo.select().order_by(repo.full_name)
    if state != "all":
        query = query.where(repo.state == state)
    out = []
    for row in query:
        private = row.is_private
        out.append(
            Asset(
                full_name=row.full_name,
                state=row.state,
                state_reason=row.state_reason,
                renamed_to=row.renamed_to,
                visibility=None if private is None else ("private" if private else "public"),
                language=row.language,
                project=row.project,
                mainbranch=row.mainbranch,
                web_url=row.web_url,
                uuid=row.uuid,
                last_push=_aware(row.last_push),
                last_synced_at=_aware(row.last_synced_at),
                open_findings=open_counts.get(row.full_name, 0),
                last_scan=last_scans.get(row.full_name),
            )
        )
    return out


def read_inventory(spec: str, state: StateFilter = "all") -> list[Asset]:
    """The inventory of the database ``spec`` (a SQLite path or a PostgreSQL URL), by name.

    Raises :class:`InventoryUnavailable` (exit 2) when the database does not
    exist, cannot be opened or has no inventory; ``RunFailed`` when reading fails.
    """
    import peewee

    from rcingest.default_plugins.database.models import make_models

    where = redact(spec) if is_postgres(spec) else repr(spec)
    db, secrets = _open(spec)
    try:
        models = make_models(db)
        try:
            _check_schema(db, models, where)
            return _assets(models, state)
        except peewee.DatabaseError as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}".strip(), secrets)
            if "not a database" in str(exc):
                raise InventoryUnavailable(f"database {where}: {detail}") from None
            raise RunFailed(f"database {where}: reading the inventory failed: {detail}") from None
    finally:
        db.close()
