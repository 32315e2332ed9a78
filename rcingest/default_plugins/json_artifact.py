"""The ``json_artifact`` sink: one JSON file of evidence per run, or per hour when serving.

A run writes ``scan_<run_id>.json`` when it ends, whatever its status. In
serve mode the sink rolls ``webhook_<YYYYMMDDTHH>.json`` (hour in the
pipeline's zone, window = that hour) when the hour changes and at exit; a
daemon restarted within an hour continues that hour's file.

Memory stays bounded: commit summaries are spooled to disk as they arrive
and the file is streamed from the spool and replaced atomically
(``artifact_spool.py``). A commit seen twice has one summary, its sightings
merged as the database merges its rows. Strings are scrubbed: configured
secrets and URL passwords become ``***``. Pull-request scans and compliance
evaluations are few per run and kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import msgspec

from rcingest.artifact import (
    ArtifactCompliance,
    ArtifactFile,
    ArtifactFinding,
    ArtifactRuleOutcome,
    ArtifactScan,
    ArtifactSource,
    ArtifactWindow,
    CommitAuthor,
    CommitSummary,
    RunArtifact,
    SummaryStoryKey,
)
from rcingest.compliance.facts import PullRequestFacts
from rcingest.default_plugins.artifact_spool import (
    SCHEMA_COPY_NAME,
    Period,
    refresh_schema_copy,
    write_streamed,
)
from rcingest.hookspecs import RegisterSink, hookimpl
from rcingest.interfaces import Batch, ComponentConfig, RunContext, Sink
from rcingest.records import (
    Commit,
    ComplianceEvaluation,
    PullRequest,
    PullRequestScan,
    Record,
    Repository,
    WebhookDelivery,
)
from rcingest.runtime import redact

_encode = msgspec.json.Encoder().encode
Status = Literal["running", "succeeded", "failed", "interrupted"]
_decode_artifact = msgspec.json.Decoder(RunArtifact).decode
_decode_summary = msgspec.json.Decoder(CommitSummary).decode


class _Period(Period):
    """A period that also keeps the latest compliance evaluation per pull request."""

    def __init__(self, name: str, window: ArtifactWindow | None, stats: dict[str, int]) -> None:
        super().__init__(name, window, stats)
        self.compliance: dict[tuple[str, int], ArtifactCompliance] = {}

    def continue_from(self, old: RunArtifact) -> None:
        super().continue_from(old)
        for ev in old.compliance_evaluations:
            self.compliance.setdefault((ev.repository, ev.pull_request_id), ev)


def _same_head(a: str, b: str) -> bool:
    """One head, perhaps once as a payload's 12-character hash and once in full."""
    return a == b or (min(len(a), len(b)) >= 7 and (a.startswith(b) or b.startswith(a)))


class JsonArtifactConfig(ComponentConfig):
    """Settings of the ``json_artifact`` sink."""

    #: Folder for the artifacts (created); relative to the working directory.
    artifacts_dir: str = "artifacts/issues/wave3/bitbucket"
    #: Include the commit summaries; false writes counts only (``payload: []``).
    include_payload: bool = True


