"""Write-back sinks: a pull request's scan reported where reviewers look (issue 12).

``bitbucket_build_status`` (a status on the source head), ``bitbucket_code_insights``
(a report with annotations on each finding's line) and ``bitbucket_pr_comment``
(one summary comment, edited in place). Each takes ``PullRequestScan`` records
and ignores the others; see docs/scanning.md.
"""

from __future__ import annotations

from rcingest.default_plugins.writeback.comment import CommentSink
from rcingest.default_plugins.writeback.insights import CodeInsightsSink
from rcingest.default_plugins.writeback.status import BuildStatusSink
from rcingest.hookspecs import RegisterSink, hookimpl

__all__ = ["BuildStatusSink", "CodeInsightsSink", "CommentSink"]


@hookimpl
def register_sinks(register: RegisterSink) -> None:
    """Register the three write-back sinks."""
    register("bitbucket_build_status", BuildStatusSink)
    register("bitbucket_code_insights", CodeInsightsSink)
    register("bitbucket_pr_comment", CommentSink)
