"""Flask adapter: a synchronous view that waits on the storage's future.

The view runs in the WSGI server's request thread; the write runs on the
storage's single loop thread (``storage.py``), never on a loop made for the
request. Waiting blocks only this request's thread, up to ``ack_timeout``.
"""

from __future__ import annotations

from typing import Any

from rcingest.embed.handler import Answer, Settings, begin, early, finish, too_big

__all__ = ["mount"]


def mount(app: Any, s: Settings, endpoint: str = "rcingest_bitbucket_webhook") -> None:
    """Add ``POST s.path`` to a Flask application."""
    from flask import Response, request

    def respond(answer: Answer) -> Response:
        resp = Response(answer.body, status=answer.status, mimetype=answer.content_type)
        if answer.close:
            resp.headers["Connection"] = "close"
        return resp

    def bitbucket_webhook() -> Response:
        refused = early(s, request.content_length)
        if refused is not None:
            return respond(refused)
        chunks: list[bytes] = []
        size = 0
        # In chunks, stopping past the cap: a body without a length is never buffered whole.
        while chunk := request.stream.read(65536):
            size += len(chunk)
            if size > s.max_body_bytes:
                return respond(too_big(s))
            chunks.append(chunk)
        step = begin(s, dict(request.headers.items()), b"".join(chunks))
        if isinstance(step, Answer):
            return respond(step)
        outcome: str | BaseException
        try:
            outcome = step.future.result(s.ack_timeout)
        except Exception as exc:  # the sink's error, or the timeout: both are a 503
            outcome = exc
        return respond(finish(s, step, outcome))

    app.add_url_rule(s.path, endpoint=endpoint, view_func=bitbucket_webhook, methods=["POST"])
