"""``CommitStorage``: the database sink of ``rcingest serve``, owned by one background loop.

The engine is async (the database sink runs every statement on its own
writer thread and is driven from an asyncio loop); a web application may be
synchronous (Flask) or async on a loop the storage does not own (FastAPI,
aiohttp). One design serves all three: the storage starts **one** event
loop on **one** daemon thread, the first time it is used, and every write
and read is submitted to it with :func:`asyncio.run_coroutine_threadsafe`.
A Flask view waits on the returned future; an async view awaits it with
:func:`asyncio.wrap_future`, so its own loop never blocks on the database.
No loop is created per request, and the sink always lives on the loop that
opened it, whichever framework (or how many) submit to it.

What is stored, and how, is exactly what ``rcingest serve`` stores: the
records go through the ``story_keys`` enricher (default settings) and into
the ``database`` sink (same schema, same upserts, same scrubbing of secrets),
and a repeated ``X-Request-UUID`` is answered ``duplicate`` while its records
are upserted again (which refreshes their ``last_seen_at``, nothing else).
Given REST credentials (``api=``), the daemon's backfill queue and worker
run on the same loop (``backfill.py``).

``close()`` refuses new writes, waits for those already submitted, then
closes the sink (which marks its ``runs`` row finished). It is registered to
run at interpreter exit, before the executors' own exit hooks, so a server
stopped with SIGTERM/Ctrl-C loses no acknowledged write and no pending one.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from rcingest.bitbucket.auth import auth_header, auth_secrets
from rcingest.bitbucket.client import ClientConfig
from rcingest.default_plugins.database.connect import redact, scrub
from rcingest.default_plugins.database.sink import DatabaseConfig, DatabaseSink
from rcingest.default_plugins.story_keys import StoryKeysConfig, StoryKeysEnricher
from rcingest.embed.backfill import Backfill
from rcingest.embed.reads import (
    StoredCommit,
    StoredFile,
    StoredStoryKey,
    read_commit,
    read_files,
    read_story_keys,
)
from rcingest.interfaces import Batch, RunContext
from rcingest.records import Record
from rcingest.runtime import new_run_id
from rcingest.webhooks.decode import Decoded
from rcingest.webhooks.intake import Closed, RecentDeliveries

__all__ = ["Closed", "CommitStorage"]

T = TypeVar("T")
log = logging.getLogger("rcingest.embed")

#: Seconds ``close()`` waits for submitted writes, then for the sink to close.
CLOSE_TIMEOUT = 30.0


def _at_exit(func: Callable[[], None]) -> None:
    """Run ``func`` at exit before ``concurrent.futures`` joins its workers.

    ``atexit`` handlers run after that join, when the sink's writer thread
    refuses new work: a drain registered there could not write. The private
    hook exists since 3.9; plain ``atexit`` is the fallback.
    """
    hook = getattr(threading, "_register_atexit", None)
    try:
        if hook is not None:
            hook(func)
            return
    except RuntimeError:  # already shutting down
        pass
    atexit.register(func)


class CommitStorage:
    """Durable storage of webhook deliveries, and a small read API over it.

    ``database`` is a SQLite path (folders are created) or a
    ``postgresql://`` URL, as the ``database`` sink takes. ``story_keys``
    configures the enricher (strict mode, default ignore list when None).
    ``api`` (REST settings with credentials in ``auth``) turns on backfill:
    truncated pushes are completed and pull requests' commits fetched, with
    the durable queue in ``backfill_queue``. Nothing is opened until the
    first write or read.
    """

    def __init__(
        self,
        database: str | os.PathLike[str] = "data/bitbucket/commits.db",
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        story_keys: StoryKeysConfig | None = None,
        logger: logging.Logger | None = None,
        api: ClientConfig | None = None,
        backfill_queue: str | os.PathLike[str] = "data/bitbucket/webhook-backfill.db",
        backfill_retry_delay: float = 5.0,
    ) -> None:
        self.config = DatabaseConfig(database=os.fspath(database), synchronous=synchronous)
        self.where = redact(self.config.database)
        self.logger = logger or log
        self._story_keys = story_keys or StoryKeysConfig()
        self._secrets: set[str] = set()
        self._api = api if api is not None and auth_header(api.auth) is not None else None
        if self._api is not None:
            self._secrets |= auth_secrets(self._api.auth)
        self._backfill_queue = Path(backfill_queue)
        self._backfill_retry_delay = backfill_retry_delay
        self._backfill: Backfill | None = None
        self._lock = threading.Lock()
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sink: DatabaseSink | None = None
        self._context: RunContext | None = None
        self._enricher: StoryKeysEnricher | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._recent = RecentDeliveries()
        # A bad URL or option fails here, with the database named, not at the first request.
        DatabaseSink.preflight(self.config, self._new_context())

    def __repr__(self) -> str:
        return f"CommitStorage({self.where!r}, {self._state})"

    def protect(self, secret: str) -> None:
        """Keep ``secret`` out of every stored value (the sink replaces it with ``***``)."""
        with self._lock:
            self._secrets.add(secret)
            if self._sink is not None:
                # Already open: the sink's own set, longest first (see DatabaseSink).
                self._sink._secrets.add(secret)
                self._sink._ordered_secrets = tuple(
                    sorted(self._sink._secrets, key=len, reverse=True)
                )

    def scrub(self, text: str) -> str:
        """``text`` without the protected secrets (for a log line or an answer)."""
        return scrub(text, frozenset(self._secrets))

    # -- lifecycle --------------------------------------------------------------

    def _new_context(self) -> RunContext:
        now = datetime.now(UTC)
        return RunContext(
            run_id=new_run_id(now),
            pipeline_name="embedded",
            timezone=ZoneInfo("UTC"),
            started_at=now,
            base_dir=Path.cwd(),
            source_id="embedded:bitbucket_webhook",
            mode="serve",
            secrets=frozenset(self._secrets),
            logger=self.logger,
        )

    def open(self) -> CommitStorage:
        """Start the loop thread and open the database (done by the first use anyway)."""
        with self._lock:
            if self._state == "open":
                return self
            if self._state != "new":
                raise Closed(f"the storage of {self.where} is closed")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="rcingest-embed", daemon=True)
            thread.start()
            context = self._new_context()
            sink = DatabaseSink(self.config, context)
            self._loop, self._sink, self._context = loop, sink, context
            try:
                asyncio.run_coroutine_threadsafe(self._start(context), loop).result()
            except BaseException:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
                loop.close()
                self._loop = self._sink = self._context = None
                raise
            self._thread = thread
            self._state = "open"
        _at_exit(self.close)
        return self

    async def _start(self, context: RunContext) -> None:
        """On the storage loop: the sink, the enricher, and backfill when configured."""
        assert self._sink is not None
        await self._sink.__aenter__()
        self._enricher = StoryKeysEnricher(self._story_keys, context)
        if self._api is None:
            return
        backfill = Backfill(
            self._api,
            self._backfill_queue,
            self._deliver,
            stats=context.stats,
            logger=self.logger,
            secrets=frozenset(self._secrets),
            retry_delay=self._backfill_retry_delay,
        )
        try:
            await backfill.start()
        except BaseException:
            context.status = "failed"
            await self._sink.__aexit__(None, None, None)
            raise
        self._backfill = backfill

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Refuse new writes, finish the submitted ones, close the database. Idempotent."""
        with self._lock:
            if self._state != "open":
                self._state = "closed"
                return
            self._state = "closing"
            pending = list(self._pending)
        loop, sink, context = self._loop, self._sink, self._context
        assert loop is not None and sink is not None and context is not None
        try:
            _, not_done = concurrent.futures.wait(pending, timeout)
            if not_done:
                self.logger.error(
                    "database %s: %d writes still running after %.0f s at close",
                    self.where,
                    len(not_done),
                    timeout,
                )
            if self._backfill is not None:
                # Before the sink: the worker may be handing records over.
                asyncio.run_coroutine_threadsafe(self._backfill.stop(), loop).result(timeout)
            context.status = "succeeded"
            future = asyncio.run_coroutine_threadsafe(sink.__aexit__(None, None, None), loop)
            future.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
            if not loop.is_running():
                loop.close()
            with self._lock:
                self._state = "closed"

    def __enter__(self) -> CommitStorage:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------

    def submit(self, decoded: Decoded) -> concurrent.futures.Future[str]:
        """Store one accepted delivery; the future gives ``stored`` or ``duplicate``.

        Thread-safe, from any thread or loop. Raises :class:`Closed` once
        ``close()`` has begun; the future raises the sink's error (its
        message names the database, never its password) when the write fails.
        """
        return self._submit(self._store(decoded))

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self._state == "new":
            try:
                self.open()
            except BaseException:
                coro.close()  # never scheduled: no "never awaited" warning
                raise
        with self._lock:
            if self._state != "open" or self._loop is None:
                coro.close()
                raise Closed(f"the storage of {self.where} is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    async def _store(self, decoded: Decoded) -> str:
        delivery = decoded.delivery
        repeat = delivery.request_uuid in self._recent
        backfill = self._backfill if decoded.jobs and not repeat else None
        if backfill is not None:
            # Recorded durably before the answer, as `rcingest serve` does.
            await backfill.add(decoded.jobs)
        elif decoded.truncated and not repeat:
            # No credentials: the payload's commits are all that is known.
            delivery.outcome = "truncated"
        await self._write([*decoded.records, delivery])
        self._recent.add(delivery.request_uuid)
        if backfill is not None:
            backfill.wake()
        return "duplicate" if repeat else "stored"

    async def _write(self, records: list[Record]) -> None:
        sink, enricher = self._sink, self._enricher
        assert sink is not None and enricher is not None
        await sink.write(Batch(records=[enricher.enrich(r) for r in records]))

    async def _deliver(self, records: list[Record]) -> bool:
        """The backfill worker's hand-over: True once written (False: it retries later)."""
        try:
            await self._write(records)
        except Exception as exc:
            self.logger.error("backfill records not stored: %s", self.scrub(str(exc)))
            return False
        return True

    # -- reading ----------------------------------------------------------------

    def _read(self, action: str, func: Callable[..., T], commit_hash: str) -> T:
        async def call() -> T:
            sink = self._sink
            assert sink is not None
            # The sink's writer thread holds the connection; reads queue behind writes.
            return await sink._call(action, func, sink.models, commit_hash)

        return self._submit(call()).result()

    def commit(self, commit_hash: str) -> StoredCommit | None:
        """The stored commit ``commit_hash`` with its repositories and branches, or None."""
        return self._read("reading a commit", read_commit, commit_hash)

    def story_keys(self, commit_hash: str) -> list[StoredStoryKey]:
        """The Jira keys stored for ``commit_hash``, with their origins."""
        return self._read("reading story keys", read_story_keys, commit_hash)

    def files(self, commit_hash: str) -> list[StoredFile]:
        """The files stored for ``commit_hash`` (webhook payloads carry none)."""
        return self._read("reading files", read_files, commit_hash)
