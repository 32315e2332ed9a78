"""Bitbucket-shaped JSON for the fake's data: repositories, commits, pull requests."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from rcingest.testing.fake_bitbucket.data import FakeCommit, FakeData, FakePullRequest, FakeRepo

__all__ = [
    "author_user",
    "render_commit",
    "render_pr",
    "render_pr_detail",
    "render_repo",
    "render_user",
    "repo_ref",
]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _uuid(*parts: str) -> str:
    h = hashlib.sha1(":".join(("user", *parts)).encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def render_user(name: str, account_id: str | None = None) -> dict[str, Any]:
    """A user object; everything derives from ``name`` (and ``account_id``), so it is stable.

    ``name`` is a display name (``"Ana Lima"``) or a nickname (``"alice"``, shown
    as ``"Alice"``). Without ``account_id`` one is made up in Bitbucket's
    ``557058:<uuid>`` form.
    """
    nickname = re.sub(r"[^a-z0-9]+", ".", name.lower()).strip(".") or "user"
    display = name if any(ch.isupper() for ch in name) or " " in name else name.title()
    uuid = "{" + _uuid(account_id or nickname) + "}"
    account = account_id or f"557058:{_uuid('account', nickname)}"
    api = f"https://api.bitbucket.org/2.0/users/{quote(uuid)}"
    return {
        "type": "user",
        "display_name": display,
        "uuid": uuid,
        "account_id": account,
        "nickname": nickname,
        "links": {
            "self": {"href": api},
            "html": {"href": f"https://bitbucket.org/{quote(uuid)}/"},
            "avatar": {"href": f"https://avatar-management.example/{account}/128"},
        },
    }


def author_user(data: FakeData, index: int) -> dict[str, Any]:
    """The user of author ``index`` (``FakeData.author``); a made-up account when it has none."""
    name, _, account = data.author(index)
    return render_user(name, account)


def render_repo(repo: FakeRepo) -> dict[str, Any]:
    """A repository value as Bitbucket sends it (the fields rcingest reads and a few more)."""
    return {
        "type": "repository",
        "uuid": repo.uuid,
        "full_name": repo.full_name,
        "slug": repo.slug,
        "name": repo.slug,
        "is_private": repo.is_private,
        "language": repo.language,
        "updated_on": _iso(repo.updated_on),
        "mainbranch": {"type": "branch", "name": repo.mainbranch},
        "workspace": {"type": "workspace", "slug": repo.workspace},
        "project": {"type": "project", "key": repo.slug.split("-")[0].upper()},
        "links": {"html": {"href": f"https://bitbucket.org/{repo.full_name}"}},
        "size": 1024 * (len(repo.commits) + 1),
        "created_on": _iso(repo.created_on or repo.updated_on),
        **({"parent": {"type": "repository", "full_name": repo.fork_of}} if repo.fork_of else {}),
    }


def render_commit(data: FakeData, repo: FakeRepo, c: FakeCommit) -> dict[str, Any]:
    """A commit value as in ``/commits`` (``author.user`` only for linked accounts)."""
    name, email, account = data.author(c.author)
    author: dict[str, Any] = {"type": "author", "raw": f"{name} <{email}>"}
    if account is not None:
        author["user"] = {"type": "user", "display_name": name, "account_id": account}
    return {
        "type": "commit",
        "hash": c.hash,
        "date": _iso(c.date),
        "author": author,
        "message": c.message,
        "summary": {"raw": c.message, "markup": "markdown"},
        "parents": [{"type": "commit", "hash": p} for p in c.parents],
        "repository": {"type": "repository", "full_name": repo.full_name},
    }


def render_pr(data: FakeData, repo: FakeRepo, pr: FakePullRequest) -> dict[str, Any]:
    """A pull request value as in ``/pullrequests`` (12-character hashes)."""
    head = pr.commits[0][:12] if pr.commits else None
    base = repo.heads[pr.destination_branch][:12]
    merge = pr.merge_commit
    return {
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "description": pr.description,
        "state": pr.state,
        # Every pull request has an account as its author, even when the
        # commits' author e-mail is linked to none.
        "author": author_user(data, pr.author),
        "source": {"branch": {"name": pr.source_branch}, "commit": {"hash": head}},
        "destination": {"branch": {"name": pr.destination_branch}, "commit": {"hash": base}},
        "merge_commit": {"hash": merge} if merge else None,
        "created_on": _iso(pr.created_on),
        "updated_on": _iso(pr.updated_on),
    }


def repo_ref(full_name: str, uuid: str | None = None) -> dict[str, Any]:
    """A repository as pull requests and webhooks point at it (a fork's uuid is made up)."""
    ref: dict[str, Any] = {
        "type": "repository",
        "full_name": full_name,
        "name": full_name.split("/", 1)[-1],
        "uuid": uuid or "{" + _uuid("repository", full_name) + "}",
    }
    ref["links"] = {"html": {"href": f"https://bitbucket.org/{full_name}"}}
    return ref


def render_pr_detail(data: FakeData, repo: FakeRepo, pr: FakePullRequest) -> dict[str, Any]:
    """The single-PR ``GET`` (and webhook) shape: the list shape plus who reviews and where from.

    ``participants`` and ``reviewers`` exist only here, never in ``/pullrequests``.
    """
    value = render_pr(data, repo, pr)
    source = pr.source_repository
    value["source"]["repository"] = (
        repo_ref(source) if source else repo_ref(repo.full_name, repo.uuid)
    )
    value["destination"]["repository"] = repo_ref(repo.full_name, repo.uuid)
    value["reviewers"] = [dict(u) for u in pr.reviewers]
    value["participants"] = [dict(p) for p in pr.participants.values()]
    value["closed_by"] = pr.closed_by
    return value
