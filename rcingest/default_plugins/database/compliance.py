"""Compliance evaluations into ``compliance_evaluations``: an audit history, not an upsert.

Each pull request's rows are the history of its compliance: a row is added
only when something an auditor cares about changed. Writing an evaluation,
in batch order, inside the batch's transaction:

* the pull request has a frozen row (it was merged) → a non-frozen
  evaluation is dropped (a late event after the merge does not rewrite
  history), and so is a frozen one at the same head (a replayed merge);
* the latest row of the pull request has the same head, policy hash, frozen
  flag and digest → only its ``last_evaluated_at`` moves (a re-delivery, a
  re-check with nothing new);
* otherwise → a new row.

The digest is SHA-256 over the canonical JSON (sorted keys, no spaces) of
the verdict, the outcomes and the facts, without the keys in
:data:`VOLATILE_KEYS`: a pull request's ``updated_on`` moves with every
comment, a status's ``updated_on`` with every re-run that ends the same way,
a participant's ``participated_on`` (and the ``approved_on`` a rule copies
from it) with every comment of theirs; none of them changes whether the pull
request complies. ``evaluated_at`` and ``trigger`` are not in it either. The
stored ``outcomes`` and ``facts`` keep those times.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from rcingest.compliance.records import ComplianceEvaluation

# rows.py (imported when plugins are discovered) uses the pure half of this
# module; peewee is imported by the writer half, on the writer thread.
if TYPE_CHECKING:
    import peewee

    from rcingest.default_plugins.database.models import Models

__all__ = [
    "COMPLIANCE_FIELDS",
    "VOLATILE_KEYS",
    "digest",
    "evaluation_row",
    "plain",
    "write_evaluations",
]

COMPLIANCE_FIELDS = (
    "repository", "pull_request_id", "head", "policy_name", "policy_hash", "verdict",
    "pr_state", "frozen", "trigger", "title", "source_branch", "destination_branch",
    "first_evaluated_at", "last_evaluated_at", "outcomes", "facts", "digest",
)  # fmt: skip
#: Keys left out of the digest, wherever they are in the outcomes or facts.
VOLATILE_KEYS = frozenset({"updated_on", "participated_on", "approved_on"})
# Any fixed 32-bit number: the class of the PostgreSQL advisory locks taken
# per pull request (the second key is a hash of repository and id).
_PG_LOCK_CLASS = 0x72636331  # "rcc1"
_encode = msgspec.json.Encoder(order="sorted").encode

Row = tuple[Any, ...]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def plain(value: Any, clean: Callable[[str], str] | None = None) -> Any:
    """``value`` as JSON builtins: every string (key or value) through ``clean``, times in UTC.

    Strings are cleaned before encoding, so a secret with characters JSON
    escapes (a quote, a backslash) is still found.
    """
    if isinstance(value, str):
        return clean(value) if clean is not None else value
    if isinstance(value, datetime):
        return _utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {plain(k, clean): plain(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, clean) for v in value]
    return value


def _stable(value: Any) -> Any:
    """``value`` without the :data:`VOLATILE_KEYS`, at any depth."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def digest(verdict: str, outcomes: Any, facts: Any) -> str:
    """The SHA-256 (hex) of what an evaluation found; ``outcomes``/``facts`` as :func:`plain`."""
    canonical = _encode(
        {"verdict": verdict, "outcomes": _stable(outcomes), "facts": _stable(facts)}
    )
    return hashlib.sha256(canonical).hexdigest()


def evaluation_row(ev: ComplianceEvaluation, clean: Callable[[str], str] | None = None) -> Row:
    """``ev`` as a row in :data:`COMPLIANCE_FIELDS` order, every string cleaned."""
    keep: Callable[[str], str] = clean if clean is not None else str

    def text(value: str | None) -> str | None:
        return None if value is None else keep(value)

    outcomes = plain(msgspec.to_builtins(ev.outcomes, builtin_types=(datetime,)), clean)
    facts = None
    if ev.facts is not None:
        facts = plain(msgspec.to_builtins(ev.facts, builtin_types=(datetime,)), clean)
    when = _utc(ev.evaluated_at).replace(tzinfo=None)
    return (
        keep(ev.repository), ev.pull_request_id, keep(ev.head), keep(ev.policy_name),
        keep(ev.policy_hash), ev.verdict, keep(ev.pr_state), ev.frozen, keep(ev.trigger),
        text(ev.title), text(ev.source_branch), text(ev.destination_branch), when, when,
        _encode(outcomes).decode(), None if facts is None else _encode(facts).decode(),
        digest(ev.verdict, outcomes, facts),
    )  # fmt: skip


def _same_head(a: str, b: str) -> bool:
    """One head, perhaps once as Bitbucket's 12-character short hash and once in full."""
    return a == b or (min(len(a), len(b)) >= 7 and (a.startswith(b) or b.startswith(a)))


def write_evaluations(db: peewee.Database, m: Models, rows: Iterable[Row]) -> int:
    """Inside the batch's transaction: apply the rules above; return the rows added."""
    import peewee

    pending = list(rows)
    c = m.compliance_evaluations
    if isinstance(db, peewee.PostgresqlDatabase):
        # Two daemons evaluating one pull request must not both find "no
        # latest row" and add it twice: lock each pull request, in key order
        # (no deadlock), until the transaction ends. (The batch's upsert of
        # the implied repositories row serialises them too, but only as a side
        # effect.) SQLite has one writer at a time.
        for repository, pr in sorted({(row[0], row[1]) for row in pending}):
            db.execute_sql(  # type: ignore[no-untyped-call]
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (_PG_LOCK_CLASS, f"{repository}#{pr}"),
            )
    added = 0
    for row in pending:
        values = dict(zip(COMPLIANCE_FIELDS, row, strict=True))
        same_pr = (c.repository == values["repository"]) & (
            c.pull_request_id == values["pull_request_id"]
        )
        frozen_heads = [str(r.head) for r in c.select(c.head).where(same_pr & c.frozen)]
        if frozen_heads and (
            not values["frozen"] or any(_same_head(h, values["head"]) for h in frozen_heads)
        ):
            continue
        latest = c.select().where(same_pr).order_by(c.id.desc()).first()
        if latest is not None and (
            (latest.head, latest.policy_hash, bool(latest.frozen), latest.digest)
            == (values["head"], values["policy_hash"], values["frozen"], values["digest"])
        ):
            if values["last_evaluated_at"] > latest.last_evaluated_at:
                c.update(last_evaluated_at=values["last_evaluated_at"]).where(
                    c.id == latest.id
                ).execute()
            continue
        c.insert(**values).execute()
        added += 1
    return added
