"""Database sink throughput: rcingest's ``database`` sink against raw sqlite3, same rows, same run.

    python bench/bench_storage.py [--commits 20000] [--batch 500] [--files 10]

Writes scan-sized batches (``--batch`` commits, each with ``--files`` files, one
branch and two story keys) into a fresh SQLite file through the sink (writer
thread, one transaction per batch), then the same batches again into the now
filled database (a re-run), then the same rows through plain ``sqlite3``
``executemany`` upserts as the practical ceiling. Bounded: at most
``--commits`` commits per pass. Prints rows/s for each.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rcingest.default_plugins.database import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.database.rows import build_rows
from rcingest.interfaces import Batch, RunContext
from rcingest.records import Checkpoint, Commit, FileChange, StoryKey


def make_batches(commits: int, batch: int, files: int) -> list[Batch]:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for start in range(0, commits, batch):
        records = []
        for i in range(start, min(commits, start + batch)):
            records.append(
                Commit(
                    hash=f"{i:040x}",
                    repository=f"acme/repo{i % 5}",
                    date=base + timedelta(seconds=i),
                    branches=["main"],
                    author_raw="Dev Eloper <dev@example.com>",
                    author_name="Dev Eloper",
                    author_account_id="557058:abc",
                    message=f"REL-{i % 900 + 1} change number {i}\n\nLonger body text here.",
                    parents=[f"{i - 1:040x}"],
                    files=[
                        FileChange(f"src/module{i % 50}/file{j}.py", "modified", None, j, j // 2)
                        for j in range(files)
                    ],
                    story_keys=[
                        StoryKey(f"REL-{i % 900 + 1}", ("message", "branch")),
                    ],
                )
            )
        out.append(Batch(records, [Checkpoint("acme/repo0:main", {"head": f"{start:040x}"})]))
    return out


def count_rows(batches: list[Batch]) -> int:
    now = datetime.now(UTC)
    return sum(build_rows(b.records, b.checkpoints, "bench", now).total() for b in batches)


async def sink_pass_url(url: str, batches: list[Batch]) -> float:
    return await sink_pass(Path(tempfile.gettempdir()) / "unused", batches, url)


async def sink_pass(path: Path, batches: list[Batch], url: str | None = None) -> float:
    ctx = RunContext(
        run_id=f"bench-{time.monotonic_ns()}",
        pipeline_name="bench",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=datetime.now(UTC),
        base_dir=path.parent,
        source_id="bench",
    )
    sink = DatabaseSink(DatabaseConfig(database=url or str(path)), ctx)
    async with sink:
        started = time.perf_counter()
        for batch in batches:
            await sink.write(batch)
            await sink.flush()
        elapsed = time.perf_counter() - started
        ctx.status = "succeeded"
    return elapsed


RAW_SCHEMA = """
CREATE TABLE commits (hash TEXT PRIMARY KEY, repository TEXT, author_raw TEXT, author_name TEXT,
  author_account_id TEXT, committed_at TEXT, message TEXT, parents TEXT, files_known INT,
  first_seen_at TEXT, last_seen_at TEXT);
CREATE INDEX c1 ON commits(repository, committed_at); CREATE INDEX c2 ON commits(committed_at);
CREATE TABLE commit_repositories (commit_hash TEXT, repository TEXT, first_seen_at TEXT,
  last_seen_at TEXT, PRIMARY KEY (commit_hash, repository));
CREATE TABLE commit_branches (commit_hash TEXT, repository TEXT, branch TEXT, first_seen_at TEXT,
  PRIMARY KEY (commit_hash, repository, branch));
CREATE TABLE commit_files (commit_hash TEXT, path TEXT, old_path TEXT, status TEXT,
  lines_added INT, lines_removed INT, PRIMARY KEY (commit_hash, path));
CREATE INDEX f1 ON commit_files(path);
CREATE TABLE story_keys (commit_hash TEXT, key TEXT, origin TEXT,
  PRIMARY KEY (commit_hash, key, origin));
CREATE INDEX k1 ON story_keys(key);
CREATE TABLE repositories (full_name TEXT PRIMARY KEY, workspace TEXT, first_seen_at TEXT,
  last_seen_at TEXT);
"""


def raw_pass(path: Path, batches: list[Batch]) -> float:
    """The same rows with hand-written SQL and executemany: the practical ceiling."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=wal")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("PRAGMA cache_size=-64000")
    con.executescript(RAW_SCHEMA)
    started = time.perf_counter()
    for batch in batches:
        rows = build_rows(batch.records, batch.checkpoints, "bench", datetime.now(UTC))
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "INSERT INTO repositories VALUES (?,?,?,?) ON CONFLICT(full_name) DO UPDATE SET "
            "last_seen_at=excluded.last_seen_at",
            [tuple(str(v) for v in r) for r in rows.implied_repositories.values()],
        )
        con.executemany(
            "INSERT INTO commits VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(hash) DO UPDATE SET "
            "author_name=coalesce(excluded.author_name, author_name), "
            "last_seen_at=excluded.last_seen_at",
            [
                (*r[:5], str(r[5]), r[6], r[7], int(r[8]), str(r[9]), str(r[10]))
                for r in rows.commits.values()
            ],
        )
        con.executemany(
            "INSERT INTO commit_repositories VALUES (?,?,?,?) ON CONFLICT(commit_hash, repository) "
            "DO UPDATE SET last_seen_at=excluded.last_seen_at",
            [(r[0], r[1], str(r[2]), str(r[3])) for r in rows.commit_repositories.values()],
        )
        con.executemany(
            "INSERT OR IGNORE INTO commit_branches VALUES (?,?,?,?)",
            [(r[0], r[1], r[2], str(r[3])) for r in rows.commit_branches.values()],
        )
        con.executemany(
            "INSERT INTO commit_files VALUES (?,?,?,?,?,?) ON CONFLICT(commit_hash, path) "
            "DO UPDATE SET status=excluded.status, lines_added=excluded.lines_added",
            list(rows.commit_files.values()),
        )
        con.executemany(
            "INSERT OR IGNORE INTO story_keys VALUES (?,?,?)", list(rows.story_keys.values())
        )
        con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument(
        "--postgres", metavar="URL", help="also time the sink into this (empty) PostgreSQL database"
    )
    args = parser.parse_args()
    commits = min(args.commits, 200_000)  # bounded
    batches = make_batches(commits, args.batch, args.files)
    rows = count_rows(batches)
    print(f"{commits} commits, batches of {args.batch}, {args.files} files each: {rows} rows/pass")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "sink.db"
        first = asyncio.run(sink_pass(db, batches))
        second = asyncio.run(sink_pass(db, batches))
        raw = raw_pass(Path(tmp) / "raw.db", batches)
        timings = [
            ("database sink, empty database", first),
            ("database sink, re-run (filled)", second),
            ("raw sqlite3 executemany", raw),
        ]
        if args.postgres:
            timings.append(
                (
                    "PostgreSQL sink, empty database",
                    asyncio.run(sink_pass_url(args.postgres, batches)),
                )
            )
            timings.append(
                ("PostgreSQL sink, re-run", asyncio.run(sink_pass_url(args.postgres, batches)))
            )
    for label, seconds in timings:
        print(f"{label:34s} {seconds:7.3f} s  {rows / seconds:10,.0f} rows/s")
    print(f"re-run / first run: {second / first:.2f}x;  sink / raw sqlite3 rate: {raw / first:.2f}")


if __name__ == "__main__":
    main()
