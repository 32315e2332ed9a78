"""The repository inventory and repositories' secret scans into tables (schema version 6).

**The inventory** is ``repositories``, one row per ``workspace/slug`` ever
seen (every other table names repositories that way, and so does Chariot's
asset key). Writing a ``Repository`` record upserts its row:

* a fact the record does not carry (null) never erases a stored one: a
  webhook's partial repository does not blank the language;
* ``last_push`` only moves forward;
* ``state``, ``state_reason`` and ``renamed_to`` always take the record's
  values: they say what the latest record said, nulls included;
* ``last_synced_at`` (and ``last_seen_at``) become the batch's time.

**Renames follow the UUID.** A rename keeps Bitbucket's UUID, so a record
for ``new`` whose UUID another row ``old`` holds, or a tombstone of ``old``
with ``renamed_to = new``, moves the repository to its new name:

* ``old`` stays, as the tombstone (``state`` deleted, ``renamed_to`` new,
  ``state_reason`` ``renamed`` unless a record gave one): history written
  under the old name (commits, pull requests) still finds its repository;
* ``new`` gets ``old``'s facts it lacks (not its name, URL or workspace,
  which the rename changed), its ``first_seen_at`` when earlier, and a later
  ``last_push``;
* the repository-scope ``repo_scans`` and ``repo_findings`` rows move to
  ``new`` (a row ``new`` already has for the same key wins; ``old``'s copy
  is dropped), so the next scan of the new name closes what is gone.

A record older (``updated_on``) than the live row of its UUID under another
name is a replay, not a rename: that row stays, and the record's name goes
back to being its tombstone (so a replayed listing cannot revive it).

**Scans.** Every ``RepositoryScan`` is upserted into ``repo_scans``. Per
(repository, branch), the batch's latest complete scan (``findings`` or
``clean``, by ``scanned_at``) then decides the findings of that branch,
unless a complete scan stored earlier is newer (a replay of an old scan):

* its findings are upserted ``open`` (``last_head``/``last_seen_at`` move on;
  a finding fixed earlier and back again is open again);
* every other ``open`` finding of the branch becomes ``fixed`` (``fixed_at``,
  ``fixed_head``), even at the same head (a re-scan with new rules);
* findings whose fingerprint the scan allowed become ``allowed``.

A scan that did not complete (too large, timed out, gone, failed) changes
no finding: absence of evidence is not a fix.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import peewee
from peewee import EXCLUDED, SQL, Case, fn

from rcingest.default_plugins.database import rows as r
from rcingest.default_plugins.database.models import Models

__all__ = ["write_repo_scans", "write_repositories"]

#: Facts a record may leave out (null): the stored value is kept then.
_FACTS = (
    "workspace", "uuid", "name", "is_private", "mainbranch", "language", "updated_on",
    "web_url", "project", "size", "created_on", "fork_of",
)  # fmt: skip
#: Facts a rename does not change, given to the new name when it lacks them.
_CARRIED = (
    "uuid", "is_private", "mainbranch", "language", "updated_on", "project", "size",
    "created_on", "fork_of",
)  # fmt: skip
_COMPLETE = ("findings", "clean")
_AT = {name: i for i, name in enumerate(r.REPOSITORY_FIELDS)}
_SCAN_AT = {name: i for i, name in enumerate(r.REPO_SCAN_FIELDS)}
_NULL = SQL("NULL")
_CHUNK = 500


def _sql(db: peewee.Database, sql: str, params: tuple[object, ...]) -> None:
    db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


def write_repositories(db: peewee.Database, m: Models, rows: r.Rows, insert: Any) -> None:
    """Inside the batch's transaction: implied rows, records' rows, then renames."""
    repo = m.repositories
    insert(
        db,
        repo,
        r.IMPLIED_REPOSITORY_FIELDS,
        rows.implied_repositories.values(),
        ([repo.full_name], {repo.last_seen_at: EXCLUDED.last_seen_at}),
    )
    later_push = repo.last_push.is_null() | (EXCLUDED.last_push > repo.last_push)
    insert(
        db,
        repo,
        r.REPOSITORY_FIELDS,
        rows.repositories.values(),
        (
            [repo.full_name],
            {
                **{
                    getattr(repo, n): fn.COALESCE(getattr(EXCLUDED, n), getattr(repo, n))
                    for n in _FACTS
                },
                repo.last_push: Case(None, [(later_push, EXCLUDED.last_push)], repo.last_push),
                **{getattr(repo, n): getattr(EXCLUDED, n) for n in r.REPOSITORY_STATE_FIELDS},
                repo.last_seen_at: EXCLUDED.last_seen_at,
                repo.last_synced_at: EXCLUDED.last_synced_at,
            },
        ),
    )
    for old, new, now in _renames(m, rows):
        _follow(db, m, old, new, now)


def _renames(m: Models, rows: r.Rows) -> list[tuple[str, str, datetime]]:
    """The (old name, new name, time) of each rename this batch reveals, in batch order."""
    repo = m.repositories
    found: dict[tuple[str, str], datetime] = {}
    live = []
    for row in rows.repositories.values():
        name, now = row[0], row[_AT["last_seen_at"]]
        if row[_AT["state"]] == "deleted":
            target = row[_AT["renamed_to"]]
            if target and target != name:
                found.setdefault((name, target), now)
        elif row[_AT["uuid"]]:
            live.append(row)
    uuids = sorted({row[_AT["uuid"]] for row in live})
    known: dict[str, list[Any]] = defaultdict(list)
    for start in range(0, len(uuids), _CHUNK):
        fields = (repo.full_name, repo.uuid, repo.state, repo.renamed_to, repo.updated_on)
        for other in repo.select(*fields).where(repo.uuid.in_(uuids[start : start + _CHUNK])):
            known[str(other.uuid)].append(other)
    # A name the batch itself says is live is nobody's old name (two live
    # names with one UUID in one batch contradict each other: neither moves).
    live_names = {row[0] for row in live}
    for row in live:
        name, updated = row[0], row[_AT["updated_on"]]
        for other in known.get(row[_AT["uuid"]], []):
            if other.full_name == name or other.full_name in live_names:
                continue
            if other.state == "deleted":
                if other.renamed_to == name:  # its tombstone came first
                    found.setdefault((other.full_name, name), row[_AT["last_seen_at"]])
                continue
            if updated is not None and other.updated_on is not None and updated < other.updated_on:
                # Older than the live row it would rename: a replay of the old
                # name's record. The newer name stays; the old one goes back to
                # being its tombstone.
                found.setdefault((name, other.full_name), row[_AT["last_seen_at"]])
            else:
                found.setdefault((other.full_name, name), row[_AT["last_seen_at"]])
    return [(old, new, now) for (old, new), now in found.items()]


def _follow(db: peewee.Database, m: Models, old: str, new: str, now: datetime) -> None:
    """Move the repository ``old`` to ``new``: tombstone, facts, scans and findings."""
    repo = m.repositories
    was = repo.get_or_none(repo.full_name == old)
    if was is None:
        return
    # A live row's reason (a filter's) is not the tombstone's; a tombstone's own is kept.
    reason = (was.state_reason if was.state == "deleted" else None) or "renamed"
    if (was.state, was.state_reason, was.renamed_to) != ("deleted", reason, new):
        repo.update(state="deleted", state_reason=reason, renamed_to=new).where(
            repo.full_name == old
        ).execute()
    now_row = repo.get_or_none(repo.full_name == new)
    if now_row is None:
        # The tombstone came before any record of the new name.
        repo.insert(
            full_name=new,
            workspace=new.split("/", 1)[0] if "/" in new else None,
            **{n: getattr(was, n) for n in _CARRIED},
            last_push=was.last_push,
            state="active",
            first_seen_at=was.first_seen_at,
            last_seen_at=now,
        ).execute()
    else:
        changes: dict[Any, Any] = {
            getattr(repo, n): getattr(was, n)
            for n in _CARRIED
            if getattr(now_row, n) is None and getattr(was, n) is not None
        }
        if was.last_push is not None and (
            now_row.last_push is None or was.last_push > now_row.last_push
        ):
            changes[repo.last_push] = was.last_push
        if was.first_seen_at < now_row.first_seen_at:
            changes[repo.first_seen_at] = was.first_seen_at
        if changes:
            repo.update(changes).where(repo.full_name == new).execute()
    _move(db, "repo_scans", ("branch", "head"), old, new)
    _move(db, "repo_findings", ("branch", "fingerprint", "path", "line_start"), old, new)


def _move(db: peewee.Database, table: str, rest: tuple[str, ...], old: str, new: str) -> None:
    """Rows of ``table`` from repository ``old`` to ``new``; ``new``'s own rows win."""
    p = db.param
    same = " AND ".join(f"x.{c} = {table}.{c}" for c in rest)
    # Table and column names are this module's constants, never input.
    _sql(
        db,
        f"UPDATE {table} SET repository = {p} WHERE repository = {p} "  # noqa: S608
        f"AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.repository = {p} AND {same})",
        (new, old, new),
    )
    _sql(db, f"DELETE FROM {table} WHERE repository = {p}", (old,))  # noqa: S608


