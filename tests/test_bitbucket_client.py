"""The Bitbucket REST client with aioresponses: pagination, retries, auth, errors, pacing."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from rcingest.bitbucket.auth import AuthConfig, auth_header
from rcingest.bitbucket.budget import HourlyBudget
from rcingest.bitbucket.client import BitbucketClient, ClientConfig, page_size
from rcingest.bitbucket.retry import BitbucketError, Retryable, retry_after_seconds, wait_gen
from rcingest.errors import ConfigError
from rcingest.interfaces import Stats

API = "https://api.example.test/2.0"
TOKEN = "tok-SECRET-123456"


def config(**kwargs: Any) -> ClientConfig:
    base: dict[str, Any] = {
        "base_url": API,
        "auth": AuthConfig(email="me@example.com", api_token=TOKEN),
        "backoff_base": 0.001,
        "backoff_max": 0.01,
    }
    base.update(kwargs)
    return ClientConfig(**base)


def sent_headers(m: aioresponses) -> list[dict[str, str]]:
    return [call.kwargs.get("headers") or {} for calls in m.requests.values() for call in calls]


def url(path: str, **query: Any) -> re.Pattern[str]:
    """A pattern for ``API + path`` with any query string (aioresponses matches the full URL)."""
    return re.compile(re.escape(API + path) + r"(\?.*)?$")


# --- pagination ----------------------------------------------------------------------


async def test_pages_follow_next_exactly_with_numeric_pages(mocked: aioresponses) -> None:
    first = f"{API}/repositories/ws/r/commits?include=main&pagelen=100"
    second = f"{API}/repositories/ws/r/commits?include=main&pagelen=100&page=2"
    mocked.get(first, payload={"values": [{"hash": "a"}], "next": second, "pagelen": 100})
    mocked.get(second, payload={"values": [{"hash": "b"}], "pagelen": 100})
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        got = [c["hash"] async for c in client.commits("ws/r", ["main"])]
    assert got == ["a", "b"]
    assert stats.get("http.requests") == 2
    # aioresponses records URLs with sorted query keys; compare path and parameters.
    asked = [(u.path, sorted(u.query.items())) for u in (URL(str(k[1])) for k in mocked.requests)]
    assert asked == [(URL(x).path, sorted(URL(x).query.items())) for x in (first, second)]


async def test_pages_follow_opaque_cursor_tokens(mocked: aioresponses) -> None:
    first = f"{API}/repositories/ws/r/pullrequests/7/commits?pagelen=100"
    second = f"{API}/repositories/ws/r/pullrequests/7/commits?page=dbtR"
    mocked.get(first, payload={"values": [{"hash": "a" * 40}], "next": second})
    mocked.get(second, payload={"values": [{"hash": "b" * 40}]})
    async with BitbucketClient(config(), Stats()) as client:
        got = [c["hash"] async for c in client.pullrequest_commits("ws/r", 7)]
    assert got == ["a" * 40, "b" * 40]


async def test_pages_stop_at_an_empty_page_even_with_next(mocked: aioresponses) -> None:
    first = f"{API}/repositories/ws?pagelen=100"
    empty = f"{API}/repositories/ws?pagelen=100&page=2"
    mocked.get(first, payload={"values": [{"full_name": "ws/a"}], "next": empty})
    mocked.get(empty, payload={"values": [], "next": f"{API}/repositories/ws?pagelen=100&page=3"})
    async with BitbucketClient(config(), Stats()) as client:
        pages = [p async for p in client.pages("/repositories/ws")]
    assert pages == [[{"full_name": "ws/a"}]]
    assert len(mocked.requests) == 2


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example/2.0/repositories/ws/r/commits?page=2",
        "http://api.example.test/2.0/repositories/ws/r/commits?page=2",  # scheme downgrade
        "https://api.example.test:8443/2.0/repositories/ws/r/commits?page=2",
    ],
)
async def test_foreign_next_is_refused_and_never_requested(
    mocked: aioresponses, foreign: str
) -> None:
    mocked.get(
        url("/repositories/ws/r/commits"), payload={"values": [{"hash": "a"}], "next": foreign}
    )
    async with BitbucketClient(config(), Stats()) as client:
        with pytest.raises(BitbucketError, match="refusing to follow") as info:
            [c async for c in client.commits("ws/r", ["main"])]
    assert len(mocked.requests) == 1  # only the API was asked
    assert TOKEN not in str(info.value)


async def test_same_origin_redirect_followed_foreign_refused(mocked: aioresponses) -> None:
    mocked.get(
        f"{API}/repositories/ws/old", status=301, headers={"Location": f"{API}/repositories/ws/new"}
    )
    mocked.get(f"{API}/repositories/ws/new", payload={"full_name": "ws/new"})
    mocked.get(
        f"{API}/repositories/ws/gone", status=302, headers={"Location": "https://evil.example/x"}
    )
    async with BitbucketClient(config(), Stats()) as client:
        assert (await client.get_json("/repositories/ws/old"))["full_name"] == "ws/new"
        with pytest.raises(BitbucketError, match="refusing to follow"):
            await client.get_json("/repositories/ws/gone")


async def test_a_redirect_loop_fails_after_five_hops_naming_the_url(
    mocked: aioresponses,
) -> None:
    for _ in range(10):
        mocked.get(f"{API}/a", status=302, headers={"Location": f"{API}/b"})
        mocked.get(f"{API}/b", status=302, headers={"Location": "/2.0/a"})
    async with BitbucketClient(config(), Stats()) as client:
        with pytest.raises(BitbucketError, match=r"/2\.0/a: more than 5 redirects") as info:
            await client.get_json("/a")
    assert info.value.url == f"{API}/a"
    assert sum(len(calls) for calls in mocked.requests.values()) == 6  # the request + 5 hops


async def test_a_redirect_chain_of_five_is_followed(mocked: aioresponses) -> None:
    for i in range(5):
        mocked.get(f"{API}/r{i}", status=301, headers={"Location": f"{API}/r{i + 1}"})
    mocked.get(f"{API}/r5", payload={"ok": True})
    async with BitbucketClient(config(), Stats()) as client:
        assert await client.get_json("/r0") == {"ok": True}


async def test_next_outside_the_api_path_prefix_is_refused(mocked: aioresponses) -> None:
    mocked.get(
        url("/repositories/ws/r/commits"),
        payload={"values": [{"hash": "a"}], "next": "https://api.example.test/internal/x"},
    )
    async with BitbucketClient(config(), Stats()) as client:
        with pytest.raises(BitbucketError, match="refusing to follow"):
            [c async for c in client.commits("ws/r", ["main"])]
        # ``/2.0x`` shares the prefix string but not the path.
        with pytest.raises(BitbucketError, match="refusing to follow"):
            client.url_for("https://api.example.test/2.0x/repositories")
        assert str(client.url_for(f"{API}/repositories")) == f"{API}/repositories"


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("/repositories/ws/r/commits", 100),
        ("/repositories/ws/r/pullrequests", 50),
        ("/repositories/ws/r/pullrequests/3/commits", 100),
        ("/repositories/ws/r/diffstat/abc", 1000),
        ("/repositories/ws", 100),
        ("/repositories/ws/r/refs/branches", 100),
    ],
)
async def test_page_sizes_at_each_endpoints_maximum(
    mocked: aioresponses, path: str, size: int
) -> None:
    assert page_size(path) == size
    mocked.get(url(path), payload={"values": []})
    async with BitbucketClient(config(), Stats()) as client:
        [p async for p in client.pages(path)]
    (requested,) = [k[1] for k in mocked.requests]
    assert URL(str(requested)).query["pagelen"] == str(size)


async def test_commit_expands_a_short_hash_and_diffstat_collects_pages(
    mocked: aioresponses,
) -> None:
    mocked.get(
        f"{API}/repositories/ws/r/commit/251fce291f08", payload={"hash": "251fce291f08" + "0" * 28}
    )
    nxt = f"{API}/repositories/ws/r/diffstat/abc?pagelen=1000&page=2"
    mocked.get(
        f"{API}/repositories/ws/r/diffstat/abc?pagelen=1000",
        payload={"values": [{"status": "added"}], "next": nxt},
    )
    mocked.get(nxt, payload={"values": [{"status": "removed"}]})
    async with BitbucketClient(config(), Stats()) as client:
        assert len((await client.commit("ws/r", "251fce291f08"))["hash"]) == 40
        assert [v["status"] for v in await client.diffstat("ws/r", "abc")] == ["added", "removed"]


# --- auth ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        (
            AuthConfig(email="me@example.com", api_token=TOKEN),
            "Basic " + base64.b64encode(f"me@example.com:{TOKEN}".encode()).decode(),
        ),
        (AuthConfig(access_token=TOKEN), f"Bearer {TOKEN}"),
        (
            AuthConfig(username="me", app_password=TOKEN),
            "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode(),
        ),
        (AuthConfig(), None),
        (AuthConfig(email="", api_token=""), None),  # ${VAR:-} left empty: anonymous
    ],
)
async def test_auth_headers(mocked: aioresponses, auth: AuthConfig, expected: str | None) -> None:
    mocked.get(f"{API}/repositories/ws/r", payload={"full_name": "ws/r"})
    async with BitbucketClient(config(auth=auth), Stats()) as client:
        await client.get_json("/repositories/ws/r")
    (headers,) = sent_headers(mocked)
    assert headers.get("Authorization") == expected


def test_blank_credentials_are_unset() -> None:
    auth = AuthConfig(email="", api_token="  ", access_token="")
    assert auth.email is None and auth.api_token is None and auth.access_token is None
    assert auth.anonymous
    # One blank half of a pair is missing, not "present but empty".
    with pytest.raises(ConfigError, match=r"auth\.api_token"):
        auth_header(AuthConfig(email="me@example.com", api_token=""))


@pytest.mark.parametrize(
    ("settings", "limit"),
    [
        ({}, 60),  # the authenticated default is lowered to Bitbucket's anonymous limit
        ({"requests_per_hour": 500}, 500),  # set explicitly: kept
        ({"requests_per_hour": 0}, 0),  # explicitly unlimited: kept
    ],
)
async def test_anonymous_access_to_the_real_api_warns_once_and_lowers_the_budget(
    caplog: pytest.LogCaptureFixture, settings: dict[str, Any], limit: int
) -> None:
    cfg = config(
        base_url="https://api.bitbucket.org/2.0",
        auth=AuthConfig(email="", api_token=""),
        **settings,
    )
    client = BitbucketClient(cfg, Stats())
    assert client.budget.limit == limit
    with caplog.at_level(logging.WARNING, logger="rcingest"):
        for _ in range(2):
            async with client:
                pass
    assert caplog.text.count("anonymous: 60 requests/hour, public repositories only") == 1


async def test_credentials_or_another_host_mean_no_anonymous_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="rcingest"):
        real = BitbucketClient(config(base_url="https://api.bitbucket.org/2.0"), Stats())
        fake = BitbucketClient(config(auth=AuthConfig()), Stats())
        for client in (real, fake):
            async with client:
                pass
    assert real.budget.limit == fake.budget.limit == 1000
    assert "anonymous" not in caplog.text


def test_app_password_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rcingest"):
        auth_header(AuthConfig(username="me", app_password=TOKEN))
    assert "app passwords were removed" in caplog.text
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (AuthConfig(email="me@example.com"), "auth.api_token"),
        (AuthConfig(api_token=TOKEN), "auth.email"),
        (AuthConfig(email="me@example.com", api_token=TOKEN, access_token=TOKEN), "choose one"),
        (AuthConfig(app_password=TOKEN), "auth.username"),
    ],
)
def test_auth_config_errors_name_fields_not_values(auth: AuthConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        auth_header(auth)
    assert TOKEN not in str(info.value)


def test_bad_base_url() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        BitbucketClient(config(base_url="ftp://x"), Stats())


# --- retries ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 555])
async def test_retryable_statuses_are_retried(mocked: aioresponses, status: int) -> None:
    target = f"{API}/repositories/ws/r"
    mocked.get(target, status=status, body="Rate limit for this resource has been exceeded")
    mocked.get(target, payload={"full_name": "ws/r"})
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        assert (await client.get_json("/repositories/ws/r"))["full_name"] == "ws/r"
    assert stats.get("http.requests") == 2
    assert stats.get("http.retries") == 1
    assert stats.get("http.rate_limited") == (1 if status == 429 else 0)


@pytest.mark.parametrize("exc", [aiohttp.ClientConnectionError("connection reset"), TimeoutError()])
async def test_connection_errors_and_timeouts_are_retried(
    mocked: aioresponses, exc: Exception
) -> None:
    target = f"{API}/repositories/ws/r"
    mocked.get(target, exception=exc)
    mocked.get(target, payload={"full_name": "ws/r"})
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        await client.get_json("/repositories/ws/r")
    assert stats.get("http.retries") == 1


async def test_retries_are_bounded_then_the_error_names_url_status_and_message(
    mocked: aioresponses,
) -> None:
    target = f"{API}/repositories/ws/r/diffstat/abc?pagelen=1000"
    for _ in range(3):
        mocked.get(target, status=555, payload={"type": "error", "error": {"message": "Timed out"}})
    stats = Stats()
    async with BitbucketClient(config(max_tries=3), stats) as client:
        with pytest.raises(BitbucketError) as info:
            await client.diffstat("ws/r", "abc")
    message = str(info.value)
    assert "/repositories/ws/r/diffstat/abc" in message
    assert "555" in message and "Timed out" in message and "gave up" in message
    assert info.value.status == 555
    assert stats.get("http.requests") == 3 and stats.get("http.retries") == 2


async def test_max_time_bounds_retries(mocked: aioresponses) -> None:
    target = f"{API}/repositories/ws/r"
    for _ in range(50):
        mocked.get(target, status=503, body="busy")
    stats = Stats()
    cfg = config(max_tries=50, max_time=0.05, backoff_base=0.02, backoff_max=0.02)
    async with BitbucketClient(cfg, stats) as client:
        with pytest.raises(BitbucketError, match="503"):
            await client.get_json("/repositories/ws/r")
    assert stats.get("http.requests") < 50


async def test_404_fails_at_once_and_names_the_repository(mocked: aioresponses) -> None:
    mocked.get(
        url("/repositories/dev/null/commits"),
        status=404,
        payload={"type": "error", "error": {"message": "Repository dev/null not found"}},
    )
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        with pytest.raises(BitbucketError) as info:
            [c async for c in client.commits("dev/null", ["main"])]
    assert stats.get("http.requests") == 1 and stats.get("http.retries") == 0
    message = str(info.value)
    assert "404" in message and "Repository dev/null not found" in message
    assert "(repository dev/null)" in message
    assert info.value.status == 404


async def test_other_4xx_fail_at_once_without_leaking_credentials(mocked: aioresponses) -> None:
    # A (contrived) error body echoing the credential: it must not reach the message.
    mocked.get(
        f"{API}/repositories/ws/r",
        status=401,
        payload={"type": "error", "error": {"message": f"Token {TOKEN} is invalid"}},
    )
    stats = Stats()
    async with BitbucketClient(config(), stats) as client:
        with pytest.raises(BitbucketError) as info:
            await client.get_json("/repositories/ws/r")
    assert stats.get("http.requests") == 1
    assert "401" in str(info.value) and "***" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_pullrequest_commits_404_means_none(mocked: aioresponses) -> None:
    mocked.get(url("/repositories/ws/r/pullrequests/9/commits"), status=404, body="")
    async with BitbucketClient(config(), Stats()) as client:
        assert [c async for c in client.pullrequest_commits("ws/r", 9)] == []


async def test_retry_after_is_honoured(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    target = f"{API}/repositories/ws/r"
    mocked.get(target, status=429, headers={"Retry-After": "0.2"}, body="Rate limit")
    mocked.get(target, payload={"full_name": "ws/r"})
    with caplog.at_level(logging.INFO, logger="rcingest"):
        async with BitbucketClient(config(), Stats(), logging.getLogger("rcingest.t")) as client:
            await client.get_json("/repositories/ws/r")
    assert "in 0.20s" in caplog.text


def testwait_generator_uses_retry_after_else_jittered_exponential() -> None:
    gen = wait_gen(1.0, 8.0)
    next(gen)
    assert gen.send(Retryable("u", 429, "m", 7.0)) == 7.0
    waits = [gen.send(Retryable("u", 429, "m", None)) for _ in range(5)]
    # Equal jitter: between half and all of 1, 2, 4, 8, 8 (the cap); n counts every retry.
    for wait, step in zip(waits, [2, 4, 8, 8, 8], strict=True):
        assert step / 2 <= wait <= step


def test_retry_after_values() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Mon, 23 Nov 2026 12:00:05 GMT", now) == 5.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-4") == 0.0


async def test_a_sleeping_retry_does_not_hold_a_slot(mocked: aioresponses) -> None:
    slow = f"{API}/repositories/ws/slow"
    mocked.get(slow, status=429, headers={"Retry-After": "0.3"}, body="Rate limit")
    mocked.get(slow, payload={"full_name": "ws/slow"})
    mocked.get(f"{API}/repositories/ws/fast", payload={"full_name": "ws/fast"})
    done: list[str] = []
    async with BitbucketClient(config(concurrency=1), Stats()) as client:

        async def get(name: str) -> None:
            await client.get_json(f"/repositories/ws/{name}")
            done.append(name)

        first = asyncio.create_task(get("slow"))
        await asyncio.sleep(0)  # "slow" takes the only slot first
        await asyncio.gather(first, get("fast"))
    assert done == ["fast", "slow"]


# --- the hourly budget -----------------------------------------------------------


async def test_budget_within_limit_never_waits() -> None:
    budget = HourlyBudget(5, window=60.0)
    assert [await budget.acquire() for _ in range(5)] == [0.0] * 5
    assert budget.used == 5


async def test_budget_paces_instead_of_exceeding_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats = Stats()
    budget = HourlyBudget(3, window=0.2, stats=stats, logger=logging.getLogger("rcingest.t"))
    with caplog.at_level(logging.WARNING, logger="rcingest"):
        waits = [await budget.acquire() for _ in range(5)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] > 0  # the 4th request within 0.2 s waits for the 1st to leave the window
    assert stats.get("http.paced") == sum(1 for w in waits if w > 0)
    assert caplog.text.count("pacing requests") == 1  # once per episode, not per request


async def test_budget_zero_means_unlimited() -> None:
    budget = HourlyBudget(0)
    assert [await budget.acquire() for _ in range(10)] == [0.0] * 10


async def test_client_counts_paced_requests(mocked: aioresponses) -> None:
    target = f"{API}/repositories/ws/r"
    for _ in range(3):
        mocked.get(target, payload={"full_name": "ws/r"})
    stats = Stats()
    async with BitbucketClient(config(requests_per_hour=2), stats) as client:
        client.budget.window = 0.1  # an "hour" of 0.1 s keeps the test short
        for _ in range(3):
            await client.get_json("/repositories/ws/r")
    assert stats.get("http.paced") == 1 and stats.get("http.requests") == 3


# --- early stop of the source, over mocked pages -------------------------------------


async def test_source_stops_a_branch_walk_once_safely_past_the_window(
    mocked: aioresponses, tmp_path: Any
) -> None:
    from datetime import timedelta
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from rcingest.default_plugins.bitbucket_rest import BitbucketRestConfig, BitbucketRestSource
    from rcingest.interfaces import RunContext
    from rcingest.records import Commit

    end = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def commit(i: int, when: datetime) -> dict[str, Any]:
        return {"hash": f"{i:040x}", "date": when.isoformat(), "author": {"raw": "A <a@x>"}}

    # Newest first: 10 commits in the 4-hour window, then old ones 30 minutes apart.
    values = [commit(i, end - timedelta(minutes=20 * i + 1)) for i in range(10)]
    values += [commit(i, end - timedelta(hours=4, minutes=30 * (i - 9))) for i in range(10, 400)]
    pages = [values[i : i + 100] for i in range(0, 400, 100)]
    base = f"{API}/repositories/ws/r/commits"
    mocked.get(
        f"{API}/repositories/ws/r", payload={"full_name": "ws/r", "mainbranch": {"name": "main"}}
    )
    for n, page in enumerate(pages, start=1):
        query = "include=main&pagelen=100" + (f"&page={n}" if n > 1 else "")
        body: dict[str, Any] = {"values": page, "pagelen": 100}
        if n < len(pages):
            body["next"] = f"{base}?include=main&pagelen=100&page={n + 1}"
        mocked.get(f"{base}?{query}", payload=body)
    ctx = RunContext(
        run_id="t", pipeline_name="t", timezone=ZoneInfo("America/Phoenix"),
        started_at=end, base_dir=Path(tmp_path), source_id="t:src",
    )  # fmt: skip
    cfg = BitbucketRestConfig(
        workspace="ws", base_url=API, repositories=["r"], hours=4,
        diffstat=False, pull_requests=False,
    )  # fmt: skip
    source = BitbucketRestSource(cfg, ctx)
    out = [r async for r in source.records({})]
    assert [r.hash for r in out if isinstance(r, Commit)] == sorted(
        (v["hash"] for v in values[:10]), key=lambda h: int(h, 16), reverse=True
    )
    asked = [str(k[1]) for k in mocked.requests if "/commits" in str(k[1])]
    # Page 1: 10 in the window + 90 old; page 2: 100 old, past the margin: stop.
    assert len(asked) == 2 and not any("page=3" in u for u in asked)
    assert ctx.stats.get("bitbucket.early_stops") == 1
