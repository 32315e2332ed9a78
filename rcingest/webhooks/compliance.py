"""The daemon's compliance evaluations: ``compliance`` jobs from the durable queue (issue 13).

A job names one pull request (review and pull request events) or a commit
(another tool's status): then every open pull request whose source head is
that commit is evaluated. Each evaluation reads the PR's facts fresh (the
single-PR read, its statuses, default reviewers once per repository for a
while, commits only when a rule needs them), so the verdict reflects
Bitbucket at the time the job runs, not the payload's snapshot.
"""

from __future__ import annotations

from rcingest.compliance.gather import Gatherer
from rcingest.records import Record
from rcingest.webhooks.decode import BackfillJob

__all__ = ["ComplianceChecks"]


class ComplianceChecks:
    """Runs ``compliance`` jobs with the pipeline's policy through one REST client."""

    def __init__(self, gatherer: Gatherer) -> None:
        self.gatherer = gatherer

    async def fetch(self, job: BackfillJob) -> list[Record]:
        trigger = job.event or "webhook"
        if job.pr_id is not None:
            ids = [job.pr_id]
        else:
            ids = await self.gatherer.open_pull_requests(job.repository, job.head)
        out: list[Record] = []
        for pr_id in ids:
            out.append(await self.gatherer.evaluation(job.repository, pr_id, trigger=trigger))
        return out
