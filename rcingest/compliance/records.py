"""The record a compliance evaluation produces: the verdict, each rule's outcome, the facts.

It flows to sinks like every other record: the database keeps each
evaluation (and freezes the last one of a merged pull request), the JSON
artifact lists the frozen ones, and the write-back sinks report it on the
pull request (status ``rcingest-compliance``, a Code Insights report, one
comment).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from rcingest.compliance.facts import PullRequestFacts

__all__ = ["ComplianceEvaluation", "Outcome", "RuleOutcome", "Verdict"]

#: ``not_applicable``: the rule's scope excludes this repository or branch;
#: ``error``: a fact it needs could not be read (a required rule then fails closed).
Outcome = Literal["pass", "fail", "error", "not_applicable"]
#: ``not_found``: the pull request is gone (404); nothing is reported on it.
Verdict = Literal["compliant", "non_compliant", "not_found"]


class RuleOutcome(msgspec.Struct, kw_only=True):
    """One rule's outcome and the facts it used."""

    rule_id: str
    type: str
    level: Literal["required", "advisory"]
    outcome: Outcome
    #: What was found, in a sentence (shown in the comment and the report).
    message: str
    #: How to make it pass; None when it passes.
    fix: str | None = None
    #: The facts this outcome rests on (approvers, statuses, keys found...).
    facts: dict[str, Any] = {}


class ComplianceEvaluation(msgspec.Struct, tag="compliance", kw_only=True):
    """One evaluation of a pull request at one source head under one policy."""

    repository: str
    pull_request_id: int
    #: Source head, full hash when it could be resolved.
    head: str
    policy_name: str
    policy_hash: str
    evaluated_at: datetime
    verdict: Verdict
    #: The pull request's state when evaluated (``OPEN``, ``MERGED``...).
    pr_state: str = "OPEN"
    title: str | None = None
    source_branch: str | None = None
    destination_branch: str | None = None
    outcomes: list[RuleOutcome] = []
    facts: PullRequestFacts | None = None
    #: What caused it: a webhook event key, ``check`` or ``run``.
    trigger: str = "run"
    #: The final evaluation of a merged pull request: never replaced.
    frozen: bool = False
    reason: str | None = None

    @property
    def failed_required(self) -> list[RuleOutcome]:
        return [
            o for o in self.outcomes if o.level == "required" and o.outcome in ("fail", "error")
        ]
