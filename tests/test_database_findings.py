"""Pull requests' scans and findings in the database (issue 12), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from rcingest.interfaces import Batch
from rcingest.scanning.model import Finding, fingerprint, redact_secret
from rcingest.scanning.records import PullRequestScan
from tests.test_database_sink import T0, dump, write_run

SECRET_A = "AKIAZXCVBNMASDFGHJKL"
SECRET_B = "ghp_" + "Q1w2E3r4T5y6U7i8O9p0" * 2
HEAD1, HEAD2, HEAD3 = "1" * 40, "2" * 40, "3" * 40
KEY = b"findings-test-key-0123456789"


def finding(secret: str, path: str, line: int) -> Finding:
    return Finding(
        path=path,
        line_start=line,
        line_end=line,
        rule_id="np.test.1",
        rule_name="Test secret",
        severity="high",
        fingerprint=fingerprint(KEY, "np.test.1", secret),
        excerpt=f"x = '{redact_secret(secret)}'",
    )


def scan(head: str, findings: list[Finding], state: str = "", **kw: Any) -> PullRequestScan:
    fields: dict[str, Any] = {
        "repository": "acme/api",
        "pull_request_id": 7,
        "head": head,
        "state": state or ("findings" if findings else "clean"),
        "scanned_at": T0,
        "findings": findings,
        "scanners": ["secrets"],
    }
    return PullRequestScan(**{**fields, **kw})


def states(spec: str) -> dict[tuple[str, int], tuple[str, str, str | None]]:
    rows = dump(spec, ["findings"])["findings"]
    return {
        (r["path"], r["line_start"]): (r["state"], r["last_head"], r["fixed_head"]) for r in rows
    }


async def test_findings_open_fix_and_allow_by_head(database_spec: str, tmp_path: Path) -> None:
    a, b = finding(SECRET_A, "app.py", 3), finding(SECRET_B, "ci.yml", 9)
    await write_run(database_spec, tmp_path, [Batch([scan(HEAD1, [a, b])])])
    assert states(database_spec) == {
        ("app.py", 3): ("open", HEAD1, None),
        ("ci.yml", 9): ("open", HEAD1, None),
    }
    # The next head removed b: fixed there; a is still open.
    await write_run(database_spec, tmp_path, [Batch([scan(HEAD2, [a])])], run_id="run-2")
    assert states(database_spec) == {
        ("app.py", 3): ("open", HEAD2, None),
        ("ci.yml", 9): ("fixed", HEAD1, HEAD2),
    }
    # A head the scanner could not see changes nothing.
    await write_run(
        database_spec,
        tmp_path,
        [Batch([scan(HEAD3, [], "too_large", reason="diff over 10 MiB")])],
        run_id="run-3",
    )
    assert states(database_spec)[("app.py", 3)] == ("open", HEAD2, None)
    # The allowlist now allows a.
    allowed = scan(HEAD3, [], allowed=[a.fingerprint])
    await write_run(database_spec, tmp_path, [Batch([allowed])], run_id="run-4")
    assert states(database_spec)[("app.py", 3)][0] == "allowed"
    scans = dump(database_spec, ["pr_scans"])["pr_scans"]
    assert sorted((s["head"], s["state"], s["findings"]) for s in scans) == [
        (HEAD1, "findings", 2),
        (HEAD2, "findings", 1),
        (HEAD3, "clean", 0),
    ]


async def test_a_replayed_scan_duplicates_nothing(database_spec: str, tmp_path: Path) -> None:
    a = finding(SECRET_A, "app.py", 3)
    first = scan(HEAD1, [a])
    await write_run(database_spec, tmp_path, [Batch([first])])
    before = dump(database_spec, ["findings", "pr_scans"])
    again = scan(HEAD1, [a], scanned_at=T0 + timedelta(minutes=5))
    await write_run(database_spec, tmp_path, [Batch([again])], run_id="run-2")
    after = dump(database_spec, ["findings", "pr_scans"])
    assert len(after["findings"]) == len(before["findings"]) == 1
    assert len(after["pr_scans"]) == 1
    assert after["findings"][0]["first_seen_at"] == before["findings"][0]["first_seen_at"]


async def test_two_heads_in_one_batch_end_as_the_last_says(
    database_spec: str, tmp_path: Path
) -> None:
    a, b = finding(SECRET_A, "app.py", 3), finding(SECRET_B, "ci.yml", 9)
    await write_run(database_spec, tmp_path, [Batch([scan(HEAD1, [a, b]), scan(HEAD2, [a])])])
    assert states(database_spec) == {
        ("app.py", 3): ("open", HEAD2, None),
        ("ci.yml", 9): ("fixed", HEAD1, HEAD2),
    }


async def test_no_secret_reaches_the_database_file(tmp_path: Path) -> None:
    spec = str(tmp_path / "db" / "commits.db")
    a, b = finding(SECRET_A, "app.py", 3), finding(SECRET_B, "ci.yml", 9)
    await write_run(spec, tmp_path, [Batch([scan(HEAD1, [a, b])])])
    raw = b"".join(p.read_bytes() for p in (tmp_path / "db").iterdir())
    for secret in (SECRET_A, SECRET_B):
        assert secret.encode() not in raw and secret[:8].encode() not in raw
