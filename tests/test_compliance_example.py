"""Issue 13, done when: `rcingest serve config/compliance.example.yaml` against the fake Bitbucket.

A real daemon process runs the shipped example (only its API host, port,
paths and repositories changed). Signed deliveries built from the fake's
state drive it: a non-compliant pull request gets a FAILED
`rcingest-compliance` status and a comment naming each failed rule, and
`rcingest check` exits 1; approving it, fixing its checks and renaming its
branch turn it SUCCESSFUL through deliveries alone; the merge freezes its
evaluation into the database and the artifact.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.events import commit_status_event, pullrequest_event
from rcingest.webhooks import sign
from tests.test_pr_security_example import free_port, wait_listening
from tests.test_webhook_backfill import wait_for

ROOT = Path(__file__).resolve().parents[1]
HOOK_SECRET = "Hk7Qm2x9Lk-whsec-compliance-0077"
API_TOKEN = "ATATT3xFfGF0-compliance-token-Qp55=9Z8Y7X6W"
REPO = "acme/service-00"
KEY = "rcingest-compliance"


def pipeline(tmp_path: Path, base_url: str, port: int) -> Path:
    text = (ROOT / "config" / "compliance.example.yaml").read_text()
    text = text.replace("https://api.bitbucket.org/2.0", base_url).replace(
        "port: 8080", f"port: {port}"
    )
    text = text.replace("repositories: [acme/api, acme/web]", f"repositories: [{REPO}]")
    path = tmp_path / "compliance.yaml"
    path.write_text(text)
    return path


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
    env.update(
        BITBUCKET_WEBHOOK_SECRET=HOOK_SECRET,
        BITBUCKET_EMAIL="bot@example.com",
        BITBUCKET_API_TOKEN=API_TOKEN,
    )
    return env


async def deliver(url: str, payload: dict[str, Any], kind: str, uuid: str) -> int:
    body = json.dumps(payload).encode()
    headers = {
        "X-Event-Key": kind,
        "X-Request-UUID": uuid,
        "X-Hub-Signature": sign(body, HOOK_SECRET),
    }
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status


def check(path: Path, cwd: Path, pr_id: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "check"]
    cmd += ["--config", str(path), "--repo", REPO, "--pr", str(pr_id)]
    return subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True)


async def test_the_example_enforces_the_policy_through_deliveries(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        review = fake.review
        pr = next(p for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN")
        head = pr.commits[0]
        good_branch = pr.source_branch
        review.set_source(REPO, pr.id, branch="wip-retries")
        review.add_status(REPO, head, "ci-build", "FAILED", name="CI build")
        port = free_port()
        path = pipeline(tmp_path, fake.base_url, port)
        cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", str(path)]
        cmd += ["--log-file", str(tmp_path / "serve.log")]
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=tmp_path, env=environment(), stderr=asyncio.subprocess.PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}/webhooks/bitbucket"
            await wait_listening(proc, port)
            w = fake.writes

            def verdict() -> str | None:
                return w.statuses.get((REPO, head), {}).get(KEY, {}).get("state")

            event = pullrequest_event(fake, REPO, pr.id, "pullrequest:created")
            assert await deliver(url, event, "pullrequest:created", "c-1") == 200
            await wait_for(lambda: verdict() == "FAILED")
            await wait_for(lambda: bool(w.live_comments(REPO, pr.id)))
            [comment] = w.live_comments(REPO, pr.id)
            raw = comment["content"]["raw"]
            for rule in ("branch-name", "two-approvals", "green-checks"):
                assert f"`{rule}`" in raw
            assert "CI build is FAILED" in raw
            assert w.reports[(REPO, head)][KEY]["result"] == "FAILED"
            done = await asyncio.to_thread(check, path, tmp_path, pr.id)
            assert done.returncode == 1, done.stderr
            assert "NON COMPLIANT" in done.stdout and "two-approvals" in done.stdout

            # Fixed through deliveries alone: two approvals, a green build, a good branch.
            for n, who in enumerate(("alice", "bob")):
                review.approve(REPO, pr.id, review.user(who))
                approved = pullrequest_event(fake, REPO, pr.id, "pullrequest:approved")
                assert await deliver(url, approved, "pullrequest:approved", f"a-{n}") == 200
            status = review.add_status(REPO, head, "ci-build", "SUCCESSFUL", name="CI build")
            body = commit_status_event(
                REPO, head, status, fake_or_data=fake, base_url=fake.base_url
            )
            assert await deliver(url, body, "repo:commit_status_updated", "s-1") == 200
            review.set_source(REPO, pr.id, branch=good_branch)
            updated = pullrequest_event(fake, REPO, pr.id, "pullrequest:updated")
            assert await deliver(url, updated, "pullrequest:updated", "u-1") == 200
            await wait_for(lambda: verdict() == "SUCCESSFUL", timeout=30)
            await wait_for(
                lambda: "is compliant" in w.live_comments(REPO, pr.id)[0]["content"]["raw"]
            )
            assert len(w.live_comments(REPO, pr.id)) == 1
            done = await asyncio.to_thread(check, path, tmp_path, pr.id)
            assert done.returncode == 0, done.stdout + done.stderr

            # Merged: its evaluation is frozen, in the database and the artifact.
            review.merge(REPO, pr.id)
            fulfilled = pullrequest_event(fake, REPO, pr.id, "pullrequest:fulfilled")
            assert await deliver(url, fulfilled, "pullrequest:fulfilled", "f-1") == 200
            db = tmp_path / "data" / "bitbucket" / "commits.db"

            def frozen() -> list[tuple[Any, ...]]:
                with sqlite3.connect(db) as conn:
                    return conn.execute(
                        "SELECT verdict, pr_state, policy_hash FROM compliance_evaluations"
                        " WHERE frozen = 1"
                    ).fetchall()

            await wait_for(lambda: bool(frozen()))
        finally:
            proc.terminate()
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        [(verdict_, state, policy_hash)] = frozen()
        assert (verdict_, state) == ("compliant", "MERGED") and policy_hash.startswith("sha256:")
        artifacts = list((tmp_path / "artifacts").rglob("webhook_*.json"))
        docs = [json.loads(a.read_text()) for a in artifacts]
        merged = [e for d in docs for e in d.get("compliance_evaluations", []) if e["frozen"]]
        assert [(e["pull_request_id"], e["verdict"]) for e in merged] == [(pr.id, "compliant")]
        texts = [w.received_text(), db.read_bytes().decode("latin-1"), err.decode()]
        texts += [a.read_text() for a in artifacts]
        texts.append((tmp_path / "serve.log").read_text())
        for secret in (HOOK_SECRET, API_TOKEN):
            assert all(secret not in t for t in texts)


async def test_run_evaluates_the_open_pull_requests_once_and_reports(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        opened = [p for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN"]
        path = pipeline(tmp_path, fake.base_url, free_port())
        cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "run", str(path)]
        done = await asyncio.to_thread(
            subprocess.run, cmd, cwd=tmp_path, env=environment(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        for pr in opened:
            status = fake.writes.statuses[(REPO, pr.commits[0])][KEY]
            assert status["state"] in ("FAILED", "SUCCESSFUL")
        db = tmp_path / "data" / "bitbucket" / "commits.db"
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT pull_request_id, trigger FROM compliance_evaluations ORDER BY 1"
            ).fetchall()
        assert rows == [(pr.id, "run") for pr in sorted(opened, key=lambda p: p.id)]
