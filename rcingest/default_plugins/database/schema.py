"""Schema versions: create a new database, upgrade an older one in place, refuse a newer one.

The version lives in the one-row table ``schema_version``. Opening a database
runs, in one transaction (under an advisory lock on PostgreSQL, so two
daemons starting together do not race):

* no rcingest tables → create the current schema;
* an older version → each step ``MIGRATIONS[n]`` (from ``n - 1`` to ``n``) in order;
* a newer version → :class:`SchemaError`, nothing touched.

Version 0 is the prototype layout (``commits`` without ``schema_version``:
``author`` and ``date`` columns, one ``seen_at``); version 1 is the first
documented schema; version 2 records every repository a commit is in
(``commit_repositories``) and which repository each branch belongs to
(``commit_branches.repository``), since a fork holds its upstream's commits;
version 3 keeps the evidence of a branch-lent story key (``story_keys.branch``),
a pull request's source repository (``pull_requests.source_repository``) and
where each run's process lives (``runs.host``, ``runs.pid``, ``runs.noticed_at``);
version 4 adds pull requests' secret scans (``pr_scans``) and their
findings (``findings``); version 5 adds the audit history of compliance
evaluations (``compliance_evaluations``); version 6 the repository inventory
(``repositories`` gains the ``Repository`` record's new fields, ``state`` and
``last_synced_at``) and repositories' secret scans (``repo_scans``,
``repo_findings``). Add a step here, never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import peewee

from rcingest.default_plugins.database.models import Models
from rcingest.errors import RunFailed

__all__ = ["CURRENT_VERSION", "MIGRATIONS", "SchemaError", "ensure_schema", "read_version"]

CURRENT_VERSION = 6
# Any fixed 64-bit number: the key of the PostgreSQL advisory lock that
# serialises schema creation and upgrades between processes.
_PG_LOCK_KEY = 0x7263696E67657374  # "rcingest"


class SchemaError(RunFailed):
    """The database's schema cannot be used by this version of rcingest."""


def _sql(db: peewee.Database, sql: str, params: tuple[object, ...] = ()) -> None:
    db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def read_version(db: peewee.Database, models: Models) -> int | None:
    """The schema version of ``db``: None when it holds no rcingest tables."""
    tables = set(db.get_tables())
    if "schema_version" in tables:
        row = models.schema_version.select(peewee.fn.MAX(models.schema_version.version)).scalar()
        return int(row) if row is not None else 0
    if "commits" in tables:
        return 0
    return None


def _upgrade_0_to_1(db: peewee.Database, models: Models) -> None:
    """Prototype → version 1: rename and add commit columns, then add the other tables."""
    commit_columns = {c.name for c in db.get_columns("commits")}
    rename = {"author": "author_raw", "date": "committed_at"}
    for old, new in rename.items():
        if old in commit_columns:
            _sql(db, f"ALTER TABLE commits RENAME COLUMN {old} TO {new}")
    added = {
        "author_name": "TEXT",
        "author_account_id": "TEXT",
        "parents": "TEXT NOT NULL DEFAULT ''",
        "files_known": "BOOLEAN NOT NULL DEFAULT FALSE",
        "first_seen_at": "TIMESTAMP",
        "last_seen_at": "TIMESTAMP",
    }
    for name, sql_type in added.items():
        if name not in commit_columns:
            _sql(db, f"ALTER TABLE commits ADD COLUMN {name} {sql_type}")
    if "seen_at" in commit_columns:
        _sql(db, "UPDATE commits SET first_seen_at = seen_at, last_seen_at = seen_at")
        _sql(db, "ALTER TABLE commits DROP COLUMN seen_at")
    now = _now()
    _sql(db, f"UPDATE commits SET first_seen_at = {db.param} WHERE first_seen_at IS NULL", (now,))  # noqa: S608
    _sql(db, "UPDATE commits SET last_seen_at = first_seen_at WHERE last_seen_at IS NULL")
    if "commit_branches" in db.get_tables():
        branch_columns = {c.name for c in db.get_columns("commit_branches")}
        if "first_seen_at" not in branch_columns:
            _sql(db, "ALTER TABLE commit_branches ADD COLUMN first_seen_at TIMESTAMP")
    # Every other table is new in version 1; existing ones are kept, their
    # missing indexes added (CREATE ... IF NOT EXISTS).
    db.create_tables(models.all(), safe=True)


