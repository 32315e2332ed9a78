"""The inbox table on a real SQLite file and a real PostgreSQL database.

Appends (new, repeated, redelivered after done), per-repository ordered
claims, settling, retries, retention, masking of secrets, and what is never
stored (the signature header).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from rcingest.inbox.db import InboxDB, connect
from rcingest.inbox.gate import kept_headers
from rcingest.inbox.model import Arrival, InboxFilter
from rcingest.inbox.store import Inbox

SECRET = "inbox-test-credential-Zq81"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "inbox" / "inbox.db")
    return str(request.getfixturevalue("postgres_url"))


def arrival(uuid: str, repo: str = "acme/api", body: bytes = b'{"x": 1}', **kw: Any) -> Arrival:
    return Arrival(
        request_uuid=uuid,
        event=kw.pop("event", "repo:push"),
        repository=repo,
        received_at=kw.pop("received_at", time.time()),
        headers=kw.pop("headers", {"X-Event-Key": "repo:push", "X-Request-UUID": uuid}),
        body=body,
    )


def opened(spec: str) -> InboxDB:
    db = connect(spec)
    db.create()
    return db


def test_append_is_durable_compressed_and_counts_repeats(spec: str) -> None:
    db = opened(spec)
    body = b'{"push": "' + b"a" * 5000 + b'"}'
    assert db.append([arrival("u1", body=body), arrival("u2"), arrival("u1", body=body)]) == [
        True,
        True,
        False,
    ]
    db.close()
    db = connect(spec)  # a new connection sees what was committed
    rows = {r.request_uuid: r for r in db.rows()}
    assert set(rows) == {"u1", "u2"}
    assert rows["u1"].received == 2 and rows["u1"].state == "pending"
    assert rows["u1"].body_bytes == len(body)
    raw = db._query("SELECT body FROM webhook_inbox WHERE request_uuid = ?", ("u1",))[0][0]
    assert len(bytes(raw)) < len(body) / 10  # stored compressed
    assert zlib.decompress(bytes(raw)) == body
    db.close()


def test_a_redelivery_of_a_done_row_is_normalised_again_with_its_latest_headers(spec: str) -> None:
    db = opened(spec)
    db.append([arrival("u1")])
    (entry,) = db.claim(10)
    db.settle(done=[entry.row.id])
    assert db.rows()[0].state == "done"
    again = arrival("u1", headers={"X-Event-Key": "repo:push", "X-Attempt-Number": "3"})
    assert db.append([again]) == [False]
    (entry,) = db.claim(10)
    assert entry.headers["X-Attempt-Number"] == "3"
    assert entry.row.received == 2
    db.release()
    db.close()


def test_claims_keep_each_repositorys_order(spec: str) -> None:
    db = opened(spec)
    db.append([arrival(f"a{i}", "acme/a") for i in range(3)] + [arrival("b0", "acme/b")])
    first = db.claim(2)  # a0, a1: a2 and b0 are beyond the limit
    assert [e.row.request_uuid for e in first] == ["a0", "a1"]
    # a0 fails and waits out its delay: nothing later of acme/a may pass it.
    db.settle(done=[first[1].row.id], failed=[(first[0].row.id, "sink down", time.time() + 60)])
    assert [e.row.request_uuid for e in db.claim(10)] == ["b0"]
    db.release()
    db.retry(InboxFilter(states=("failed",)))
    assert [e.row.request_uuid for e in db.claim(10)] == ["a0", "a2", "b0"]
    db.release()
    db.close()


def test_settle_parks_and_retry_brings_back(spec: str) -> None:
    db = opened(spec)
    db.append([arrival("p1"), arrival("p2", "acme/other")])
    one, two = db.claim(10)
    db.settle(done=[two.row.id], parked=[(one.row.id, "the decoder refused it (400): bad")])
    parked = db.rows(InboxFilter(states=("parked",)))
    assert [(r.request_uuid, r.attempts, r.last_error) for r in parked] == [
        ("p1", 1, "the decoder refused it (400): bad")
    ]
    # A parked row no longer holds back its repository.
    db.append([arrival("p3")])
    assert [e.row.request_uuid for e in db.claim(10)] == ["p3"]
    db.release()
    assert db.counts() == {"pending": 1, "failed": 0, "done": 1, "parked": 1}
    assert db.retry(InboxFilter(request_uuids=("p1",))) == 1
    assert db.counts()["parked"] == 0
    db.close()


def test_filters_select_by_repository_time_and_uuid(spec: str) -> None:
    db = opened(spec)
    db.append(
        [
            arrival("t1", "acme/a", received_at=1000.0),
            arrival("t2", "acme/b", received_at=2000.0),
            arrival("t3", "acme/a", received_at=3000.0),
        ]
    )

    def uuids(**kw: Any) -> list[str]:
        return [r.request_uuid for r in db.rows(InboxFilter(**kw))]

    assert uuids(repository="acme/a") == ["t1", "t3"]
    assert uuids(since=1500.0, until=3000.0) == ["t2"]
    assert uuids(request_uuids=("t3", "t1")) == ["t1", "t3"]
    assert uuids(limit=2) == ["t1", "t2"]
    assert [e.row.request_uuid for e in db.entries(InboxFilter(), page=1)] == ["t1", "t2", "t3"]
    db.close()


def test_purge_deletes_old_done_rows_only(spec: str) -> None:
    db = opened(spec)
    old = time.time() - 40 * 86_400
    db.append([arrival("old-done", received_at=old), arrival("old-parked", "x/y", received_at=old)])
    db.append([arrival("old-open", "z/z", received_at=old), arrival("new-done", "n/n")])
    rows = {e.row.request_uuid: e.row.id for e in db.claim(10)}
    db.settle(done=[rows["old-done"], rows["new-done"]], parked=[(rows["old-parked"], "refused")])
    assert db.purge(time.time() - 30 * 86_400) == 1
    assert {r.request_uuid for r in db.rows()} == {"old-parked", "old-open", "new-done"}
    db.close()


def test_secrets_are_masked_and_the_signature_is_never_kept(spec: str) -> None:
    headers = {
        "X-Event-Key": "repo:push",
        "X-Request-UUID": "s1",
        "X-Hub-Signature": "sha256=" + "ab" * 32,
        "X-Webhook-Secret": SECRET,
        "User-Agent": "Bitbucket-Webhooks/2.0",
    }
    kept = kept_headers(headers)
    assert kept == {
        "X-Event-Key": "repo:push",
        "X-Request-UUID": "s1",
        "User-Agent": "Bitbucket-Webhooks/2.0",
    }
    db = opened(spec)
    db.mask([SECRET, "short"])
    body = b'{"message": "oops ' + SECRET.encode() + b' pasted"}'
    db.append([arrival("s1", body=body, headers=kept)])
    (entry,) = db.claim(1)
    db.release()
    assert SECRET.encode() not in entry.body and b"***" in entry.body
    dump = repr(db._query("SELECT * FROM webhook_inbox"))
    raw = bytes(db._query("SELECT body FROM webhook_inbox")[0][0])
    assert SECRET not in dump and SECRET.encode() not in zlib.decompress(raw)
    assert "sha256=" not in dump
    db.close()


def test_missing_sqlite_inbox_is_not_created_for_reading(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        connect(str(tmp_path / "none" / "inbox.db"), must_exist=True)
    assert not (tmp_path / "none").exists()


async def test_group_commit_stores_concurrent_appends_in_few_transactions(tmp_path: Path) -> None:
    inbox = Inbox(str(tmp_path / "inbox.db"))
    await inbox.open()
    commits = 0
    original = InboxDB.append

    def counting(self: InboxDB, arrivals: Any) -> list[bool]:
        nonlocal commits
        commits += 1
        return original(self, arrivals)

    InboxDB.append = counting  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*(inbox.append(arrival(f"g{i}")) for i in range(200)))
    finally:
        InboxDB.append = original  # type: ignore[method-assign]
    assert results == [True] * 200
    assert commits < 20, commits  # one transaction for everything queued meanwhile
    assert (await inbox.counts())["pending"] == 200
    await inbox.close()
    with sqlite3.connect(tmp_path / "inbox.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM webhook_inbox").fetchone() == (200,)


async def test_an_append_that_fails_fails_every_waiting_sender(tmp_path: Path) -> None:
    inbox = Inbox(str(tmp_path / "inbox.db"))
    await inbox.open()
    # A full disk: no page may be added to the file.
    await inbox._writer.call(lambda db: db.conn.execute("PRAGMA max_page_count=1"))
    big = arrival("f1", body=bytes(range(256)) * 2000)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        await inbox.append(big)
    await inbox._writer.call(lambda db: db.conn.execute("PRAGMA max_page_count=1073741823"))
    assert await inbox.append(big) is True
    await inbox.close()


@pytest.mark.postgres
def test_postgresql_claims_skip_rows_another_daemon_holds(postgres_url: str) -> None:
    one, two = opened(postgres_url), connect(postgres_url)
    one.append([arrival(f"a{i}", "acme/a") for i in range(2)] + [arrival("b0", "acme/b")])
    held = one.claim(1)  # a0, locked by this transaction
    assert [e.row.request_uuid for e in held] == ["a0"]
    # The other daemon skips a0 and, to keep acme/a in order, a1 too.
    assert [e.row.request_uuid for e in two.claim(10)] == ["b0"]
    two.release()
    one.settle(done=[held[0].row.id])
    assert [e.row.request_uuid for e in two.claim(10)] == ["a1", "b0"]
    two.release()
    one.close()
    two.close()


def test_a_gap_in_a_repositorys_open_rows_holds_back_what_follows_it(spec: str) -> None:
    db = opened(spec)
    db.append([arrival("g0"), arrival("g1"), arrival("g2")])
    g0, g1, g2 = db.claim(10)
    # g0 done, g1 fails (waits a minute), g2 done; then g0 is redelivered.
    db.settle(done=[g0.row.id, g2.row.id], failed=[(g1.row.id, "sink down", time.time() + 60)])
    db.append([arrival("g0"), arrival("g3")])
    # g0 is before the waiting g1: it may go; g3 is after it: it may not.
    assert [e.row.request_uuid for e in db.claim(10)] == ["g0"]
    db.release()
    db.close()
