"""``bitbucket_code_insights``: a Code Insights report with one annotation per finding."""

from __future__ import annotations

from rcingest.compliance import report as compliance_report
from rcingest.compliance.records import ComplianceEvaluation
from rcingest.default_plugins.writeback.common import WriteBackConfig, WriteBackSink
from rcingest.scanning import report
from rcingest.scanning.records import PullRequestScan

__all__ = ["CodeInsightsConfig", "CodeInsightsSink"]


class CodeInsightsConfig(WriteBackConfig, kw_only=True):
    """Settings of the ``bitbucket_code_insights`` sink."""

    #: The report's id on the commit: ``PUT`` again replaces it.
    report_id: str = "rcingest-secrets"
    title: str = "rcingest secret scan"
    link: str | None = None


class CodeInsightsSink(WriteBackSink):
    Config = CodeInsightsConfig
    kind = "report"

    async def report(self, scan: PullRequestScan) -> None:
        if scan.state == "scanning":
            return  # the build status says it has started
        config: CodeInsightsConfig = self.config
        path = f"{self.base(scan)}/commit/{scan.head}/reports/{config.report_id}"
        await self.client.send(
            "PUT", path, report.report_body(scan, title=config.title, link=config.link)
        )
        # Annotations keyed by external_id (the fingerprint): posting again overwrites.
        for batch in report.annotation_batches(scan):
            await self.client.send("POST", f"{path}/annotations", batch)
        self.context.stats.incr("writeback.reports")

    async def report_compliance(self, evaluation: ComplianceEvaluation) -> None:
        config: CodeInsightsConfig = self.config
        path = f"{self.base(evaluation)}/commit/{evaluation.head}/reports/{self.compliance_key}"
        body = compliance_report.report_body(
            evaluation, title="rcingest compliance", link=config.link
        )
        await self.client.send("PUT", path, body)  # the same id replaces the report
        self.context.stats.incr("writeback.reports")
