"""Values in a webhook payload that rcingest refuses (400) before building records.

Sans-I/O. Each check raises :class:`DecodeError` with a reason naming the
event and the field, so a sender (or whoever reads the daemon's log) sees
what was wrong:

* a commit hash must be 7 to 40 lowercase hex digits (Bitbucket sends 40 in
  push payloads and 12 in pull request payloads): an empty or huge hash
  would otherwise become a stored key;
* a repository's ``full_name`` must be ``workspace/slug``-shaped: non-empty
  parts joined by slashes, no whitespace or control characters, at most
  :data:`MAX_FULL_NAME` characters. More than one slash is let through (and
  kept out of API paths by ``backfill_safe``), because the existing decoder
  tests store such a delivery without its backfill;
* a timestamp must be storable and showable in every time zone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec

from rcingest.bitbucket import api
from rcingest.webhooks.headers import DecodeError

__all__ = [
    "MAX_FULL_NAME",
    "check_full_name",
    "check_hash",
    "check_moment",
    "check_pr_refs",
    "shape_error",
]

#: Longest full_name accepted (Bitbucket's workspace and slug are each far shorter).
MAX_FULL_NAME = 200
_HASH = re.compile(r"[0-9a-f]{7,40}")
_PART = r"[^\s/\x00-\x1f\x7f]+"
_FULL_NAME = re.compile(rf"{_PART}(?:/{_PART})+")


def check_hash(event: str, what: str, value: str) -> None:
    """Refuse ``value`` unless it is 7 to 40 lowercase hex digits."""
    if not _HASH.fullmatch(value):
        shown = value[:20] + ("…" if len(value) > 20 else "")
        raise DecodeError(
            f"{event} payload has {what} {shown!r} ({len(value)} characters):"
            " a commit hash is 7 to 40 lowercase hex digits"
        )


def check_full_name(event: str, what: str, value: str) -> None:
    """Refuse ``value`` unless it is ``workspace/slug`` shaped."""
    if len(value) > MAX_FULL_NAME or not _FULL_NAME.fullmatch(value):
        shown = value[:40] + ("…" if len(value) > 40 else "")
        raise DecodeError(
            f"{event} payload has {what} {shown!r} ({len(value)} characters): a repository"
            f" full_name is workspace/slug (no whitespace, at most {MAX_FULL_NAME} characters)"
        )


def check_moment(event: str, what: str, moment: datetime | None) -> None:
    """Refuse a timestamp that cannot be stored or shown in every time zone.

    Its UTC value must fall within years 2 to 9998, so no conversion overflows.
    """
    if moment is None:
        return
    try:
        year = (moment.astimezone(UTC) if moment.tzinfo is not None else moment).year
    except OverflowError:
        year = 0
    if not 1 < year < 9999:
        raise DecodeError(f"{event} payload has {what} out of range: {moment.isoformat()}")


def check_pr_refs(event: str, pr: api.PullRequest, repo: str) -> None:
    """Refuse a pull request whose repository or commit hashes are malformed.

    The source's repository name is not checked: the decoder only believes a
    plain ``workspace/slug`` there and assumes the target's otherwise.
    """
    check_full_name(event, "repository.full_name", repo)
    for side, end in (("source", pr.source), ("destination", pr.destination)):
        if end.commit is not None:
            check_hash(event, f"pullrequest.{side}.commit.hash", end.commit.hash)
    if pr.merge_commit is not None:
        check_hash(event, "pullrequest.merge_commit.hash", pr.merge_commit.hash)


def shape_error(
    event: str, exc: msgspec.MsgspecError | UnicodeDecodeError, body: bytes
) -> DecodeError:
    if isinstance(exc, msgspec.ValidationError):
        return DecodeError(f"{event} payload of the wrong shape: {exc}")
    # Older msgspec hands strings that are not UTF-8 to Python (UnicodeDecodeError);
    # 0.23 reports them itself, in words of its own. Say it in ours, whichever it was.
    if isinstance(exc, UnicodeDecodeError) or not _is_utf8(body):
        return DecodeError("body is not valid JSON: not UTF-8")
    return DecodeError(f"body is not valid JSON: {exc}")


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
