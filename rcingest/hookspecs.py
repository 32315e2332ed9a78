"""The rcingest hook specifications: registration hooks, called once per process.

Hooks hand component *classes* to a ``register`` callback; per-record work then
runs as ordinary method calls on those components. Implementations must be
plain (not ``async def``) functions. ``docs/plugin-hooks.md`` documents each
hook under a heading that is its exact signature; a test keeps them in sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import click

    from rcingest.interfaces import Enricher, Scanner, Sink, Source

hookspec = pluggy.HookspecMarker("rcingest")
hookimpl = pluggy.HookimplMarker("rcingest")


class RegisterSource(Protocol):
    def __call__(
        self,
        type_name: str,
        component: type[Source[Any]],
        *,
        overridable: bool = False,
    ) -> None: ...


class RegisterEnricher(Protocol):
    def __call__(
        self,
        type_name: str,
        component: type[Enricher[Any]],
        *,
        overridable: bool = False,
    ) -> None: ...


class RegisterSink(Protocol):
    def __call__(
        self,
        type_name: str,
        component: type[Sink[Any]],
        *,
        overridable: bool = False,
    ) -> None: ...


class RegisterScanner(Protocol):
    def __call__(
        self,
        type_name: str,
        component: type[Scanner[Any]],
        *,
        overridable: bool = False,
    ) -> None: ...


@hookspec
def register_sources(register: RegisterSource) -> None:
    """Register source types.

    :param register: call ``register(type_name, SourceClass)`` once per type;
        ``type_name`` is what a pipeline names in ``source.type``. Pass
        ``overridable=True`` to let another plugin's type of the same name win.
    """


@hookspec
def register_enrichers(register: RegisterEnricher) -> None:
    """Register enricher types.

    :param register: call ``register(type_name, EnricherClass)`` once per type;
        ``type_name`` is what a pipeline names in ``enrichers[].type``.
    """


@hookspec
def register_sinks(register: RegisterSink) -> None:
    """Register sink types.

    :param register: call ``register(type_name, SinkClass)`` once per type;
        ``type_name`` is what a pipeline names in ``sinks[].type``.
    """


@hookspec
def register_scanners(register: RegisterScanner) -> None:
    """Register scanner types (secrets in the lines a change adds).

    :param register: call ``register(type_name, ScannerClass)`` once per type;
        ``type_name`` is what a pipeline names in ``scanners[].type``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``rcingest`` command line.

    :param cli: the top-level click group; decorate functions with
        ``@cli.command()`` to add subcommands.
    """
