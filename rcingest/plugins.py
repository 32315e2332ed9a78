"""Plugin loading and the typed registry over the hooks.

There is no global plugin manager: ``make_plugin_manager`` builds a fresh one
per call. Built-ins come in through rcingest's own ``rcingest`` entry points,
the same path a third party uses. ``Registry`` is the only place that calls
``pm.hook``.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any, Literal

import pluggy

from rcingest import hookspecs
from rcingest.errors import ConfigError, PluginError

log = logging.getLogger("rcingest.plugins")

ENTRY_POINT_GROUP = "rcingest"
DISABLE_ENV = "RCINGEST_DISABLE_PLUGINS"
TRACE_ENV = "RCINGEST_TRACE_PLUGINS"
Kind = Literal["source", "enricher", "sink", "scanner"]
KINDS: tuple[Kind, ...] = ("source", "enricher", "sink", "scanner")
_HOOK_NAMES = (
    "register_sources",
    "register_enrichers",
    "register_sinks",
    "register_scanners",
    "register_commands",
)


@dataclass
class PluginInfo:
    """Where a registered plugin object came from."""

    name: str
    distribution: str
    version: str
    module: str


@dataclass
class Registered:
    """One component type as registered by a plugin."""

    kind: Kind
    type_name: str
    component: type[Any]
    plugin: str
    distribution: str
    overridable: bool


@dataclass
class Manager:
    """A plugin manager plus what rcingest knows of each loaded plugin."""

    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)


def blocked_from_env(environ: Mapping[str, str] | None = None) -> set[str]:
    raw = (environ if environ is not None else os.environ).get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _entry_points(only_distribution: str | None) -> list[metadata.EntryPoint]:
    if only_distribution is not None:
        try:
            dist = metadata.distribution(only_distribution)
        except metadata.PackageNotFoundError:
            return []
        return [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    only_builtins: bool = False,
    blocked: Iterable[str] | None = None,
    extra: Iterable[tuple[str, ModuleType | object]] = (),
) -> Manager:
    """A fresh plugin manager with rcingest's hook specs and the installed plugins.

    ``blocked`` names distributions (or entry-point names) not to load; it
    defaults to ``RCINGEST_DISABLE_PLUGINS``. ``only_builtins`` loads only the
    ``rcingest`` distribution's own entry points. ``extra`` registers objects
    directly (tests, embedding).
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    manager = Manager(pm)
    block = blocked_from_env() if blocked is None else set(blocked)
    if load_entrypoints:
        for ep in _entry_points("rcingest" if only_builtins else None):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else "0"
            if dist in block or ep.name in block:
                log.info("plugin %s from %s is blocked by %s", ep.name, dist, DISABLE_ENV)
                continue
            if pm.get_plugin(ep.name) is not None:
                # The same distribution can be seen twice (an editable install
                # beside a regular one); loading it twice would duplicate types.
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist!r} failed to load: "
                    f"{type(exc).__name__}: {exc}; block it with {DISABLE_ENV}={ep.name} "
                    f"(or {DISABLE_ENV}={dist} for the whole distribution)"
                ) from exc
            pm.register(plugin, name=ep.name)
            manager.info[ep.name] = PluginInfo(ep.name, dist, version, ep.value)
    for name, plugin in extra:
        pm.register(plugin, name=name)
        manager.info[name] = PluginInfo(name, "(registered in process)", "", repr(plugin))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a plugin implements an unknown hook: {exc}") from exc
    for caller in (getattr(pm.hook, name) for name in _HOOK_NAMES):
        for impl in caller.get_hookimpls():
            if inspect.iscoroutinefunction(impl.function):
                # pluggy would hand back an un-awaited coroutine: nothing would register.
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: hook {caller.name} must not be 'async def'"
                )
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda msg: log.warning("%s", msg.rstrip()))
        pm.enable_tracing()
    return manager


