"""Every real capture in tests/fixtures/bitbucket/ gives the same records and rows
through the inbox and the normaliser as through the direct path (issue 15).

Two levels: the sans-I/O core (``receive`` against ``admit`` + append + claim +
``derive``, with the same received time: records and jobs equal), and two
real daemons, one per path, fed the same deliveries (every table equal, the
times the test itself produced masked).
"""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rcingest.inbox.db import connect
from rcingest.inbox.derive import DecodeSettings, derive
from rcingest.inbox.gate import admit
from rcingest.webhooks import receive
from tests.test_webhook_daemon import FIX, SECRET, daemon, post, signed

FIXTURES = sorted(FIX.glob("webhook_*.json"))
#: Decoder switches: the defaults, and everything on (review, status and repository events stored).
SETTINGS = {
    "plain": {},
    "all": {
        "scan_pull_requests": True,
        "compliance_keys": frozenset({"rcingest-compliance"}),
        "inventory": True,
    },
}


def event_of(path: Path) -> str:
    """``webhook_pullrequest-comment-created_x.json`` -> ``pullrequest:comment_created``."""
    kind = path.name.split("_")[1]
    family, _, rest = kind.partition("-")
    return f"{family}:{rest.replace('-', '_')}"


def test_every_fixture_is_covered() -> None:
    assert len(FIXTURES) >= 15
    events = {event_of(p) for p in FIXTURES}
    assert {"repo:push", "pullrequest:created", "repo:commit_status_updated"} <= events


@pytest.mark.parametrize("flags", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("backfill", [True, False], ids=["backfill", "no-backfill"])
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_inbox_path_gives_the_direct_paths_records(
    fixture: Path, flags: dict[str, Any], backfill: bool, tmp_path: Path
) -> None:
    raw = fixture.read_bytes()
    headers = signed(raw, event_of(fixture), uuid=f"fx-{fixture.stem}")
    at = datetime(2026, 12, 3, 9, 30, 15, 250_000, tzinfo=UTC)
    direct = receive(headers, raw, secret=SECRET, received_at=at, **flags)
    admission = admit(headers, raw, secret=SECRET, received_at=at.timestamp(), **flags)
    assert admission.verdict.status == direct.status, admission.verdict.reason
    if direct.decoded is None:
        assert admission.arrival is None
        return
    assert admission.arrival is not None
    db = connect(str(tmp_path / "inbox.db"))
    db.create()
    db.append([admission.arrival])
    (entry,) = db.claim(10)
    db.close()
    derived = derive(entry, DecodeSettings(backfill=backfill, **flags))
    assert derived.error is None
    expected = direct.decoded
    if expected.truncated and not backfill:
        expected.delivery.outcome = "truncated"  # what the direct handler does without backfill
    assert derived.records == [*expected.records, expected.delivery]
    assert derived.jobs == (expected.jobs if backfill else [])
    assert entry.row.repository == (expected.delivery.repository or "")


def dump(db: Path, start: float, end: float) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted; a time the test itself produced reads ``<now>``."""

    def clean(value: Any) -> Any:
        if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                if start - 5 <= moment.timestamp() <= end + 5:
                    return "<now>"
        return value

    out = {}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] not in ("source_cursors", "runs", "schema_version", "sqlite_sequence")
        ]
        for table in tables:
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted((tuple(clean(v) for v in row) for row in rows), key=repr)
    return out


async def test_both_daemons_store_the_same_rows_for_every_fixture(tmp_path: Path) -> None:
    start = datetime.now(UTC).timestamp()
    dumps = {}
    for ack in ("committed", "inbox"):
        work = tmp_path / ack
        work.mkdir()
        async with daemon(work, {"ack": ack, "inventory": True}) as d:
            for i, fixture in enumerate(FIXTURES):
                raw = fixture.read_bytes()
                status, text = await post(d.url, raw, signed(raw, event_of(fixture), uuid=f"r{i}"))
                assert status in (200, 202), (fixture.name, text)
            await d.settled()
        dumps[ack] = dump(work / "commits.db", start, datetime.now(UTC).timestamp())
    assert dumps["inbox"]["commits"], "the fixtures should have stored commits"
    assert dumps["inbox"].keys() == dumps["committed"].keys()
    for table, rows in dumps["committed"].items():
        assert dumps["inbox"][table] == rows, table
