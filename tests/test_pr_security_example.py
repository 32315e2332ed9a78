"""Issue 12, done when: `rcingest serve config/pr-security.example.yaml` against the fake Bitbucket.

A real daemon process, the shipped example file (only its API host, port and
paths changed), signed deliveries; the fake Bitbucket runs in this test's
event loop and records every write it receives.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.testing.fake_bitbucket.app import render_pr
from rcingest.webhooks import sign
from tests.test_webhook_backfill import wait_for

ROOT = Path(__file__).resolve().parents[1]
HOOK_SECRET = "Hk7Qm2x9Lk-whsec-prbot-0042"
API_TOKEN = "ATATT3xFfGF0-prsec-test-token-Zk81=0A1B2C3D"
REPO = "acme/service-00"
CLEAN_REPO = "acme/service-01"
PLANTED = {
    "AWS": "AKIAW4X7V2NTQ5RZT3LK",
    "GITHUB": "ghp_T7k2Wm9Qx4Lp8Rv1Zn5Bc3Hd6Jf0Sa2Ye8Mu",
    "SLACK": "xoxb-583920174628-2039481726354-Vk8Zq2Lm9Tx4Rb7Wn1Cs5Dy",
    "STRIPE": "sk_live_51Qx8Lm2Kz9Vt4Rn7Wb1Cs5Dy3Hf6Jg0Pa",
}


def secret_diff() -> tuple[str, dict[str, int]]:
    lines = [f"+{name}_KEY={value}" for name, value in PLANTED.items()]
    body = "".join(f"{line}\n" for line in [" # settings", *lines])
    diff = (
        "diff --git a/config/prod.env b/config/prod.env\n"
        "index 1111111..2222222 100644\n--- a/config/prod.env\n+++ b/config/prod.env\n"
        f"@@ -1,1 +1,{len(lines) + 1} @@\n{body}"
    )
    return diff, {name: i + 2 for i, name in enumerate(PLANTED)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(proc: asyncio.subprocess.Process, port: int) -> None:
    """Until the daemon accepts connections on ``port`` (bounded: 15 s); it must not exit."""
    for _ in range(300):
        assert proc.returncode is None
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)


def pipeline(tmp_path: Path, base_url: str, port: int) -> Path:
    text = (ROOT / "config" / "pr-security.example.yaml").read_text()
    text = text.replace("https://api.bitbucket.org/2.0", base_url).replace(
        "port: 8080", f"port: {port}"
    )
    text = text.replace("scan_repositories: [acme/api, acme/web]", f"scan_repositories: [{REPO}]")
    path = tmp_path / "pr-security.yaml"
    path.write_text(text)
    return path


def event(fake: FakeBitbucket, pr_id: int, name: str = REPO) -> bytes:
    repo = fake.data.repos[name]
    pr = next(p for p in repo.pull_requests if p.id == pr_id)
    return json.dumps(
        {"pullrequest": render_pr(fake.data, repo, pr), "repository": {"full_name": name}}
    ).encode()


async def deliver(url: str, body: bytes, kind: str, uuid: str) -> int:
    headers = {
        "X-Event-Key": kind,
        "X-Request-UUID": uuid,
        "X-Hub-Signature": sign(body, HOOK_SECRET),
    }
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status


async def test_the_example_serves_the_pr_security_bot(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=2)) as fake:
        dirty = next(p for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN")
        clean = next(p for p in fake.data.repos[CLEAN_REPO].pull_requests if p.state == "OPEN")
        diff, lines = secret_diff()
        fake.writes.plant_diff(REPO, dirty.id, diff)
        port = free_port()
        path = pipeline(tmp_path, fake.base_url, port)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
        env.update(
            BITBUCKET_WEBHOOK_SECRET=HOOK_SECRET,
            BITBUCKET_EMAIL="bot@example.com",
            BITBUCKET_API_TOKEN=API_TOKEN,
        )
        cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", str(path)]
        cmd += ["--log-file", str(tmp_path / "serve.log")]
        proc = await asyncio.create_subprocess_exec(
            *cmd, cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        try:
            url = f"http://127.0.0.1:{port}/webhooks/bitbucket"
            await wait_listening(proc, port)
            w = fake.writes
            assert await deliver(url, event(fake, dirty.id), "pullrequest:created", "d-1") == 200
            assert (
                await deliver(url, event(fake, clean.id, CLEAN_REPO), "pullrequest:created", "c-1")
                == 200
            )
            dirty_head, clean_head = dirty.commits[0], clean.commits[0]
            await wait_for(lambda: bool(w.live_comments(REPO, dirty.id)), 30)
            await wait_for(lambda: "rcingest-secrets" in w.reports.get((REPO, dirty_head), {}), 30)
            await wait_for(
                lambda: (
                    w.statuses.get((CLEAN_REPO, clean_head), {})
                    .get("rcingest-secrets", {})
                    .get("state")
                    == "SUCCESSFUL"
                ),
                30,
            )
            status = w.statuses[(REPO, dirty_head)]["rcingest-secrets"]
            assert status["state"] == "FAILED"
            annotated = {
                a["line"] for a in w.annotations[(REPO, dirty_head, "rcingest-secrets")].values()
            }
            assert annotated == set(lines.values())
            [comment] = w.live_comments(REPO, dirty.id)
            for line in lines.values():
                assert f"| `config/prod.env` | {line} |" in comment["content"]["raw"]
            assert w.live_comments(CLEAN_REPO, clean.id) == []
            before = len(w.received)
            assert await deliver(url, event(fake, dirty.id), "pullrequest:created", "d-1") == 200
            assert await deliver(url, event(fake, dirty.id), "pullrequest:updated", "d-2") == 200
            await asyncio.sleep(1.0)
            assert len(w.received) == before  # a head already scanned: nothing again
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()
        places = [stderr.decode(), w.received_text(), (tmp_path / "serve.log").read_text()]
        for folder in ("data", "artifacts"):
            for file in (tmp_path / folder).rglob("*"):
                if file.is_file():
                    places.append(file.read_bytes().decode("latin-1"))
        everything = "\n".join(places)
        for secret in [*PLANTED.values(), API_TOKEN, HOOK_SECRET]:
            assert not re.search(re.escape(secret[:10]), everything), secret[:4]
