"""``rcingest serve config/webhook.example.yaml``: a real process, a delivery, SIGINT, exit 0."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rcingest.webhooks import sign

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "bitbucket"
SECRET = "cli-secret-P0q-7Xv2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_example_config_serves_and_stops_cleanly(tmp_path: Path) -> None:
    example = (ROOT / "config" / "webhook.example.yaml").read_text()
    # A short summary interval, so the per-interval summary line shows up.
    pipeline = tmp_path / "webhook.yaml"
    pipeline.write_text(example.replace("summary_interval: 60", "summary_interval: 0.2"))
    port = free_port()
    db = tmp_path / "commits.db"
    env = {**os.environ, "BITBUCKET_WEBHOOK_SECRET": SECRET}
    env.pop("BITBUCKET_API_TOKEN", None)
    cmd = [sys.executable, "-c", "from rcingest.cli import main; main()", "serve", str(pipeline)]
    cmd += ["--port", str(port), "--database", str(db)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        raw = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/webhooks/bitbucket",
            data=raw,
            headers={
                "X-Event-Key": "repo:push",
                "X-Request-UUID": "cli-1",
                "X-Hub-Signature": sign(raw, SECRET),
            },
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        time.sleep(0.5)  # at least one summary interval
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "listening on http://127.0.0.1:" in stderr
    assert "summary:" in stderr and "webhook.stored 1" in stderr
    assert SECRET not in stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT request_uuid, outcome FROM deliveries").fetchall() == [
            ("cli-1", "stored")
        ]
    # The backfill queue path of the example is relative to the working directory.
    assert not (tmp_path / "data" / "bitbucket" / "webhook-backfill.db").exists()  # backfill off
