"""A click command that imports its module only when it is used.

Plugins add their commands at every start-up (``register_commands``), even for
``rcingest --version``; a command module that imports the pipeline runner or
the fake Bitbucket (``rcingest demo``) would make every command pay for it.
The group's ``--help`` needs only the name and the first line of the help,
which this command holds; running it, its own ``--help`` and shell completion all go
through ``make_context``, which imports the real command and hands over to it.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["LazyCommand"]


class LazyCommand(click.Command):
    """Stands for the command ``target`` (``"package.module:attribute"``) until it is used."""

    def __init__(self, name: str, target: str, summary: str) -> None:
        # ``summary`` is the first paragraph of the real command's help: the
        # group's --help shortens it exactly as it would the real help.
        super().__init__(name, help=summary)
        self.target = target
        self._real: click.Command | None = None

    def load(self) -> click.Command:
        """The real command (imported once)."""
        if self._real is None:
            module, _, attribute = self.target.partition(":")
            real = getattr(importlib.import_module(module), attribute)
            if not isinstance(real, click.Command):
                raise TypeError(f"{self.target} is not a click command")
            self._real = real
        return self._real

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # The context's command is the real one: parsing, --help, invoke and
        # completion then never come back here.
        return self.load().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return self.load().invoke(ctx)

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return self.load().get_params(ctx)

    def get_help(self, ctx: click.Context) -> str:
        return self.load().get_help(ctx)

    def to_info_dict(self, ctx: click.Context) -> dict[str, Any]:
        info = self.load().to_info_dict(ctx)
        info["name"] = self.name
        return info
