"""``rcingest inbox list`` and ``rcingest inbox retry`` on real inboxes (issue 15).

Real SQLite files and a real PostgreSQL, filled through the inbox's own
write protocol (append, settle). Listing never creates an inbox, never
prints a body or a header, and never prints a PostgreSQL password.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rcingest.cli import cli
from rcingest.inbox.db import connect
from rcingest.inbox.model import Arrival
from rcingest.plugins import make_plugin_manager

DAY = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
BODY_MARK = "body-evidence-7Qx"
HEADER_MARK = "header-evidence-3Zk"
LONG_ERROR = "a sink did not commit it: " + "database unreachable; " * 10 + "END-OF-ERROR"
#: uuid -> (repository, hours after DAY, what settle makes of it)
ROWS = {
    "u-1": ("acme/api", 0, "done"),
    "u-2": ("acme/api", 1, "parked"),
    "u-3": ("acme/web", 2, "failed"),
    "u-4": ("acme/web", 3, "pending"),
    "u-5": ("acme/api", 4, "parked"),
}


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, obj=make_plugin_manager(), env=env)
    return result.exit_code, result.stdout, result.stderr


def fill(spec: str) -> dict[str, int]:
    """An inbox with one row per ``ROWS`` entry, settled as it says; uuid -> id."""
    db = connect(spec)
    db.create()
    db.append(
        [
            Arrival(
                request_uuid=uuid,
                event="repo:push",
                repository=repo,
                received_at=DAY + 3600 * hours,
                headers={
                    "X-Event-Key": "repo:push",
                    "X-Request-UUID": uuid,
                    "User-Agent": HEADER_MARK,
                },
                body=json.dumps({"mark": BODY_MARK, "uuid": uuid}).encode(),
            )
            for uuid, (repo, hours, _) in ROWS.items()
        ]
    )
    ids = {r.request_uuid: r.id for r in db.rows()}
    db.claim(100)  # settling ends a claim (PostgreSQL holds it in a transaction)
    db.settle(
        done=[ids[u] for u, (_, _, s) in ROWS.items() if s == "done"],
        failed=[(ids[u], "sink down", DAY) for u, (_, _, s) in ROWS.items() if s == "failed"],
        parked=[(ids[u], LONG_ERROR) for u, (_, _, s) in ROWS.items() if s == "parked"],
        now=DAY + 60,
    )
    db.release()
    db.close()
    return ids


def listed(out: str) -> list[str]:
    """The request uuids of a table's rows."""
    cells = [line.split() for line in out.splitlines()]
    return [c[6] for c in cells if len(c) > 6 and c[0].isdigit() and c[1].startswith("20")]


@pytest.fixture
def inbox(tmp_path: Path) -> str:
    spec = str(tmp_path / "inbox.db")
    fill(spec)
    return spec


def test_the_table(inbox: str) -> None:
    code, out, err = run(["inbox", "list", "--inbox", inbox])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "RECEIVED", "(UTC)", "STATE"]
    assert listed(out) == ["u-1", "u-2", "u-3", "u-4", "u-5"]  # oldest first
    first = lines[1].split()
    assert first[1:6] == ["2026-11-02T00:00:00Z", "done", "1", "repo:push", "acme/api"]
    assert first[-1] == "2026-11-02T00:01:00Z"  # done at
    parked = lines[2]
    assert "a sink did not commit it: database unreachable;" in parked
    assert "END-OF-ERROR" not in out and "…" in parked  # truncated in the table
    assert lines[-1] == (f"5 selected; inbox {inbox}: 1 pending, 1 failed, 1 done, 2 parked")


def test_inbox_alone_lists(inbox: str) -> None:
    code, out, err = run(["inbox", "--inbox", inbox, "--state", "parked"])
    assert code == 0, err
    assert listed(out) == ["u-2", "u-5"]


def test_each_filter(inbox: str) -> None:
    def uuids(*args: str) -> list[str]:
        code, out, err = run(["inbox", "list", "--inbox", inbox, *args])
        assert code == 0, err
        return listed(out)

    assert uuids("--state", "parked", "--state", "failed") == ["u-2", "u-3", "u-5"]
    assert uuids("--repository", "acme/web") == ["u-3", "u-4"]
    assert uuids("--since", "2026-11-02T01:00", "--until", "2026-11-02T03:00") == ["u-2", "u-3"]
    assert uuids("--since", "2026-11-02T03:00Z") == ["u-4", "u-5"]
    # 2026-11-01T18:00 in Phoenix (UTC-7) is 01:00 UTC.
    assert uuids("--until", "2026-11-01T18:00", "--timezone", "America/Phoenix") == ["u-1"]
    assert uuids("--uuid", "u-4", "--uuid", "u-1") == ["u-1", "u-4"]
    assert uuids("--repository", "acme/api", "--state", "parked") == ["u-2", "u-5"]
    code, out, _ = run(["inbox", "list", "--inbox", inbox, "--limit", "2"])
    assert listed(out) == ["u-1", "u-2"]
    assert out.splitlines()[-1].startswith("2 of 5 selected;")
    code, _, err = run(["inbox", "list", "--inbox", inbox, "--repository", "acme"])
    assert code == 2 and "workspace/slug" in err
    code, _, err = run(["inbox", "list", "--inbox", inbox, "--since", "yesterday"])
    assert code == 2 and "not an ISO 8601 date or time" in err


