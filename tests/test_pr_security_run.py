"""`rcingest run config/pr-security.example.yaml`: the open pull requests scanned once (issue 12).

Also the bad input of the issue, each with its documented outcome through a
real scan: a body that is not a diff, a binary-only diff, a deleted pull
request (404), a diff redirect to another host, and a diff over the bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from rcingest.testing import FakeBitbucket, GenSpec
from tests.test_pr_security_example import API_TOKEN, PLANTED, pipeline, secret_diff

REPO = "acme/service-00"


async def run_once(tmp_path: Path, fake: FakeBitbucket, *extra: str) -> tuple[int, str, str]:
    path = pipeline(tmp_path, fake.base_url, 8080)
    text = path.read_text().replace("max_diff_bytes: 10485760", "max_diff_bytes: 4096")
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
    env.update(BITBUCKET_EMAIL="bot@example.com", BITBUCKET_API_TOKEN=API_TOKEN)
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "run", str(path)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, "--json", *extra, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def scans(tmp_path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(tmp_path / "data" / "bitbucket" / "commits.db") as conn:
        return conn.execute("SELECT state, reason FROM pr_scans ORDER BY head").fetchall()


async def test_run_scans_the_open_pull_requests_once(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = next(p for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN")
        diff, lines = secret_diff()
        fake.writes.plant_diff(REPO, pr.id, diff)
        code, out, err = await run_once(tmp_path, fake)
        assert code == 0, err
        summary = json.loads(out)
        assert summary["status"] == "succeeded"
        assert scans(tmp_path) == [("findings", None)]
        status = fake.writes.statuses[(REPO, pr.commits[0])]["rcingest-secrets"]
        assert status["state"] == "FAILED"
        writes = len(fake.writes.received)
        # A second run finds the head already scanned: nothing is sent again.
        code, _out, err = await run_once(tmp_path, fake)
        assert code == 0, err
        assert len(fake.writes.received) == writes
        # Two runs in the same second have run ids that differ only in their random
        # suffix, so the names do not say which came first: the contents do.
        artifacts = sorted((tmp_path / "artifacts").rglob("scan_*.json"))
        docs = {a: json.loads(a.read_text()) for a in artifacts}
        assert sorted(len(d["pull_request_scans"]) for d in docs.values()) == [0, 1]
        artifact = next(a for a, d in docs.items() if d["pull_request_scans"])
        [entry] = docs[artifact]["pull_request_scans"]
        assert sorted(f["line_start"] for f in entry["findings"]) == sorted(lines.values())
        for secret in PLANTED.values():
            assert secret[:10] not in artifact.read_text() + err


@pytest.mark.parametrize(
    ("case", "state", "reason"),
    [
        ("not-a-diff", "failed", "not a unified diff"),
        ("binary-only", "clean", None),
        ("too-large", "too_large", "too large to scan"),
        ("redirect-elsewhere", "failed", "refusing to follow"),
    ],
)
async def test_bad_diffs_have_documented_outcomes(
    tmp_path: Path, case: str, state: str, reason: str | None
) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = next(p for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN")
        w = fake.writes
        if case == "not-a-diff":
            w.plant_diff(REPO, pr.id, "<html><body>Bitbucket is down</body></html>\n")
        elif case == "binary-only":
            w.plant_diff(
                REPO, pr.id,
                "diff --git a/logo.png b/logo.png\nindex 1..2 100644\n"
                "Binary files a/logo.png and b/logo.png differ\n",
            )  # fmt: skip
        elif case == "too-large":
            w.plant_diff(
                REPO,
                pr.id,
                "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -0,0 +1 @@\n+" + "x" * 9000 + "\n",
            )
        else:
            w.diff_redirect_origin = "http://127.0.0.2:9"
        code, _out, err = await run_once(tmp_path, fake)
        assert code == 0, err
        [(got, why)] = scans(tmp_path)
        assert got == state
        if reason is None:
            assert why is None
        else:
            assert why is not None and reason in why
        assert API_TOKEN not in err


async def test_a_deleted_pull_request_is_not_found_not_a_crash(tmp_path: Path) -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        repo = fake.data.repos[REPO]
        pr = next(p for p in repo.pull_requests if p.state == "OPEN")
        fake.faults.fail_paths[f"/pullrequests/{pr.id}/diff"] = 404
        code, _out, err = await run_once(tmp_path, fake)
        assert code == 0, err
        assert [s for s, _ in scans(tmp_path)] == ["not_found"]
