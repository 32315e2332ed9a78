"""The Bitbucket Cloud event keys the webhook daemon knows (bitbucket-api.md §5.4).

Stored events become records; the other known ones are acknowledged and
counted; anything else is counted as ``other``.
"""

from __future__ import annotations

__all__ = ["KNOWN_EVENTS", "PR_EVENTS", "PUSH", "STORED_EVENTS"]

PUSH = "repo:push"
PR_EVENTS = frozenset(
    {
        "pullrequest:created",
        "pullrequest:updated",
        "pullrequest:fulfilled",
        "pullrequest:rejected",
    }
)
STORED_EVENTS = frozenset({PUSH, *PR_EVENTS})
# Event keys Bitbucket documents (bitbucket-api.md §5.4): acknowledged, counted, not stored.
KNOWN_EVENTS = STORED_EVENTS | frozenset(
    {
        "repo:fork",
        "repo:updated",
        "repo:created",
        "repo:deleted",
        "repo:imported",
        "repo:transfer",
        "repo:commit_comment_created",
        "repo:commit_status_created",
        "repo:commit_status_updated",
        "pullrequest:approved",
        "pullrequest:unapproved",
        "pullrequest:changes_request_created",
        "pullrequest:changes_request_removed",
        "pullrequest:comment_created",
        "pullrequest:comment_updated",
        "pullrequest:comment_deleted",
        "pullrequest:comment_resolved",
        "pullrequest:comment_reopened",
        "issue:created",
        "issue:updated",
        "issue:comment_created",
        "project:updated",
    }
)
