"""Options that take several space-separated values: ``--repos repo-1 repo-2``.

click gives an option exactly ``nargs`` values, so the runbook's
``--repos repo-1 repo-2 --branches main develop`` would leave ``repo-2`` as an
unexpected extra argument. ``GreedyOption`` (the well-known click recipe of
wrapping the parser's ``process`` for this option) consumes the arguments
after it until the next one that starts with ``-`` (another option, or ``--``).
Each value is stored as if the option had been repeated, so repetition and
commas (split later by the command) still work and the command sees one flat
tuple of strings.

A positional argument given *after* a greedy option is taken as one more
value: write it first (``run scan.yaml --repos a b``), or end the values
with ``--`` (``run --repos a b -- scan.yaml``).
"""

from __future__ import annotations

from typing import Any

import click

__all__ = ["GreedyOption"]


class GreedyOption(click.Option):
    """A ``multiple=True`` option that also takes the space-separated values after it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        if not self.multiple:
            raise TypeError("GreedyOption needs multiple=True")

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        # The parser object click made for this option (private API, stable since click 7).
        for name in self.opts:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is not None:
                break
        else:  # pragma: no cover - click always registers the option under its names
            return
        store = option.process
        prefixes: set[str] = set(getattr(parser, "_opt_prefixes", {"-", "--"}))

        def process(value: Any, state: Any) -> None:
            store(value, state)
            # Take the following arguments up to the next option (anything starting with "-").
            while state.rargs and not any(state.rargs[0].startswith(p) for p in prefixes):
                store(state.rargs.pop(0), state)

        option.process = process