def test_json(inbox: str) -> None:
    code, out, err = run(["inbox", "list", "--inbox", inbox, "--format", "json"])
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    assert [r["request_uuid"] for r in rows] == ["u-1", "u-2", "u-3", "u-4", "u-5"]
    assert set(rows[0]) == {
        "id", "request_uuid", "event", "repository", "received_at", "state", "attempts",
        "last_error", "done_at", "body_bytes", "received", "received_at_iso", "done_at_iso",
    }  # fmt: skip
    assert rows[0]["received_at"] == DAY
    assert rows[0]["received_at_iso"] == "2026-11-02T00:00:00+00:00"
    assert rows[0]["done_at_iso"] == "2026-11-02T00:01:00+00:00"
    assert rows[1]["last_error"] == LONG_ERROR  # whole
    assert rows[3]["done_at"] is None and rows[3]["done_at_iso"] is None
    code, out, _ = run(["inbox", "list", "--inbox", inbox, "--format", "json", "--limit", "1"])
    assert len(json.loads(out)) == 1


def test_no_body_and_no_header_is_ever_printed(inbox: str) -> None:
    for fmt in ("table", "json"):
        code, out, err = run(["inbox", "list", "--inbox", inbox, "--format", fmt])
        assert code == 0, err
        assert BODY_MARK not in out + err
        assert HEADER_MARK not in out + err


def test_retry_puts_parked_rows_back(inbox: str) -> None:
    code, out, err = run(["inbox", "retry", "--inbox", inbox, "--state", "parked"])
    assert code == 0, err
    assert out.startswith("2 deliveries back to pending")
    db = connect(inbox, must_exist=True)
    try:
        states = {r.request_uuid: (r.state, r.attempts) for r in db.rows()}
    finally:
        db.close()
    assert states["u-2"] == ("pending", 0) and states["u-5"] == ("pending", 0)
    assert states["u-3"] == ("failed", 1)  # not asked for
    assert states["u-1"] == ("done", 1)
    # Without --state: failed and parked; a filter narrows it.
    code, out, _ = run(["inbox", "retry", "--inbox", inbox, "--repository", "acme/web"])
    assert code == 0 and out.startswith("1 delivery back to pending")
    code, out, _ = run(["inbox", "retry", "--inbox", inbox])
    assert code == 0 and out.startswith("0 deliveries back to pending")
    code, _, err = run(["inbox", "retry", "--inbox", inbox, "--state", "done"])
    assert code == 2  # only failed or parked rows can be retried


def test_a_missing_inbox_is_exit_2_and_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "inbox.db"
    for command in ("list", "retry"):
        code, _, err = run(["inbox", command, "--inbox", str(missing)])
        assert code == 2
        assert f"error: no inbox at {missing}" in err
    assert not missing.parent.exists()
    not_an_inbox = tmp_path / "other.db"
    with closing(sqlite3.connect(not_an_inbox)) as conn:
        conn.execute("CREATE TABLE t (x)")
    code, _, err = run(["inbox", "list", "--inbox", str(not_an_inbox)])
    assert code == 2 and "not an inbox" in err


def test_where_the_inbox_is_found(
    inbox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = tmp_path / "webhook.yaml"
    source = {"secret": "${BITBUCKET_WEBHOOK_SECRET}", "inbox": inbox}
    pipeline.write_text(
        json.dumps(
            {
                "name": "hooks",
                "source": {"type": "bitbucket_webhook", "config": source},
                "sinks": [{"type": "database"}],
            }
        )
    )
    monkeypatch.delenv("BITBUCKET_WEBHOOK_SECRET", raising=False)  # reading needs no secret
    code, out, err = run(["inbox", "--config", str(pipeline)])
    assert code == 0, err
    assert len(listed(out)) == 5
    code, out, err = run(["inbox", "list"], env={"RCINGEST_INBOX_URL": inbox})
    assert code == 0, err
    assert len(listed(out)) == 5
    monkeypatch.chdir(tmp_path)  # no data/bitbucket/webhook-inbox.db here
    code, _, err = run(["inbox"])
    assert code == 2 and "no inbox at data/bitbucket/webhook-inbox.db" in err
    scan = tmp_path / "scan.yaml"
    scan.write_text(
        json.dumps(
            {
                "name": "scan",
                "source": {"type": "bitbucket_rest", "config": {"workspace": "acme"}},
                "sinks": [{"type": "database"}],
            }
        )
    )
    code, _, err = run(["inbox", "--config", str(scan)])
    assert code == 2 and "not a bitbucket_webhook source" in err


@pytest.mark.postgres
def test_postgresql_inbox_and_its_password(postgres_url: str) -> None:
    fill(postgres_url)
    password = postgres_url.split("@")[0].rsplit(":", 1)[1]
    env = {"RCINGEST_INBOX_URL": postgres_url}
    code, out, err = run(["inbox", "list"], env=env)
    assert code == 0, err
    assert listed(out) == ["u-1", "u-2", "u-3", "u-4", "u-5"]
    assert "inbox postgresql://***:***@" in out.splitlines()[-1]
    assert password not in out + err
    assert BODY_MARK not in out and HEADER_MARK not in out
    code, out, err = run(["inbox", "list", "--format", "json"], env=env)
    assert code == 0, err
    assert [r["request_uuid"] for r in json.loads(out)] == ["u-1", "u-2", "u-3", "u-4", "u-5"]
    assert password not in out + err and BODY_MARK not in out and HEADER_MARK not in out
    code, out, err = run(["inbox", "retry"], env=env)
    assert code == 0 and out.startswith("3 deliveries back to pending")
    assert password not in out + err
    # A wrong password: refused, exit 2, neither password shown.
    wrong = postgres_url.replace(f":{password}@", ":Wrong-Pass-Zq83@")
    code, out, err = run(["inbox", "list"], env={"RCINGEST_INBOX_URL": wrong})
    assert code == 2 and "cannot open the inbox" in err
    assert "Wrong-Pass-Zq83" not in out + err and password not in out + err
