"""Shared pieces: a clock tests move by hand, the fake Chariot on it, records, a sink factory."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rcingest_chariot import ChariotConfig, ChariotSink
from rcingest_chariot.fake import FakeChariot

from rcingest.records import Repository, RepositoryScan
from rcingest.testing import make_test_context

FIXTURES = Path(__file__).parent / "fixtures"
T0 = 1_795_000_000.0  # 2026-11-17, the time every test starts at


class Clock:
    """Seconds since the epoch, moved only by ``advance``: TTLs and token lifetimes in tests."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def chariot(clock: Clock) -> AsyncIterator[FakeChariot]:
    async with FakeChariot(clock=clock) as fake:
        yield fake


def make_repo(slug: str, **fields: Any) -> Repository:
    values: dict[str, Any] = {
        "full_name": f"acme/{slug}",
        "uuid": "{" + f"00000000-0000-4000-8000-{zlib.crc32(slug.encode()):012d}" + "}",
        "name": slug,
        "workspace": "acme",
        "is_private": True,
        "mainbranch": "main",
        "language": "python",
        "updated_on": datetime(2026, 11, 10, 9, 30, tzinfo=UTC),
        "web_url": f"https://bitbucket.org/acme/{slug}",
        "project": "SEC",
    }
    values.update(fields)
    return Repository(**values)


def make_finding(
    rule: str = "aws.access_key", fp: str = "ab12" * 8, **fields: Any
) -> dict[str, Any]:
    values = {
        "path": "config/settings.py",
        "line_start": 12,
        "line_end": 12,
        "rule_id": rule,
        "rule_name": "AWS access key",
        "severity": "high",
        "fingerprint": fp,
        "excerpt": 'AWS_KEY = "AKIA***"',
        "scanner": "secrets",
    }
    values.update(fields)
    return values


def make_scan(
    slug: str, findings: list[dict[str, Any]], head: str = "a" * 40, **fields: Any
) -> Any:
    # Built through msgspec.convert: the Finding Struct comes along with RepositoryScan.
    values = {
        "repository": f"acme/{slug}",
        "branch": "main",
        "head": head,
        "state": "findings" if findings else "clean",
        "scanned_at": "2026-11-17T10:00:00Z",
        "findings": findings,
    }
    values.update(fields)
    return msgspec.convert(values, RepositoryScan)


@pytest.fixture
def repo() -> Callable[..., Repository]:
    """``repo("api", language="go")``: an active ``acme/api`` as the inventory lists it."""
    return make_repo


@pytest.fixture
def finding() -> Callable[..., dict[str, Any]]:
    """``finding(rule, fingerprint, severity=...)``: a Finding's fields (no secret in them)."""
    return make_finding


@pytest.fixture
def scan() -> Callable[..., Any]:
    """``scan("api", [finding()])``: a RepositoryScan of acme/api's main branch."""
    return make_scan


SinkFactory = Callable[..., ChariotSink]


@pytest.fixture
def make_sink(tmp_path: Path, chariot: FakeChariot, clock: Clock) -> SinkFactory:
    """``make_sink(**config)``: a sink on the fake, its state under tmp_path, on ``clock``."""

    def build(context: Any = None, **config: Any) -> ChariotSink:
        values: dict[str, Any] = {
            "api": chariot.api,
            "key_id": chariot.key_id,
            "key_secret": chariot.key_secret,
            "state_file": str(tmp_path / "state" / "chariot.db"),
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_tries": 3,
            "max_time": 5.0,
        }
        values.update(config)
        ctx = context or make_test_context(tmp_path)
        return ChariotSink(msgspec.convert(values, ChariotConfig), ctx, clock=clock, environ={})

    return build
