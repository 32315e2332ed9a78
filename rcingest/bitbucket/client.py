"""The Bitbucket Cloud REST client: one aiohttp session, pagination, retries, pacing.

Policy, in one place:

* pagination follows the body's ``next`` URL exactly and stops when it is
  missing or ``values`` is empty; a ``next`` (or a redirect) outside
  ``base_url`` (another scheme, host, port or path prefix) is refused, so
  credentials only ever go to the API; at most ``MAX_REDIRECTS`` (5)
  same-API redirects are followed per request;
* 429, 5xx (including diffstat's 555), timeouts, resets and disconnects are
  retried with ``backoff`` (exponential with jitter, or ``Retry-After`` when
  sent), bounded by ``max_tries`` and ``max_time``; other 4xx fail at once;
* what retrying cannot fix fails at once with ``Unreachable`` naming the
  origin: a TLS certificate that does not verify, and, while the host has
  not answered yet in this client, a refused connection, a failed DNS lookup
  or no route (``retry.unreachable_kind``);
* at most ``concurrency`` requests are in flight, and a retry sleeps outside
  its slot; a rolling-hour budget (``requests_per_hour``) paces a run that
  would exceed it instead of letting it trip 429s;
* writes (``send``) follow the same rules, except that a write which is not
  idempotent (``retry=False``) is repeated only after a 429; text bodies
  (``get_text``, a PR diff) can be bounded, and a status like 555 declared an
  answer rather than a blip (``final``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import backoff
import msgspec
from yarl import URL

from rcingest.bitbucket import api
from rcingest.bitbucket.auth import auth_header, auth_secrets
from rcingest.bitbucket.budget import HourlyBudget
from rcingest.bitbucket.calls import GET, Call, ResponseTooLarge, page_size, read_body

# Re-exported: ``ClientConfig`` lives in the light module (no aiohttp) since issue 11.
from rcingest.bitbucket.config import DEFAULT_REQUESTS_PER_HOUR, ClientConfig
from rcingest.bitbucket.parse import error_message, page_next
from rcingest.bitbucket.retry import (
    BitbucketError,
    Retryable,
    Unreachable,
    retry_after_seconds,
    unreachable_detail,
    unreachable_kind,
    wait_gen,
)
from rcingest.errors import ConfigError
from rcingest.interfaces import Stats
from rcingest.runtime import redact

__all__ = [
    "ANONYMOUS_REQUESTS_PER_HOUR",
    "DEFAULT_REQUESTS_PER_HOUR",
    "MAX_REDIRECTS",
    "BitbucketClient",
    "BitbucketError",
    "Call",
    "ClientConfig",
    "ResponseTooLarge",
    "Unreachable",
    "page_size",
]

#: Redirects followed per request before giving up (a loop or a long chain).
MAX_REDIRECTS = 5
#: Bitbucket Cloud's hourly limit for anonymous requests.
ANONYMOUS_REQUESTS_PER_HOUR = 60
#: The real API host: anonymous access there is limited (and public repositories only).
BITBUCKET_API_HOST = "api.bitbucket.org"

T = TypeVar("T")
Params = Mapping[str, str | int | list[str]]
log = logging.getLogger("rcingest.bitbucket")

_REPO_IN_PATH = re.compile(r"/repositories/([^/?#]+/[^/?#]+)")


class BitbucketClient:
    """An async context manager holding one aiohttp ``ClientSession`` for a run."""

    def __init__(
        self,
        config: ClientConfig,
        stats: Stats,
        logger: logging.Logger | None = None,
        *,
        secrets: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.stats = stats
        self.logger = logger or log
        self.base = URL(config.base_url.rstrip("/"))
        if self.base.scheme not in ("http", "https") or not self.base.host:
            raise ConfigError(f"base_url: expected an http(s) URL, got {config.base_url!r}")
        self._authorization = auth_header(config.auth, self.logger)
        self._secrets = auth_secrets(config.auth) | secrets
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(config.concurrency)
        #: No credentials against the real API: Bitbucket allows 60 requests/hour.
        self.anonymous = config.auth.anonymous and self.base.host == BITBUCKET_API_HOST
        self._warned_anonymous = False
        limit = config.requests_per_hour
        if self.anonymous and limit == DEFAULT_REQUESTS_PER_HOUR:
            limit = ANONYMOUS_REQUESTS_PER_HOUR
        self.budget = HourlyBudget(limit, stats=stats, logger=self.logger)
        self._fetch = backoff.on_exception(
            wait_gen,  # type: ignore[arg-type]  # backoff sends exceptions in; its stub says None
            Retryable,
            max_tries=config.max_tries,
            max_time=config.max_time,
            jitter=None,
            on_backoff=self._on_backoff,
            logger=None,  # retries are logged (redacted) by _on_backoff, give-ups raised
            base=config.backoff_base,
            cap=config.backoff_max,
        )(self._attempt)
        self._decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
        #: Whether the API host has answered (any status): from then on a refused
        #: connection or a failed lookup is a restart or a blip, and is retried.
        self._answered = False

    async def __aenter__(self) -> BitbucketClient:
        if self.anonymous and not self._warned_anonymous:
            self._warned_anonymous = True
            self.logger.warning(
                "auth: no credentials set, using anonymous access to %s "
                "(anonymous: 60 requests/hour, public repositories only; budget %s/hour); "
                "set auth.email + auth.api_token or auth.access_token",
                self.base.host,
                self.budget.limit or "unlimited",
            )
        headers = {"Accept": "application/json", "User-Agent": "rcingest (+bitbucket_rest)"}
        connector = aiohttp.TCPConnector(limit=self.config.concurrency, limit_per_host=0)
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
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

    # -- URLs and redaction ------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every credential, URL user-info and token parameter masked."""
        text = redact(text, self._secrets)
        # A user name alone in an API URL is masked as well (runtime.redact keeps it).
        return re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)

    @staticmethod
    def _origin(url: URL) -> str:
        """``scheme://host:port`` of ``url``: no user-info, path or query (may hold secrets)."""
        host = f"[{url.host}]" if url.host and ":" in url.host else url.host
        return f"{url.scheme}://{host}:{url.port}"

    def url_for(self, path_or_url: str, params: Params | None = None) -> URL:
        """An absolute URL under ``base_url`` (same scheme, host, port and path prefix)."""
        if path_or_url.startswith(("http://", "https://")):
            url = URL(path_or_url)
            prefix = self.base.path.rstrip("/")
            if (url.scheme, url.host, url.port) != (
                self.base.scheme,
                self.base.host,
                self.base.port,
            ) or not (url.path == prefix or url.path.startswith(prefix + "/")):
                raise BitbucketError(
                    f"refusing to follow {self.redact(str(url.with_query(None)))}: it is not on "
                    f"the configured API {self.base} (credentials are only sent there)",
                    url=self.redact(str(url)),
                )
        else:
            url = URL(str(self.base) + "/" + path_or_url.lstrip("/"))
        if params:
            query: list[tuple[str, str]] = []
            for key, value in params.items():
                values = value if isinstance(value, list) else [value]
                query.extend((key, str(v)) for v in values)
            url = url.extend_query(query)
        return url

    # -- one request -------------------------------------------------------

    async def _on_backoff(self, details: Any) -> None:
        exc = details.get("exception")
        self.stats.incr("http.retries")
        if isinstance(exc, Retryable):
            self.logger.info(
                "retrying %s in %.2fs (try %d): %s",
                exc.url,
                details.get("wait") or 0.0,
                details.get("tries", 0),
                exc.message,
            )

    async def _attempt(self, url: URL, call: Call = GET) -> bytes:
        """One try: the request, following up to ``MAX_REDIRECTS`` same-API redirects."""
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            body, location = await self._request(url, call)
            if location is None:
                return body
            # Same-API redirects (a renamed repository, a PR diff's /diff/{spec})
            # are followed; a redirect elsewhere is refused by url_for like a
            # foreign ``next``, before any credential is sent there.
            url = self.url_for(str(url.join(URL(location))))
        raise BitbucketError(
            f"{call.method} {self.redact(str(first))}: more than {MAX_REDIRECTS} redirects "
            f"(last to {self.redact(str(url))})",
            url=self.redact(str(first)),
        )

    async def _request(self, url: URL, call: Call = GET) -> tuple[bytes, str | None]:
        """The body of a 2xx, or the ``Location`` of a redirect; raises otherwise."""
        if self._session is None:
            raise RuntimeError("BitbucketClient used outside 'async with'")
        # The budget wait happens before taking a slot: a paced request must
        # not block the others' slots, and a retry's sleep (in backoff) is
        # outside the slot too.
        await self.budget.acquire()
        headers = {"Authorization": self._authorization} if self._authorization else {}
        headers["Accept"] = call.accept
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        shown = self.redact(str(url))
        async with self._slots:
            self.stats.incr("http.requests" if call.method == "GET" else "http.writes")
            try:
                async with self._session.request(
                    call.method, url, data=call.body, headers=headers, allow_redirects=False
                ) as resp:
                    self._answered = True
                    body = await read_body(resp, call.max_bytes)
                    status, reason = resp.status, resp.reason or ""
                    retry_after = resp.headers.get("Retry-After")
                    location = resp.headers.get("Location")
            except ResponseTooLarge as exc:
                raise ResponseTooLarge(f"{call.method} {shown}: {exc}", url=shown) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                kind = unreachable_kind(exc, answered_before=self._answered)
                if kind is not None:
                    raise Unreachable(
                        kind,
                        self._origin(url),
                        self.redact(url.raw_path_qs),
                        self.redact(unreachable_detail(exc)),
                    ) from None
                message = self.redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
                if not call.retry:
                    raise BitbucketError(f"{call.method} {shown}: {message}", url=shown) from None
                raise Retryable(shown, None, message, None) from None
        if 200 <= status < 300:
            return body, None
        if status in (301, 302, 303, 307, 308) and location:
            return body, location
        message = f"{status} {reason}: {self.redact(error_message(body))}".rstrip(": ")
        if status == 429:
            # Not processed: safe to send again, whatever the method.
            self.stats.incr("http.rate_limited")
            raise Retryable(shown, status, message, retry_after_seconds(retry_after))
        if status >= 500 and call.retry and status not in call.final:
            raise Retryable(shown, status, message, None)
        repo = _REPO_IN_PATH.search(url.path)
        where = f" (repository {repo.group(1)})" if status == 404 and repo else ""
        raise BitbucketError(f"{call.method} {shown}: {message}{where}", url=shown, status=status)

    async def _call(self, url: URL, call: Call) -> bytes:
        """``_attempt`` with retries; a give-up becomes one ``BitbucketError``."""
        try:
            body: bytes = await self._fetch(url, call)
        except Retryable as exc:
            raise BitbucketError(
                f"{call.method} {exc.url}: {exc.message} (gave up after at most "
                f"{self.config.max_tries} tries / {self.config.max_time:g}s of retries)",
                url=exc.url,
                status=exc.status,
            ) from None
        return body

    async def send(self, method: str, path: str, value: Any = None, *, retry: bool = True) -> Any:
        """A write (``POST``/``PUT``/``DELETE``) of ``value`` as JSON; the decoded answer or None.

        ``retry=False`` retries only a 429 (the request was not processed):
        for a write that is not idempotent (creating a comment), the caller
        looks again before it repeats itself.
        """
        body = None if value is None else msgspec.json.encode(value)
        call = Call(method=method, body=body, retry=retry)
        answer = await self._call(self.url_for(path), call)
        if not answer.strip():
            return None
        try:
            return msgspec.json.decode(answer)
        except msgspec.DecodeError:
            return None

    async def get_text(
        self, path: str, *, max_bytes: int | None = None, final: frozenset[int] = frozenset()
    ) -> bytes:
        """The raw ``text/plain`` body of a GET (a diff), at most ``max_bytes``.

        ``final`` statuses are not retried (a diff's 555: Bitbucket timed out
        generating it, and will again). ``ResponseTooLarge`` past the bound.
        """
        call = Call(accept="text/plain", max_bytes=max_bytes, final=final)
        return await self._call(self.url_for(path), call)

    async def get_bytes(self, path_or_url: str, params: Params | None = None) -> bytes:
        """The body of a successful GET, after retries; ``BitbucketError`` otherwise."""
        return await self._call(self.url_for(path_or_url, params), GET)

    async def get_json(self, path_or_url: str, params: Params | None = None) -> Any:
        """GET and decode JSON (``path`` is relative to ``base_url``)."""
        body = await self.get_bytes(path_or_url, params)
        try:
            return msgspec.json.decode(body)
        except msgspec.DecodeError:
            shown = self.redact(str(self.url_for(path_or_url, params)))
            raise BitbucketError(f"GET {shown}: the response is not JSON") from None

    # -- pagination --------------------------------------------------------

    def _first(self, path: str, params: Params | None) -> URL:
        merged: dict[str, str | int | list[str]] = dict(params or {})
        merged.setdefault("pagelen", page_size(path))
        return self.url_for(path, merged)

    async def pages(
        self, path: str, params: Params | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page's ``values``, following ``next`` exactly, until no ``next`` or no values."""
        async for page in self.typed_pages(path, dict[str, Any], params):
            yield page

    async def typed_pages(
        self, path: str, value_type: type[T], params: Params | None = None
    ) -> AsyncIterator[list[T]]:
        """Like ``pages`` but each value is decoded straight into ``value_type`` (fast path)."""
        decoder = self._decoders.get(value_type)
        if decoder is None:
            decoder = self._decoders[value_type] = msgspec.json.Decoder(api.Page[value_type])  # type: ignore[valid-type]
        url: str | None = str(self._first(path, params))
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise BitbucketError(
                    f"GET {self.redact(url)}: pagination loops back to a page already read"
                )
            seen.add(url)
            body = await self.get_bytes(url)
            try:
                page = decoder.decode(body)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise BitbucketError(f"GET {self.redact(url)}: unexpected page: {exc}") from None
            if page.values:
                yield page.values
            url = page_next(page)
            if url is not None:
                self.url_for(url)  # refuse a foreign ``next`` before anything else

    # -- endpoints ---------------------------------------------------------

    async def commit(self, repo: str, rev: str) -> dict[str, Any]:
        """One commit by hash, short hash or ref (``/commit/{rev}`` expands 12-character hashes)."""
        value = await self.get_json(f"/repositories/{repo}/commit/{rev}")
        if not isinstance(value, dict):
            raise BitbucketError(f"commit {rev} of {repo}: unexpected response")
        return value

    async def commits(
        self, repo: str, include: list[str], exclude: list[str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Commits reachable from ``include``, not from ``exclude``; topologically newest first."""
        params: dict[str, str | int | list[str]] = {"include": list(include)}
        if exclude:
            params["exclude"] = list(exclude)
        async for values in self.pages(f"/repositories/{repo}/commits", params):
            for value in values:
                yield value

    async def diffstat(self, repo: str, commit_hash: str) -> list[dict[str, Any]]:
        """Every diffstat entry of one commit (against its first parent)."""
        out: list[dict[str, Any]] = []
        async for values in self.pages(f"/repositories/{repo}/diffstat/{commit_hash}"):
            out.extend(values)
        return out

    async def pullrequest_commits(self, repo: str, pr_id: int) -> AsyncIterator[dict[str, Any]]:
        """The commits of a pull request (opaque cursor pages); none for a 404."""
        try:
            async for values in self.pages(f"/repositories/{repo}/pullrequests/{pr_id}/commits"):
                for value in values:
                    yield value
        except BitbucketError as exc:
            # Bitbucket answers 404 for some pull requests without commits
            # (DevLake ignores it too); nothing to list is the right answer.
            if exc.status != 404:
                raise