def _upgrade_1_to_2(db: peewee.Database, models: Models) -> None:
    """Version 1 → 2: branches belong to a repository; ``commit_repositories`` lists them all.

    Existing rows get the only repository version 1 knew for a commit,
    ``commits.repository`` (the first one it was seen in).
    """
    if "repository" not in {c.name for c in db.get_columns("commit_branches")}:
        if isinstance(db, peewee.PostgresqlDatabase):
            _sql(db, "ALTER TABLE commit_branches ADD COLUMN repository TEXT NOT NULL DEFAULT ''")
            _sql(
                db,
                "UPDATE commit_branches b SET repository = c.repository "
                "FROM commits c WHERE c.hash = b.commit_hash",
            )
            _sql(db, "ALTER TABLE commit_branches ALTER COLUMN repository DROP DEFAULT")
            _sql(db, "ALTER TABLE commit_branches DROP CONSTRAINT commit_branches_pkey")
            _sql(
                db, "ALTER TABLE commit_branches ADD PRIMARY KEY (commit_hash, repository, branch)"
            )
        else:
            # SQLite cannot change a primary key in place: copy into a new table.
            _sql(db, "ALTER TABLE commit_branches RENAME TO commit_branches_v1")
            db.create_tables([models.commit_branches])
            _sql(
                db,
                "INSERT INTO commit_branches (commit_hash, repository, branch, first_seen_at) "
                "SELECT b.commit_hash, COALESCE(c.repository, ''), b.branch, b.first_seen_at "
                "FROM commit_branches_v1 b LEFT JOIN commits c ON c.hash = b.commit_hash",
            )
            _sql(db, "DROP TABLE commit_branches_v1")
    db.create_tables([models.commit_repositories], safe=True)
    _sql(
        db,
        "INSERT INTO commit_repositories (commit_hash, repository, first_seen_at, last_seen_at) "
        "SELECT hash, repository, first_seen_at, last_seen_at FROM commits c WHERE NOT EXISTS "
        "(SELECT 1 FROM commit_repositories r "
        "WHERE r.commit_hash = c.hash AND r.repository = c.repository)",
    )


