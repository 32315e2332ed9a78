"""The fake Bitbucket: routes, determinism, pagination oddities, faults and counters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from rcingest.interfaces import Window
from rcingest.testing import FakeBitbucket, FakeData, Faults, GenSpec

END = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SPEC = GenSpec(end=END, repositories=3, branches=3, commits=30)


async def get(session: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with session.get(url, params=params or None) as resp:
        body = await resp.json(content_type=None) if resp.status != 429 else await resp.text()
        return resp.status, body


async def walk(session: aiohttp.ClientSession, url: str, **params: Any) -> list[Any]:
    values: list[Any] = []
    status, body = await get(session, url, **params)
    for _ in range(100):  # bounded
        assert status == 200, body
        if not body["values"]:
            break
        values.extend(body["values"])
        if "next" not in body:
            break
        status, body = await get(session, body["next"])
    return values


def test_generation_is_deterministic_and_shaped_as_specified() -> None:
    a, b = FakeData(SPEC), FakeData(SPEC)
    assert {n: list(r.commits) for n, r in a.repos.items()} == {
        n: list(r.commits) for n, r in b.repos.items()
    }
    repo = a.repos["acme/service-00"]
    assert next(iter(repo.heads)) == "main"
    assert any(name.startswith("feature/OPS-") for name in repo.heads)
    for branch in repo.heads:
        assert len(repo.listing([branch], [])) == 30  # every branch reaches `commits`
    main = {c.hash for c in repo.listing(["main"], [])}
    feature = {c.hash for c in repo.listing([list(repo.heads)[1]], [])}
    assert main & feature  # shared history
    files = [len(repo.files(h, 20)) for h in repo.commits]
    assert min(files) >= 1 and max(files) <= 20
    authors = {a.author(c.author)[2] is None for c in repo.commits.values()}
    assert authors == {True, False}  # with and without linked accounts
    assert any("REL-" in c.message or "OPS-" in c.message for c in repo.commits.values())
    assert len(repo.pull_requests) == 2


async def test_routes_answer_like_bitbucket() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        base = fake.base_url
        assert base.startswith("http://127.0.0.1:")
        status, ws = await get(s, f"{base}/workspaces/acme")
        assert status == 200 and ws["slug"] == "acme"
        repos = await walk(s, f"{base}/repositories/acme", pagelen=2)
        assert [r["full_name"] for r in repos] == [f"acme/service-0{i}" for i in range(3)]
        assert repos[0]["mainbranch"]["name"] == "main"
        status, one = await get(s, f"{base}/repositories/acme/service-01")
        assert one["full_name"] == "acme/service-01"
        status, err = await get(s, f"{base}/repositories/acme/nope")
        assert status == 404 and err["error"]["message"] == "Repository acme/nope not found"
        branches = await walk(s, f"{base}/repositories/acme/service-00/refs/branches")
        assert {b["name"] for b in branches} == set(fake.data.repos["acme/service-00"].heads)


async def test_repository_filters_q_and_role() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        url = f"{fake.base_url}/repositories/acme"
        names = lambda values: [v["full_name"] for v in values]  # noqa: E731
        assert names(await walk(s, url, q='name ~ "01"')) == ["acme/service-01"]
        assert names(await walk(s, url, q="is_private = false")) == ["acme/service-02"]
        assert names(await walk(s, url, q='language = "python" AND is_private = true')) == [
            "acme/service-00"
        ]
        recent = (END - timedelta(days=5)).isoformat()
        assert names(await walk(s, url, q=f"updated_on >= {recent}")) == [
            "acme/service-00",
            "acme/service-01",
        ]
        assert names(await walk(s, url, role="owner")) == ["acme/service-00", "acme/service-02"]
        status, _body = await get(s, url, q='name = "a" OR name = "b"')
        assert status == 400


async def test_commits_include_exclude_and_short_hash() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        repo = fake.data.repos["acme/service-00"]
        feature = list(repo.heads)[1]
        url = f"{fake.base_url}/repositories/acme/service-00"
        own = await walk(s, f"{url}/commits", include=feature, exclude="main", pagelen=4)
        assert len(own) == 10 and all(c["hash"] in repo.commits for c in own)
        dates = [c["date"] for c in own]
        assert dates == sorted(dates, reverse=True)  # newest first
        by_rev = await walk(s, f"{url}/commits/main")
        assert len(by_rev) == 30
        head = repo.heads["main"]
        status, one = await get(s, f"{url}/commit/{head[:12]}")
        assert status == 200 and one["hash"] == head
        status, _ = await get(s, f"{url}/commits", include="no-such-branch")
        assert status == 404
        status, diff = await get(s, f"{url}/diffstat/{head}")
        assert status == 200 and 1 <= len(diff["values"]) <= 20


async def test_pull_requests_state_q_pagelen_and_opaque_commit_pages() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        url = f"{fake.base_url}/repositories/acme/service-00/pullrequests"
        status, default = await get(s, url)
        assert all(p["state"] == "OPEN" for p in default["values"])
        everything = await walk(s, url + "?state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED")
        assert {p["state"] for p in everything} == {"MERGED", "OPEN"}
        assert all(len(p["source"]["commit"]["hash"]) == 12 for p in everything)
        status, body = await get(s, url, pagelen="51")
        assert status == 400 and body["error"]["message"] == "Invalid pagelen"
        late = (END + timedelta(hours=1)).isoformat()
        status, body = await get(s, url, state="MERGED", q=f"updated_on >= {late}")
        assert body["values"] == []
        pr = everything[0]
        status, first = await get(s, f"{url}/{pr['id']}/commits", pagelen="3")
        assert "page=" in first["next"] and not first["next"].split("page=")[1].isdigit()
        commits = await walk(s, f"{url}/{pr['id']}/commits", pagelen="3")
        assert len(commits) == 10


async def test_pagination_oddities() -> None:
    faults = Faults(opaque_pages=True, next_on_empty_last=True)
    async with FakeBitbucket(SPEC, faults) as fake, aiohttp.ClientSession() as s:
        url = f"{fake.base_url}/repositories/acme"
        _, first = await get(s, url, pagelen=2)
        assert "page" not in first and not first["next"].split("page=")[1].isdigit()
        _, second = await get(s, first["next"])
        assert len(second["values"]) == 1 and "next" in second  # next on the last page
        _status, third = await get(s, second["next"])
        assert third["values"] == [] and "next" in third  # ... pointing at an empty page


async def test_faults_and_counters() -> None:
    faults = Faults(rate_limit_every=2, retry_after=1)
    async with FakeBitbucket(SPEC, faults) as fake, aiohttp.ClientSession() as s:
        url = f"{fake.base_url}/repositories/acme/service-00"
        async with s.get(url) as r1, s.get(url) as r2:
            assert r1.status == 200
            assert r2.status == 429 and r2.headers["Retry-After"] == "1"
            assert await r2.text() == "Rate limit for this resource has been exceeded"
        faults.retry_after = None
        faults.rate_limit_every = 0
        faults.error_every = 1
        faults.error_status = 502
        async with s.get(url) as r3:
            assert r3.status == 502
        faults.error_every = 0
        faults.diffstat_timeout_every = 1
        head = fake.data.repos["acme/service-00"].heads["main"]
        async with s.get(f"{url}/diffstat/{head}") as r4:
            assert r4.status == 555
        faults.diffstat_timeout_every = 0
        faults.fail_paths = {"/service-01": 500}
        async with s.get(f"{fake.base_url}/repositories/acme/service-01") as r5:
            assert r5.status == 500
        counters = fake.counters
        assert counters.total == 5
        assert counters.routes["repository"] == 4 and counters.routes["diffstat"] == 1
        assert counters.statuses[429] == 1 and counters.statuses[555] == 1
        stats = await get(s, f"http://127.0.0.1:{fake.port}/_fake/stats")
        assert stats[1]["total"] == 5  # the stats route is not counted


async def test_latency_and_peak_concurrency() -> None:
    async with FakeBitbucket(SPEC, Faults(latency=0.05)) as fake, aiohttp.ClientSession() as s:
        url = f"{fake.base_url}/repositories/acme/service-00"
        await asyncio.gather(*(get(s, url) for _ in range(6)))
        assert fake.counters.peak_in_flight == 6
        assert fake.counters.in_flight == 0


async def test_expected_auth() -> None:
    async with (
        FakeBitbucket(SPEC, expected_auth="Bearer t0k") as fake,
        aiohttp.ClientSession() as s,
    ):
        url = f"{fake.base_url}/repositories/acme/service-00"
        async with s.get(url) as r:
            assert r.status == 401
        async with s.get(url, headers={"Authorization": "Bearer t0k"}) as r:
            assert r.status == 200
        assert fake.counters.authorizations == {"Bearer t0k"}


def test_expected_answers_helpers() -> None:
    data = FakeData(SPEC)
    window = Window(END - timedelta(hours=3), END + timedelta(minutes=1))
    repo = data.repos["acme/service-00"]
    expected = data.expected_commits(window, list(repo.heads), ["acme/service-00"])
    assert expected and all(r == "acme/service-00" for r, _ in expected.values())
    assert all(window.start <= repo.commits[h].date < window.end for h in expected)
    prs = data.expected_pull_requests(window)
    assert prs and all(window.start <= p.updated_on < window.end for p in prs.values())


@pytest.mark.parametrize("every", [0, 7])
def test_out_of_order_dates(every: int) -> None:
    data = FakeData(GenSpec(end=END, repositories=1, commits=40, out_of_order_every=every))
    listing = data.repos["acme/service-00"].listing(["main"], [])
    dates = [c.date for c in listing]
    assert (dates == sorted(dates, reverse=True)) is (every == 0)
