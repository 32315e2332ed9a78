"""An async Chariot API client: API-key token exchange, retries, bounded concurrency.

Policy, in one place (the Chariot SDK itself has no retry at all):

* ``GET {api}/token`` with ``X-GUARD-API-KEY-ID``/``X-GUARD-API-KEY-SECRET``
  gives a JWT (``{"token"}`` or ``{"IdToken"}``), sent as ``Authorization: Bearer``;
  it is renewed 60 s before the ``exp`` its payload states (read, not verified:
  only the server can verify it), and a 401 on a request renews it once and
  repeats the request; a second 401 is an ``ChariotAuthError``;
* 429, 5xx, timeouts and connection failures are retried with ``backoff``
  (exponential with equal jitter, or ``Retry-After`` when sent), bounded by
  ``max_tries`` and ``max_time``; past them ``ChariotUnavailable``;
* any other 4xx fails at once with Chariot's message (``ChariotRejected``);
* at most ``concurrency`` requests are in flight; a retry sleeps outside its slot;
* the key secret and every JWT are masked in every message and log line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Generator
from types import TracebackType
from typing import Any

import aiohttp
import backoff

from rcingest.interfaces import Stats
from rcingest_chariot.credentials import Credentials
from rcingest_chariot.errors import (
    ChariotAuthError,
    ChariotError,
    ChariotRejected,
    ChariotUnavailable,
)

__all__ = [
    "REFRESH_EARLY",
    "ChariotAuthError",
    "ChariotClient",
    "ChariotError",
    "ChariotRejected",
    "ChariotUnavailable",
    "jwt_expiry",
]

#: Renew a token this many seconds before it expires (less for a very short-lived one).
REFRESH_EARLY = 60.0
#: A token whose payload states no ``exp`` is kept as long as the SDK keeps it.
DEFAULT_TOKEN_LIFETIME = 3600.0
log = logging.getLogger("rcingest.chariot")
Clock = Callable[[], float]


class _Retryable(Exception):
    def __init__(self, status: int | None, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _Unauthorized(Exception):
    def __init__(self, token: str, message: str) -> None:
        super().__init__(message)
        self.token = token
        self.message = message


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (seconds since the epoch), or ``None`` if it has none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _retry_after(value: str | None, cap: float) -> float | None:
    """``Retry-After`` in seconds (delta-seconds only; Chariot's gateway sends those), capped."""
    if not value:
        return None
    try:
        return min(max(0.0, float(value.strip())), cap)
    except ValueError:
        return None


def _message(text: str) -> str:
    """Chariot's error message: ``message``/``error`` of a JSON body, else the text, short."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for field in ("message", "error", "Message", "errorMessage"):
            if isinstance(data.get(field), str):
                return str(data[field])[:300]
    return " ".join(text.split())[:300] or "(empty body)"


class ChariotClient:
    """An async context manager holding one aiohttp session to one Chariot API."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_tries: int = 5,
        max_time: float = 120.0,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        clock: Clock = time.time,
        stats: Stats | None = None,
        logger: logging.Logger | None = None,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        self.credentials = credentials
        self.api = credentials.api.rstrip("/")
        self.timeout = timeout
        self.clock = clock
        self.stats = stats or Stats()
        self.logger = logger or log
        self._secrets = {s for s in (*secrets, credentials.key_secret) if s}
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._token_lock = asyncio.Lock()
        self._jwt: str | None = None
        self._refresh_at = 0.0
        self._exchanges = 0
        self._exchange_error: ChariotError | None = None
        self._backoff_base, self._backoff_max = backoff_base, backoff_max
        retry = backoff.on_exception(
            self._waits,  # type: ignore[arg-type]  # backoff sends each exception in
            _Retryable,
            max_tries=max_tries,
            max_time=max_time,
            jitter=None,
            on_backoff=self._on_backoff,
            logger=None,  # retries are logged, redacted, by _on_backoff
        )
        self._max_time = max_time
        self._attempt_retried = retry(self._attempt)
        self._exchange_retried = retry(self._exchange_attempt)

    async def __aenter__(self) -> ChariotClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": "rcingest-chariot", "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def redact(self, text: str) -> str:
        """``text`` with the key secret and every token issued to this client masked."""
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    # -- requests -----------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON reply (``None`` for an empty one)."""
        route = f"{method} {path}"
        renewed = False
        while True:
            try:
                return await self._attempt_retried(method, path, body, params)
            except _Retryable as exc:
                raise ChariotUnavailable(
                    self.redact(f"Chariot {route}: {exc.message} (gave up after retrying)"),
                    route=route,
                    status=exc.status,
                ) from None
            except _Unauthorized as exc:
                if renewed:
                    raise ChariotAuthError(
                        self.redact(f"Chariot {route} answered 401 to a fresh token: {exc}"),
                        route=route,
                        status=401,
                    ) from None
                # The token expired early or was revoked: renew it once, then repeat.
                renewed = True
                if self._jwt == exc.token:
                    self._jwt = None
                self.logger.info("chariot: %s answered 401, renewing the token", route)

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str, body: Any) -> Any:
        return await self.request("DELETE", path, body=body)

    async def search(
        self, term: str, *, label: str | None = None, exact: bool = False
    ) -> AsyncIterator[dict[str, list[Any]]]:
        """``GET /my?key=<term>`` page by page, following the reply's ``offset``."""
        params = {"key": term}
        if label:
            params["label"] = label
        if exact:
            params["exact"] = "true"
        while True:
            reply = await self.request("GET", "/my", params=params)
            if not isinstance(reply, dict):
                return
            yield {k: v for k, v in reply.items() if isinstance(v, list)}
            offset = reply.get("offset")
            if offset in (None, "", {}):
                return
            params = {**params, "offset": json.dumps(offset)}

    async def _attempt(
        self, method: str, path: str, body: Any, params: dict[str, str] | None
    ) -> Any:
        token = await self._bearer()
        headers = {"Authorization": f"Bearer {token}"}
        if self.credentials.account:
            headers["account"] = self.credentials.account
        status, text, retry_after = await self._send(
            method, path, headers=headers, body=body, params=params
        )
        if 200 <= status < 300:
            return json.loads(text) if text.strip() else None
        if status == 401:
            raise _Unauthorized(token, self.redact(_message(text)))
        raise self._failure(f"{method} {path}", status, text, retry_after)

    def _failure(self, route: str, status: int, text: str, retry_after: str | None) -> Exception:
        message = self.redact(_message(text))
        if status == 429 or status >= 500:
            return _Retryable(
                status, f"{status} {message}", _retry_after(retry_after, self._max_time)
            )
        return ChariotRejected(
            f"Chariot {route} answered {status}: {message}", route=route, status=status
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, str, str | None]:
        """One HTTP exchange inside a concurrency slot: status, body text, Retry-After."""
        assert self._session is not None, "ChariotClient used outside 'async with'"
        url = self.api + path
        async with self._slots:
            self.stats.incr("chariot.requests")
            try:
                async with self._session.request(
                    method, url, headers=headers, json=body, params=params
                ) as response:
                    text = await response.text()
                    return response.status, text, response.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                # The exception text may quote the URL, never a header: still redacted.
                raise _Retryable(
                    None, self.redact(f"no answer ({type(exc).__name__}: {exc})"), None
                ) from None

    # -- tokens -------------------------------------------------------------

    async def _bearer(self) -> str:
        """The current JWT, exchanged for a new one when it is about to expire."""
        if self._jwt is None or self.clock() >= self._refresh_at:
            seen = self._exchanges
            async with self._token_lock:
                # Another request exchanged while this one waited: share its outcome, so
                # that N requests during an outage make one round of retries, not N.
                if self._exchanges != seen and self._exchange_error is not None:
                    raise self._exchange_error
                if self._jwt is None or self.clock() >= self._refresh_at:
                    self._exchanges += 1
                    try:
                        await self._exchange_retried()
                    except _Retryable as exc:
                        self._exchange_error = ChariotUnavailable(
                            f"Chariot GET /token: {exc.message} (gave up after retrying)",
                            route="GET /token",
                            status=exc.status,
                        )
                        raise self._exchange_error from None
                    except ChariotError as exc:
                        self._exchange_error = exc
                        raise
                    self._exchange_error = None
        assert self._jwt is not None
        return self._jwt

    async def _exchange_attempt(self) -> None:
        creds = self.credentials
        headers = {
            "X-GUARD-API-KEY-ID": creds.key_id,
            "X-GUARD-API-KEY-SECRET": creds.key_secret,
        }
        status, text, retry_after = await self._send("GET", "/token", headers=headers)
        if status == 429 or status >= 500:
            raise self._failure("GET /token", status, text, retry_after)
        if status != 200:
            raise ChariotAuthError(
                self.redact(
                    f"Chariot refused the API key from {creds.origin} (GET /token answered "
                    f"{status}: {_message(text)})"
                ),
                route="GET /token",
                status=status,
            )
        try:
            reply = json.loads(text)
        except ValueError:
            reply = None
        token = None
        if isinstance(reply, dict):
            token = reply.get("token") or reply.get("IdToken")
        if not isinstance(token, str) or not token:
            raise ChariotAuthError("Chariot GET /token answered 200 without a token")
        self._secrets.add(token)
        now = self.clock()
        expires = jwt_expiry(token) or now + DEFAULT_TOKEN_LIFETIME
        # A token living less than two minutes (a test server's) is renewed halfway.
        early = min(REFRESH_EARLY, max(0.0, expires - now) / 2)
        self._jwt, self._refresh_at = token, expires - early
        self.stats.incr("chariot.token_exchanges")

    # -- backoff ------------------------------------------------------------

    def _waits(self) -> Generator[float | None, Any, None]:
        """Waits between tries: ``Retry-After`` when sent, else exponential with equal jitter."""
        exc = yield None
        n = 0
        while True:
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                value = exc.retry_after
            else:
                step = min(self._backoff_max, self._backoff_base * 2**n)
                value = step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter
            n += 1
            exc = yield value

    def _on_backoff(self, details: Any) -> None:
        exc = details.get("exception")
        self.stats.incr("chariot.retries")
        what = getattr(details.get("target"), "__name__", "")
        route = "GET /token" if what == "_exchange_attempt" else " ".join(details["args"][:2])
        self.logger.warning(
            "chariot: %s: %s, try %d, next in %.1fs",
            route,
            self.redact(getattr(exc, "message", str(exc))),
            details["tries"] + 1,
            details["wait"],
        )
