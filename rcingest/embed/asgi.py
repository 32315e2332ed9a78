"""FastAPI / Starlette adapter: an async endpoint that awaits the storage's future.

The write runs on the storage's own loop (see ``storage.py``); this endpoint
awaits it on the application's loop (``handler.complete``).
"""

from __future__ import annotations

from typing import Any

from rcingest.embed.handler import Answer, Settings, begin, complete, early, too_big

__all__ = ["mount"]


def mount(app: Any, s: Settings) -> None:
    """Add ``POST s.path`` to a Starlette application (FastAPI is one)."""
    from starlette.requests import Request
    from starlette.responses import Response

    def respond(answer: Answer) -> Response:
        headers = {"Connection": "close"} if answer.close else None
        return Response(
            answer.body, status_code=answer.status, media_type=answer.content_type, headers=headers
        )

    async def bitbucket_webhook(request: Request) -> Response:
        length = request.headers.get("content-length")
        refused = early(s, int(length) if length and length.isdigit() else None)
        if refused is not None:
            return respond(refused)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > s.max_body_bytes:
                return respond(too_big(s))
            chunks.append(chunk)
        step = begin(s, request.headers, b"".join(chunks))
        if isinstance(step, Answer):
            return respond(step)
        return respond(await complete(s, step))

    app.router.add_route(s.path, bitbucket_webhook, methods=["POST"], include_in_schema=False)