def write_repo_scans(db: peewee.Database, m: Models, rows: r.Rows, insert: Any) -> None:
    """Inside the batch's transaction: the scans, then what each branch's deciding scan says."""
    s = m.repo_scans
    insert(
        db,
        s,
        r.REPO_SCAN_FIELDS,
        rows.repo_scans.values(),
        (
            [s.repository, s.branch, s.head],
            {
                getattr(s, n): getattr(EXCLUDED, n)
                for n in r.REPO_SCAN_FIELDS[3:]
                if n != "first_seen_at"
            },
        ),
    )
    at = _SCAN_AT["scanned_at"]
    deciding: dict[tuple[str, str], r.Row] = {}
    for row in rows.repo_scans.values():
        if row[_SCAN_AT["state"]] in _COMPLETE:
            earlier = deciding.get((row[0], row[1]))
            if earlier is None or row[at] >= earlier[at]:
                deciding[(row[0], row[1])] = row
    if not deciding:
        return
    latest = _latest_complete(m, sorted({repository for repository, _ in deciding}))
    findings: dict[tuple[str, str, str], list[r.Row]] = defaultdict(list)
    for row in rows.repo_findings.values():
        findings[row[:3]].append(row)
    allowed: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for row in rows.repo_allowed.values():
        allowed[row[:3]].add(row[3])
    for branch_key, scan in deciding.items():
        newest = latest.get(branch_key)
        if newest is not None and scan[at] < newest:
            continue  # a complete scan stored earlier is newer: this one is a replay
        key = (scan[0], scan[1], scan[2])
        _apply(db, m, scan, findings.get(key, []), allowed.get(key, set()), insert)


