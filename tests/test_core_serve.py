"""``rcingest serve``: runs until SIGTERM/SIGINT, drains, flushes, exits 0, logs summaries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_drains_and_exits_zero_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "out.jsonl"
    pipeline = tmp_path / "serve.yaml"
    pipeline.write_text(
        "name: ticker\nsummary_interval: 0.2\nsource: {type: tick}\n"
        f"sinks: [{{type: jsonl, config: {{path: '{out}'}}}}]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "serve_main.py"), "serve", str(pipeline)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_text().splitlines()) >= 20:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # at least one summary interval
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "drained" in stdout
    assert f"received {sig.name}: draining and stopping" in stderr
    assert "summary: repository" in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    state = json.loads((tmp_path / "serve.state.json").read_text())
    # Everything yielded before the stop was written, and the cursor covers all of it.
    assert state["ticker:tick"]["tick"]["n"] == len(rows)
    assert rows[-1]["full_name"] == f"ws/r{len(rows)}"
