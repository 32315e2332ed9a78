"""Run-time plumbing: redaction of secrets in logs, git SHA, run ids."""

from __future__ import annotations

import logging
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from rcingest.runtime import RedactingFilter, git_sha, new_run_id, redact

SECRET = "ATATT3xFfGF0-very-secret-token"


def test_redact_values_and_url_credentials() -> None:
    text = (
        f"GET https://me%40x.com:{SECRET}@api.example/2.0 with {SECRET} and postgresql://u:pw@db/x"
    )
    out = redact(text, {SECRET})
    assert SECRET not in out and "pw@" not in out
    assert "postgresql://***:***@db/x" in out


def test_log_filter_redacts_messages_args_and_tracebacks(caplog) -> None:
    logger = logging.getLogger("rcingest.test-redaction")
    logger.addFilter(RedactingFilter({SECRET}))
    caplog.set_level(logging.INFO)
    logger.info("token is %s", SECRET)
    try:
        raise ValueError(f"bad auth {SECRET}")
    except ValueError:
        logger.exception("request failed")
    assert SECRET not in caplog.text
    assert "token is ***" in caplog.text and "bad auth ***" in caplog.text


def test_git_sha_inside_and_outside_a_checkout(tmp_path: Path) -> None:
    assert git_sha(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    sha = git_sha(tmp_path)
    assert sha is not None and re.fullmatch(r"[0-9a-f]{40}", sha)


def test_run_ids_sort_by_time_and_are_unique() -> None:
    now = datetime(2026, 11, 23, 6, 23, 37, tzinfo=UTC)
    ids = {new_run_id(now) for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("20261123T062337Z-") for i in ids)


def test_redact_query_passwords_and_empty_user_credentials() -> None:
    assert redact("postgresql://u@h/db?password=s3cret&sslmode=disable") == (
        "postgresql://u@h/db?password=***&sslmode=disable"
    )
    assert redact("postgresql://:s3cret@h/db") == "postgresql://***:***@h/db"
    assert redact("host=h password=pw dbname=x") == "host=h password=*** dbname=x"
    assert (
        redact("https://h/x?api_key=k1&x_token=t2#top") == "https://h/x?api_key=***&x_token=***#top"
    )
    assert redact("https://api.bitbucket.org:443/2.0/repositories/a@b") == (
        "https://api.bitbucket.org:443/2.0/repositories/a@b"
    )
