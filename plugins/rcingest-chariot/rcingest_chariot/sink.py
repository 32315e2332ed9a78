"""The ``chariot`` sink: repositories → assets and attributes, secret findings → risks.

``write()`` decides what has to change (``planner.py``) and queues it in the
state file's outbox in one transaction; it sends nothing. ``flush()`` sends
what is due (``sender.py``) and returns normally when Chariot is down: the
queued changes are durable, which is what a flush promises, and the next
flush or run delivers them. Other record types pass through untouched.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from rcingest.errors import ConfigError
from rcingest.interfaces import Batch, ComponentConfig, RunContext, Sink
from rcingest.records import Repository, RepositoryScan
from rcingest_chariot.credentials import (
    Credentials,
    CredentialsError,
    HalfKeyError,
    resolve,
)
from rcingest_chariot.planner import Planner
from rcingest_chariot.sender import Sender
from rcingest_chariot.state import StateDB

if TYPE_CHECKING:
    from rcingest_chariot.client import ChariotClient

__all__ = ["ChariotConfig", "ChariotSink"]

DAY = 86400.0
Positive = Annotated[float, msgspec.Meta(gt=0)]


class ChariotConfig(ComponentConfig):
    #: Chariot API base URL; else CHARIOT_API, PRAETORIAN_CLI_API, the keychain, the US API.
    api: str | None = None
    #: API key id and secret (use ``${VAR}``); else CHARIOT_KEY_ID/CHARIOT_KEY_SECRET,
    #: PRAETORIAN_CLI_API_KEY_ID/_SECRET, or the keychain profile.
    key_id: str | None = None
    key_secret: str | None = None
    #: Tenant to act in (the ``account`` header); else CHARIOT_ACCOUNT or the keychain.
    account: str | None = None
    #: praetorian-cli keychain INI and its section; else CHARIOT_KEYCHAIN/CHARIOT_PROFILE,
    #: ``~/.praetorian/keychain.ini`` and ``United States``.
    keychain: str | None = None
    profile: str | None = None
    #: The SQLite file with what was sent and the outbox of what is still to send.
    state_file: str = "data/chariot/state.db"
    #: Requests in flight at most.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    #: A repository the source's filters kept out: asset status ``F`` (frozen), or
    #: ``keep``: leave Chariot's asset as it is (and stop keeping it alive).
    filtered_status: Literal["F", "keep"] = "F"
    #: Re-send what is kept alive once its last send is this old (Chariot's TTL: 30 days).
    ttl_days: Annotated[float, msgspec.Meta(gt=0, lt=30)] = 25.0
    #: Seconds per request; tries per request and seconds for all of them (429/5xx/timeouts).
    timeout: Positive = 60.0
    max_tries: Annotated[int, msgspec.Meta(ge=1)] = 5
    max_time: Positive = 120.0
    #: Backoff between tries: exponential from ``backoff_base`` up to ``backoff_max`` seconds.
    backoff_base: Positive = 1.0
    backoff_max: Positive = 30.0
    #: Seconds before a later flush tries again what Chariot could not take (doubling, ≤ 1 h).
    retry_interval: Positive = 60.0
    #: Put the changes Chariot refused (400/403/404) back in the queue when the sink opens.
    retry_parked: bool = False
    #: Web URL of a repository a record carries no ``web_url`` for: ``{web_base}/{full_name}``.
    web_base: str = "https://bitbucket.org"
    #: The ``source`` of the risks this sink opens.
    risk_source: str = "rcingest-secrets"


class ChariotSink(Sink[ChariotConfig]):
    """Keeps Chariot's repository assets, attributes and secret risks in step with the records."""

    Config = ChariotConfig

    def __init__(
        self,
        config: ChariotConfig,
        context: RunContext,
        *,
        clock: Callable[[], float] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(config, context)
        self.clock: Callable[[], float] = clock or time.time
        self.environ = os.environ if environ is None else environ
        self.logger = context.logger.getChild("chariot")
        if config.backoff_max < config.backoff_base:
            raise ConfigError("backoff_max: must not be below backoff_base")
        if config.api is not None and not config.api.startswith(("https://", "http://")):
            raise ConfigError(f"api: expected an http(s) URL, got {config.api!r}")
        # What can be checked without the disk (the keychain is read in __aenter__).
        try:
            self._credentials: Credentials | None = self._resolve(read_keychain=False)
        except HalfKeyError as exc:
            raise ConfigError(str(exc)) from None
        except CredentialsError:
            self._credentials = None  # perhaps in the keychain: looked for when opening
        self.state = StateDB(Path(config.state_file))
        self.client: ChariotClient | None = None
        self.sender: Sender | None = None
        self._closed_counts = {"pending": 0, "parked": 0}
        self._secrets = sorted((s for s in context.secrets if s), key=len, reverse=True)
        self.planner = Planner(
            self.state,
            web_base=config.web_base,
            filtered_status=config.filtered_status,
            risk_source=config.risk_source,
            mask=self._mask,
            clock=self.clock,
            stats=context.stats,
            logger=self.logger,
        )

    def _resolve(self, *, read_keychain: bool) -> Credentials:
        c = self.config
        return resolve(
            self.environ,
            api=c.api,
            key_id=c.key_id,
            key_secret=c.key_secret,
            account=c.account,
            keychain=c.keychain,
            profile=c.profile,
            read_keychain=read_keychain,
        )

    def _mask(self, text: str) -> str:
        """``text`` with the run's secrets (``context.secrets``) as ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def __aenter__(self) -> ChariotSink:
        if self._credentials is None:
            try:
                self._credentials = self._resolve(read_keychain=True)
            except CredentialsError as exc:
                raise ConfigError(str(exc)) from None
        # Imported here: aiohttp is heavy, and `rcingest --help` or `validate` imports
        # every plugin's sink module (rcingest's start-up rule, tests/test_startup.py).
        from rcingest_chariot.client import ChariotClient

        c = self.config
        self.client = ChariotClient(
            self._credentials,
            concurrency=c.concurrency,
            timeout=c.timeout,
            max_tries=c.max_tries,
            max_time=c.max_time,
            backoff_base=c.backoff_base,
            backoff_max=c.backoff_max,
            clock=self.clock,
            stats=self.context.stats,
            logger=self.logger,
            secrets=frozenset(self._secrets),
        )
        self.state.open()
        try:
            if c.retry_parked and (n := self.state.unpark()):
                self.logger.info("chariot: %d parked changes queued again (retry_parked)", n)
            await self.client.__aenter__()
        except BaseException:
            self.state.close()
            raise
        self.sender = Sender(
            self.state,
            self.client,
            clock=self.clock,
            stats=self.context.stats,
            logger=self.logger,
            ttl_margin=c.ttl_days * DAY,
            retry_interval=c.retry_interval,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.sender is not None:
                await self.sender.flush()
        finally:
            if self.client is not None:
                await self.client.close()
            if self.sender is not None:
                counts = self._closed_counts = self.state.counts()
                stats = self.context.stats
                stats.incr("chariot.pending", counts["pending"])
                stats.incr("chariot.parked_total", counts["parked"])
                if counts["pending"] or counts["parked"]:
                    self.logger.warning(
                        "chariot: %d changes still queued, %d parked in %s",
                        counts["pending"],
                        counts["parked"],
                        self.state.path,
                    )
            self.state.close()
            self.sender = None

    async def write(self, batch: Batch) -> None:
        records = [r for r in batch.records if isinstance(r, Repository | RepositoryScan)]
        if not records:
            return
        # One transaction: either every change of the batch is queued or none is.
        with self.state.transaction():
            for record in records:
                if isinstance(record, Repository):
                    self.planner.repository(record)
                else:
                    self.planner.scan(record)

    async def flush(self) -> None:
        assert self.sender is not None, "flush() outside 'async with'"
        await self.sender.flush()

    def outbox(self) -> dict[str, int]:
        """Changes queued (``pending``) and refused (``parked``); after close, as they were then."""
        return self.state.counts() if self.sender is not None else dict(self._closed_counts)
