"""``rcingest validate``: everything ``run`` and ``serve`` would refuse, found offline.

Validation against the Structs cannot see the rules a component enforces
when it is built (an API token without its e-mail, two ways to authenticate
at once, a webhook source without a secret). So, like ``Runner._build``, this
builds every component as ``factory(config, context)`` and collects what the
constructors refuse, for all of them rather than stopping at the first.

Constructors open nothing: files, sockets and connections are opened in
``__aenter__``, which is never called here, so validation touches neither the
network nor the disk. A component whose constructor must do I/O defines a
``preflight(config, context)`` class method that raises what the constructor
would raise, without the I/O; validation calls that instead (the ``database``
sink does: its constructor creates the SQLite file's folder).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from rcingest.config import (
    Component,
    Pipeline,
    Prepared,
    entries,
    prepare,
    resolve,
)
from rcingest.errors import ConfigError
from rcingest.interfaces import RunContext
from rcingest.plugins import Registered, Registry
from rcingest.runtime import new_run_id

__all__ = ["Report", "build_problems", "preflight"]

# "auth.email: ..." : a component's message that starts with a path inside its config.
_FIELD_PATH = re.compile(r"^([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*|\[\d+\])*): (.+)$", re.DOTALL)


@dataclass
class Report:
    """What validation found: every problem (``file: $.path: message``), or the pipeline."""

    path: Path
    problems: list[str]
    #: Values to redact from anything printed about this file.
    secrets: frozenset[str]
    pipeline: Pipeline | None = None
    #: True for a runbook settings file (``rcingest.settings``).
    settings: bool = False


def preflight(
    path: Path,
    registry: Registry,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    mode: Literal["run", "serve"] = "run",
) -> Report:
    """Every problem ``run``/``serve`` would stop on, each with its YAML path; no I/O.

    ``mode`` matters only for a settings file, which means a different
    pipeline under ``run`` (the scan) and ``serve`` (the webhook daemon).
    """
    try:
        prepared = prepare(path, registry, overrides=overrides, environ=environ, mode=mode)
    except ConfigError as exc:  # not YAML, not a mapping: nothing more to check
        return Report(path, list(exc.problems), frozenset())
    found = list(prepared.problems)
    context = _context(prepared, registry)
    for component in _buildable(prepared, registry, found):
        found.extend(build_problems(component, context))
    found = prepared.shown(found)
    report = Report(path, [f"{path}: {p}" for p in found], prepared.secrets)
    report.settings = prepared.settings
    if not found:
        report.pipeline = resolve(prepared, registry)
    return report


def _context(prepared: Prepared, registry: Registry) -> RunContext:
    """The context ``run`` would give the components (its clock, zone, secrets)."""
    data = prepared.data
    try:
        zone = ZoneInfo(str(data.get("timezone", "UTC")))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")  # reported already; the components still get built
    name = data.get("name") if isinstance(data.get("name"), str) else "pipeline"
    source = data.get("source")
    label = "source"
    if isinstance(source, dict):
        label = str(source.get("name") or source.get("type") or label)
    now = datetime.now(UTC)
    context = RunContext(
        run_id=new_run_id(now),
        pipeline_name=str(name),
        timezone=zone,
        started_at=now,
        base_dir=prepared.path.parent,
        source_id=f"{name}:{label}",
        mode=_mode(registry, source),
        secrets=prepared.secrets,
    )
    # What a source checks of the pipeline's other sections ("scan: true needs
    # scanners:", "compliance needs credentials"): present here as in a run,
    # where the runner builds them first. Stand-ins: nothing here scans.
    scanners = data.get("scanners")
    if isinstance(scanners, list):
        declared: list[Any] = [_Declared(s.get("type")) for s in scanners if isinstance(s, dict)]
        context.scanners = declared
    if isinstance(data.get("compliance"), dict):
        context.compliance = data["compliance"]
        context.policy = _Declared("policy")
    return context


class _Declared:
    """A section declared in the pipeline, standing in for what a run builds from it."""

    def __init__(self, name: object) -> None:
        self.name = str(name)


def _mode(registry: Registry, source: Any) -> Literal["run", "serve"]:
    """The command that would start this pipeline: a server-like source is served."""
    try:
        cls = registry.get("source", str(source.get("type"))).component
    except (AttributeError, ConfigError):
        return "run"
    return "serve" if getattr(cls, "low_latency", False) else "run"


def _buildable(prepared: Prepared, registry: Registry, found: list[str]) -> list[Component]:
    """The components whose own settings are valid: building the others would only repeat."""
    out: list[Component] = []
    for kind, where, entry in entries(prepared.data):
        if any(p.startswith((f"{where}.", f"{where}:", f"{where}[")) for p in found):
            continue
        try:
            registered: Registered = registry.get(kind, str(entry.get("type")))
            config = msgspec.convert(entry.get("config", {}), registered.component.Config)
        except (ConfigError, msgspec.ValidationError):
            continue  # reported by the Struct validation
        label = entry.get("name") or entry.get("type")
        out.append(Component(kind, str(label), where, registered, config))
    return out


def build_problems(component: Component, context: RunContext) -> list[str]:
    """What building ``component`` as ``Runner._build`` does refuses, as ``$.path: message``."""
    factory = component.registered.component
    check = getattr(factory, "preflight", None)
    try:
        if callable(check):
            check(component.config, context)
        else:
            factory(component.config, context)
    except ConfigError as exc:
        return [_locate(component, message) for message in exc.problems]
    except Exception as exc:
        # `run` fails these with exit 1 ("cannot start"); the file cannot run either way.
        return [f"{component.path} ({component.label}): cannot start: {type(exc).__name__}: {exc}"]
    return []


def _locate(component: Component, message: str) -> str:
    """``message`` under the YAML path of the field it names, else under the component's config."""
    where = f"{component.path}.config"
    match = _FIELD_PATH.match(message)
    if match and match.group(1) in component.config.__struct_fields__:
        return f"{where}.{match.group(1)}{match.group(2)}: {match.group(3)}"
    return f"{where}: {message}"
