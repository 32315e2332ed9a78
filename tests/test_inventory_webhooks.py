"""Repository deliveries keep the inventory current (issue 14)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from rcingest.records import Repository
from rcingest.testing import FakeBitbucket, GenSpec
from rcingest.webhooks import decode
from rcingest.webhooks.decode import BackfillJob
from rcingest.webhooks.inventory import fetch_repository

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
FIX = Path(__file__).parent / "fixtures" / "bitbucket"


def headers(event: str) -> dict[str, str]:
    return {"X-Event-Key": event, "X-Request-UUID": "req-9", "X-Hook-UUID": "hook-1"}


def repository(name: str, uuid: str = "{r1}") -> dict[str, object]:
    return {
        "type": "repository",
        "full_name": name,
        "uuid": uuid,
        "is_private": True,
        "links": {"html": {"href": f"https://bitbucket.org/{name}"}},
    }


def run(event: str, payload: dict[str, object]) -> tuple[list[Repository], list[BackfillJob]]:
    d = decode(headers(event), json.dumps(payload).encode(), received_at=NOW, inventory=True)
    return [r for r in d.records if isinstance(r, Repository)], d.jobs


def test_a_rename_tombstones_the_old_name_and_reads_the_new_one() -> None:
    payload = {
        "repository": repository("acme/api-v2"),
        "changes": {"full_name": {"old": "acme/api", "new": "acme/api-v2"}},
    }
    records, jobs = run("repo:updated", payload)
    assert [(r.full_name, r.state, r.renamed_to) for r in records] == [
        ("acme/api", "deleted", "acme/api-v2"),
        ("acme/api-v2", "active", None),
    ]
    [job] = jobs
    assert (job.kind, job.repository) == ("repo_sync", "acme/api-v2")


def test_created_deleted_fork_and_push() -> None:
    records, jobs = run("repo:created", {"repository": repository("acme/new")})
    assert [r.state for r in records] == ["active"] and len(jobs) == 1
    records, jobs = run("repo:deleted", {"repository": repository("acme/old")})
    assert [(r.full_name, r.state) for r in records] == [("acme/old", "deleted")] and not jobs
    fork = {"repository": repository("acme/api"), "fork": repository("bob/api", "{f}")}
    records, jobs = run("repo:fork", fork)
    assert [(r.full_name, r.fork_of) for r in records] == [("bob/api", "acme/api")]
    assert jobs[0].repository == "bob/api"
    raw = (FIX / "webhook_repo-push_single-commit_go-scm-2018.json").read_bytes()
    d = decode(headers("repo:push"), raw, received_at=NOW, inventory=True)
    [activity] = [r for r in d.records if isinstance(r, Repository)]
    assert activity.last_push == NOW
    # Without inventory: as before (repository events are not stored).
    plain = decode(headers("repo:created"), json.dumps(fork).encode(), received_at=NOW)
    assert plain.delivery.outcome == "ignored"


async def test_repo_sync_reads_the_full_value_or_tombstones() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        from rcingest.bitbucket.client import BitbucketClient
        from rcingest.bitbucket.config import ClientConfig
        from rcingest.interfaces import Stats
        from rcingest.inventory.filters import RepositoryFilters

        config = ClientConfig(base_url=fake.base_url, max_tries=1)
        async with BitbucketClient(config, Stats(), __import__("logging").getLogger()) as client:
            job = BackfillJob(kind="repo_sync", repository="acme/service-00", key="k")
            [repo] = await fetch_repository(client, job)
            assert isinstance(repo, Repository) and repo.state == "active" and repo.web_url
            [kept_out] = await fetch_repository(
                client, job, RepositoryFilters(exclude_names=["service-*"])
            )
            assert isinstance(kept_out, Repository) and kept_out.state == "filtered"
            gone = BackfillJob(kind="repo_sync", repository="acme/nope", key="k2")
            [tomb] = await fetch_repository(client, gone)
            assert isinstance(tomb, Repository) and tomb.state == "deleted"