class JsonArtifactSink(Sink[JsonArtifactConfig]):
    """Writes the run's JSON artifact (or the daemon's hourly ones)."""

    Config = JsonArtifactConfig

    def __init__(self, config: JsonArtifactConfig, context: RunContext) -> None:
        super().__init__(config, context)
        self.dir = Path(config.artifacts_dir).expanduser()
        self.serve = context.mode == "serve"
        self.written: list[Path] = []
        #: The clock; tests replace it to cross hour boundaries.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._period: _Period | None = None
        self._lock = asyncio.Lock()
        self._roller: asyncio.Task[None] | None = None
        self._stats_mark: dict[str, int] = {}

    # -- periods ----------------------------------------------------------------

    def _hour(self, moment: datetime) -> tuple[str, ArtifactWindow]:
        local = moment.astimezone(self.context.timezone)
        start = local.replace(minute=0, second=0, microsecond=0)
        end = (start.astimezone(UTC) + timedelta(hours=1)).astimezone(self.context.timezone)
        return f"webhook_{start:%Y%m%dT%H}.json", ArtifactWindow(start, end)

    def _open_period(self) -> _Period:
        # Stats count from the moment the previous period closed (or the sink
        # opened), so requests between two hours' traffic are not lost.
        stats = self._stats_mark
        if not self.serve:
            return _Period(f"scan_{self.context.run_id}.json", None, stats)
        name, window = self._hour(self.clock())
        period = _Period(name, window, stats)
        existing = self.dir / name
        if existing.exists():
            try:
                period.continue_from(_decode_artifact(existing.read_bytes()))
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.context.logger.warning("%s: not continued, replaced: %s", existing, exc)
        return period

    def _finish(self, period: _Period, status: Status) -> Path:
        ctx = self.context
        window = period.window
        if window is None and ctx.window is not None:
            window = ArtifactWindow(ctx.local(ctx.window.start), ctx.local(ctx.window.end))
        header = RunArtifact(
            kind="webhook" if self.serve else "scan",
            run_id=ctx.run_id,
            pipeline=ctx.pipeline_name,
            git_sha=ctx.git_sha,
            timezone=str(ctx.timezone.key),
            generated_at=ctx.local(self.clock()),
            window=window,
            source=self._source(),
            counts=period.counts(ctx.stats.snapshot()),
            status=status,
            pull_request_scans=sorted(
                period.scans.values(), key=lambda a: (a.repository, a.pull_request_id, a.head)
            ),
            compliance_evaluations=[period.compliance[k] for k in sorted(period.compliance)],
            payload=[],
        )
        path = self.dir / period.name
        try:
            write_streamed(path, header, period.payload_lines())
        finally:
            period.close()
        self.written.append(path)
        ctx.logger.info("artifact written: %s", path)
        if refresh_schema_copy(self.dir):
            ctx.logger.info("schema written: %s", self.dir / SCHEMA_COPY_NAME)
        return path

    def _source(self) -> ArtifactSource:
        info = dict(self.context.source_info)

        def strings(value: Any) -> list[str]:
            if isinstance(value, str):
                return [self._clean(value)]
            if isinstance(value, dict):
                value = list(value)
            if isinstance(value, list | tuple | set):
                return [self._clean(str(v)) for v in value]
            return []

        source_type = info.pop("type", None)
        workspace = info.pop("workspace", None)
        extra: dict[str, str | int | float | bool | None] = {}
        for key, value in info.items():
            if key in ("repositories", "branches"):
                continue
            if value is None or isinstance(value, bool | int | float):
                extra[key] = value
            else:
                extra[key] = self._clean(str(value))
        return ArtifactSource(
            type=self._clean(str(source_type)) if source_type is not None else None,
            workspace=self._clean(str(workspace)) if workspace is not None else None,
            repositories=strings(info.get("repositories")),
            branches=strings(info.get("branches")),
            extra=extra,
        )

    def _clean(self, text: str) -> str:
        if not self.context.secrets and "://" not in text:
            return text
        return redact(text, self.context.secrets)

    def _summary(self, c: Commit) -> CommitSummary:
        clean = self._clean
        return CommitSummary(
            hash=c.hash,
            repository=clean(c.repository),
            branches=[clean(b) for b in c.branches],
            author=CommitAuthor(
                raw=clean(c.author_raw),
                name=clean(c.author_name) if c.author_name is not None else None,
                account_id=clean(c.author_account_id) if c.author_account_id is not None else None,
            ),
            date=self.context.local(c.date),
            summary=clean(c.summary),
            files_changed=None if c.files is None else len(c.files),
            files=None
            if c.files is None
            else [
                ArtifactFile(
                    path=clean(f.path),
                    status=f.status,
                    old_path=clean(f.old_path) if f.old_path is not None else None,
                    lines_added=f.lines_added,
                    lines_removed=f.lines_removed,
                )
                for f in c.files
            ],
            story_keys=[
                SummaryStoryKey(k.key, list(k.origins), list(k.branches)) for k in c.story_keys
            ],
        )

    def _add(self, period: _Period, records: Iterable[Record]) -> None:
        for record in records:
            if isinstance(record, Commit):
                period.add_summary(self._summary(record), self.config.include_payload)
            elif isinstance(record, PullRequest):
                period.pull_requests.add((record.repository, record.id))
                period.repositories.add(self._clean(record.repository))
                period.keys.update(k.key for k in record.story_keys)
            elif isinstance(record, Repository):
                period.repositories.add(self._clean(record.full_name))
            elif isinstance(record, PullRequestScan):
                self._add_scan(period, record)
            elif isinstance(record, ComplianceEvaluation):
                self._add_compliance(period, record)
            elif isinstance(record, WebhookDelivery):
                period.deliveries.add(record.request_uuid)
                if record.repository:
                    period.repositories.add(self._clean(record.repository))

    def _add_scan(self, period: Period, scan: PullRequestScan) -> None:
        key = (scan.repository, scan.pull_request_id, scan.head)
        if scan.state == "scanning" and key in period.scans:
            return  # a "started" never hides the result of the same head
        period.repositories.add(self._clean(scan.repository))
        period.scans[key] = ArtifactScan(
            repository=self._clean(scan.repository),
            pull_request_id=scan.pull_request_id,
            head=scan.head,
            state=scan.state,
            scanned_at=self.context.local(scan.scanned_at),
            reason=None if scan.reason is None else self._clean(scan.reason),
            findings=[
                ArtifactFinding(
                    path=self._clean(f.path),
                    line_start=f.line_start,
                    line_end=f.line_end,
                    rule_id=f.rule_id,
                    rule_name=f.rule_name,
                    severity=f.severity,
                    fingerprint=f.fingerprint,
                    excerpt=self._clean(f.excerpt),
                    scanner=f.scanner,
                )
                for f in scan.findings
            ],
            allowed=list(scan.allowed),
            scanners=list(scan.scanners),
        )

    def _scrubbed(self, value: Any) -> Any:
        """``value`` (builtins) with every string cleaned and every time in the pipeline's zone."""
        if isinstance(value, str):
            return self._clean(value)
        if isinstance(value, datetime):
            return self.context.local(value)
        if isinstance(value, dict):
            return {self._clean(str(k)): self._scrubbed(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrubbed(v) for v in value]
        return value

    def _add_compliance(self, period: _Period, ev: ComplianceEvaluation) -> None:
        """Keep the latest evaluation per pull request; a frozen one (the merge's) stays.

        As in the database: a non-frozen evaluation never replaces a frozen
        one, nor does a second frozen one at the same head; an evaluation
        older than the kept one (a late delivery) does not replace it.
        """
        key = (ev.repository, ev.pull_request_id)
        kept = period.compliance.get(key)
        when = self.context.local(ev.evaluated_at)
        if kept is not None:
            if kept.frozen and (not ev.frozen or _same_head(kept.head, ev.head)):
                return
            if not ev.frozen and when < kept.evaluated_at:
                return
        clean, builtins = self._clean, (datetime,)

        def opt(text: str | None) -> str | None:
            return None if text is None else clean(text)

        facts = None
        if ev.facts is not None:
            data = self._scrubbed(msgspec.to_builtins(ev.facts, builtin_types=builtins))
            facts = msgspec.convert(data, PullRequestFacts)
        period.repositories.add(clean(ev.repository))
        period.compliance[key] = ArtifactCompliance(
            repository=clean(ev.repository),
            pull_request_id=ev.pull_request_id,
            head=clean(ev.head),
            policy_name=clean(ev.policy_name),
            policy_hash=clean(ev.policy_hash),
            verdict=ev.verdict,
            frozen=ev.frozen,
            pr_state=clean(ev.pr_state),
            trigger=clean(ev.trigger),
            evaluated_at=when,
            title=opt(ev.title),
            source_branch=opt(ev.source_branch),
            destination_branch=opt(ev.destination_branch),
            reason=opt(ev.reason),
            outcomes=[
                ArtifactRuleOutcome(
                    rule_id=clean(o.rule_id),
                    type=clean(o.type),
                    level=o.level,
                    outcome=o.outcome,
                    message=clean(o.message),
                    fix=opt(o.fix),
                    facts=self._scrubbed(msgspec.to_builtins(o.facts, builtin_types=builtins)),
                )
                for o in ev.outcomes
            ],
            facts=facts,
        )

    async def _roll(self) -> None:
        """Serve mode: close the current hour's artifact once the clock has left it."""
        period = self._period
        if period is None or period.window is None:
            return
        if self.clock() < period.window.end:
            return
        self._period = None
        self._stats_mark = self.context.stats.snapshot()
        await asyncio.to_thread(self._finish, period, "succeeded")

    async def _roll_loop(self) -> None:
        while True:
            period = self._period
            now = self.clock()
            wait = 60.0
            if period is not None and period.window is not None:
                wait = max(0.0, (period.window.end - now).total_seconds()) + 0.01
            await asyncio.sleep(min(wait, 300.0))
            try:
                async with self._lock:
                    await self._roll()
            except Exception as exc:  # the daemon outlives one failed artifact
                self.context.logger.error(
                    "json_artifact: cannot write the hourly artifact: %s", exc
                )

    # -- Sink -------------------------------------------------------------------

    async def __aenter__(self) -> JsonArtifactSink:
        self._stats_mark = self.context.stats.snapshot()
        if not self.serve:
            self._period = self._open_period()
        else:
            self._roller = asyncio.create_task(self._roll_loop(), name="rcingest-artifact-roll")
        return self

    async def write(self, batch: Batch) -> None:
        """Add the batch's commits to the spool and its other records to the counts."""
        async with self._lock:
            if self.serve:
                await self._roll()
            if self._period is None:
                self._period = self._open_period()
            self._add(self._period, batch.records)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._roller is not None:
            self._roller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._roller
        async with self._lock:
            period, self._period = self._period, None
            if period is None:
                return
            await asyncio.to_thread(self._finish, period, self.context.status)


@hookimpl
def register_sinks(register: RegisterSink) -> None:
    """Register the ``json_artifact`` sink."""
    register("json_artifact", JsonArtifactSink)
