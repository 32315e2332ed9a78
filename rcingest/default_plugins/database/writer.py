"""Rows into tables: one transaction per batch, idempotent upserts.

Runs on the sink's single writer thread only. Every table is written with
``insert_many(...).on_conflict(...)``: a replay updates ``last_seen_at`` and
mutable fields, adds what is new (branches, files, keys) and never
duplicates a row; ``first_seen_at`` is never in an update list, so it never
moves.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import peewee
from peewee import EXCLUDED, SQL, Case, fn

from rcingest.default_plugins.database import rows as r
from rcingest.default_plugins.database.compliance import write_evaluations
from rcingest.default_plugins.database.findings import write_scans
from rcingest.default_plugins.database.inventory import write_repo_scans, write_repositories
from rcingest.default_plugins.database.models import Models

# SQLite allows 32,766 bound parameters per statement (PostgreSQL 65,535);
# big statements amortise peewee's per-statement cost.
_MAX_PARAMS = 30000
# Constants as SQL literals, not parameters: the upsert statements then take
# only row values, which lets PostgreSQL use psycopg2's execute_values.
_EMPTY = SQL("''")
_TRUE = SQL("TRUE")


def _template(
    model: Any, fields: list[Any], conflict: tuple[list[Any], dict[Any, Any]] | None
) -> tuple[str, tuple[Any, ...]]:
    """The one-row SQL of ``insert_many().on_conflict()`` and its non-row parameters.

    Cached per model class: the statement text depends only on the table, the
    columns and the conflict clause, which are fixed per call site.
    """
    cache: dict[tuple[str, ...], tuple[str, tuple[Any, ...]]] = model.__dict__.get("_rc_sql")
    if cache is None:
        cache = {}
        model._rc_sql = cache
    key = tuple(f.name for f in fields) + (("ignore",) if conflict is None else ("upsert",))
    if key not in cache:
        query = model.insert_many([(None,) * len(fields)], fields=fields)
        if conflict is None:
            query = query.on_conflict_ignore()
        else:
            query = query.on_conflict(conflict_target=conflict[0], update=conflict[1])
        sql, params = query.sql()
        cache[key] = (sql, tuple(params[len(fields) :]))
    return cache[key]


def _insert(
    db: peewee.Database,
    model: Any,
    names: Sequence[str],
    values: Any,
    conflict: tuple[list[Any], dict[Any, Any]] | None,
) -> int:
    """Insert ``values`` (tuples in ``names`` order); ``conflict=None`` ignores duplicates."""
    data = list(values)
    if not data:
        return 0
    fields = [getattr(model, n) for n in names]
    if isinstance(db, peewee.SqliteDatabase):
        # Same statement as below, but its text is generated once and run with
        # executemany: peewee renders every value of a multi-row VALUES list
        # through its query builder, which costs four times SQLite's own work.
        sql, extra = _template(model, fields, conflict)
        stamps = [i for i, f in enumerate(fields) if isinstance(f, peewee.DateTimeField)]
        if stamps:
            data = [_stamped(row, stamps) for row in data]
        if extra:
            data = [row + extra for row in data]
        # peewee's wrapper turns sqlite3 errors into peewee's own, as execute() does.
        with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
            db.cursor().executemany(sql, data)  # type: ignore[no-untyped-call]
        return len(data)
    # Rows in primary-key order: two daemons writing overlapping batches into
    # one PostgreSQL then lock rows in the same order and cannot deadlock.
    width = len(key_names(model))
    data.sort(key=lambda row: tuple(_sortable(v) for v in row[:width]))
    if isinstance(db, peewee.PostgresqlDatabase):
        sql, extra = _template(model, fields, conflict)
        one_row = "VALUES (" + ", ".join(["%s"] * len(fields)) + ")"
        if not extra and one_row in sql:
            # psycopg2 renders the VALUES list in C; peewee's builder would
            # spend five times longer on it than PostgreSQL on the insert.
            from psycopg2.extras import execute_values  # type: ignore[import-untyped]

            with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
                cursor = db.cursor()  # type: ignore[no-untyped-call]
                execute_values(cursor, sql.replace(one_row, "VALUES %s", 1), data, page_size=2000)
            return len(data)
    chunk = max(1, _MAX_PARAMS // len(fields))
    for start in range(0, len(data), chunk):
        query = model.insert_many(data[start : start + chunk], fields=fields)
        if conflict is None:
            query = query.on_conflict_ignore()
        else:
            target, update = conflict
            query = query.on_conflict(conflict_target=target, update=update)
        query.execute()
    return len(data)


def key_names(model: Any) -> list[str]:
    """The primary-key column names of ``model``, which lead every row tuple."""
    pk = model._meta.primary_key
    if isinstance(pk, peewee.CompositeKey):
        return list(pk.field_names)
    return [pk.name]


def _sortable(value: Any) -> tuple[bool, str]:
    return (value is None, str(value))


def _stamped(row: tuple[Any, ...], stamps: list[int]) -> tuple[Any, ...]:
    """``row`` with its datetimes as peewee writes them to SQLite (``str(datetime)``)."""
    out = list(row)
    for i in stamps:
        if out[i] is not None:
            out[i] = str(out[i])
    return tuple(out)


def _keep(model: Any, name: str) -> Any:
    """The incoming value, unless it is NULL: then keep the stored one."""
    return fn.COALESCE(getattr(EXCLUDED, name), getattr(model, name))


@contextlib.contextmanager
def _transaction(db: peewee.Database) -> Iterator[None]:
    """``db.atomic()``, but a failed rollback never hides why the transaction failed.

    SQLite rolls a transaction back itself on some errors ("database or disk
    is full"); peewee's rollback then fails with "cannot rollback - no
    transaction is active", and that message replaced the real one in every
    log line (issue 15, defect 7). The original error is raised instead.
    """
    try:
        with db.atomic():
            yield
    except (peewee.OperationalError, sqlite3.OperationalError) as exc:
        # (peewee's rollback calls sqlite3 directly: its error is not wrapped.)
        original: BaseException | None = exc
        while original is not None and "no transaction is active" in str(original):
            original = original.__context__
        if original is not None and original is not exc and isinstance(original, Exception):
            raise original from None
        raise


@dataclass(frozen=True)
class Rekey:
    """The commits and pull requests whose stored story keys a batch replaces (replay)."""

    commits: list[str]
    pull_requests: list[tuple[str, int]]


def _delete_story_keys(m: Models, rekey: Rekey) -> None:
    """Delete the stored story keys of ``rekey``'s commits and pull requests."""
    chunk = 500  # well under either database's limit of bound parameters
    sk = m.story_keys
    for start in range(0, len(rekey.commits), chunk):
        sk.delete().where(sk.commit_hash.in_(rekey.commits[start : start + chunk])).execute()
    by_repository: dict[str, list[int]] = {}
    for repository, pr_id in rekey.pull_requests:
        by_repository.setdefault(repository, []).append(pr_id)
    pk = m.pull_request_story_keys
    for repository, ids in sorted(by_repository.items()):
        for start in range(0, len(ids), chunk):
            pk.delete().where(
                (pk.repository == repository) & pk.pull_request_id.in_(ids[start : start + chunk])
            ).execute()


def write_rows(
    db: peewee.Database,
    m: Models,
    rows: r.Rows,
    after: Callable[[], None] | None = None,
    rekey: Rekey | None = None,
) -> int:
    """Write one batch's rows (and its cursors) in one transaction; return the row count.

    ``after`` runs last inside the same transaction (the sink updates its
    ``runs`` row there). ``rekey`` (replay only) names the commits and pull
    requests whose stored story keys are deleted first, in the same
    transaction, so the batch's keys replace them.
    """
    with _transaction(db):
        if rekey is not None:
            _delete_story_keys(m, rekey)
        write_repositories(db, m, rows, _insert)
        c = m.commits
        _insert(
            db,
            c,
            r.COMMIT_FIELDS,
            rows.commits.values(),
            (
                [c.hash],
                {
                    # A webhook commit may lack what a scan knows: never erase.
                    c.author_name: _keep(c, "author_name"),
                    c.author_account_id: _keep(c, "author_account_id"),
                    c.message: fn.COALESCE(fn.NULLIF(EXCLUDED.message, _EMPTY), c.message),
                    c.author_raw: fn.COALESCE(fn.NULLIF(EXCLUDED.author_raw, _EMPTY), c.author_raw),
                    c.parents: fn.COALESCE(fn.NULLIF(EXCLUDED.parents, _EMPTY), c.parents),
                    c.files_known: Case(None, [(EXCLUDED.files_known, _TRUE)], c.files_known),
                    c.last_seen_at: EXCLUDED.last_seen_at,
                },
            ),
        )
        cr = m.commit_repositories
        _insert(
            db,
            cr,
            r.COMMIT_REPOSITORY_FIELDS,
            rows.commit_repositories.values(),
            ([cr.commit_hash, cr.repository], {cr.last_seen_at: EXCLUDED.last_seen_at}),
        )
        _insert(db, m.commit_branches, r.BRANCH_FIELDS, rows.commit_branches.values(), None)
        f = m.commit_files
        _insert(
            db,
            f,
            r.FILE_FIELDS,
            rows.commit_files.values(),
            (
                [f.commit_hash, f.path],
                {
                    getattr(f, n): getattr(EXCLUDED, n)
                    for n in ("old_path", "status", "lines_added", "lines_removed")
                },
            ),
        )
        _insert(db, m.story_keys, r.STORY_KEY_FIELDS, rows.story_keys.values(), None)
        pr = m.pull_requests
        mutable = (
            "title", "description", "state", "source_branch", "destination_branch", "updated_on",
        )  # fmt: skip
        # A snapshot older than the stored one (a backfill of an earlier
        # delivery, a replayed scan) must not roll the pull request back.
        newer = pr.updated_on.is_null() | (EXCLUDED.updated_on >= pr.updated_on)
        _insert(
            db,
            pr,
            r.PULL_REQUEST_FIELDS,
            rows.pull_requests.values(),
            (
                [pr.repository, pr.id],
                {
                    **{
                        getattr(pr, n): Case(None, [(newer, getattr(EXCLUDED, n))], getattr(pr, n))
                        for n in mutable
                    },
                    pr.last_seen_at: EXCLUDED.last_seen_at,
                    **{
                        getattr(pr, n): _keep(pr, n)
                        for n in (
                            "author_name",
                            "author_account_id",
                            "merge_commit",
                            "source_repository",
                        )
                    },
                },
            ),
        )
        _insert(
            db, m.pull_request_commits, r.PR_COMMIT_FIELDS, rows.pull_request_commits.values(), None
        )
        _insert(
            db,
            m.pull_request_story_keys,
            r.PR_STORY_KEY_FIELDS,
            rows.pull_request_story_keys.values(),
            None,
        )
        d = m.deliveries
        _insert(
            db,
            d,
            r.DELIVERY_FIELDS,
            rows.deliveries.values(),
            (
                [d.request_uuid],
                {
                    # A repeated delivery changes only when it was last seen
                    # and the highest attempt number.
                    d.last_seen_at: EXCLUDED.last_seen_at,
                    d.attempt: Case(
                        None, [(EXCLUDED.attempt > d.attempt, EXCLUDED.attempt)], d.attempt
                    ),
                },
            ),
        )
        s = m.source_cursors
        _insert(
            db,
            s,
            r.CURSOR_FIELDS,
            rows.cursors.values(),
            ([s.source_id, s.stream], {s.state: EXCLUDED.state, s.updated_at: EXCLUDED.updated_at}),
        )
        if rows.pr_scans or rows.findings:
            write_scans(db, m, rows, _insert)
        if rows.repo_scans:
            write_repo_scans(db, m, rows, _insert)
        if rows.compliance_evaluations:
            write_evaluations(db, m, rows.compliance_evaluations)
        if after is not None:
            after()
    return rows.total()