def _upgrade_2_to_3(db: peewee.Database, models: Models) -> None:
    """Version 2 → 3: ``story_keys.branch`` joins that table's key; ``pull_requests`` gains
    ``source_repository``; ``runs`` gains ``host``, ``pid`` and ``noticed_at``.

    Rows of version 2 get ``branch = ''``: which branch lent a ``branch`` key
    was not recorded then (docs/database.md has a query that lists them).
    """
    if "source_repository" not in {c.name for c in db.get_columns("pull_requests")}:
        _sql(db, "ALTER TABLE pull_requests ADD COLUMN source_repository TEXT")
    run_columns = {c.name for c in db.get_columns("runs")}
    for name, sql_type in (("host", "TEXT"), ("pid", "INTEGER"), ("noticed_at", "TIMESTAMP")):
        if name not in run_columns:
            _sql(db, f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")
    if "branch" in {c.name for c in db.get_columns("story_keys")}:
        return
    if isinstance(db, peewee.PostgresqlDatabase):
        _sql(db, "ALTER TABLE story_keys ADD COLUMN branch TEXT NOT NULL DEFAULT ''")
        _sql(db, "ALTER TABLE story_keys DROP CONSTRAINT story_keys_pkey")
        _sql(db, "ALTER TABLE story_keys ADD PRIMARY KEY (commit_hash, key, origin, branch)")
        return
    # SQLite cannot change a primary key in place: copy into a new table.
    _sql(db, "ALTER TABLE story_keys RENAME TO story_keys_v2")
    # The renamed table kept its index names; drop them so the new table can
    # create its own (the primary key's automatic index has no SQL and goes with it).
    for index in db.get_indexes("story_keys_v2"):
        if index.sql:
            _sql(db, f'DROP INDEX IF EXISTS "{index.name}"')
    db.create_tables([models.story_keys])
    _sql(
        db,
        "INSERT INTO story_keys (commit_hash, key, origin, branch) "
        "SELECT commit_hash, key, origin, '' FROM story_keys_v2",
    )
    _sql(db, "DROP TABLE story_keys_v2")


def _upgrade_3_to_4(db: peewee.Database, models: Models) -> None:
    """Version 3 → 4: the ``pr_scans`` and ``findings`` tables (new, nothing to move)."""
    db.create_tables([models.pr_scans, models.findings], safe=True)


def _upgrade_4_to_5(db: peewee.Database, models: Models) -> None:
    """Version 4 → 5: the ``compliance_evaluations`` table (new, nothing to move)."""
    db.create_tables([models.compliance_evaluations], safe=True)


def _upgrade_5_to_6(db: peewee.Database, models: Models) -> None:
    """Version 5 → 6: the inventory's columns on ``repositories``, and the repository scans.

    Existing rows become ``active`` with the new facts unknown (null) and
    ``last_synced_at`` null: version 5 did not record when a ``Repository``
    record last arrived, and the next sync fills it.
    """
    columns = {c.name for c in db.get_columns("repositories")}
    added = {
        "web_url": "TEXT",
        "project": "TEXT",
        "size": "BIGINT",
        "created_on": "TIMESTAMP",
        "fork_of": "TEXT",
        "last_push": "TIMESTAMP",
        "state": "TEXT NOT NULL DEFAULT 'active'",
        "state_reason": "TEXT",
        "renamed_to": "TEXT",
        "last_synced_at": "TIMESTAMP",
    }
    for name, sql_type in added.items():
        if name not in columns:
            _sql(db, f"ALTER TABLE repositories ADD COLUMN {name} {sql_type}")
    # Creates the two new tables and the new index on repositories (uuid).
    db.create_tables([models.repositories, models.repo_scans, models.repo_findings], safe=True)


#: Upgrade steps: ``MIGRATIONS[n]`` takes a database from version ``n - 1`` to ``n``.
MIGRATIONS: dict[int, Callable[[peewee.Database, Models], None]] = {
    1: _upgrade_0_to_1,
    2: _upgrade_1_to_2,
    3: _upgrade_2_to_3,
    4: _upgrade_3_to_4,
    5: _upgrade_4_to_5,
    6: _upgrade_5_to_6,
}


def ensure_schema(db: peewee.Database, models: Models, where: str) -> tuple[int | None, int]:
    """Bring ``db`` to :data:`CURRENT_VERSION`; return (version found, version now).

    ``where`` names the database (password redacted) in messages.
    """
    with db.atomic():
        if isinstance(db, peewee.PostgresqlDatabase):
            _sql(db, "SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        found = read_version(db, models)
        if found is None:
            db.create_tables(models.all(), safe=True)
        elif found > CURRENT_VERSION:
            raise SchemaError(
                f"database {where} has schema version {found}, written by a newer rcingest; "
                f"this rcingest knows versions up to {CURRENT_VERSION}. Upgrade rcingest, "
                "or point --database at another database"
            )
        else:
            for version in range(found + 1, CURRENT_VERSION + 1):
                try:
                    MIGRATIONS[version](db, models)
                except peewee.DatabaseError as exc:
                    raise SchemaError(
                        f"database {where}: upgrading the schema from version {version - 1} "
                        f"to {version} failed, nothing was changed: {exc}"
                    ) from exc
        if found != CURRENT_VERSION:
            models.schema_version.delete().execute()
            models.schema_version.insert(version=CURRENT_VERSION, upgraded_at=_now()).execute()
    return found, CURRENT_VERSION
