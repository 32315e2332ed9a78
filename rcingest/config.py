"""Pipeline files: YAML, then ``${VAR}`` interpolation, then strict validation.

The pipeline Struct knows nothing of plugin types: each component's
``config:`` mapping is converted into that component's own ``Config`` Struct.
Every problem is reported at once, each with its YAML path and never with a
value (it may be a secret). ``rcingest.preflight`` adds what only building
the components finds, for ``rcingest validate``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from rcingest.compliance.policy import Policy
from rcingest.compliance.settings import ComplianceConfig, compliance_problems, resolve_policy
from rcingest.errors import ConfigError
from rcingest.interfaces import ComponentConfig
from rcingest.logconfig import LoggingConfig
from rcingest.moments import normalise_moments
from rcingest.plugins import Kind, Registered, Registry
from rcingest.scanning.settings import ScanningConfig
from rcingest.schedules.config import SchedulesConfig, schedules_problems
from rcingest.validation import errors_for, struct_problem
from rcingest.yaml_file import read_yaml

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
#: Values of variables with such names are secrets: redacted from logs and never echoed.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|AUTH", re.IGNORECASE)


class BatchConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the runner groups records for the sinks."""

    size: Annotated[int, msgspec.Meta(ge=1)] = 500
    #: Seconds to wait for more records before writing a partial batch.
    linger: Annotated[float, msgspec.Meta(ge=0)] = 0.2
    #: Bound of the queue between source and sinks, in records (backpressure).
    queue: Annotated[int, msgspec.Meta(ge=1)] = 2000


class ComponentSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ``source``, ``enrichers[]`` or ``sinks[]`` entry."""

    type: str
    #: A label for summaries and errors; defaults to the type name.
    name: str | None = None
    config: dict[str, Any] = {}


class PipelineConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The top level of a pipeline file."""

    source: ComponentSpec
    sinks: Annotated[list[ComponentSpec], msgspec.Meta(min_length=1)]
    name: str = "pipeline"
    #: IANA zone in which windows are read and timestamps reported.
    timezone: str = "UTC"
    enrichers: list[ComponentSpec] = []
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    #: Where cursors live when no sink stores them; relative to the pipeline file.
    state_file: str | None = None
    #: Serve mode: seconds between summary lines in the log.
    summary_interval: float = 60.0
    #: Log file, format and rotation (``rcingest.logconfig``); stderr only when absent.
    logging: LoggingConfig | None = None
    #: Scanners for the sources that scan pull requests or repositories (``secrets``, ``sarif``).
    scanners: list[ComponentSpec] = []
    #: Settings those scans share (fingerprint key, diff size bound).
    scanning: ScanningConfig = msgspec.field(default_factory=ScanningConfig)
    #: The compliance enforcer's policy and reporting (docs/compliance.md).
    compliance: ComplianceConfig | None = None
    #: Jobs ``rcingest serve`` and ``rcingest run --schedule`` run on a schedule
    #: (``full_sync``, ``incremental_sync``, ``run``; docs/inventory.md).
    schedules: SchedulesConfig = {}


@dataclass
class Component:
    """A component spec resolved against the registry."""

    kind: Kind
    label: str
    path: str
    registered: Registered
    config: ComponentConfig


@dataclass
class Pipeline:
    """A loaded, validated pipeline ready for the runner."""

    path: Path
    config: PipelineConfig
    timezone: ZoneInfo
    source: Component
    enrichers: list[Component]
    sinks: list[Component]
    secrets: frozenset[str] = field(default_factory=frozenset)
    scanners: list[Component] = field(default_factory=list)
    #: The compliance policy (``compliance:``), resolved; None without one.
    policy: Policy | None = None


def story_key_defaults(pipeline: Pipeline) -> tuple[str, list[str] | None]:
    """(mode, projects) of the pipeline's ``story_keys`` enricher, for policy ``story_key`` rules.

    A rule that names neither uses the enricher's grammar, so the policy and
    the stored keys agree; without the enricher, strict mode and no allow-list.
    """
    for c in pipeline.enrichers:
        mode = getattr(c.config, "mode", None)
        if c.registered.type_name == "story_keys" and isinstance(mode, str):
            projects = getattr(c.config, "projects", None)
            return mode, list(projects) if projects is not None else None
    return "strict", None


