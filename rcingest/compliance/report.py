"""What a compliance evaluation looks like on Bitbucket: status, Code Insights, one comment.

Pure functions from a ``ComplianceEvaluation`` to request bodies, like
``rcingest.scanning.report`` for scans:

* a build status (key ``rcingest-compliance``): ``FAILED`` when a required
  rule fails, else ``SUCCESSFUL``;
* a Code Insights report (``report_type: BUG``: Bitbucket has no compliance
  type) with ``PASSED``/``FAILED`` and one data row per rule (Bitbucket keeps
  at most 10; the rest are counted in ``details``), no annotations: policy
  rules have no file and line;
* one markdown comment listing each rule, pass or fail and how to fix it,
  found again by its marker line and edited in place.
"""

from __future__ import annotations

from typing import Any

from rcingest.compliance.records import ComplianceEvaluation, RuleOutcome

__all__ = ["MARKER", "comment_body", "report_body", "status_body", "summary_line"]

MARKER = "rcingest:compliance"
MAX_DATA = 10
MAX_DESCRIPTION = 200
MAX_COMMENT = 30_000
_ICON = {"pass": "✅", "fail": "❌", "error": "⚠️", "not_applicable": "n/a"}


def _considered(ev: ComplianceEvaluation) -> list[RuleOutcome]:
    return [o for o in ev.outcomes if o.outcome != "not_applicable"]


def summary_line(ev: ComplianceEvaluation) -> str:
    """One line for a status description or a log."""
    failed = ev.failed_required
    advisory = [o for o in ev.outcomes if o.level == "advisory" and o.outcome == "fail"]
    if failed:
        names = ", ".join(o.rule_id for o in failed)
        return f"not compliant: {len(failed)} required rule(s) failed ({names})"
    extra = f"; {len(advisory)} advisory rule(s) failed" if advisory else ""
    return f"compliant with {ev.policy_name} ({len(_considered(ev))} rules){extra}"


def status_body(
    ev: ComplianceEvaluation, *, key: str, name: str, url: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "state": "FAILED" if ev.verdict == "non_compliant" else "SUCCESSFUL",
        "name": name,
        "description": summary_line(ev)[:MAX_DESCRIPTION],
    }
    if url:
        body["url"] = url
    return body


def report_body(ev: ComplianceEvaluation, *, title: str, link: str | None) -> dict[str, Any]:
    rules = _considered(ev)
    data: list[dict[str, Any]] = [
        {"title": "Policy", "type": "TEXT", "value": f"{ev.policy_name} {ev.policy_hash[7:19]}"},
    ]
    for o in rules[: MAX_DATA - 1]:
        verdict = "pass" if o.outcome == "pass" else o.outcome
        data.append({"title": o.rule_id[:50], "type": "TEXT", "value": f"{verdict}: {o.message}"})
    details = summary_line(ev).capitalize() + "."
    if len(rules) > MAX_DATA - 1:
        details += f" {len(rules) - (MAX_DATA - 1)} more rule(s) in the comment."
    body: dict[str, Any] = {
        "title": title,
        "details": details[:2000],
        "report_type": "BUG",
        "reporter": "rcingest",
        "result": "FAILED" if ev.verdict == "non_compliant" else "PASSED",
        "data": data,
    }
    if link:
        body["link"] = link
    return body


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def comment_body(ev: ComplianceEvaluation, *, limit: int = MAX_COMMENT) -> str:
    """Each rule with its outcome and fix; under ``limit`` characters."""
    footer = (
        f"\n\n---\n{MARKER} · policy {ev.policy_name} {ev.policy_hash[:19]}"
        f" · head {ev.head[:12]} · rcingest"
    )
    verdict = "compliant" if ev.verdict == "compliant" else "**not compliant**"
    lines = [
        f"**rcingest compliance**: this pull request is {verdict} with policy"
        f" `{ev.policy_name}` at head `{ev.head[:12]}`.",
        "",
        "| | Rule | Level | Result | How to fix |",
        "|---|---|---|---|---|",
    ]
    size = sum(len(line) + 1 for line in lines) + len(footer) + 120
    rules = _considered(ev)
    shown = 0
    for o in sorted(rules, key=lambda o: (o.outcome == "pass", o.level != "required")):
        row = (
            f"| {_ICON[o.outcome]} | `{_cell(o.rule_id)}` | {o.level} | {_cell(o.message)}"
            f" | {_cell(o.fix or '')} |"
        )
        if size + len(row) + 1 > limit:
            break
        lines.append(row)
        size += len(row) + 1
        shown += 1
    if shown < len(rules):
        lines.append(f"\n… and {len(rules) - shown} more rule(s): see the run artifact.")
    if ev.verdict == "non_compliant":
        lines.append(
            "\nThe verdict is re-evaluated on every change, approval and status."
            " Merging is blocked only where the repository requires passing builds."
        )
    return "\n".join(lines) + footer
