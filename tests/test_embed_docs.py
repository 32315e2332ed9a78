"""The runbook's three lines in docs/webhooks.md, run as written under each real server."""

from __future__ import annotations

import re
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from rcingest.webhooks import sign
from tests.test_embed_servers import HASH, make_app, post, push_body, running

DOC = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"
RUNBOOK = [
    'storage = CommitStorage("data/bitbucket/commits.db")',
    'register_bitbucket_webhook(app, storage=storage, secret="super-secret")',
]


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    [block] = [b for b in blocks if "register_bitbucket_webhook(app" in b]
    return block


def for_framework(framework: str) -> str:
    """The block as written for FastAPI; with its ``app = ...`` line swapped otherwise."""
    block = snippet()
    if framework == "fastapi":
        return block
    line = next(x for x in block.splitlines() if x.startswith("app = "))
    return block.replace(line, "app = APP")


def test_the_runbook_lines_are_in_the_docs_verbatim() -> None:
    lines = snippet().splitlines()
    assert "from rcingest.embed import CommitStorage, register_bitbucket_webhook" in lines
    for line in RUNBOOK:
        assert line in lines


@pytest.mark.parametrize("framework", ["fastapi", "flask", "aiohttp"])
def test_documented_snippet_stores(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the snippet's relative path lands here
    namespace: dict[str, Any] = {"APP": make_app(framework)}
    exec(compile(for_framework(framework), "docs/webhooks.md (embedding)", "exec"), namespace)
    body = push_body()
    hdrs = {
        "X-Event-Key": "repo:push",
        "X-Request-UUID": "doc-1",
        "X-Webhook-Secret": "super-secret",
    }
    try:
        with running(framework, namespace["app"]) as base:
            status, answer = post(f"{base}/webhooks/bitbucket", body, hdrs)
            assert (status, answer["reason"]) == (200, "stored"), answer
            signed = {**hdrs, "X-Request-UUID": "doc-2", "X-Hub-Signature": sign(body, "x")}
            del signed["X-Webhook-Secret"]
            assert post(f"{base}/webhooks/bitbucket", body, signed)[0] == 401
    finally:
        namespace["storage"].close()
    db = tmp_path / "data" / "bitbucket" / "commits.db"
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT hash FROM commits").fetchall() == [(HASH,)]
        assert conn.execute("SELECT key FROM story_keys").fetchall() == [("REL-7",)]


def test_documented_backfill_snippet_builds_a_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BITBUCKET_ACCESS_TOKEN", "bbat-docs-token")
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    [block] = [textwrap.dedent(b) for b in blocks if "api=api" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "docs/webhooks.md (backfill)", "exec"), namespace)
    storage = namespace["storage"]
    try:
        assert storage.scrub("token bbat-docs-token") == "token ***"
    finally:
        storage.close()
