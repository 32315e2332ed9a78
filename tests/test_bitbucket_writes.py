"""The client's writes and bounded text reads, against the fake Bitbucket (issue 12)."""

from __future__ import annotations

import pytest

from rcingest.bitbucket.auth import AuthConfig
from rcingest.bitbucket.client import BitbucketClient, ClientConfig, ResponseTooLarge
from rcingest.bitbucket.retry import BitbucketError
from rcingest.interfaces import Stats
from rcingest.testing.fake_bitbucket import FakeBitbucket, Faults, GenSpec

TOKEN = "write-tok-7Hq2mZ9x"
REPO = "acme/service-00"


def config(fake: FakeBitbucket) -> ClientConfig:
    return ClientConfig(
        base_url=fake.base_url,
        auth=AuthConfig(access_token=TOKEN),
        backoff_base=0.001,
        backoff_max=0.01,
        max_tries=3,
    )


async def test_a_pr_diff_follows_the_same_api_redirect_and_is_bounded() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        fake.writes.plant_diff(REPO, pr, b"diff --git a/x b/x\n" + b"+x\n" * 1000)
        path = f"/repositories/{REPO}/pullrequests/{pr}/diff"
        async with BitbucketClient(config(fake), Stats()) as client:
            text = await client.get_text(path, max_bytes=10_000)
            assert text.startswith(b"diff --git")
            with pytest.raises(ResponseTooLarge):
                await client.get_text(path, max_bytes=1_000)


async def test_a_diff_redirect_to_another_host_is_refused_before_credentials_go_there() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        fake.writes.diff_redirect_origin = "http://127.0.0.2:9"
        async with BitbucketClient(config(fake), Stats()) as client:
            with pytest.raises(BitbucketError, match="refusing to follow"):
                await client.get_text(f"/repositories/{REPO}/pullrequests/{pr}/diff")


async def test_555_is_an_answer_not_retried() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        fake.writes.diff_status[(REPO, pr)] = 555
        stats = Stats()
        async with BitbucketClient(config(fake), stats) as client:
            with pytest.raises(BitbucketError) as caught:
                await client.get_text(
                    f"/repositories/{REPO}/pullrequests/{pr}/diff", final=frozenset({555})
                )
        assert caught.value.status == 555
        assert fake.counters.routes["diff"] == 1  # asked once, not max_tries times


async def test_writes_send_json_and_retry_only_when_safe() -> None:
    async with FakeBitbucket(GenSpec(repositories=1), Faults(fail_paths={})) as fake:
        commit = "c" * 40
        path = f"/repositories/{REPO}/commit/{commit}/statuses/build"
        async with BitbucketClient(config(fake), Stats()) as client:
            answer = await client.send("POST", path, {"key": "k", "state": "SUCCESSFUL"})
            assert answer["state"] == "SUCCESSFUL"
            fake.faults.fail_paths["/statuses/build"] = 503
            with pytest.raises(BitbucketError, match="gave up"):
                await client.send("POST", path, {"key": "k", "state": "FAILED"})
            retried = fake.counters.routes["status_create"]
            assert retried == 1 + 3  # the first write, then max_tries attempts
            with pytest.raises(BitbucketError, match="503"):
                await client.send("POST", path, {"key": "k", "state": "FAILED"}, retry=False)
            assert fake.counters.routes["status_create"] == retried + 1


async def test_a_write_without_scope_fails_at_once_with_the_answer_and_no_token() -> None:
    async with FakeBitbucket(GenSpec(repositories=1)) as fake:
        pr = fake.data.repos[REPO].pull_requests[0].id
        fake.writes.read_only.add(f"Bearer {TOKEN}")
        path = f"/repositories/{REPO}/pullrequests/{pr}/comments"
        async with BitbucketClient(config(fake), Stats()) as client:
            with pytest.raises(BitbucketError) as caught:
                await client.send("POST", path, {"content": {"raw": "hi"}})
        assert caught.value.status == 403
        message = str(caught.value)
        assert "POST" in message and "privilege scopes" in message and TOKEN not in message
        assert fake.counters.routes["comment_create"] == 1
