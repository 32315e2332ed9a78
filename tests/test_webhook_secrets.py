"""Webhook secrets (issue 15, defects 4 and 5): weak ones refused, every log path redacted.

Weak secrets are refused when the daemon starts (``validate`` and ``serve``
exit 2), the embedding API keeps the runbook's ``super-secret``, redaction
never masks values short enough to rewrite ordinary text (stored rows
included), and aiohttp's own error records pass the redacting filter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rcingest.config import load_pipeline
from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.interfaces import Batch
from rcingest.plugins import Registry
from rcingest.records import Commit
from rcingest.runtime import make_context, redact, weak_secret

STRONG = "planted-Secret-9Zq4Xw7"

HOOK = """
name: hooks
source:
  type: bitbucket_webhook
  config:
    port: {port}
    secret: ${{BITBUCKET_WEBHOOK_SECRET}}
sinks:
  - type: database
    config: {{database: data/commits.db}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(args: list[str], cwd: Path, secret: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
    env["BITBUCKET_WEBHOOK_SECRET"] = secret
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("value", "strict", "problem"),
    [
        ("                    ", True, "only whitespace"),
        ("\t \n", False, "only whitespace"),
        ("super-secret", True, "has 12 characters"),  # the runbook's example
        ("abababababababababab", True, "has 2 distinct characters"),
        ("0123456789abcdef", True, None),
        ("super-secret", False, None),
        ("short", False, "has 5 characters; use at least 8 characters"),
        ("aaaaaaaa", False, None),  # embedding: length only
    ],
)
def test_the_strength_rule(value: str, strict: bool, problem: str | None) -> None:
    found = weak_secret(value, strict=strict)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        assert value.strip() == "" or value not in found  # never quoted


@pytest.mark.parametrize(
    "secret", ["                    ", "super-secret", "abcabcabcabcabcabcabc"], ids=repr
)
def test_validate_and_serve_refuse_a_weak_secret(tmp_path: Path, secret: str) -> None:
    (tmp_path / "hook.yaml").write_text(HOOK.format(port=free_port()))

    checked = _cli(["validate", "hook.yaml"], tmp_path, secret)
    assert checked.returncode == 2, checked.stderr
    assert "hook.yaml: $.source.config.secret: the webhook secret " in checked.stderr

    started = _cli(["serve", "hook.yaml"], tmp_path, secret)
    assert started.returncode == 2, started.stderr
    assert "secret: the webhook secret " in started.stderr
    assert "Traceback" not in started.stderr
    for out in (checked, started):
        assert secret.strip() == "" or secret not in out.stdout + out.stderr
    assert not (tmp_path / "data").exists()  # refused before the database was opened


def test_the_embedding_api_keeps_the_runbooks_secret_and_refuses_short_ones() -> None:
    from aiohttp import web

    from rcingest.embed import CommitStorage, register_bitbucket_webhook

    storage = CommitStorage(":memory:")
    try:
        register_bitbucket_webhook(web.Application(), storage=storage, secret="super-secret")
        for weak in ("short", "        "):
            with pytest.raises(ValueError, match=r"the secret (has 5 characters|is empty)"):
                register_bitbucket_webhook(web.Application(), storage=storage, secret=weak)
    finally:
        storage.close()


def test_redaction_skips_values_too_short_to_mask_safely() -> None:
    text = "Update the README; pw reset"
    assert redact(text, [" ", "e ", "pw", "       "]) == text
    assert redact(f"token {STRONG} used", [STRONG, " "]) == "token *** used"


def test_a_stored_commit_message_keeps_its_spaces(manager: Any, tmp_path: Path) -> None:
    """A short value of a secret-named variable does not rewrite what the sink stores."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: 'short${SHORT_TOKEN}'\n"
        "source: {type: test_counter, config: {count: 1}}\n"
        "sinks: [{type: jsonl, config: {path: out.jsonl}}]\n"
    )
    pipeline = load_pipeline(path, Registry(manager), environ={"SHORT_TOKEN": "e "})
    assert "e " in pipeline.secrets  # a secret by its name, would have matched
    context = make_context(pipeline)
    message = "Update the README\n\nsee the notes"
    commit = Commit(
        hash="a" * 40,
        repository="acme/api",
        date=datetime(2026, 12, 1, tzinfo=UTC),
        branches=["main"],
        author_raw="Ada <ada@example.com>",
        message=message,
    )
    db = tmp_path / "commits.db"

    async def write() -> None:
        async with DatabaseSink(DatabaseConfig(database=str(db)), context) as sink:
            await sink.write(Batch([commit]))
            await sink.flush()

    asyncio.run(write())
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT message FROM commits").fetchall() == [(message,)]


def test_aiohttps_errors_about_malformed_requests_are_redacted(tmp_path: Path) -> None:
    """A secret in a bad request line or header reaches neither stderr nor the log file."""
    port = free_port()
    (tmp_path / "hook.yaml").write_text(HOOK.format(port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITBUCKET_", "RCINGEST_"))}
    env["BITBUCKET_WEBHOOK_SECRET"] = STRONG
    log_file = tmp_path / "logs" / "rcingest.log"
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", "hook.yaml"]
    cmd += ["--log-file", str(log_file)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    secret = STRONG.encode()
    malformed = [
        b"POST /webhooks/bitbucket HTTP/1.1\r\nHost: x\r\nX-Webhook-Secret " + secret + b"\r\n\r\n",
        b"POST /webhooks/" + secret + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /webhooks/bitbucket HTTP/1.1\r\nHost: x\r\nX-A: " + secret + b"\x00\r\n\r\n",
    ]
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        for raw in malformed:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(raw)
                assert conn.recv(100).startswith(b"HTTP/1.0 400")
        time.sleep(0.3)  # the error records are logged after the answer
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    logged = log_file.read_text()
    for text in (stderr, logged):
        # aiohttp's records went through the redacting handlers, not the last resort.
        assert text.count("ERROR aiohttp.server: Error handling request") == len(malformed)
        assert "X-Webhook-Secret ***" in text
        assert STRONG not in text


def test_the_database_url_can_come_from_the_environment(manager: Any, tmp_path: Path) -> None:
    """``RCINGEST_DATABASE_URL`` stands in for ``--database`` (no password on a command line)."""
    from click.testing import CliRunner

    from rcingest.cli import cli

    path = tmp_path / "p.yaml"
    path.write_text(
        "name: envdb\n"
        "source: {type: test_counter, config: {count: 3}}\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path / 'unused.db'}'}}}}]\n"
    )
    chosen = tmp_path / "from-env" / "commits.db"
    result = CliRunner().invoke(
        cli, ["run", str(path)], obj=manager, env={"RCINGEST_DATABASE_URL": str(chosen)}
    )
    assert result.exit_code == 0, result.output
    assert chosen.exists() and not (tmp_path / "unused.db").exists()
