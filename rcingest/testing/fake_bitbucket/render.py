"""Bitbucket-shaped JSON for the fake's data: repositories, commits, pull requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rcingest.testing.fake_bitbucket.data import FakeCommit, FakeData, FakePullRequest, FakeRepo

__all__ = ["render_commit", "render_pr", "render_repo"]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


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
    name, _, account = data.author(pr.author)
    head = pr.commits[0][:12] if pr.commits else None
    base = repo.heads[pr.destination_branch][:12]
    merge = pr.merge_commit
    return {
        "type": "pullrequest",
        "id": pr.id,
        "title": pr.title,
        "description": pr.description,
        "state": pr.state,
        "author": {"type": "user", "display_name": name, "account_id": account},
        "source": {"branch": {"name": pr.source_branch}, "commit": {"hash": head}},
        "destination": {"branch": {"name": pr.destination_branch}, "commit": {"hash": base}},
        "merge_commit": {"hash": merge} if merge else None,
        "created_on": _iso(pr.created_on),
        "updated_on": _iso(pr.updated_on),
    }
