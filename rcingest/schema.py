"""JSON Schemas generated from the msgspec config Structs, never written by hand.

``pipeline_schema`` combines the pipeline Struct with the ``Config`` of every
registered component type: ``source``, ``enrichers[]`` and ``sinks[]`` become
``oneOf`` over ``{type: <const>, config: <that type's Config>}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from rcingest.config import PipelineConfig
from rcingest.plugins import Kind, Registry
from rcingest.schema_text import clean_descriptions
from rcingest.schema_text import dumps as dumps  # re-exported: `rcingest schema` and tests use it

SCHEMA_ID = "https://rcingest.dev/schemas/pipeline.schema.json"


def _component_schema(registry: Registry, kind: Kind, defs: dict[str, Any]) -> dict[str, Any]:
    options = []
    for type_name, registered in sorted(registry.types(kind).items()):
        config_type = registered.component.Config
        (ref,), component_defs = msgspec.json.schema_components([config_type])
        defs.update(component_defs)
        options.append(
            {
                "type": "object",
                "title": f"{kind} {type_name}",
                "properties": {
                    "type": {"const": type_name},
                    "name": {"type": "string"},
                    "config": ref,
                },
                "required": ["type"],
                "additionalProperties": False,
            }
        )
    return {"oneOf": options} if options else {"type": "object"}


def pipeline_schema(registry: Registry) -> dict[str, Any]:
    """The schema of a pipeline file for the component types in ``registry``."""
    (ref,), defs = msgspec.json.schema_components([PipelineConfig])
    name = ref["$ref"].rsplit("/", 1)[-1]
    top = defs.pop(name)
    defs.pop("ComponentSpec", None)
    props = top["properties"]
    props["source"] = _component_schema(registry, "source", defs)
    props["enrichers"] = {"type": "array", "items": _component_schema(registry, "enricher", defs)}
    props["sinks"] = {
        "type": "array",
        "minItems": 1,
        "items": _component_schema(registry, "sink", defs),
    }
    props["scanners"] = {"type": "array", "items": _component_schema(registry, "scanner", defs)}
    top["title"] = "rcingest pipeline"
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **top,
        "$defs": dict(sorted(defs.items())),
    }
    result: dict[str, Any] = clean_descriptions(schema)
    return result


def _struct_schema(struct: type, name: str, title: str) -> dict[str, Any]:
    (ref,), defs = msgspec.json.schema_components([struct])
    top = defs.pop(ref["$ref"].rsplit("/", 1)[-1])
    top["title"] = title
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://rcingest.dev/schemas/{name}.schema.json",
        **top,
        "$defs": dict(sorted(defs.items())),
    }
    result: dict[str, Any] = clean_descriptions(schema)
    return result


def settings_schema() -> dict[str, Any]:
    """The schema of a runbook settings file (``rcingest.settings.SettingsFile``)."""
    from rcingest.settings import SettingsFile

    return _struct_schema(SettingsFile, "settings", "rcingest settings file")


def policy_schema() -> dict[str, Any]:
    """The schema of a compliance policy (``rcingest.compliance.policy.Policy``)."""
    from rcingest.compliance.policy import Policy

    return _struct_schema(Policy, "policy", "rcingest compliance policy")


def generated_schemas(registry: Registry) -> dict[str, tuple[dict[str, Any], list[Path]]]:
    """Every generated schema by name, with the committed files that hold it."""
    out: dict[str, tuple[dict[str, Any], list[Path]]] = {
        "pipeline": (pipeline_schema(registry), [Path("schemas/pipeline.schema.json")]),
        "settings": (settings_schema(), [Path("schemas/settings.schema.json")]),
        "policy": (policy_schema(), [Path("schemas/policy.schema.json")]),
    }
    try:
        from rcingest.artifact import (  # type: ignore[import-not-found,unused-ignore]
            ARTIFACT_SCHEMA_COPY,
            run_schema,
        )
    except ImportError:  # the artifact sink is not part of this build
        return out
    out["run"] = (run_schema(), [Path("schemas/run.schema.json"), Path(ARTIFACT_SCHEMA_COPY)])
    return out