def interpolate(
    data: Any, environ: Mapping[str, str], path: str = "$"
) -> tuple[Any, set[str], list[str]]:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string.

    Returns the new data, the secret values substituted, and the problems
    (a missing variable, named with its YAML path; never its value).
    """
    secrets: set[str] = set()
    problems: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, str):
            return node

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    problems.append(f"{where}: environment variable {name} is not set")
                    return ""
                value = default
            if SECRET_NAME.search(name) and value:
                secrets.add(value)
            return value

        return _VAR.sub(sub, node)

    return walk(data, path), secrets, problems


# Each runbook flag and the config field names it may override, in order.
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "hours": ("hours",),
    "since": ("since",),
    "until": ("until",),
    "repos": ("repositories",),
    "branches": ("branches", "default_branches"),
    "database": ("database",),
    "artifacts_dir": ("artifacts_dir",),
    "host": ("host",),
    "port": ("port",),
}
# Setting one of these removes the others from the same component: they exclude each other.
# --until alone keeps a configured ``hours`` (the window then ends at --until).
_EXCLUSIVE = {"hours": ("since", "until"), "since": ("hours",)}


def entries(data: dict[str, Any]) -> list[tuple[Kind, str, dict[str, Any]]]:
    """Each component entry of a pipeline mapping: its kind, YAML path and mapping."""
    out: list[tuple[Kind, str, dict[str, Any]]] = []
    if isinstance(data.get("source"), dict):
        out.append(("source", "$.source", data["source"]))
    for kind, key in (("enricher", "enrichers"), ("sink", "sinks"), ("scanner", "scanners")):
        items = data.get(key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    out.append((kind, f"$.{key}[{i}]", item))  # type: ignore[arg-type]
    return out


def apply_overrides(
    data: dict[str, Any], overrides: Mapping[str, Any], registry: Registry
) -> dict[str, Any]:
    """Apply CLI flags to every component whose Config declares the matching field."""
    for flag, value in overrides.items():
        if value is None:
            continue
        hit = False
        for kind, _path, entry in entries(data):
            try:
                registered = registry.get(kind, str(entry.get("type")))
            except ConfigError:
                continue
            fields = set(registered.component.Config.__struct_fields__)
            for name in FLAG_FIELDS[flag]:
                if name in fields:
                    cfg = entry.setdefault("config", {})
                    if not isinstance(cfg, dict):
                        break
                    cfg[name] = value
                    for other in _EXCLUSIVE.get(flag, ()):
                        if other not in overrides or overrides[other] is None:
                            cfg.pop(other, None)
                    hit = True
                    break
        if not hit:
            option = "--" + flag.replace("_", "-")
            raise ConfigError(f"{option}: no component of this pipeline accepts it")
    return data


#: The jobs a ``schedules:`` section may name: one run of the pipeline each,
#: ``full_sync``/``incremental_sync`` with the source's ``sync`` set accordingly.
SCHEDULED_JOBS = frozenset({"full_sync", "incremental_sync", "run"})


def problems(data: Any, registry: Registry, base: Path | None = None) -> list[str]:
    """Every problem of an interpolated pipeline mapping, each with its YAML path.

    ``base`` is the pipeline file's folder: a ``compliance.policy_file`` is read from it.
    """
    own = ("compliance", "schedules")
    if isinstance(data, dict) and any(data.get(k) is not None for k in own):
        # These sections are checked by their own code, which names every
        # problem with its path: the schema of a union of policy rules (or of a
        # mapping of schedules) would name one, at `$[...]`.
        rest = {k: v for k, v in data.items() if k not in own}
        found = errors_for(rest, PipelineConfig, "$")
        if data.get("compliance") is not None:
            found += compliance_problems(data["compliance"], base or Path.cwd())
        if data.get("schedules") is not None:
            found += schedules_problems(data["schedules"], known=SCHEDULED_JOBS)
    else:
        found = errors_for(data, PipelineConfig, "$")
    if not isinstance(data, dict):
        return found
    for kind, path, entry in entries(data):
        type_name = entry.get("type")
        if not isinstance(type_name, str):
            continue
        try:
            registered = registry.get(kind, type_name)
        except ConfigError as exc:
            found.append(f"{path}.type: {exc}")
            continue
        cfg = entry.get("config", {})
        found.extend(errors_for(cfg, registered.component.Config, f"{path}.config"))
    tz = data.get("timezone")
    if isinstance(tz, str):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            found.append(f"$.timezone: unknown IANA time zone {tz!r}")
    return found


@dataclass
class Prepared:
    """A pipeline file read, interpolated, overridden and checked against the Structs."""

    path: Path
    data: dict[str, Any]
    secrets: frozenset[str]
    #: Every problem found, as ``$.path: message`` (without the file name), with
    #: pipeline paths: ``shown()`` gives them as the file names them.
    problems: list[str]
    #: Moves a problem's pipeline path to the path in the file as written (a
    #: settings file's ``$.bitbucket...``); the identity for pipeline files.
    relocate: Callable[[str], str] = field(default=lambda problem: problem)
    #: True when the file is a runbook settings file (``rcingest.settings``).
    settings: bool = False

    def shown(self, found: list[str] | None = None) -> list[str]:
        """``found`` (default: the problems) with the paths of the file as written."""
        return list(
            dict.fromkeys(self.relocate(p) for p in (self.problems if found is None else found))
        )


def prepare(
    path: Path,
    registry: Registry,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    mode: Literal["run", "serve"] = "run",
) -> Prepared:
    """Read, interpolate, override, normalise dates and validate, collecting every problem.

    A runbook settings file (``rcingest.settings``) is translated into the
    pipeline ``mode`` runs (``run``: the REST scan; ``serve``: the webhook
    daemon) after interpolation, and its problems carry its own paths.
    Raises ``ConfigError`` only when there is nothing to check (the file is
    missing, is not YAML or not a mapping; a flag no component accepts).
    """
    from rcingest import settings

    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: $: expected a mapping at the top level")
    data, secrets, found = interpolate(raw, os.environ if environ is None else environ)
    if settings.is_settings(data):
        data, relocate, settings_problems = settings.translate(data, mode)
        if settings_problems or not data:
            problems = [*found, *settings_problems]
            return Prepared(path, data, frozenset(secrets), problems, relocate, True)
        data = apply_overrides(data, overrides or {}, registry)
        prepared = _check(path, data, secrets, found, registry)
        prepared.relocate, prepared.settings = relocate, True
        return prepared
    data = apply_overrides(data, overrides or {}, registry)
    return _check(path, data, secrets, found, registry)


def _check(
    path: Path, data: dict[str, Any], secrets: set[str], found: list[str], registry: Registry
) -> Prepared:
    for kind, _where, entry in entries(data):
        registered = _lookup(registry, kind, entry.get("type"))
        if registered is not None and isinstance(entry.get("config"), dict):
            # ``since: 2026-11-01`` means what ``--since 2026-11-01`` means.
            entry["config"] = normalise_moments(entry["config"], registered.component.Config)
    found += problems(data, registry, path.parent)
    return Prepared(path, data, frozenset(secrets), list(dict.fromkeys(found)))


def _lookup(registry: Registry, kind: Kind, type_name: Any) -> Registered | None:
    if not isinstance(type_name, str):
        return None
    try:
        return registry.get(kind, type_name)
    except ConfigError:
        return None


def raise_problems(path: Path, found: list[str]) -> None:
    """Raise one ``ConfigError`` listing ``found`` (``$.path: message`` lines) for ``path``."""
    if found:
        listed = [f"{path}: {p}" for p in dict.fromkeys(found)]
        head = listed[0] if len(listed) == 1 else f"{path}: {len(listed)} problems"
        raise ConfigError(head, listed)


def resolve(prepared: Prepared, registry: Registry) -> Pipeline:
    """The ``Pipeline`` of a prepared file without problems."""
    path = prepared.path
    config = msgspec.convert(prepared.data, PipelineConfig)

    def component(kind: Kind, spec: ComponentSpec, where: str) -> Component:
        registered = registry.get(kind, spec.type)
        try:
            cfg = msgspec.convert(spec.config, registered.component.Config)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path}: {struct_problem(exc, f'{where}.config')}") from None
        return Component(kind, spec.name or spec.type, where, registered, cfg)

    return Pipeline(
        path=path,
        config=config,
        timezone=ZoneInfo(config.timezone),
        source=component("source", config.source, "$.source"),
        enrichers=[
            component("enricher", e, f"$.enrichers[{i}]") for i, e in enumerate(config.enrichers)
        ],
        sinks=[component("sink", s, f"$.sinks[{i}]") for i, s in enumerate(config.sinks)],
        secrets=prepared.secrets,
        scanners=[
            component("scanner", s, f"$.scanners[{i}]") for i, s in enumerate(config.scanners)
        ],
        policy=resolve_policy(config.compliance, path.parent) if config.compliance else None,
    )


def load_pipeline(
    path: Path,
    registry: Registry,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    mode: Literal["run", "serve"] = "run",
) -> Pipeline:
    """Read, interpolate, override and validate a pipeline (or a settings file for ``mode``).

    Raises ``ConfigError`` listing every problem found, each with its YAML path.
    ``rcingest validate`` goes further (``rcingest.preflight``): it also builds
    every component, as ``run`` does.
    """
    prepared = prepare(path, registry, overrides=overrides, environ=environ, mode=mode)
    raise_problems(path, prepared.shown())
    return resolve(prepared, registry)
