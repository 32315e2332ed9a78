"""The fake Bitbucket's reviews, approvals, default reviewers and statuses (issue 13).

What the compliance enforcer reads: the single-PR GET (the only shape with
``participants`` and ``reviewers``), the PR's and the commit's statuses (from
rcingest and from other tools), the effective default reviewers, and webhook
payloads built from the same state.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from rcingest.testing.fake_bitbucket import FakeBitbucket, Faults, GenSpec
from rcingest.testing.fake_bitbucket.app import render_pr
from rcingest.testing.fake_bitbucket.events import commit_status_event, pullrequest_event

AUTH = {"Authorization": "Bearer write-token-1"}
REPO = "acme/service-00"
SPEC = GenSpec(repositories=1, branches=5)  # PR 1 MERGED, 2 OPEN, 3 DECLINED, 4 SUPERSEDED


def open_pr(fake: FakeBitbucket) -> int:
    return next(p.id for p in fake.data.repos[REPO].pull_requests if p.state == "OPEN")


async def get(s: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with s.get(url, params=params) as resp:
        return resp.status, await resp.json()


async def all_pages(s: aiohttp.ClientSession, url: str, **params: Any) -> list[Any]:
    status, body = await get(s, url, **params)
    assert status == 200
    values = list(body["values"])
    while "next" in body:
        status, body = await get(s, body["next"])
        values += body["values"]
    return values


def test_users_are_deterministic_and_authors_are_users() -> None:
    fake = FakeBitbucket(SPEC)
    alice = fake.review.user("alice")
    assert alice == FakeBitbucket(SPEC).review.user("alice")
    assert alice["display_name"] == "Alice" and alice["nickname"] == "alice"
    assert alice["uuid"].startswith("{") and alice["account_id"].startswith("557058:")
    assert alice["account_id"] != fake.review.user("bob")["account_id"]
    name, _, account = fake.data.author(0)
    assert fake.review.user(name)["account_id"] == account == fake.review.user("ana")["account_id"]
    # An author whose commits are linked to no account still has one as a PR author.
    unlinked = next(i for i, a in enumerate(fake.data.authors()) if a[2] is None)
    assert fake.review.user(fake.data.author(unlinked)[0])["account_id"].startswith("557058:")
    pr = fake.data.repos[REPO].pull_requests[0]
    listed = render_pr(fake.data, fake.data.repos[REPO], pr)
    assert listed["author"] == fake.review.author(REPO, pr.id)


async def test_single_pr_has_participants_the_list_does_not() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        review = fake.review
        review.add_reviewer(REPO, pr, "alice")
        review.add_reviewer(REPO, pr, "bob")
        review.approve(REPO, pr, "alice")
        review.approve(REPO, pr, "carol")  # a participant who is not a reviewer
        review.request_changes(REPO, pr, "bob")
        status, one = await get(s, f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}")
        assert status == 200
        assert [u["nickname"] for u in one["reviewers"]] == ["alice", "bob"]
        by_nick = {p["user"]["nickname"]: p for p in one["participants"]}
        assert by_nick["alice"]["role"] == "REVIEWER" and by_nick["alice"]["approved"] is True
        assert by_nick["alice"]["state"] == "approved" and by_nick["alice"]["participated_on"]
        assert by_nick["carol"]["role"] == "PARTICIPANT" and by_nick["carol"]["approved"]
        assert by_nick["bob"]["state"] == "changes_requested" and not by_nick["bob"]["approved"]
        assert all(p["type"] == "participant" for p in one["participants"])
        assert one["source"]["repository"]["full_name"] == REPO
        assert one["closed_by"] is None and one["author"]["uuid"]
        status, listing = await get(s, f"{fake.base_url}/repositories/{REPO}/pullrequests")
        assert status == 200 and [v["id"] for v in listing["values"]] == [pr]
        assert "participants" not in listing["values"][0]
        assert "reviewers" not in listing["values"][0]
        review.unapprove(REPO, pr, "alice")
        review.remove_change_request(REPO, pr, "bob")
        review.unapprove(REPO, pr, "bob")  # nothing to withdraw: no change
        _, one = await get(s, f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}")
        states = {p["user"]["nickname"]: (p["approved"], p["state"]) for p in one["participants"]}
        assert states == {"alice": (False, None), "bob": (False, None), "carol": (True, "approved")}
        review.remove_reviewer(REPO, pr, "bob")
        _, one = await get(s, f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}")
        assert [u["nickname"] for u in one["reviewers"]] == ["alice"]
        assert {p["user"]["nickname"]: p["role"] for p in one["participants"]}["bob"] == (
            "PARTICIPANT"
        )


async def test_approve_and_request_changes_routes_act_as_the_token_user() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        base = f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}"
        me = fake.writes.user["account_id"]
        async with s.post(base + "/approve") as resp:
            assert resp.status == 401
        async with s.post(base + "/approve", headers=AUTH) as resp:
            assert resp.status == 200
            participant = await resp.json()
        assert participant["user"]["account_id"] == me and participant["approved"] is True
        async with s.post(base + "/request-changes", headers=AUTH) as resp:
            assert resp.status == 200
            assert (await resp.json())["state"] == "changes_requested"
        async with s.delete(base + "/approve", headers=AUTH) as resp:
            assert resp.status == 204  # no approval left; the change request stays
        _, one = await get(s, base)
        assert [(p["approved"], p["state"]) for p in one["participants"]] == [
            (False, "changes_requested")
        ]
        async with s.delete(base + "/request-changes", headers=AUTH) as resp:
            assert resp.status == 204
        _, one = await get(s, base)
        assert [(p["approved"], p["state"]) for p in one["participants"]] == [(False, None)]
        async with s.post(f"{fake.base_url}/repositories/{REPO}/pullrequests/999/approve") as r:
            assert r.status == 404
        routes = fake.counters.routes
        assert routes["approve"] == 3 and routes["unapprove"] == 1  # the 404 counts too
        assert routes["request_changes"] == 1 and routes["remove_request_changes"] == 1
        assert fake.counters.repo_routes[f"pullrequest {REPO}"] == 2


async def test_approving_a_merged_pull_request_is_400() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        fake.review.approve(REPO, pr, "alice")  # before the merge: helpers build any history
        fake.review.merge(REPO, pr, by="dave")
        base = f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}"
        for method, path in [
            ("POST", "/approve"),
            ("DELETE", "/approve"),
            ("POST", "/request-changes"),
        ]:
            async with s.request(method, base + path, headers=AUTH) as resp:
                assert resp.status == 400
        _, one = await get(s, base)
        assert one["state"] == "MERGED" and one["closed_by"]["nickname"] == "dave"
        assert one["merge_commit"]["hash"] == one["source"]["commit"]["hash"]
        assert [p["user"]["nickname"] for p in one["participants"] if p["approved"]] == ["alice"]
        declined = next(p.id for p in fake.data.repos[REPO].pull_requests if p.state == "DECLINED")
        async with s.post(
            f"{fake.base_url}/repositories/{REPO}/pullrequests/{declined}/approve", headers=AUTH
        ) as resp:
            assert resp.status == 400


async def test_default_reviewers_are_paged_and_typed() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        review = fake.review
        review.set_default_reviewers(REPO, [f"dev{i:02d}" for i in range(25)])
        review.set_default_reviewers(REPO, ["lead", "security"], reviewer_type="project")
        url = f"{fake.base_url}/repositories/{REPO}/effective-default-reviewers"
        status, first = await get(s, url, pagelen=10)
        assert status == 200 and len(first["values"]) == 10 and "next" in first
        values = await all_pages(s, url, pagelen=10)
        assert len(values) == 27 and all(v["type"] == "default_reviewer" for v in values)
        assert [v["user"]["nickname"] for v in values[:2]] == ["lead", "security"]
        assert {v["reviewer_type"] for v in values[2:]} == {"repository"}
        users = await all_pages(s, f"{fake.base_url}/repositories/{REPO}/default-reviewers")
        assert [u["nickname"] for u in users] == [f"dev{i:02d}" for i in range(25)]
        assert all(u["type"] == "user" for u in users)
        review.set_default_reviewers(REPO, [], reviewer_type="repository")
        assert [v["user"]["nickname"] for v in await all_pages(s, url)] == ["lead", "security"]
        assert fake.counters.routes["effective_default_reviewers"] == 5
        assert fake.counters.routes["default_reviewers"] == 2
        with pytest.raises(ValueError, match="reviewer_type"):
            review.set_default_reviewers(REPO, ["x"], reviewer_type="workspace")


async def test_faults_403_on_default_reviewers_and_404_on_one_pull_request() -> None:
    faults = Faults(fail_paths={"effective-default-reviewers": 403})
    async with FakeBitbucket(SPEC, faults) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        base = f"{fake.base_url}/repositories/{REPO}"
        status, body = await get(s, f"{base}/effective-default-reviewers")
        assert status == 403 and body["type"] == "error"
        assert (await get(s, f"{base}/default-reviewers"))[0] == 200
        faults.fail_paths.clear()
        faults.fail_routes[f"pullrequest {REPO}#{pr}"] = 404
        assert (await get(s, f"{base}/pullrequests/{pr}"))[0] == 404
        assert (await get(s, f"{base}/pullrequests/{pr}/statuses"))[0] == 200
        assert (await get(s, f"{base}/pullrequests/1"))[0] == 200
        faults.fail_routes = {"effective_default_reviewers": 403}
        assert (await get(s, f"{base}/effective-default-reviewers"))[0] == 403
        assert fake.counters.routes["effective_default_reviewers"] == 2


async def test_statuses_from_rcingest_and_from_other_tools_are_both_listed() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        head = fake.data.repos[REPO].pull_requests[pr - 1].commits[0]
        base = f"{fake.base_url}/repositories/{REPO}"
        body = {"key": "rcingest-secrets", "state": "SUCCESSFUL", "name": "Secrets"}
        async with s.post(f"{base}/commit/{head}/statuses/build", json=body, headers=AUTH) as r:
            assert r.status == 201
        ci = fake.review.add_status(REPO, head[:12], "ci-build", "FAILED", "CI build")
        assert ci["commit"]["hash"] == head and ci["name"] == "CI build"
        fake.review.add_status(REPO, head, "ci-build", "SUCCESSFUL")  # same key overwrites
        fake.review.add_status(REPO, "f" * 40, "elsewhere", "FAILED")  # another commit
        values = await all_pages(s, f"{base}/pullrequests/{pr}/statuses")
        assert {v["key"]: v["state"] for v in values} == {
            "rcingest-secrets": "SUCCESSFUL",
            "ci-build": "SUCCESSFUL",
        }
        assert all(v["commit"]["hash"] == head for v in values)
        assert all(v["links"]["commit"]["href"].endswith(f"/commit/{head}") for v in values)
        for rev in (head, head[:12]):
            _, listed = await get(s, f"{base}/commit/{rev}/statuses")
            assert {v["key"] for v in listed["values"]} == {"rcingest-secrets", "ci-build"}
        for i in range(12):
            fake.review.add_status(REPO, head, f"lint-{i}", "INPROGRESS")
        status, page = await get(s, f"{base}/pullrequests/{pr}/statuses", pagelen=5)
        assert status == 200 and len(page["values"]) == 5 and "next" in page
        assert len(await all_pages(s, f"{base}/pullrequests/{pr}/statuses", pagelen=5)) == 14
        with pytest.raises(ValueError, match="state"):
            fake.review.add_status(REPO, head, "x", "PASSED")


async def test_set_source_and_push_change_what_the_pr_shows() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        base = f"{fake.base_url}/repositories/{REPO}"
        fake.review.set_source(REPO, pr, branch="wip/no-story-key")
        new = fake.review.push(REPO, pr, "REL-7: follow-up")
        _, one = await get(s, f"{base}/pullrequests/{pr}")
        assert one["source"]["branch"]["name"] == "wip/no-story-key"
        assert one["source"]["commit"]["hash"] == new[:12] and len(new) == 40
        commits = await all_pages(s, f"{base}/pullrequests/{pr}/commits")
        assert commits[0]["hash"] == new and commits[0]["message"] == "REL-7: follow-up"
        assert commits[1]["hash"] == commits[0]["parents"][0]["hash"]
        branches = {
            b["name"]: b["target"]["hash"] for b in await all_pages(s, f"{base}/refs/branches")
        }
        assert branches["wip/no-story-key"] == new
        assert (await get(s, f"{base}/commit/{new[:12]}"))[0] == 200
        fake.review.set_source(REPO, pr, fork="mallory/service-00")
        _, one = await get(s, f"{base}/pullrequests/{pr}")
        assert one["source"]["repository"]["full_name"] == "mallory/service-00"
        assert one["destination"]["repository"]["full_name"] == REPO
        fake.review.set_source(REPO, pr, fork=REPO)
        _, one = await get(s, f"{base}/pullrequests/{pr}")
        assert one["source"]["repository"]["full_name"] == REPO


async def test_pullrequest_event_is_the_single_pr_shape_with_the_actor() -> None:
    async with FakeBitbucket(SPEC) as fake, aiohttp.ClientSession() as s:
        pr = open_pr(fake)
        fake.review.add_reviewer(REPO, pr, "alice")
        fake.review.approve(REPO, pr, "alice")
        event = pullrequest_event(fake, REPO, pr, "pullrequest:approved")
        assert event["actor"]["nickname"] == "alice"
        assert event["approval"]["user"] == event["actor"] and event["approval"]["date"]
        assert event["repository"]["full_name"] == REPO
        assert event["repository"]["uuid"] == fake.data.repos[REPO].uuid
        _, one = await get(s, f"{fake.base_url}/repositories/{REPO}/pullrequests/{pr}")
        assert json.loads(json.dumps(event["pullrequest"])) == one
        assert len(event["pullrequest"]["source"]["commit"]["hash"]) == 12
        # What older tests post ({"pullrequest": render_pr(...), "repository": {...}}) is a subset.
        listed = render_pr(
            fake.data, fake.data.repos[REPO], fake.data.repos[REPO].pull_requests[pr - 1]
        )
        for key, value in listed.items():
            if key in ("source", "destination"):  # the detail adds ``repository`` there
                assert {**value, "repository": event["pullrequest"][key]["repository"]} == (
                    event["pullrequest"][key]
                )
            else:
                assert event["pullrequest"][key] == value
        assert pullrequest_event(fake.data, REPO, pr, "pullrequest:approved") == event
        created = pullrequest_event(fake.data, REPO, pr, "pullrequest:created")
        assert created["actor"] == fake.review.author(REPO, pr) and "approval" not in created
        fake.review.request_changes(REPO, pr, "bob")
        changes = pullrequest_event(fake, REPO, pr, "pullrequest:changes_request_created")
        assert changes["changes_request"]["user"]["nickname"] == "bob"
        fake.review.merge(REPO, pr, by="dave")
        fulfilled = pullrequest_event(fake, REPO, pr, "pullrequest:fulfilled")
        assert fulfilled["actor"]["nickname"] == "dave"
        assert fulfilled["pullrequest"]["state"] == "MERGED"
        with pytest.raises(ValueError, match="not a pull request event"):
            pullrequest_event(fake, REPO, pr, "repo:push")


async def test_commit_status_event_names_the_full_hash() -> None:
    async with FakeBitbucket(SPEC) as fake:
        pr = open_pr(fake)
        head = fake.data.repos[REPO].pull_requests[pr - 1].commits[0]
        status = fake.review.add_status(REPO, head, "ci-build", "FAILED", refname="feature/x")
        event = commit_status_event(
            REPO, head[:12], status, fake_or_data=fake, base_url=fake.base_url
        )
        value = event["commit_status"]
        assert value["commit"]["hash"] == head and value["state"] == "FAILED"
        assert (
            value["links"]["commit"]["href"] == f"{fake.base_url}/repositories/{REPO}/commit/{head}"
        )
        assert value["type"] == "build" and value["refname"] == "feature/x"
        assert value["created_on"] == status["created_on"]
        assert event["repository"]["uuid"] == fake.data.repos[REPO].uuid and event["actor"]["uuid"]
        bare = commit_status_event(REPO, head, {"key": "k", "state": "SUCCESSFUL"})
        assert bare["commit_status"]["links"]["commit"]["href"].startswith(
            "https://api.bitbucket.org/2.0/repositories/"
        )
        assert "refname" not in bare["commit_status"] and bare["commit_status"]["name"] == "k"
