"""Shared fixtures. Sections are owned by area; add yours in its own section."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aioresponses.core as aioresponses_core
import msgspec
import pytest
from aioresponses import aioresponses

import rcingest
from rcingest.plugins import Manager, make_plugin_manager

# --- core: test components and a plugin manager that includes them -----------------

FIXTURES = Path(__file__).parent / "fixtures"


class CounterConfig(rcingest.ComponentConfig):
    count: int = 10
    checkpoint_every: int = 5
    repository: str = "acme/api"
    fail_after: int | None = None


class CounterSource(rcingest.Source[CounterConfig]):
    """Emits ``count`` commits, checkpointing every ``checkpoint_every``; resumes."""

    Config = CounterConfig

    async def records(
        self, cursors: Mapping[str, dict[str, Any]]
    ) -> AsyncIterator[rcingest.Record | rcingest.Checkpoint]:
        start = int(cursors.get("counter", {}).get("next", 0))
        base = datetime(2026, 11, 1, tzinfo=UTC)
        self.context.window = rcingest.Window(base, base + timedelta(hours=4))
        for i in range(start, self.config.count):
            if self.config.fail_after is not None and i >= self.config.fail_after:
                raise RuntimeError(f"source broke at {i}")
            yield rcingest.Commit(
                hash=f"{i:040x}",
                repository=self.config.repository,
                date=base + timedelta(minutes=i),
                message=f"REL-{i + 1} change {i}",
                branches=["main"],
            )
            if (i + 1) % self.config.checkpoint_every == 0:
                yield rcingest.Checkpoint("counter", {"next": i + 1})
        yield rcingest.Checkpoint("counter", {"next": self.config.count})


class SuffixConfig(rcingest.ComponentConfig):
    suffix: str = " [seen]"


class SuffixEnricher(rcingest.Enricher[SuffixConfig]):
    Config = SuffixConfig

    def enrich(self, record: rcingest.Record) -> rcingest.Record:
        if isinstance(record, rcingest.Commit):
            return msgspec.structs.replace(record, message=record.message + self.config.suffix)
        return record


class MemoryConfig(rcingest.ComponentConfig):
    key: str = "default"
    fail_on_batch: int | None = None
    #: Fail every write that holds a repository record of this name.
    poison: str | None = None


MEMORY: dict[str, list[Any]] = {}


class MemorySink(rcingest.Sink[MemoryConfig]):
    """Keeps written records in ``MEMORY[key]``; can fail on the n-th batch (1-based)."""

    Config = MemoryConfig

    def __init__(self, config: MemoryConfig, context: rcingest.RunContext) -> None:
        super().__init__(config, context)
        self.batches = 0
        self.status_at_exit: str | None = None

    async def write(self, batch: rcingest.Batch) -> None:
        self.batches += 1
        if self.config.fail_on_batch == self.batches:
            raise OSError("disk full (injected)")
        names = {getattr(r, "full_name", None) for r in batch.records}
        if self.config.poison is not None and self.config.poison in names:
            raise ValueError(f"cannot store {self.config.poison} (injected)")
        MEMORY.setdefault(self.config.key, []).extend(batch.records)

    async def __aexit__(self, *exc: object) -> None:
        MEMORY.setdefault(self.config.key + ":status", []).append(self.context.status)


class TestComponents:
    """A plugin object, registered in process, that adds the test types."""

    @rcingest.hookimpl
    def register_sources(self, register: Callable[..., None]) -> None:
        register("test_counter", CounterSource)

    @rcingest.hookimpl
    def register_enrichers(self, register: Callable[..., None]) -> None:
        register("test_suffix", SuffixEnricher)

    @rcingest.hookimpl
    def register_sinks(self, register: Callable[..., None]) -> None:
        register("test_memory", MemorySink)


@pytest.fixture
def memory() -> dict[str, list[Any]]:
    MEMORY.clear()
    return MEMORY


@pytest.fixture
def manager() -> Manager:
    """Installed plugins (built-ins and rcingest-jsonl) plus the test components."""
    return make_plugin_manager(extra=[("test-components", TestComponents())])


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


# --- storage (issue 5): PostgreSQL server and a database per test, SQLite or PostgreSQL --------

_PG_URL_ENV = "RCINGEST_TEST_POSTGRES_URL"
_PG_REQUIRE_ENV = "RCINGEST_REQUIRE_POSTGRES"


def _postgres_binaries() -> bool:
    import glob
    import shutil

    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or shutil.which("initdb") is not None


@pytest.fixture(scope="session")
def postgres_server_url() -> Any:
    """A PostgreSQL URL for tests: ``RCINGEST_TEST_POSTGRES_URL``, or a throwaway cluster.

    Without the variable, starts one with ``.ci/postgres.sh`` when PostgreSQL
    binaries exist (never installs them from here) and stops it at the end.
    Otherwise skips, unless ``RCINGEST_REQUIRE_POSTGRES=1``, which fails.
    """
    import os
    import subprocess

    url = os.environ.get(_PG_URL_ENV)
    if url:
        yield url
        return
    required = os.environ.get(_PG_REQUIRE_ENV) == "1"
    if not _postgres_binaries():
        message = f"no PostgreSQL: set {_PG_URL_ENV} or install the server (.ci/postgres.sh)"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    script = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"
    done = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "RCINGEST_PG_NO_INSTALL": "1"},
        timeout=120,
        check=False,
    )
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith("export ")
    )
    if done.returncode != 0 or _PG_URL_ENV not in exports:
        message = f".ci/postgres.sh failed ({done.returncode}): {done.stderr[-800:]}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield exports[_PG_URL_ENV]
    finally:
        subprocess.run(
            ["bash", str(script), "stop", exports["RCINGEST_TEST_POSTGRES_DIR"]],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Any:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = psycopg2.connect(postgres_server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(postgres_server_url)
        yield urlunsplit(parts._replace(path=f"/{name}"))
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``database`` setting of a fresh database: a SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "db" / "commits.db")
    return str(request.getfixturevalue("postgres_url"))


# -- aioresponses for the HTTP client's unit tests ---------------------------------------


class _Writer:
    output_size = 0


# Older aiohttp (before the argument existed) refuses it, so only supply it when taken.
_TAKES_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse).parameters


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 does not pass aiohttp 3.14's ``stream_writer`` argument
    (pnuckowski/aioresponses#289); this supplies it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if _TAKES_STREAM_WRITER:
            kwargs.setdefault("stream_writer", _Writer())
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """An aioresponses mock of every aiohttp request in the test."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as m:
        yield m
