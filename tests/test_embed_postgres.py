"""The embedded receiver on PostgreSQL: FastAPI under uvicorn, a restart, a duplicate."""

from __future__ import annotations

from contextlib import closing
from typing import Any

import pytest

from tests.test_embed_servers import FIX, HASH, SECRET, headers, post, push_body, receiver

pytestmark = pytest.mark.postgres


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_fastapi_stores_in_postgres(postgres_url: str) -> None:
    first = push_body(f"REL-7 rotate {SECRET}")  # a secret pasted into a message
    second = (FIX / "webhook_repo-push_branch-create-2-commits_go-scm-2018.json").read_bytes()
    with receiver("fastapi", postgres_url) as (url, storage):
        assert post(url, first, headers(first, "pg-1"))[1]["reason"] == "stored"
        assert post(url, first, headers(first, "pg-1"))[1]["reason"] == "duplicate"
        assert [k.key for k in storage.story_keys(HASH)] == ["REL-7"]
        stored = storage.commit(HASH)
        assert stored is not None and stored.message == "REL-7 rotate ***\n"
    with receiver("fastapi", postgres_url) as (url, storage):
        assert post(url, second, headers(second, "pg-2"))[0] == 200
        commit = storage.commit(HASH)
        assert commit is not None and {b.branch for b in commit.branches} == {"master", "develop"}
    assert query(postgres_url, "SELECT request_uuid FROM deliveries ORDER BY 1") == [
        ("pg-1",),
        ("pg-2",),
    ]
    assert query(postgres_url, "SELECT COUNT(*) FROM commits") == [(2,)]
    assert query(postgres_url, "SELECT key, origin FROM story_keys") == [("REL-7", "message")]
    # The secret is in no column of any table.
    listed = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    tables = [t for (t,) in query(postgres_url, listed)]
    assert "deliveries" in tables
    for table in tables:
        dump = query(postgres_url, f'SELECT CAST(t AS text) FROM "{table}" t')
        assert all(SECRET not in text for (text,) in dump), table
