"""What the write-back sinks share: their client, and failing without losing the finding.

A write-back sink runs before the database sink commits the batch (the
cursor-storing sink is written last). So it must never fail the batch: a
refusal from Bitbucket (403 for a token without write scope, 404 for a pull
request deleted meanwhile, retries exhausted) is logged once per repository
and kind, counted as ``writeback.failed``, and the findings are still
stored. Every write is idempotent, so a redelivered job repeats it safely.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from rcingest.bitbucket.config import ClientConfig
from rcingest.compliance.records import ComplianceEvaluation
from rcingest.errors import RcingestError
from rcingest.interfaces import Batch, RunContext, Sink
from rcingest.scanning.records import PullRequestScan

if TYPE_CHECKING:
    from rcingest.bitbucket.client import BitbucketClient

__all__ = ["WriteBackConfig", "WriteBackSink"]


class WriteBackConfig(ClientConfig, kw_only=True):
    """The REST client settings (``base_url``, ``auth`` with write scope) of a write-back sink."""


class WriteBackSink(Sink[Any]):
    """Reports each ``PullRequestScan`` on its pull request; subclasses say how."""

    #: Names this sink's writes in logs and counters (``status``, ``report``, ``comment``).
    kind = "writeback"

    def __init__(self, config: Any, context: RunContext) -> None:
        super().__init__(config, context)
        self._client: BitbucketClient | None = None
        self._warned: set[tuple[str, int | None]] = set()

    async def __aenter__(self) -> WriteBackSink:
        from rcingest.bitbucket.client import BitbucketClient

        client = BitbucketClient(
            self.config, self.context.stats, self.context.logger, secrets=self.context.secrets
        )
        self._client = await client.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> BitbucketClient:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} used outside 'async with'")
        return self._client

    async def write(self, batch: Batch) -> None:
        if self.context.dry_run:
            return
        for record in batch.records:
            if isinstance(record, PullRequestScan):
                try:
                    await self.report(record)
                except RcingestError as exc:
                    self._failed(record, exc)
            elif (
                isinstance(record, ComplianceEvaluation)
                and record.verdict != "not_found"
                and len(record.head) == 40
            ):
                # A pull request that is gone, or a head that could not be
                # resolved, has nowhere to be reported: the database has it.
                try:
                    await self.report_compliance(record)
                except RcingestError as exc:
                    self._failed(record, exc)

    async def report(self, scan: PullRequestScan) -> None:
        raise NotImplementedError

    async def report_compliance(self, evaluation: ComplianceEvaluation) -> None:
        raise NotImplementedError

    @property
    def compliance_key(self) -> str:
        """The compliance verdict's status key (and report id): ``compliance.status_key``."""
        section = self.context.compliance
        key = getattr(section, "status_key", None)
        return key if isinstance(key, str) else "rcingest-compliance"

    def _failed(self, scan: PullRequestScan | ComplianceEvaluation, exc: RcingestError) -> None:
        self.context.stats.incr("writeback.failed")
        self.context.stats.incr(f"writeback.{self.kind}.failed")
        status = getattr(exc, "status", None)
        key = (scan.repository, status)
        hint = ""
        if status in (401, 403):
            hint = getattr(exc, "hint", None) or (
                " (the token needs write access: repository write / pullrequest write scopes)"
            )
        what = "compliance " if isinstance(scan, ComplianceEvaluation) else ""
        message = f"{what}{self.kind} for {scan.repository} PR #{scan.pull_request_id}: {exc}{hint}"
        stored = "evaluation is" if what else "findings are"
        if key in self._warned:
            self.context.logger.info("%s", message)
        else:
            # Once per repository and status at ERROR; the findings are stored regardless.
            self._warned.add(key)
            self.context.logger.error("%s; the %s stored all the same", message, stored)

    def base(self, scan: PullRequestScan | ComplianceEvaluation) -> str:
        return f"/repositories/{scan.repository}"
