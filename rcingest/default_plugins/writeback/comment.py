"""``bitbucket_pr_comment``: one summary comment per pull request, edited in place.

rcingest's comment is found again by its visible marker line and, when the
token can tell whose it is (``GET /user``), by the bot's account: never a
second comment for the same pull request. A clean head turns it into "no
findings" (or deletes it, ``on_clean: delete``); a pull request that never
had findings gets no comment at all.
"""

from __future__ import annotations

from typing import Any, Literal

from rcingest.compliance import report as compliance_report
from rcingest.compliance.records import ComplianceEvaluation
from rcingest.default_plugins.writeback.common import WriteBackConfig, WriteBackSink
from rcingest.errors import RcingestError
from rcingest.scanning import report
from rcingest.scanning.records import PullRequestScan

__all__ = ["CommentConfig", "CommentSink"]

_UNKNOWN = "unknown"


class CommentConfig(WriteBackConfig, kw_only=True):
    """Settings of the ``bitbucket_pr_comment`` sink."""

    #: When the findings are gone: ``update`` to "no secrets found", or ``delete``.
    on_clean: Literal["update", "delete"] = "update"


class CommentSink(WriteBackSink):
    Config = CommentConfig
    kind = "comment"

    def __init__(self, config: CommentConfig, context: Any) -> None:
        super().__init__(config, context)
        self._account: str | None = _UNKNOWN

    async def _bot_account(self) -> str | None:
        """The token's account id, or None when the token has no user (an access token)."""
        if self._account == _UNKNOWN:
            try:
                me = await self.client.get_json("/user")
                account = me.get("account_id") if isinstance(me, dict) else None
                self._account = account if isinstance(account, str) else None
            except RcingestError:  # BitbucketError: e.g. 401 for an access token
                self._account = None
        return self._account

    async def _ours(
        self, scan: PullRequestScan | ComplianceEvaluation, marker: str = report.MARKER
    ) -> dict[str, Any] | None:
        account = await self._bot_account()
        path = f"{self.base(scan)}/pullrequests/{scan.pull_request_id}/comments"
        async for values in self.client.pages(path):
            for comment in values:
                if report.is_our_comment(comment, account, marker):
                    return comment
        return None

    async def report_compliance(self, evaluation: ComplianceEvaluation) -> None:
        """A non-compliant PR gets the comment; a compliant one only has it updated."""
        comments = f"{self.base(evaluation)}/pullrequests/{evaluation.pull_request_id}/comments"
        ours = await self._ours(evaluation, compliance_report.MARKER)
        if ours is None and evaluation.verdict == "compliant":
            return  # compliant from the start: nothing to say
        body = compliance_report.comment_body(evaluation)
        if ours is None:
            await self.client.send("POST", comments, {"content": {"raw": body}}, retry=False)
        elif (ours.get("content") or {}).get("raw") != body:
            await self.client.send("PUT", f"{comments}/{ours['id']}", {"content": {"raw": body}})
        self.context.stats.incr("writeback.comments")

    async def report(self, scan: PullRequestScan) -> None:
        if scan.state == "scanning":
            return
        config: CommentConfig = self.config
        comments = f"{self.base(scan)}/pullrequests/{scan.pull_request_id}/comments"
        ours = await self._ours(scan)
        if scan.state == "clean":
            if ours is None:
                return  # nothing was ever reported: say nothing
            if config.on_clean == "delete":
                await self.client.send("DELETE", f"{comments}/{ours['id']}")
                return
        body = report.comment_body(scan)
        if ours is None:
            # Not idempotent: no blind retry (a lost answer would post twice); the
            # next delivery finds the comment by its marker if it was created.
            await self.client.send("POST", comments, {"content": {"raw": body}}, retry=False)
        elif (ours.get("content") or {}).get("raw") != body:
            await self.client.send("PUT", f"{comments}/{ours['id']}", {"content": {"raw": body}})
        self.context.stats.incr("writeback.comments")
