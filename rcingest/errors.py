"""Exceptions with a documented meaning and exit code.

``UsageError`` family (exit 2): the user can fix the input. ``RunFailed``
(exit 1): the run started and failed. Messages never carry secret values.
"""

from __future__ import annotations

__all__ = ["ConfigError", "PluginError", "RcingestError", "RunFailed", "SinkError"]


class RcingestError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(RcingestError):
    """A pipeline file or flag is wrong. ``problems`` holds every problem found."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class PluginError(RcingestError):
    """A plugin failed to load or conflicts with another."""

    exit_code = 2


class RunFailed(RcingestError):
    """The run started and failed; nothing after the failure was marked done."""

    exit_code = 1


class SinkError(RunFailed):
    """A sink raised; the message names the sink."""
