"""Pull requests' scans and findings into tables, with each finding's state.

A finding is keyed by (repository, pull request, fingerprint, path, first
line). Writing a scan that saw the whole diff (``findings`` or ``clean``):

* upserts its findings as ``open``, moving ``last_head``/``last_seen_at`` on
  (a finding fixed earlier and back again is open again);
* marks ``fixed`` (with ``fixed_at``, ``fixed_head``) every finding of that
  pull request still open but not seen at this head;
* marks ``allowed`` the findings whose fingerprint the allowlist or an inline
  marker allowed at this head.

A scan that could not see the diff (too large, timed out, gone) changes no
finding: absence of evidence is not a fix. Scans are applied in batch order;
the daemon scans one head at a time, oldest delivery first.
"""

from __future__ import annotations

from typing import Any

import peewee
from peewee import EXCLUDED

from rcingest.default_plugins.database import rows as r
from rcingest.default_plugins.database.models import Models

__all__ = ["write_scans"]


def write_scans(
    db: peewee.Database,
    m: Models,
    rows: r.Rows,
    insert: Any,
) -> None:
    """Inside the batch's transaction: scans, findings, then each scan's outcome."""
    s = m.pr_scans
    insert(
        db,
        s,
        r.PR_SCAN_FIELDS,
        rows.pr_scans.values(),
        ([s.repository, s.pull_request_id, s.head], _updates(s, r.PR_SCAN_FIELDS, 3)),
    )
    f = m.findings
    insert(
        db,
        f,
        r.FINDING_FIELDS,
        rows.findings.values(),
        (
            [f.repository, f.pull_request_id, f.fingerprint, f.path, f.line_start],
            {
                f.line_end: EXCLUDED.line_end,
                f.excerpt: EXCLUDED.excerpt,
                f.state: EXCLUDED.state,
                f.last_head: EXCLUDED.last_head,
                f.last_seen_at: EXCLUDED.last_seen_at,
                f.fixed_at: None,
                f.fixed_head: None,
            },
        ),
    )
    for outcome in rows.scan_outcomes.values():
        same_pr = (f.repository == outcome.repository) & (
            f.pull_request_id == outcome.pull_request_id
        )
        f.update(state="fixed", fixed_at=outcome.now, fixed_head=outcome.head).where(
            same_pr & (f.state == "open") & (f.last_head != outcome.head)
        ).execute()
        if outcome.allowed:
            f.update(state="allowed", last_seen_at=outcome.now).where(
                same_pr & f.fingerprint.in_(list(outcome.allowed))
            ).execute()


def _updates(model: Any, names: tuple[str, ...], key_length: int) -> dict[Any, Any]:
    """Every column but the key and ``first_seen_at`` takes the incoming value."""
    return {
        getattr(model, n): getattr(EXCLUDED, n) for n in names[key_length:] if n != "first_seen_at"
    }
