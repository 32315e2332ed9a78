"""The PR security bot in the daemon, in process, with a plugin scanner (issue 12).

A signed ``pullrequest:created`` delivery is answered before the scan; the
scan runs from the durable queue; the fake Bitbucket receives a status, a
report and a comment; a repeated delivery changes nothing; a new head scans
again and fixes what it no longer has. The built-in ``secrets`` scanner gets
the same path in ``test_pr_security_example.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import rcingest.default_plugins.bitbucket_webhook as webhook_plugin
import rcingest.default_plugins.database as database_plugin
import rcingest.default_plugins.json_artifact as artifact_plugin
import rcingest.default_plugins.writeback as writeback_plugin
from rcingest.config import load_pipeline
from rcingest.interfaces import RunContext
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.app import render_pr
from rcingest.testing.fake_bitbucket.data import FakeData
from tests.test_core_plugins import _plugin
from tests.test_scanner_plugins import SECRET, AcmeTokens
from tests.test_webhook_backfill import SECRET as HOOK_SECRET
from tests.test_webhook_backfill import post, wait_for

TOKEN = "bbat-prbot-token-Wm47"
REPO = "acme/service-00"


def registry() -> Registry:
    def register_scanners(register: Any) -> None:
        register("acme_tokens", AcmeTokens)

    return Registry(
        make_plugin_manager(
            load_entrypoints=False,
            extra=[
                ("bitbucket_webhook", webhook_plugin),
                ("database", database_plugin),
                ("json_artifact", artifact_plugin),
                ("writeback", writeback_plugin),
                ("acme", _plugin(register_scanners=register_scanners)),
            ],
        )
    )


def diff_with(secret_line: str, line: int = 3) -> str:
    context = "".join(f" line {i}\n" for i in range(1, line))
    return (
        "diff --git a/deploy/app.env b/deploy/app.env\n"
        "index 1111111..2222222 100644\n--- a/deploy/app.env\n+++ b/deploy/app.env\n"
        f"@@ -1,{line - 1} +1,{line} @@\n{context}+{secret_line}\n"
    )


def pr_event(data: FakeData, pr_id: int, head: str | None = None) -> bytes:
    repo = data.repos[REPO]
    pr = next(p for p in repo.pull_requests if p.id == pr_id)
    value = render_pr(data, repo, pr)
    if head is not None:
        value["source"]["commit"]["hash"] = head[:12]
    return json.dumps({"pullrequest": value, "repository": {"full_name": REPO}}).encode()


@contextlib.asynccontextmanager
async def bot(tmp_path: Path, fake: FakeBitbucket) -> AsyncIterator[str]:
    pipeline = tmp_path / "pr-bot.yaml"
    wb = f"{{base_url: '{fake.base_url}', auth: {{access_token: '${{TOKEN}}'}}, max_tries: 2}}"
    pipeline.write_text(
        textwrap.dedent(
            f"""
            name: pr-bot
            source:
              type: bitbucket_webhook
              config:
                port: 0
                secret: ${{HOOK}}
                base_url: {fake.base_url}
                auth: {{access_token: '${{TOKEN}}'}}
                backfill_queue: '{tmp_path}/queue.db'
                inbox: '{tmp_path}/inbox.db'
                backfill_retry_delay: 0.05
            scanners: [{{type: acme_tokens}}]
            scanning: {{fingerprint_key: 'pr-bot-test-key-0123456789'}}
            sinks:
              - {{type: database, config: {{database: '{tmp_path}/commits.db'}}}}
              - {{type: json_artifact, config: {{artifacts_dir: '{tmp_path}/artifacts'}}}}
              - {{type: bitbucket_build_status, config: {wb}}}
              - {{type: bitbucket_code_insights, config: {wb}}}
              - {{type: bitbucket_pr_comment, config: {wb}}}
            """
        )
    )
    loaded = load_pipeline(pipeline, registry(), environ={"HOOK": HOOK_SECRET, "TOKEN": TOKEN})
    ctx = RunContext(
        run_id="prbot",
        pipeline_name="pr-bot",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="pr-bot:src",
        mode="serve",
        secrets=loaded.secrets,
    )
    runner = Runner(loaded, ctx)
    task = asyncio.create_task(runner.run())
    for _ in range(1000):
        if runner.source.bound_port is not None:  # type: ignore[attr-defined]
            break
        assert not task.done()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{runner.source.bound_port}/webhooks/bitbucket"  # type: ignore[attr-defined]
    finally:
        await runner.stop()
        await asyncio.wait_for(task, 30)


def findings(db: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT path, line_start, state, last_head FROM findings ORDER BY path, line_start"
        ).fetchall()


async def test_a_pr_with_a_secret_is_reported_and_a_replay_changes_nothing(
    tmp_path: Path,
) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        repo = fake.data.repos[REPO]
        pr = next(p for p in repo.pull_requests if p.state == "OPEN")
        head = pr.commits[0]
        fake.writes.plant_diff(REPO, pr.id, diff_with(f"ACME_TOKEN={SECRET}", line=3))
        async with bot(tmp_path, fake) as url:
            body = pr_event(fake.data, pr.id)
            assert await post(url, body, "pullrequest:created", "c-1") == 200
            w = fake.writes
            await wait_for(lambda: bool(w.live_comments(REPO, pr.id)))
            await wait_for(lambda: "rcingest-secrets" in w.reports.get((REPO, head), {}))
            status = w.statuses[(REPO, head)]["rcingest-secrets"]
            assert status["state"] == "FAILED"  # INPROGRESS first, then overwritten
            assert any(m == "POST" and b'"INPROGRESS"' in b for m, _p, b in w.received), (
                "no INPROGRESS status was sent"
            )
            [annotation] = w.annotations[(REPO, head, "rcingest-secrets")].values()
            assert annotation["path"] == "deploy/app.env" and annotation["line"] == 3
            [comment] = w.live_comments(REPO, pr.id)
            assert "`deploy/app.env` | 3 |" in comment["content"]["raw"]
            writes = len(w.received)
            # The same head again (an `updated` for it, a redelivery): nothing new.
            assert await post(url, body, "pullrequest:updated", "u-1") == 200
            await asyncio.sleep(0.5)
            assert len(w.received) == writes
        assert findings(tmp_path / "commits.db") == [("deploy/app.env", 3, "open", head)]
        texts = [w.received_text(), (tmp_path / "commits.db").read_bytes().decode("latin-1")]
        texts += [p.read_text() for p in (tmp_path / "artifacts").glob("*.json")]
        assert all(SECRET not in t and SECRET[:10] not in t for t in texts)


async def test_a_new_head_without_the_secret_turns_it_green(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        repo = fake.data.repos[REPO]
        pr = next(p for p in repo.pull_requests if p.state == "OPEN")
        first = pr.commits[0]
        fake.writes.plant_diff(REPO, pr.id, diff_with(f"ACME_TOKEN={SECRET}"))
        async with bot(tmp_path, fake) as url:
            assert await post(url, pr_event(fake.data, pr.id), "pullrequest:created", "c") == 200
            w = fake.writes
            await wait_for(lambda: bool(w.live_comments(REPO, pr.id)))
            # A new head: another commit of the repository stands in for it.
            second = next(h for h in repo.commits if h != first)
            fake.writes.plant_diff(REPO, pr.id, diff_with("ACME_TOKEN=read-from-vault"))
            event = pr_event(fake.data, pr.id, head=second)
            assert await post(url, event, "pullrequest:updated", "u") == 200
            await wait_for(
                lambda: (
                    w.statuses.get((REPO, second), {}).get("rcingest-secrets", {}).get("state")
                    == "SUCCESSFUL"
                )
            )
            await wait_for(
                lambda: "no secrets found" in w.live_comments(REPO, pr.id)[0]["content"]["raw"]
            )
            assert len(w.live_comments(REPO, pr.id)) == 1
        assert findings(tmp_path / "commits.db") == [("deploy/app.env", 3, "fixed", first)]


async def test_a_too_large_diff_is_reported_not_half_scanned(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        repo = fake.data.repos[REPO]
        pr = next(p for p in repo.pull_requests if p.state == "OPEN")
        fake.writes.diff_status[(REPO, pr.id)] = 555
        async with bot(tmp_path, fake) as url:
            assert await post(url, pr_event(fake.data, pr.id), "pullrequest:created", "c") == 200
            w = fake.writes
            head = pr.commits[0]
            await wait_for(lambda: "rcingest-secrets" in w.reports.get((REPO, head), {}))
            status = w.statuses[(REPO, head)]["rcingest-secrets"]
            assert status["state"] == "FAILED" and "timed out" in status["description"]
        with contextlib.closing(sqlite3.connect(tmp_path / "commits.db")) as conn:
            assert conn.execute("SELECT state FROM pr_scans").fetchall() == [("diff_timeout",)]
