"""A replayed delivery (same X-Request-UUID) refreshes last_seen_at of what it carries, only.

The runbook: "Replaying the same webhook or scan updates `last_seen_at`
without duplicating records." Checked for ``rcingest serve`` (the daemon)
and for the embedded receiver (``rcingest.embed``), on real SQLite files.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from rcingest.embed import CommitStorage
from rcingest.webhooks import receive, sign
from tests.test_webhook_daemon import FIX, SECRET, daemon, post, signed

PUSH = FIX / "webhook_repo-push_branch-create-2-commits_go-scm-2018.json"
PR = FIX / "webhook_pullrequest-updated_go-scm-2018.json"
# table -> its key columns: what a replay must neither duplicate nor lose.
TABLES = {
    "commits": "hash",
    "commit_repositories": "commit_hash, repository",
    "pull_requests": "repository, id",
}


def snapshot(db: Path) -> dict[str, dict[tuple[Any, ...], tuple[str, str]]]:
    """Per table: key -> (first_seen_at, last_seen_at)."""
    out = {}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for table, key in TABLES.items():
            rows = conn.execute(f"SELECT {key}, first_seen_at, last_seen_at FROM {table}")
            out[table] = {tuple(r[:-2]): (r[-2], r[-1]) for r in rows.fetchall()}
    return out


def assert_refreshed(before: dict[str, Any], after: dict[str, Any]) -> None:
    for table in TABLES:
        assert before[table], f"{table}: the fixtures should have stored rows"
        assert after[table].keys() == before[table].keys(), table  # nothing added, nothing lost
        for key, (first, last) in after[table].items():
            assert first == before[table][key][0], (table, key)  # first_seen_at never moves
            assert last > before[table][key][1], (table, key)  # last_seen_at does


async def test_daemon_replay_refreshes_last_seen(tmp_path: Path) -> None:
    push, pr = PUSH.read_bytes(), PR.read_bytes()
    async with daemon(tmp_path) as d:
        assert (await post(d.url, push, signed(push, uuid="p-1")))[0] == 200
        assert (await post(d.url, pr, signed(pr, "pullrequest:updated", uuid="r-1")))[0] == 200
        before = snapshot(d.db)
        deliveries = d.rows("SELECT COUNT(*) FROM deliveries")
        status, text = await post(d.url, push, signed(push, uuid="p-1"))
        assert status == 200 and "duplicate" in text
        status, text = await post(d.url, pr, signed(pr, "pullrequest:updated", uuid="r-1"))
        assert status == 200 and "duplicate" in text
        assert_refreshed(before, snapshot(d.db))
        assert d.rows("SELECT COUNT(*) FROM deliveries") == deliveries


def test_embedded_replay_refreshes_last_seen(tmp_path: Path) -> None:
    db = tmp_path / "commits.db"
    push, pr = PUSH.read_bytes(), PR.read_bytes()

    def decoded(raw: bytes, event: str, uuid: str) -> Any:
        headers = {
            "X-Event-Key": event,
            "X-Request-UUID": uuid,
            "X-Hub-Signature": sign(raw, SECRET),
        }
        verdict = receive(headers, raw, secret=SECRET)
        assert verdict.decoded is not None, verdict.reason
        return verdict.decoded

    with CommitStorage(db) as storage:
        assert storage.submit(decoded(push, "repo:push", "p-1")).result(10) == "stored"
        assert storage.submit(decoded(pr, "pullrequest:updated", "r-1")).result(10) == "stored"
        before = snapshot(db)
        assert storage.submit(decoded(push, "repo:push", "p-1")).result(10) == "duplicate"
        assert storage.submit(decoded(pr, "pullrequest:updated", "r-1")).result(10) == "duplicate"
    assert_refreshed(before, snapshot(db))
