"""Embed the Bitbucket webhook receiver, with durable storage, in a web application.

The runbook's lines, for FastAPI (or Starlette), Flask and aiohttp alike::

    from rcingest.embed import CommitStorage, register_bitbucket_webhook

    storage = CommitStorage("data/bitbucket/commits.db")
    register_bitbucket_webhook(app, storage=storage, secret="super-secret")

The framework is told by the application's type; no framework is imported
unless the application is one of its own (rcingest needs none of them).
``docs/webhooks.md`` ("Embedding the receiver") describes the behaviour.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from rcingest.embed.handler import Settings
from rcingest.embed.reads import StoredBranch, StoredCommit, StoredFile, StoredStoryKey
from rcingest.embed.storage import Closed, CommitStorage
from rcingest.runtime import weak_secret
from rcingest.webhooks.receive import DEFAULT_MAX_BODY_BYTES

__all__ = [
    "Closed",
    "CommitStorage",
    "StoredBranch",
    "StoredCommit",
    "StoredFile",
    "StoredStoryKey",
    "register_bitbucket_webhook",
]

# (module, class, adapter): checked through sys.modules, so a framework that is
# not imported (an application of it cannot exist then) is never imported here.
_FRAMEWORKS = (
    ("starlette.applications", "Starlette", "rcingest.embed.asgi"),
    ("flask", "Flask", "rcingest.embed.wsgi"),
    ("aiohttp.web", "Application", "rcingest.embed.aiohttp_app"),
)


def _adapter(app: Any) -> str:
    for module, name, adapter in _FRAMEWORKS:
        mod = sys.modules.get(module)
        cls = getattr(mod, name, None) if mod is not None else None
        if isinstance(cls, type) and isinstance(app, cls):
            return adapter
    raise TypeError(
        f"register_bitbucket_webhook: app is a {type(app).__module__}.{type(app).__qualname__}; "
        "expected a fastapi.FastAPI (or starlette Starlette), flask.Flask or "
        "aiohttp.web.Application"
    )


def register_bitbucket_webhook(
    app: Any,
    *,
    storage: CommitStorage,
    secret: str | None,
    path: str = "/webhooks/bitbucket",
    accept_secret_header: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ack_timeout: float = 9.0,
    insecure: bool = False,
    logger: logging.Logger | None = None,
) -> None:
    """Mount ``POST path`` on ``app``: verify, store in ``storage``, then answer.

    ``secret`` is checked against ``X-Hub-Signature`` (HMAC-SHA256 of the
    body, what Bitbucket sends) and, unless ``accept_secret_header=False``,
    the runbook's ``X-Webhook-Secret`` header; both in constant time.
    ``secret=None`` is refused unless ``insecure=True`` says so on purpose, and
    so is a secret of fewer than 8 characters or only whitespace.
    Answers: 200 stored (or duplicate), 202 ignored event, 400 bad body,
    401 bad or missing signature, 413 too large, 503 not stored (retry).
    """
    if secret == "":
        secret = None
    if secret is None and not insecure:
        raise ValueError(
            "register_bitbucket_webhook: no secret; pass secret=... (the hook's secret) "
            "or insecure=True to accept unsigned deliveries"
        )
    weak = weak_secret(secret, strict=False) if secret is not None else None
    if weak is not None:
        # Looser than the daemon's rule (16 characters, 8 distinct) so the
        # runbook's literal ``super-secret`` keeps working; below 8 characters
        # a secret is guessable and too short to be masked in logs and rows.
        raise ValueError(f"register_bitbucket_webhook: the secret {weak}")
    if not path.startswith("/"):
        raise ValueError(f"register_bitbucket_webhook: path must start with '/', got {path!r}")
    module = _adapter(app)
    if secret is not None:
        storage.protect(secret)
    settings = Settings(
        storage=storage,
        secret=secret,
        path=path,
        accept_secret_header=accept_secret_header,
        max_body_bytes=max_body_bytes,
        ack_timeout=ack_timeout,
        logger=logger or storage.logger,
    )
    if secret is None:
        settings.logger.warning("insecure=True: accepting UNSIGNED webhook deliveries on %s", path)
    __import__(module, fromlist=["mount"]).mount(app, settings)
