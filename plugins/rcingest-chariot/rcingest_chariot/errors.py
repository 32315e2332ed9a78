"""How a Chariot request fails for good; light (no aiohttp), so the sink module imports cheaply."""

from __future__ import annotations

__all__ = ["ChariotAuthError", "ChariotError", "ChariotRejected", "ChariotUnavailable"]


class ChariotError(Exception):
    """A request failed for good; the message names the route, status and Chariot's message."""

    def __init__(self, message: str, *, route: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.route = route
        self.status = status
        self.message = message


class ChariotAuthError(ChariotError):
    """The API key was refused, or a fresh token was still answered 401."""


class ChariotRejected(ChariotError):
    """Chariot refused this request (400, 403, 404...): sending it again will not help."""


class ChariotUnavailable(ChariotError):
    """429, 5xx or no answer, still after every retry allowed."""
