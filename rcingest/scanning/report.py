"""What a pull request's scan looks like on Bitbucket: status, Code Insights, summary comment.

Pure functions from a ``PullRequestScan`` to request bodies, so the write-back
sinks stay thin and every limit is tested without a server:

* a build status: ``INPROGRESS`` while scanning, then ``FAILED`` with the
  count, ``SUCCESSFUL``, or the configured state for a diff that could not be
  scanned (too large, timed out);
* a Code Insights report (``SECURITY``) with one annotation per finding, in
  batches of at most 100 and at most 1,000 per report;
* one markdown comment, found again by its visible marker line (Bitbucket
  Cloud drops HTML comments), kept under ``MAX_COMMENT`` characters.

Nothing here sees a secret: findings carry only a fingerprint and an excerpt
with at most four characters of it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from rcingest.scanning.model import Finding
from rcingest.scanning.records import PullRequestScan

__all__ = [
    "MARKER",
    "MAX_ANNOTATIONS",
    "MAX_BATCH",
    "MAX_COMMENT",
    "annotation_batches",
    "annotation_items",
    "comment_body",
    "is_our_comment",
    "report_body",
    "status_body",
]

#: The visible line that identifies rcingest's comment on a pull request.
MARKER = "rcingest:secret-scan"
#: Bitbucket Cloud refuses much longer comments (pr-agent cuts at 31,000).
MAX_COMMENT = 30_000
MAX_BATCH = 100
MAX_ANNOTATIONS = 1000
#: Bitbucket answers 400 for over-long status descriptions; stay well under.
MAX_DESCRIPTION = 200
BuildState = Literal["INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"]
_SEVERITY = {
    "critical": "CRITICAL",
    "high": "HIGH",
    "medium": "MEDIUM",
    "low": "LOW",
    "info": "LOW",
}
_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (_ORDER[f.severity], f.path, f.line_start, f.rule_id))


def _count(n: int) -> str:
    return f"{n} possible secret{'s' if n != 1 else ''}"


def summary_line(scan: PullRequestScan) -> str:
    """One line for a status description or a log: what the scan concluded."""
    if scan.state == "findings":
        return f"{_count(len(scan.findings))} in the changes"
    if scan.state == "clean":
        return "no secrets found in the changes"
    if scan.state == "too_large":
        return f"not scanned: the diff is too large ({scan.reason or 'over the limit'})"
    if scan.state == "diff_timeout":
        return "not scanned: Bitbucket timed out generating the diff (555)"
    return f"not scanned: {scan.reason or scan.state}"


def status_body(
    scan: PullRequestScan | None,
    *,
    key: str,
    name: str,
    unscannable: BuildState = "FAILED",
    url: str | None = None,
) -> dict[str, Any]:
    """The ``POST .../statuses/build`` body; ``scan=None`` means the scan has started."""
    if scan is None:
        state: BuildState = "INPROGRESS"
        description = "scanning the changes for secrets"
    else:
        if scan.state == "findings":
            state = "FAILED"
        elif scan.state == "clean":
            state = "SUCCESSFUL"
        else:
            state = unscannable
        description = summary_line(scan)
    body: dict[str, Any] = {
        "key": key,
        "state": state,
        "name": name,
        "description": description[:MAX_DESCRIPTION],
    }
    if url:
        body["url"] = url
    return body


def report_body(scan: PullRequestScan, *, title: str, link: str | None = None) -> dict[str, Any]:
    """The ``PUT .../reports/{id}`` body: result, details and up to 10 data items."""
    findings = scan.findings
    shown = min(len(findings), MAX_ANNOTATIONS)
    details = summary_line(scan).capitalize() + "."
    if len(findings) > shown:
        details += f" The first {shown} are annotated; see the run artifact for all."
    by_severity = Counter(f.severity for f in findings)
    data: list[dict[str, Any]] = [
        {"title": "Findings", "type": "NUMBER", "value": len(findings)},
        {"title": "Head", "type": "TEXT", "value": scan.head[:12]},
        {"title": "Scanners", "type": "TEXT", "value": ", ".join(scan.scanners) or "-"},
    ]
    for severity in ("critical", "high", "medium", "low"):
        if by_severity.get(severity):
            data.append(
                {"title": severity.capitalize(), "type": "NUMBER", "value": by_severity[severity]}
            )
    body: dict[str, Any] = {
        "title": title,
        "details": details,
        "report_type": "SECURITY",
        "reporter": "rcingest",
        "result": "FAILED" if scan.state != "clean" else "PASSED",
        "data": data[:10],
    }
    if link:
        body["link"] = link
    return body


def annotation_items(scan: PullRequestScan) -> list[dict[str, Any]]:
    """One annotation per finding (the first ``MAX_ANNOTATIONS``), ``external_id`` = fingerprint.

    The same secret twice in a change shares a fingerprint; the second and
    later get ``-2``, ``-3``... so each keeps its own line on the report.
    """
    seen: Counter[str] = Counter()
    out: list[dict[str, Any]] = []
    for finding in _sorted(scan.findings)[:MAX_ANNOTATIONS]:
        seen[finding.fingerprint] += 1
        n = seen[finding.fingerprint]
        external = finding.fingerprint if n == 1 else f"{finding.fingerprint}-{n}"
        out.append(
            {
                "external_id": external,
                "annotation_type": "VULNERABILITY",
                "path": finding.path,
                "line": finding.line_start,
                "summary": f"Possible secret: {finding.rule_name}"[:450],
                "details": f"{finding.rule_id} ({finding.scanner}): {finding.excerpt}"[:2000],
                "severity": _SEVERITY[finding.severity],
                "result": "FAILED",
            }
        )
    return out


def annotation_batches(scan: PullRequestScan) -> Iterator[list[dict[str, Any]]]:
    """``annotation_items(scan)`` in request-sized batches (at most ``MAX_BATCH`` each)."""
    items = annotation_items(scan)
    for start in range(0, len(items), MAX_BATCH):
        yield items[start : start + MAX_BATCH]


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell and inline code."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ").strip()


def comment_body(scan: PullRequestScan, *, limit: int = MAX_COMMENT) -> str:
    """The summary comment: a table of findings (path, line, rule, severity, excerpt).

    Rows stop before ``limit`` characters; the rest are counted, pointing to
    the Code Insights report and the run artifact, which hold them all.
    """
    head = f"`{scan.head[:12]}`"
    footer = f"\n\n---\n{MARKER} · head {scan.head[:12]} · rcingest"
    if scan.state == "clean":
        return (
            f"**rcingest secret scan**: no secrets found in the changes at {head}."
            f" Earlier findings on this pull request are fixed.{footer}"
        )
    if scan.state != "findings":
        return f"**rcingest secret scan**: {summary_line(scan)} (head {head}).{footer}"
    findings = _sorted(scan.findings)
    lines = [
        f"**rcingest secret scan** found {_count(len(findings))} in the changes at {head}."
        " Remove each one from the branch and rotate it: it is already in the"
        " repository's history.",
        "",
        "| File | Line | Rule | Severity | Excerpt |",
        "|---|---|---|---|---|",
    ]
    size = sum(len(line) + 1 for line in lines) + len(footer) + 200  # room for the tail
    shown = 0
    for f in findings:
        lines_span = (
            str(f.line_start) if f.line_end == f.line_start else f"{f.line_start}-{f.line_end}"
        )
        row = (
            f"| `{_cell(f.path)}` | {lines_span} | {_cell(f.rule_name)} (`{_cell(f.rule_id)}`)"
            f" | {f.severity} | `{_cell(f.excerpt)}` |"
        )
        if size + len(row) + 1 > limit:
            break
        lines.append(row)
        size += len(row) + 1
        shown += 1
    if shown < len(findings):
        lines.append("")
        lines.append(
            f"… and {len(findings) - shown} more: see the rcingest Code Insights report"
            " on this pull request and the run artifact."
        )
    lines.append(
        "\nFalse positive? Add `rcingest:allow` (or `rcingest:allow <rule id>`) on the line,"
        " or allowlist its fingerprint; see docs/scanning.md."
    )
    return "\n".join(lines) + footer


def is_our_comment(comment: dict[str, Any], account_id: str | None, marker: str = MARKER) -> bool:
    """A comment rcingest wrote: the marker line, and (when known) the bot's account."""
    content = comment.get("content")
    raw = content.get("raw") if isinstance(content, dict) else None
    if not isinstance(raw, str) or f"\n{marker} " not in raw or comment.get("deleted"):
        return False
    if account_id is None:
        return True
    user = comment.get("user")
    return isinstance(user, dict) and user.get("account_id") == account_id
