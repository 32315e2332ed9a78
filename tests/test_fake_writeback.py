"""The fake Bitbucket's PR diffs and write paths behave as Bitbucket's do (issue 12)."""

from __future__ import annotations

from typing import Any

import aiohttp

from rcingest.testing.fake_bitbucket import FakeBitbucket, GenSpec

AUTH = {"Authorization": "Bearer write-token-1"}
REPO = "acme/service-00"


async def first_pr(fake: FakeBitbucket) -> int:
    return fake.data.repos[REPO].pull_requests[0].id


async def test_pr_diff_redirects_then_serves_plain_bytes() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake, aiohttp.ClientSession() as s:
        pr = await first_pr(fake)
        fake.writes.plant_diff(REPO, pr, b"diff --git a/x b/x\n+caf\xe9\n")
        url = f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}/diff"
        async with s.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
        assert location.startswith(f"http://127.0.0.1:{fake.port}/2.0/repositories/{REPO}/diff/")
        async with s.get(location) as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            assert await resp.read() == b"diff --git a/x b/x\n+caf\xe9\n"
        fake.writes.diff_status[(REPO, pr)] = 555
        async with s.get(url) as resp:
            assert resp.status == 555
        async with s.get(f"{fake.base_url}/repositories/{REPO}/pullrequests/99999/diff") as resp:
            assert resp.status == 404


async def test_comments_are_created_listed_edited_and_deleted() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake, aiohttp.ClientSession() as s:
        pr = await first_pr(fake)
        base = f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}/comments"
        async with s.post(base, json={"content": {"raw": "first"}}, headers=AUTH) as resp:
            assert resp.status == 201
            created: dict[str, Any] = await resp.json()
        assert created["user"]["account_id"] == fake.writes.user["account_id"]
        edit = {"content": {"raw": "second"}}
        async with s.put(f"{base}/{created['id']}", json=edit, headers=AUTH) as resp:
            assert resp.status == 200
        async with s.get(base) as resp:
            listed = await resp.json()
        assert [c["content"]["raw"] for c in listed["values"]] == ["second"]
        async with s.delete(f"{base}/{created['id']}", headers=AUTH) as resp:
            assert resp.status == 204
        assert fake.writes.live_comments(REPO, pr) == []


async def test_writes_need_authorization_with_write_scope() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake, aiohttp.ClientSession() as s:
        pr = await first_pr(fake)
        base = f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}/comments"
        async with s.post(base, json={"content": {"raw": "x"}}) as resp:
            assert resp.status == 401
        fake.writes.read_only.add(AUTH["Authorization"])
        async with s.post(base, json={"content": {"raw": "x"}}, headers=AUTH) as resp:
            assert resp.status == 403
        assert fake.writes.live_comments(REPO, pr) == []
        assert len(fake.writes.received) == 2


async def test_build_status_with_the_same_key_overwrites() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake, aiohttp.ClientSession() as s:
        commit = "a" * 40
        url = f"{fake.base_url}/repositories/{REPO}/commit/{commit}/statuses/build"
        for state in ("INPROGRESS", "FAILED"):
            body = {"key": "rcingest-secrets", "state": state}
            async with s.post(url, json=body, headers=AUTH) as resp:
                assert resp.status == 201
        async with s.post(url, json={"key": "k", "state": "MAYBE"}, headers=AUTH) as resp:
            assert resp.status == 400
        statuses = fake.writes.statuses[(REPO, commit)]
        assert list(statuses) == ["rcingest-secrets"]
        assert statuses["rcingest-secrets"]["state"] == "FAILED"


async def test_code_insights_limits() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake, aiohttp.ClientSession() as s:
        commit = "b" * 40
        report = f"{fake.base_url}/repositories/{REPO}/commit/{commit}/reports/rcingest-secrets"
        body = {"title": "Secrets", "report_type": "SECURITY", "result": "FAILED"}
        async with s.put(report, json=body, headers=AUTH) as resp:
            assert resp.status == 200
        too_many = [{"external_id": f"f{i}"} for i in range(101)]
        async with s.post(report + "/annotations", json=too_many, headers=AUTH) as resp:
            assert resp.status == 400
        for start in range(0, 1000, 100):
            batch = [{"external_id": f"f{i}"} for i in range(start, start + 100)]
            async with s.post(report + "/annotations", json=batch, headers=AUTH) as resp:
                assert resp.status == 200
        async with s.post(report + "/annotations", json=[{"external_id": "x"}], headers=AUTH) as r:
            assert r.status == 400  # 1,000 per report at most
        async with s.delete(report, headers=AUTH) as resp:
            assert resp.status == 204
        assert fake.writes.annotations.get((REPO, commit, "rcingest-secrets")) is None
