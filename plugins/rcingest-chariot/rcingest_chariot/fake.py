"""A fake Chariot API on 127.0.0.1, for this plugin's tests and rcingest's end-to-end tests.

It does what the real API does as praetorian-cli uses it, no more:

* ``GET /token`` checks ``X-GUARD-API-KEY-ID``/``-SECRET`` and issues an HS256 JWT
  living ``token_lifetime`` seconds; every other route wants ``Bearer`` that JWT
  and answers 401 once it expired (by the fake's ``clock``) or was revoked;
* ``PUT /asset``, ``PUT /attribute``, ``PUT /risk`` are keyed upserts, keys
  computed as the server does (``rcingest_chariot.mapping``); ``DELETE /attribute``;
* ``GET /my?key=<prefix>[&exact=true][&offset=<json>]`` pages ``page_size`` items,
  a dict of lists plus ``offset`` while more follow;
* faults: ``fail(route, times, status)``, ``down(seconds)``/``up()``, ``forbid(route,
  message)``, ``latency``; and what was received, per route, in ``received``/``counts``.

    async with FakeChariot() as chariot:
        sink config: {api: chariot.api, key_id: chariot.key_id, key_secret: chariot.key_secret}
        ...
        assert chariot.assets[key]["status"] == "A"
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

from rcingest_chariot.mapping import asset_key, attribute_key, risk_key

__all__ = ["FakeChariot", "Faults", "Received"]

#: tabularium ``repository.go``: the URLs a repository asset may have.
_REPO_URL = re.compile(
    r"^https://(github\.com|gitlab\.com|bitbucket\.(com|org)|hub\.docker\.com|dev\.azure\.com"
    r"|circleci\.com)/([^/]+)/(([^/]+/)*[^/]+)$"
)
_RISK_KEY = re.compile(r"^#risk#([^#]+)#([^#]+)$")
_ASSET_STATUS = re.compile(r"^(A|F|D|P|FR|AL|AP|AH)$")
_RISK_STATUS = re.compile(r"^[TOIRD][ILMHCE][FSDO]?$")
_ADD_RISK_STATUS = re.compile(r"^T[ILMHC]$")
_TTL = 30 * 86400


@dataclass
class Received:
    """One request the fake answered: route (``PUT /asset``), body, ``account`` header, status."""

    route: str
    body: Any
    account: str | None
    status: int


@dataclass
class Faults:
    """What the fake does wrong, and when."""

    #: route ("PUT /asset", "GET /token", or "*") → [remaining failures, status, Retry-After]
    failures: dict[str, list[Any]] = field(default_factory=dict)
    #: 503 for every route until this time on the fake's clock (``down()``).
    down_until: float = 0.0
    #: route → the message of a 403 it answers every time.
    forbidden: dict[str, str] = field(default_factory=dict)
    #: Seconds each request waits before it is answered.
    latency: float = 0.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeChariot:
    """Serves the fake on loopback for the duration of an ``async with`` block."""

    def __init__(
        self,
        *,
        key_id: str = "fake-chariot-key-id",
        key_secret: str = "fake-chariot-key-secret-7e1d",  # noqa: S107 - a public fake
        token_lifetime: float = 3600.0,
        page_size: int = 100,
        clock: Callable[[], float] = time.time,
        prefix: str = "/chariot",
        host: str = "127.0.0.1",
    ) -> None:
        self.key_id, self.key_secret = key_id, key_secret
        self.token_lifetime = token_lifetime
        self.page_size = page_size
        self.clock = clock
        self.prefix = prefix.rstrip("/")
        self.host, self.port = host, 0
        self.faults = Faults()
        self.assets: dict[str, dict[str, Any]] = {}
        self.risks: dict[str, dict[str, Any]] = {}
        self.attributes: dict[str, dict[str, Any]] = {}
        self.received: list[Received] = []
        #: Requests per route ("PUT /asset"), token exchanges included, faults included.
        self.counts: Counter[str] = Counter()
        self.tokens_issued = 0
        #: Most requests being answered at once (``latency`` makes them overlap).
        self.peak_in_flight = 0
        self._in_flight = 0
        self._signing_key = hashlib.sha256(key_secret.encode() + b"fake-signing").digest()
        self._revoked_upto = 0  # tokens with a jti up to this one are revoked
        self._runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(self.prefix + "/token", self._token)
        app.router.add_put(self.prefix + "/asset", self._put_asset)
        app.router.add_put(self.prefix + "/attribute", self._put_attribute)
        app.router.add_delete(self.prefix + "/attribute", self._delete_attribute)
        app.router.add_put(self.prefix + "/risk", self._put_risk)
        app.router.add_get(self.prefix + "/my", self._my)
        self.app = app

    @property
    def api(self) -> str:
        """What the sink's ``api`` should be: ``http://127.0.0.1:<port>/chariot``."""
        return f"http://{self.host}:{self.port}{self.prefix}"

    async def __aenter__(self) -> FakeChariot:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- faults and inspection ----------------------------------------------

    def fail(
        self, route: str, times: int, status: int = 500, retry_after: float | None = None
    ) -> None:
        """Answer ``status`` to the next ``times`` requests of ``route`` ("*": any route)."""
        self.faults.failures[route] = [times, status, retry_after]

    def down(self, seconds: float = 1e9) -> None:
        """Answer 503 to everything for ``seconds`` of the fake's clock (until ``up()``)."""
        self.faults.down_until = self.clock() + seconds

    def up(self) -> None:
        self.faults.down_until = 0.0

    def forbid(self, route: str, message: str = "forbidden") -> None:
        """Answer 403 with ``{"message": message}`` to every request of ``route``."""
        self.faults.forbidden[route] = message

    def revoke_tokens(self) -> None:
        """Every token issued so far is answered 401 from now on."""
        self._revoked_upto = self.tokens_issued

    def requests(self, *routes: str) -> int:
        """How many requests of these routes (all but ``GET /token`` when none named) came in."""
        if routes:
            return sum(self.counts[r] for r in routes)
        return sum(n for r, n in self.counts.items() if r != "GET /token")

    def bodies(self, route: str) -> list[Any]:
        """The bodies of the requests of ``route`` that were answered 2xx, in order."""
        return [r.body for r in self.received if r.route == route and 200 <= r.status < 300]

    def dump(self) -> str:
        """Every body received, as text: what a leak check searches."""
        return json.dumps([r.body for r in self.received], ensure_ascii=False)

    # -- the server -----------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        route = f"{request.method} {request.path.removeprefix(self.prefix)}"
        self.counts[route] += 1
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            response = await self._answer(request, route, handler)
        finally:
            self._in_flight -= 1
        self.received.append(Received(route, body, request.headers.get("account"), response.status))
        return response

    async def _answer(
        self, request: web.Request, route: str, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        faults = self.faults
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if self.clock() < faults.down_until:
            return _error(503, "Service Unavailable")
        for name in (route, "*"):
            planned = faults.failures.get(name)
            if planned and planned[0] > 0:
                planned[0] -= 1
                headers = {"Retry-After": str(planned[2])} if planned[2] is not None else {}
                return _error(planned[1], "injected failure", headers)
        if route in faults.forbidden:
            return _error(403, faults.forbidden[route])
        if route != "GET /token" and not self._authorized(request.headers.get("Authorization")):
            return _error(401, "Unauthorized")
        try:
            result: web.StreamResponse = await handler(request)
        except _BadRequest as exc:
            return _error(400, str(exc))
        return result

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        parts = header.removeprefix("Bearer ").split(".")
        if len(parts) != 3:
            return False
        signed = f"{parts[0]}.{parts[1]}".encode()
        expected = _b64(hmac.new(self._signing_key, signed, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return False
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        now = self.clock()
        return bool(claims["exp"] > now and claims["jti"] > self._revoked_upto)

    async def _token(self, request: web.Request) -> web.Response:
        given_id = request.headers.get("X-GUARD-API-KEY-ID", "")
        given_secret = request.headers.get("X-GUARD-API-KEY-SECRET", "")
        if not (
            hmac.compare_digest(given_id, self.key_id)
            and hmac.compare_digest(given_secret, self.key_secret)
        ):
            return _error(401, "invalid API key")
        now = self.clock()
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        self.tokens_issued += 1
        claims = {
            "email": "rcingest@example.com",
            "iat": now,
            "exp": now + self.token_lifetime,
            "jti": self.tokens_issued,
        }
        payload = _b64(json.dumps(claims).encode())
        signature = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256)
        return web.json_response({"token": f"{header}.{payload}.{_b64(signature.digest())}"})

    async def _put_asset(self, request: web.Request) -> web.Response:
        body = _object(await request.json())
        status = body.get("status", "A")
        if not isinstance(status, str) or not _ASSET_STATUS.match(status):
            raise _BadRequest(f"invalid status {status!r}")
        if "key" in body and "group" not in body:
            key = str(body["key"])
            if key not in self.assets:
                return web.json_response([])
        else:
            group, identifier = str(body.get("group", "")), str(body.get("identifier", ""))
            if body.get("type") != "repository" or not _REPO_URL.match(group):
                raise _BadRequest("repository assets need type repository and a repository URL")
            if identifier != group.rsplit("/", 1)[-1]:
                raise _BadRequest("identifier must be the repository name")
            key = asset_key(group)
        asset = self.assets.setdefault(key, {"key": key, "history": [], "class": "repository"})
        for name in ("group", "identifier", "attackSurface"):
            if name in body:
                asset[name] = body[name]
        if asset.get("status") != status:
            asset["history"].append(status)
        asset.update(status=status, visited=self.clock(), ttl=self.clock() + _TTL)
        return web.json_response([asset])

    async def _put_attribute(self, request: web.Request) -> web.Response:
        body = _object(await request.json())
        source, name, value = (str(body.get(k, "")) for k in ("key", "name", "value"))
        if not name or not value:
            raise _BadRequest("an attribute needs a name and a value")
        if source not in self.assets and source not in self.risks:
            raise _BadRequest(f"no asset or risk {source}")
        key, value = attribute_key(source, name, value)
        attribute = {"key": key, "name": name, "value": value, "source": source}
        self.attributes[key] = {**attribute, "ttl": self.clock() + _TTL}
        return web.json_response({"attributes": [attribute]})

    async def _delete_attribute(self, request: web.Request) -> web.Response:
        key = str(_object(await request.json()).get("key", ""))
        gone = self.attributes.pop(key, None)
        return web.json_response({"attributes": [gone] if gone else []})

    async def _put_risk(self, request: web.Request) -> web.Response:
        body = _object(await request.json())
        key, status = str(body.get("key", "")), str(body.get("status", ""))
        if key.startswith("#risk#"):  # an update of an existing risk
            if not _RISK_KEY.match(key):
                raise _BadRequest(f"invalid risk key {key}")
            if status and not _RISK_STATUS.match(status):
                raise _BadRequest(f"invalid status {status!r}")
            risk = self.risks.get(key)
            if risk is None:
                return web.json_response({"risks": []})
        else:
            asset = self.assets.get(key)
            if asset is None:
                raise _BadRequest(f"no asset {key}")
            name = str(body.get("name", "")).lower().replace(" ", "-")
            if not name or "#" in name:
                raise _BadRequest("a risk name must not be empty nor hold '#'")
            if not _ADD_RISK_STATUS.match(status):
                raise _BadRequest(f"a new risk's status must be TI|TL|TM|TH|TC, not {status!r}")
            rkey = risk_key(str(asset["group"]), name)
            risk = self.risks.setdefault(
                rkey, {"key": rkey, "name": name, "dns": asset["group"], "comments": []}
            )
            risk.update(source=body.get("source", "provided"), title=body.get("title") or name)
        if status:
            risk["status"] = status
        if body.get("comment"):
            risk["comments"].append(body["comment"])
        risk["ttl"] = self.clock() + _TTL
        return web.json_response({"risks": [risk]})

    async def _my(self, request: web.Request) -> web.Response:
        term = request.query.get("key", "")
        exact = request.query.get("exact") == "true"
        after = ""
        if "offset" in request.query:
            try:
                after = str(json.loads(request.query["offset"]).get("key", ""))
            except (ValueError, AttributeError):
                return _error(400, "invalid offset")
        stores = {"assets": self.assets, "risks": self.risks, "attributes": self.attributes}
        found = sorted(
            (key, kind)
            for kind, store in stores.items()
            for key in store
            if (key == term if exact else key.startswith(term)) and key > after
        )
        page = found[: self.page_size]
        reply: dict[str, Any] = {}
        for key, kind in page:
            reply.setdefault(kind, []).append(stores[kind][key])
        if len(found) > len(page):
            reply["offset"] = {"key": page[-1][0]}
        return web.json_response(reply)


class _BadRequest(Exception):
    pass


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _BadRequest("expected a JSON object")
    return data


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=headers)