def _latest_complete(m: Models, repositories: list[str]) -> dict[tuple[str, str], datetime]:
    """Per (repository, branch) of ``repositories``: the newest complete scan stored."""
    s = m.repo_scans
    out: dict[tuple[str, str], datetime] = {}
    for start in range(0, len(repositories), _CHUNK):
        query = (
            s.select(s.repository, s.branch, fn.MAX(s.scanned_at))
            .where(s.repository.in_(repositories[start : start + _CHUNK]) & s.state.in_(_COMPLETE))
            .group_by(s.repository, s.branch)
        )
        newest_rows: Any = query.tuples()  # (repository, branch, MAX(scanned_at))
        for repository, branch, newest in newest_rows:
            out[(repository, branch)] = newest
    return out


def _apply(
    db: peewee.Database,
    m: Models,
    scan: r.Row,
    found: list[r.Row],
    allowed: set[str],
    insert: Any,
) -> None:
    """One complete scan's verdict on its branch's findings."""
    repository, branch, head = scan[0], scan[1], scan[2]
    now = scan[_SCAN_AT["last_seen_at"]]
    f = m.repo_findings
    insert(
        db,
        f,
        r.REPO_FINDING_FIELDS,
        [(*row[:2], *row[3:], "open", head, head, now, now, None, None) for row in found],
        (
            [f.repository, f.branch, f.fingerprint, f.path, f.line_start],
            {
                f.line_end: EXCLUDED.line_end,
                f.excerpt: EXCLUDED.excerpt,
                f.severity: EXCLUDED.severity,
                f.state: EXCLUDED.state,
                f.last_head: EXCLUDED.last_head,
                f.last_seen_at: EXCLUDED.last_seen_at,
                f.fixed_at: _NULL,
                f.fixed_head: _NULL,
            },
        ),
    )
    seen = {(row[3], row[4], row[5]) for row in found}
    branch_of = (f.repository == repository) & (f.branch == branch)
    still_open = f.select(f.fingerprint, f.path, f.line_start).where(
        branch_of & (f.state == "open")
    )
    gone = [
        (x.fingerprint, x.path, x.line_start)
        for x in still_open
        if (x.fingerprint, x.path, x.line_start) not in seen and x.fingerprint not in allowed
    ]
    for fingerprint, path, line_start in gone:
        f.update(state="fixed", fixed_at=now, fixed_head=head).where(
            branch_of
            & (f.fingerprint == fingerprint)
            & (f.path == path)
            & (f.line_start == line_start)
        ).execute()
    if allowed:
        f.update(state="allowed", last_seen_at=now).where(
            branch_of & f.fingerprint.in_(sorted(allowed))
        ).execute()
