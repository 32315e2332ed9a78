"""The FastAPI and Flask snippets of docs/webhooks.md, run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rcingest.webhooks import sign

DOC = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"
FIX = Path(__file__).parent / "fixtures" / "bitbucket"
SECRET = "embed-secret-K2"


def snippet(framework: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    [block] = [b for b in blocks if f"from {framework.lower()} import" in b]
    return block


def load(framework: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("BITBUCKET_WEBHOOK_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": f"embedded_{framework.lower()}"}
    exec(compile(snippet(framework), f"docs/webhooks.md ({framework})", "exec"), namespace)
    return namespace


def cases() -> list[tuple[bytes, dict[str, str], int]]:
    raw = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
    good = {
        "X-Event-Key": "repo:push",
        "X-Request-UUID": "e-1",
        "X-Hub-Signature": sign(raw, SECRET),
    }
    return [
        (raw, good, 200),
        (raw, {**good, "X-Hub-Signature": sign(raw + b"!", SECRET)}, 401),
        (raw, {"X-Event-Key": "repo:push"}, 401),
        (b"{oops", {**good, "X-Hub-Signature": sign(b"{oops", SECRET)}, 400),
        (raw, {**good, "X-Event-Key": "repo:fork"}, 202),
        (b"x" * 300_000, {**good, "X-Hub-Signature": sign(b"x" * 300_000, SECRET)}, 413),
    ]


def test_fastapi_snippet(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dev extra installs FastAPI and Flask: a missing one fails, never skips.
    from fastapi.testclient import TestClient

    ns = load("FastAPI", monkeypatch)
    client = TestClient(ns["app"])
    for body, headers, status in cases():
        resp = client.post("/webhooks/bitbucket", content=body, headers=headers)
        assert resp.status_code == status, (resp.text, headers)
    [stored] = ns["STORED"]
    assert stored.delivery.request_uuid == "e-1"
    assert [c.hash for c in stored.records] == ["141977fedf5cf35aa290ac87d4b5177ac4cd9de1"]


def test_flask_snippet(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = load("Flask", monkeypatch)
    client = ns["app"].test_client()
    for body, headers, status in cases():
        resp = client.post("/webhooks/bitbucket", data=body, headers=headers)
        assert resp.status_code == status, (resp.get_data(as_text=True), headers)
    [stored] = ns["STORED"]
    assert stored.delivery.request_uuid == "e-1"


def test_store_failure_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = load("Flask", monkeypatch)

    def broken(decoded: object) -> None:
        raise OSError("disk full")

    ns["store"] = broken
    body, headers, _ = cases()[0]
    resp = ns["app"].test_client().post("/webhooks/bitbucket", data=body, headers=headers)
    assert resp.status_code == 503
