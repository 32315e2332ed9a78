"""The ``database`` sink: batches into SQLite or PostgreSQL on one writer thread.

Every database call (open, upgrade, write, cursor reads, close) runs on a
dedicated single-thread executor: one connection, one writer, which is what
SQLite allows and what peewee's thread-local connections expect. The sink is
also the run's cursor store: checkpoints go into ``source_cursors`` in the
same transaction as the rows they cover.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import msgspec

from rcingest.default_plugins.database.checkpointer import WalCheckpointer
from rcingest.default_plugins.database.connect import check_database, redact, scrub
from rcingest.default_plugins.database.rows import Rows, build_rows, utc
from rcingest.errors import RunFailed
from rcingest.interfaces import Batch, ComponentConfig, RunContext, Sink, StateStore
from rcingest.records import Checkpoint

# peewee (and psycopg2) and the modules built on it are imported when a sink is
# built for a run, not when plugins are discovered or a pipeline is validated
# (issue 11: start-up); the methods that run on the writer thread import them.
if TYPE_CHECKING:
    import peewee

T = TypeVar("T")


class DatabaseConfig(ComponentConfig):
    """Settings of the ``database`` sink."""

    #: A SQLite file path (folders created) or ``postgresql://user:pass@host:port/db``.
    database: str = "data/bitbucket/commits.db"
    #: SQLite ``synchronous``: NORMAL survives a killed process in WAL mode; FULL a power loss.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    #: How long a SQLite writer waits for another one before failing.
    busy_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] = 5000


class DatabaseWriteError(RunFailed):
    """A database operation failed; the message names the database, never its password."""


class DatabaseSink(Sink[DatabaseConfig], StateStore):
    """Stores records idempotently and keeps the source cursors."""

    Config = DatabaseConfig

    def __init__(self, config: DatabaseConfig, context: RunContext) -> None:
        from rcingest.default_plugins.database.connect import open_database
        from rcingest.default_plugins.database.models import make_models

        super().__init__(config, context)
        self.where = redact(config.database)
        self.db: peewee.Database
        self.db, password = open_database(
            config.database,
            synchronous=config.synchronous,
            busy_timeout_ms=config.busy_timeout_ms,
        )
        self._secrets = {s for s in context.secrets | ({password} if password else set()) if s}
        # Longest first: a secret that contains another is replaced whole.
        self._ordered_secrets = tuple(sorted(self._secrets, key=len, reverse=True))
        self.models = make_models(self.db)
        self._executor: ThreadPoolExecutor | None = None
        self._records: Counter[str] = Counter()
        self._rows = 0
        self._checkpointer: WalCheckpointer | None = None
        self._run_updated = 0.0
        # Replay mode: the commits and pull requests whose stored story keys
        # this run already replaced (see _write_once).
        self._rekeyed_commits: set[str] = set()
        self._rekeyed_prs: set[tuple[str, int]] = set()

    @classmethod
    def preflight(cls, config: DatabaseConfig, context: RunContext) -> None:
        """``rcingest validate``: what the constructor refuses, without creating folders."""
        check_database(config.database, create_folders=False)

    # -- plumbing ---------------------------------------------------------------

    async def _call(self, action: str, func: Callable[..., T], *args: Any) -> T:
        """Run ``func`` on the writer thread; database errors become one clean message."""
        import peewee

        from rcingest.default_plugins.database.schema import SchemaError

        if self._executor is None:
            raise DatabaseWriteError(f"database {self.where}: the sink is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, func, *args)
        except SchemaError as exc:
            raise SchemaError(scrub(str(exc), self._secrets)) from None
        except (peewee.PeeweeException, OSError) as exc:
            # psycopg2 errors are re-raised by peewee as its own classes; the
            # driver's text is scrubbed in case it echoes a connection string.
            detail = scrub(f"{type(exc).__name__}: {exc}".strip(), self._secrets)
            raise DatabaseWriteError(f"database {self.where}: {action} failed: {detail}") from None

    def _clean(self, text: str) -> str:
        """``text`` without secret values (a token pasted into a commit message)."""
        for secret in self._ordered_secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def _run_row(self) -> dict[str, Any]:
        ctx = self.context
        counts: dict[str, Any] = dict(sorted(self._records.items()))
        counts["rows"] = self._rows
        window = ctx.window
        return {
            "status": ctx.status,
            "counts": json.dumps(counts, sort_keys=True),
            "window_start": utc(window.start) if window else None,
            "window_end": utc(window.end) if window else None,
        }

    # -- writer-thread bodies ---------------------------------------------------

    def _sqlite_file(self) -> str | None:
        import peewee

        if isinstance(self.db, peewee.SqliteDatabase) and self.db.database != ":memory:":
            return str(self.db.database)
        return None

    def _open(self) -> tuple[int | None, int]:
        from rcingest.default_plugins.database.runs import HOST, mark_dead_runs
        from rcingest.default_plugins.database.schema import ensure_schema

        self.db.connect(reuse_if_open=True)
        if self._sqlite_file() is not None:
            # Checkpoints run on their own thread (checkpointer.py), not inside commits.
            self.db.execute_sql("PRAGMA wal_autocheckpoint=0")  # type: ignore[no-untyped-call]
        found, now = ensure_schema(self.db, self.models, self.where)
        ctx = self.context
        run = self.models.runs
        for dead in mark_dead_runs(run, datetime.now(UTC).replace(tzinfo=None), ctx.run_id):
            ctx.logger.warning(
                "database %s: run %s was still marked running, but its process is gone: "
                "marked interrupted",
                self.where,
                dead,
            )
        row = {
            "id": ctx.run_id,
            "host": HOST,
            "pid": os.getpid(),
            "pipeline": ctx.pipeline_name,
            "source_id": ctx.source_id,
            "mode": ctx.mode,
            "git_sha": ctx.git_sha,
            "started_at": utc(ctx.started_at),
            "finished_at": None,
            **self._run_row(),
            "status": "running",
        }
        run.insert(**row).on_conflict(
            conflict_target=[run.id], update={run.status: "running", run.finished_at: None}
        ).execute()
        return found, now

    def _connected(self) -> None:
        """Reconnect if the connection broke (a PostgreSQL restart under a daemon)."""
        if not self.db.is_connection_usable():
            if not self.db.is_closed():
                self.db.close()
            self.db.connect()

    def _update_run(self, **extra: Any) -> None:
        run = self.models.runs
        values = {getattr(run, k): v for k, v in {**self._run_row(), **extra}.items()}
        run.update(values).where(run.id == self.context.run_id).execute()

    def _write(self, batch: Batch) -> int:
        import peewee

        self._connected()
        try:
            return self._write_once(batch)
        except (peewee.OperationalError, peewee.InterfaceError):
            if not isinstance(self.db, peewee.PostgresqlDatabase) or self._alive():
                raise
        # The server dropped the connection (a restart, a failover): the
        # transaction never committed, so writing the batch again is safe.
        self.context.logger.warning("database %s: connection lost, reconnecting", self.where)
        self.db.close()
        self.db.connect()
        return self._write_once(batch)

    def _alive(self) -> bool:
        import peewee

        try:
            self.db.execute_sql("SELECT 1")  # type: ignore[no-untyped-call]
        except peewee.PeeweeException:
            return False
        return True

    def _write_once(self, batch: Batch) -> int:
        from rcingest.default_plugins.database.writer import Rekey, write_rows

        rows: Rows = build_rows(
            batch.records,
            batch.checkpoints,
            self.context.source_id,
            datetime.now(UTC),
            self._clean if self._secrets else None,
        )
        before = (self._records.copy(), self._rows)
        self._records.update(rows.records)
        self._rows += rows.total()
        replace: Rekey | None = None
        if self.context.mode == "replay":
            # `rcingest replay` re-derives keys (perhaps under a new grammar):
            # a commit's or pull request's stored keys are replaced the first
            # time this run writes it, then added to like any run's, so keys
            # lent by two branches in two deliveries both stay.
            replace = Rekey(
                commits=[h for h in rows.commits if h not in self._rekeyed_commits],
                pull_requests=[k for k in rows.pull_requests if k not in self._rekeyed_prs],
            )
        try:
            # The runs row keeps the status "running" while the run goes on, but
            # its counts follow every batch, in the batch's own transaction.
            n = write_rows(self.db, self.models, rows, after=self._after_batch(), rekey=replace)
        except BaseException:
            self._records, self._rows = before
            raise
        if replace is not None:  # only once committed: a failed batch replaces again
            self._rekeyed_commits.update(replace.commits)
            self._rekeyed_prs.update(replace.pull_requests)
        if self._checkpointer is not None:
            self._checkpointer.reset_if_offered(self.db.connection())  # type: ignore[no-untyped-call]
        return n

    def _after_batch(self) -> Callable[[], None] | None:
        """The ``runs`` update to make in this batch's transaction, if any.

        A scan updates its counts with every batch. A daemon writes many small
        batches (one per burst of deliveries), so its counts follow at most
        once a second; the final counts are written when it stops.
        """
        now = time.monotonic()
        if self.context.mode == "serve" and now - self._run_updated < 1.0:
            return None
        self._run_updated = now
        return lambda: self._update_run(status="running")

    def _close(self, finish: bool) -> None:
        try:
            if finish and not self.db.is_closed():
                self._update_run(finished_at=utc(datetime.now(UTC)))
        finally:
            self.db.close()

    def _load(self, source_id: str) -> dict[str, dict[str, Any]]:
        self._connected()
        cur = self.models.source_cursors
        out: dict[str, dict[str, Any]] = {}
        for row in cur.select().where(cur.source_id == source_id).order_by(cur.stream):
            state = json.loads(row.state)
            if isinstance(state, dict):
                out[row.stream] = state
        return out

    def _save(self, source_id: str, checkpoints: Sequence[Checkpoint]) -> None:
        from rcingest.default_plugins.database.writer import write_rows

        self._connected()
        rows = build_rows((), checkpoints, source_id, datetime.now(UTC))
        write_rows(self.db, self.models, rows)

    # -- Sink -------------------------------------------------------------------

    async def __aenter__(self) -> DatabaseSink:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rcingest-db")
        try:
            found, now = await self._call("opening", self._open)
        except BaseException:
            await self._shutdown(finish=False)
            raise
        path = self._sqlite_file()
        if path is not None:
            self._checkpointer = WalCheckpointer(path, busy_timeout_ms=self.config.busy_timeout_ms)
            self._checkpointer.start()
        if found is not None and found != now:
            self.context.logger.warning(
                "database %s: schema upgraded from version %s to %s", self.where, found, now
            )
        self.context.logger.info("database %s: schema version %s", self.where, now)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown(finish=True, quiet=exc_type is not None)

    async def _shutdown(self, *, finish: bool, quiet: bool = False) -> None:
        if self._checkpointer is not None:
            checkpointer, self._checkpointer = self._checkpointer, None
            await asyncio.get_running_loop().run_in_executor(None, checkpointer.stop)
        if self._executor is None:
            return
        try:
            await self._call("closing", self._close, finish)
        except RunFailed as exc:
            if not quiet:
                raise
            # The run already failed; its own error is the one to report.
            self.context.logger.error("%s", exc)
        finally:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)

    async def write(self, batch: Batch) -> None:
        """Write ``batch`` and its checkpoints in one transaction (durable on return)."""
        if not batch.records and not any(cp.state is not None for cp in batch.checkpoints):
            return
        n = await self._call("writing a batch", self._write, batch)
        self.context.stats.incr("database.rows", n)
        self.context.stats.incr("database.batches")

    async def flush(self) -> None:
        """Nothing to do: ``write`` commits before it returns."""
        return None

    # -- StateStore -------------------------------------------------------------

    async def load_cursors(self, source_id: str) -> dict[str, dict[str, Any]]:
        """The last saved state of each stream of ``source_id``."""
        return await self._call("reading cursors", self._load, source_id)

    async def save_cursors(self, source_id: str, checkpoints: Sequence[Checkpoint]) -> None:
        """Save checkpoints on their own (the runner does not call this: ``write`` does it)."""
        await self._call("saving cursors", self._save, source_id, list(checkpoints))
