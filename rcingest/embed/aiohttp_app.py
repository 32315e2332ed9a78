"""aiohttp adapter: a handler on the application's loop awaiting the storage's future.

Like the ASGI adapter, the write runs on the storage's loop and is awaited
here through :func:`asyncio.wrap_future` (``handler.complete``).
"""

from __future__ import annotations

from aiohttp import web

from rcingest.embed.handler import Answer, Settings, begin, complete, early, too_big

__all__ = ["mount"]


def _respond(answer: Answer) -> web.Response:
    resp = web.Response(status=answer.status, body=answer.body, content_type=answer.content_type)
    if answer.close:
        # The rest of the body is not read; the connection cannot be reused.
        resp.force_close()
    return resp


def mount(app: web.Application, s: Settings) -> None:
    """Add ``POST s.path`` to ``app`` (before it starts: aiohttp freezes its router)."""

    async def bitbucket_webhook(request: web.Request) -> web.Response:
        refused = early(s, request.content_length)
        if refused is not None:
            return _respond(refused)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > s.max_body_bytes:
                return _respond(too_big(s))
            chunks.append(chunk)
        step = begin(s, request.headers, b"".join(chunks))
        if isinstance(step, Answer):
            return _respond(step)
        return _respond(await complete(s, step))

    app.router.add_post(s.path, bitbucket_webhook)
