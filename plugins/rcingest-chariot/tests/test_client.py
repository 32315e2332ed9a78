"""The client against the fake Chariot: tokens, retries, failing fast, no secret in any text."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from rcingest_chariot.client import (
    ChariotAuthError,
    ChariotClient,
    ChariotRejected,
    ChariotUnavailable,
    jwt_expiry,
)
from rcingest_chariot.credentials import Credentials
from rcingest_chariot.fake import FakeChariot

from rcingest.interfaces import Stats

ASSET = {
    "group": "https://bitbucket.org/acme/api",
    "identifier": "api",
    "status": "A",
    "type": "repository",
}
KEY = "#repository#https://bitbucket.org/acme/api#api"


def client_for(fake: FakeChariot, clock: object, **kwargs: object) -> ChariotClient:
    creds = Credentials(
        api=fake.api,
        key_id=str(kwargs.pop("key_id", fake.key_id)),
        key_secret=str(kwargs.pop("key_secret", fake.key_secret)),
        account=kwargs.pop("account", None),  # type: ignore[arg-type]
    )
    options: dict[str, object] = {"backoff_base": 0.01, "backoff_max": 0.05, "max_time": 5.0}
    options.update(kwargs)
    return ChariotClient(creds, clock=clock, stats=Stats(), **options)  # type: ignore[arg-type]


@pytest.fixture
async def client(chariot: FakeChariot, clock: object) -> AsyncIterator[ChariotClient]:
    async with client_for(chariot, clock) as c:
        yield c


async def test_token_exchange_then_bearer(chariot: FakeChariot, client: ChariotClient) -> None:
    reply = await client.put("/asset", ASSET)
    assert reply[0]["key"] == KEY and chariot.assets[KEY]["status"] == "A"
    await client.put("/asset", {**ASSET, "status": "D"})
    assert chariot.tokens_issued == 1  # cached between requests
    assert chariot.counts["GET /token"] == 1 and chariot.counts["PUT /asset"] == 2
    assert chariot.assets[KEY]["history"] == ["A", "D"]


def test_jwt_expiry_reads_the_payload_only() -> None:
    # header {"alg":"none"}, payload {"exp": 1700000000}, no signature check
    token = "eyJhbGciOiJub25lIn0.eyJleHAiOiAxNzAwMDAwMDAwfQ.x"
    assert jwt_expiry(token) == 1_700_000_000
    assert jwt_expiry("not-a-jwt") is None and jwt_expiry("a.b.c") is None


async def test_the_token_is_renewed_before_it_expires(
    chariot: FakeChariot, client: ChariotClient, clock: object
) -> None:
    chariot.token_lifetime = 600  # renewed 60 s before its end
    await client.put("/asset", ASSET)
    clock.advance(530)  # type: ignore[attr-defined]
    await client.put("/asset", ASSET)
    assert chariot.tokens_issued == 1
    clock.advance(15)  # type: ignore[attr-defined]  # 55 s left: renewed first
    await client.put("/asset", ASSET)
    assert chariot.tokens_issued == 2
    assert [r.status for r in chariot.received if r.route == "PUT /asset"] == [200, 200, 200]


async def test_a_token_that_expires_mid_sync_is_renewed_once_and_the_request_repeated(
    chariot: FakeChariot, client: ChariotClient
) -> None:
    await client.put("/asset", ASSET)
    chariot.revoke_tokens()  # the server stops taking it before its exp says
    await client.put("/asset", {**ASSET, "status": "D"})
    statuses = [r.status for r in chariot.received if r.route == "PUT /asset"]
    assert statuses == [200, 401, 200] and chariot.tokens_issued == 2
    assert chariot.assets[KEY]["status"] == "D"


async def test_a_fresh_token_answered_401_is_an_auth_error(
    chariot: FakeChariot, client: ChariotClient
) -> None:
    chariot.fail("PUT /asset", times=5, status=401)
    with pytest.raises(ChariotAuthError, match="401"):
        await client.put("/asset", ASSET)
    assert chariot.counts["PUT /asset"] == 2  # once, renewed, once more: then given up


async def test_a_wrong_key_fails_at_once_with_chariots_message(
    chariot: FakeChariot, clock: object
) -> None:
    async with client_for(chariot, clock, key_secret="wrong-secret-123") as c:
        with pytest.raises(ChariotAuthError, match="invalid API key") as info:
            await c.put("/asset", ASSET)
    assert "wrong-secret-123" not in str(info.value)
    assert chariot.counts["GET /token"] == 1 and chariot.counts["PUT /asset"] == 0


async def test_429_and_503_are_retried(chariot: FakeChariot, client: ChariotClient) -> None:
    chariot.fail("PUT /asset", times=1, status=429, retry_after=0)
    chariot.fail("GET /token", times=1, status=503)
    await client.put("/asset", ASSET)
    assert chariot.counts["GET /token"] == 2 and chariot.counts["PUT /asset"] == 2
    chariot.fail("PUT /asset", times=2, status=503)
    await client.put("/asset", ASSET)
    assert chariot.counts["PUT /asset"] == 5
    assert client.stats.get("chariot.retries") == 4


async def test_retries_are_bounded(chariot: FakeChariot, clock: object) -> None:
    chariot.fail("PUT /asset", times=100, status=503)
    async with client_for(chariot, clock, max_tries=3) as c:
        with pytest.raises(ChariotUnavailable, match="503") as info:
            await c.put("/asset", ASSET)
    assert info.value.status == 503 and chariot.counts["PUT /asset"] == 3


async def test_403_fails_fast_with_its_message(chariot: FakeChariot, client: ChariotClient) -> None:
    chariot.forbid("PUT /risk", "User is not authorized to write risks in this account")
    with pytest.raises(ChariotRejected) as info:
        await client.put("/risk", {"key": KEY, "name": "x", "status": "TH"})
    assert info.value.status == 403 and info.value.route == "PUT /risk"
    assert "not authorized to write risks" in str(info.value)
    assert chariot.counts["PUT /risk"] == 1  # not retried
    # A 400 too, with Chariot's message: a new risk's status must be a triage one.
    chariot.faults.forbidden.clear()
    await client.put("/asset", ASSET)
    with pytest.raises(ChariotRejected, match=r"answered 400: a new risk's status must be TI"):
        await client.put("/risk", {"key": KEY, "name": "x", "status": "RH"})


async def test_account_header_and_bounded_concurrency(chariot: FakeChariot, clock: object) -> None:
    chariot.faults.latency = 0.05
    async with client_for(chariot, clock, account="tenant@example.com", concurrency=3) as c:
        await asyncio.gather(*(c.put("/asset", ASSET) for _ in range(9)))
    assert chariot.peak_in_flight == 3
    assert {r.account for r in chariot.received if r.route == "PUT /asset"} == {
        "tenant@example.com"
    }


async def test_search_follows_offset(chariot: FakeChariot, client: ChariotClient) -> None:
    chariot.page_size = 2
    for slug in ("a1", "a2", "a3", "b1", "a4"):
        url = f"https://bitbucket.org/acme/{slug}"
        await client.put("/asset", {**ASSET, "group": url, "identifier": slug})
    pages = [p async for p in client.search("#repository#https://bitbucket.org/acme/a")]
    keys = [a["key"] for p in pages for a in p.get("assets", [])]
    assert len(pages) == 2 and [k.rsplit("#", 1)[1] for k in keys] == ["a1", "a2", "a3", "a4"]
    exact = [
        p
        async for p in client.search(KEY.replace("#api", "#a3").replace("/api", "/a3"), exact=True)
    ]
    assert [a["identifier"] for a in exact[0]["assets"]] == ["a3"]
    assert chariot.counts["GET /my"] == 3


async def test_no_secret_in_any_log_or_error(
    chariot: FakeChariot, clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    tokens: list[str] = []
    async with client_for(chariot, clock, max_tries=2) as c:
        chariot.fail("PUT /asset", times=1, status=503)
        await c.put("/asset", ASSET)
        tokens.append(c._jwt or "")
        chariot.revoke_tokens()
        await c.put("/asset", ASSET)
        tokens.append(c._jwt or "")
        chariot.fail("PUT /asset", times=2, status=500)
        with pytest.raises(ChariotUnavailable) as unavailable:
            await c.put("/asset", ASSET)
        texts.append(str(unavailable.value))
        chariot.fail("PUT /asset", times=2, status=401)
        with pytest.raises(ChariotAuthError) as refused:
            await c.put("/asset", ASSET)
        texts.append(str(refused.value))
        tokens.append(c._jwt or "")
    assert all(tokens) and len(set(tokens)) == 3
    texts += [r.getMessage() for r in caplog.records]
    assert any("503" in t for t in texts) and any("renewing the token" in t for t in texts)
    joined = "\n".join(texts)
    for secret in (chariot.key_secret, *tokens):
        assert secret not in joined


async def test_down_for_a_while_on_the_fakes_clock(chariot: FakeChariot, clock: object) -> None:
    chariot.down(30)
    async with client_for(chariot, clock, max_tries=2) as c:
        with pytest.raises(ChariotUnavailable, match="503"):
            await c.put("/asset", ASSET)
        clock.advance(31)  # type: ignore[attr-defined]
        await c.put("/asset", ASSET)
    assert chariot.assets[KEY]["status"] == "A"
    assert [r.status for r in chariot.received] == [503, 503, 200, 200]