class _Register:
    """The ``register`` callback handed to one plugin's ``register_<kind>s`` call.

    A class rather than a closure so that the ``RCINGEST_TRACE_PLUGINS`` trace,
    which prints the hook's arguments, says which plugin each call is for.
    """

    def __init__(
        self, types: dict[str, Registered], kind: Kind, plugin: str, manager: Manager
    ) -> None:
        self._types = types
        self._kind = kind
        self._plugin = plugin
        info = manager.info.get(plugin)
        self._distribution = info.distribution if info else plugin

    def __repr__(self) -> str:
        return f"<register {self._kind}s of plugin {self._plugin!r} ({self._distribution})>"

    def __call__(self, type_name: str, component: type[Any], *, overridable: bool = False) -> None:
        kind, plugin, distribution = self._kind, self._plugin, self._distribution
        new = Registered(kind, type_name, component, plugin, distribution, overridable)
        old = self._types.get(type_name)
        if old is None:
            self._types[type_name] = new
        elif old.overridable and not overridable:
            log.info(
                "%s type %r of %s overridden by %s", kind, type_name, old.distribution, distribution
            )
            self._types[type_name] = new
        elif overridable and not old.overridable:
            log.info(
                "%s type %r of %s overridden by %s", kind, type_name, distribution, old.distribution
            )
        else:
            raise PluginError(
                f"{kind} type {type_name!r} is registered twice: by {old.plugin!r} "
                f"(distribution {old.distribution!r}) and by {plugin!r} (distribution "
                f"{distribution!r}); block one with {DISABLE_ENV}"
            )


class Registry:
    """The component types of every loaded plugin, by kind and type name.

    Each ``register_*`` hook is called through pluggy once per implementing
    plugin, as a subset call that leaves out the other plugins' implementations
    (hook wrappers stay in): the ``register`` callback then knows which plugin
    it serves, so a duplicate type names both distributions, while wrappers and
    ``RCINGEST_TRACE_PLUGINS`` still see every call.
    """

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self._types: dict[Kind, dict[str, Registered]] = {kind: {} for kind in KINDS}
        for kind in KINDS:
            self._call_each_plugin(kind)

    def _call_each_plugin(self, kind: Kind) -> None:
        pm = self.manager.pm
        name = f"register_{kind}s"
        # Registration order (trylast first, tryfirst last), as before the calls
        # went through pluggy: the earlier plugin is the first one an error names.
        impls = [i for i in getattr(pm.hook, name).get_hookimpls() if not _is_wrapper(i)]
        for impl in impls:
            others = [i.plugin for i in impls if i.plugin is not impl.plugin]
            caller = pm.subset_hook_caller(name, remove_plugins=others)
            # pluggy < 1.7 only leaves out a plugin whose attribute has the hook's
            # name: an implementation renamed with ``specname`` would run for
            # every plugin and have its types credited to each of them.
            stray = [
                i.plugin_name
                for i in caller.get_hookimpls()
                if not _is_wrapper(i) and i.plugin is not impl.plugin
            ]
            if stray:
                raise PluginError(
                    f"plugin {stray[0]!r}: hook {name} is implemented under another "
                    "name (specname), which needs pluggy >= 1.7; name the function "
                    f"{name} or upgrade pluggy"
                )
            caller(register=_Register(self._types[kind], kind, impl.plugin_name, self.manager))

    def types(self, kind: Kind) -> Mapping[str, Registered]:
        return self._types[kind]

    def get(self, kind: Kind, type_name: str) -> Registered:
        try:
            return self._types[kind][type_name]
        except KeyError:
            installed = sorted(self._types[kind])
            hint = "" if installed else "; is rcingest installed (`pip install -e .`)?"
            # Only this kind's types: a sink's name is no suggestion for a source.
            close = difflib.get_close_matches(str(type_name), installed, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown {kind} type {type_name!r}{guess}; installed types: {installed}{hint}"
            ) from None

    def register_commands(self, cli: Any) -> None:
        self.manager.pm.hook.register_commands(cli=cli)


def _is_wrapper(impl: pluggy.HookImpl) -> bool:
    return bool(impl.hookwrapper or impl.wrapper)


def describe_plugins(manager: Manager, *, include_builtins: bool) -> list[dict[str, Any]]:
    """What ``rcingest plugins`` prints: one entry per loaded plugin."""
    registry = Registry(manager)
    out = []
    for name, plugin in manager.pm.list_name_plugin():
        info = manager.info.get(name)
        if info is None:
            continue
        if info.distribution == "rcingest" and not include_builtins:
            continue
        types = {
            kind: sorted(r.type_name for r in registry.types(kind).values() if r.plugin == name)
            for kind in KINDS
        }
        out.append(
            {
                "name": name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "hooks": sorted(c.name for c in manager.pm.get_hookcallers(plugin) or []),
                "types": {k: v for k, v in types.items() if v},
            }
        )
    return sorted(out, key=lambda d: (d["distribution"] != "rcingest", d["name"]))
