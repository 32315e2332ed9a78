"""``bitbucket_build_status``: the scan as a build status on the pull request's source head."""

from __future__ import annotations

from typing import Any, Literal

from rcingest.compliance import report as compliance_report
from rcingest.compliance.records import ComplianceEvaluation
from rcingest.default_plugins.writeback.common import WriteBackConfig, WriteBackSink
from rcingest.errors import RcingestError
from rcingest.scanning import report
from rcingest.scanning.records import PullRequestScan

__all__ = ["BuildStatusConfig", "BuildStatusSink"]

RESTRICTION = "require_passing_builds_to_merge"


class BuildStatusConfig(WriteBackConfig, kw_only=True):
    """Settings of the ``bitbucket_build_status`` sink."""

    #: The status key: a later status with the same key overwrites it.
    key: str = "rcingest-secrets"
    name: str = "rcingest secrets"
    #: State of a pull request whose diff could not be scanned (too large, timed out).
    unscannable: Literal["FAILED", "STOPPED"] = "FAILED"
    #: Link shown with the status (URI templates ``{repository.full_name}``, ``{commit}``).
    link: str | None = None
    #: Create a ``require_passing_builds_to_merge`` branch restriction on each
    #: destination branch that has none (needs an admin token; Premium enforces it).
    require_passing_builds: bool = False


class BuildStatusSink(WriteBackSink):
    Config = BuildStatusConfig
    kind = "status"

    def __init__(self, config: BuildStatusConfig, context: Any) -> None:
        super().__init__(config, context)
        self._restricted: set[tuple[str, str]] = set()

    async def report(self, scan: PullRequestScan) -> None:
        config: BuildStatusConfig = self.config
        body = report.status_body(
            None if scan.state == "scanning" else scan,
            key=config.key,
            name=config.name,
            unscannable=config.unscannable,
            url=config.link,
        )
        path = f"{self.base(scan)}/commit/{scan.head}/statuses/build"
        await self.client.send("POST", path, body)  # same key overwrites: idempotent
        self.context.stats.incr("writeback.statuses")
        if config.require_passing_builds and scan.destination_branch:
            await self._restrict(scan.repository, scan.destination_branch)

    async def _restrict(self, repository: str, branch: str) -> None:
        try:
            await self._require_builds(repository, branch)
        except RcingestError as exc:
            # Branch restrictions need more than the statuses do: say which.
            exc.hint = (  # type: ignore[attr-defined]
                f" (creating the {RESTRICTION} restriction on {branch} needs an admin token:"
                " admin:repository scope; or set require_passing_builds: false)"
            )
            raise

    async def report_compliance(self, evaluation: ComplianceEvaluation) -> None:
        config: BuildStatusConfig = self.config
        body = compliance_report.status_body(
            evaluation, key=self.compliance_key, name="rcingest compliance", url=config.link
        )
        path = f"{self.base(evaluation)}/commit/{evaluation.head}/statuses/build"
        await self.client.send("POST", path, body)
        self.context.stats.incr("writeback.statuses")
        if config.require_passing_builds and evaluation.destination_branch:
            await self._restrict(evaluation.repository, evaluation.destination_branch)

    async def _require_builds(self, repository: str, branch: str) -> None:
        if (repository, branch) in self._restricted:
            return
        path = f"/repositories/{repository}/branch-restrictions"
        listing = await self.client.get_json(path, {"kind": RESTRICTION, "pattern": branch})
        values = listing.get("values", []) if isinstance(listing, dict) else []
        exists = any(
            v.get("kind") == RESTRICTION and v.get("pattern") == branch
            for v in values
            if isinstance(v, dict)
        )
        if not exists:
            restriction = {
                "kind": RESTRICTION,
                "branch_match_kind": "glob",
                "pattern": branch,
                "value": 1,
            }
            await self.client.send("POST", path, restriction, retry=False)
            self.context.logger.info(
                "%s: created a %s branch restriction on %s", repository, RESTRICTION, branch
            )
        self._restricted.add((repository, branch))
