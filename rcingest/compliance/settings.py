"""The ``compliance:`` section of a pipeline: the policy and how it is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec

from rcingest.compliance.policy import Policy, load_policy, policy_problems
from rcingest.errors import ConfigError

__all__ = ["ComplianceConfig", "compliance_problems", "resolve_policy"]

DEFAULT_STATUS_KEY = "rcingest-compliance"


class ComplianceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where the policy is and how verdicts are reported."""

    policy: Annotated[
        Policy | None, msgspec.Meta(description="The policy inline (or use policy_file).")
    ] = None
    policy_file: Annotated[
        str | None,
        msgspec.Meta(description="A YAML policy file, relative to the pipeline file."),
    ] = None
    status_key: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=40,
            description="Build status key of the verdict; never counted as a check itself.",
        ),
    ] = DEFAULT_STATUS_KEY
    repositories: Annotated[
        list[str],
        msgspec.Meta(
            description="workspace/slug whose open pull requests `rcingest run` and "
            "`rcingest check --all-open` evaluate."
        ),
    ] = []


def _policy_data(section: dict[str, Any], base: Path) -> tuple[Any, str, list[str]]:
    """The policy mapping, the YAML path its problems carry, and problems finding it."""
    from rcingest.yaml_file import read_yaml

    inline, file = section.get("policy"), section.get("policy_file")
    if inline is not None and file is not None:
        return None, "", ["$.compliance: set policy or policy_file, not both"]
    if inline is not None:
        return inline, "$.compliance.policy", []
    if not isinstance(file, str):
        return None, "", ["$.compliance: missing policy (inline) or policy_file"]
    path = (base / file).resolve()
    if not path.is_file():
        return None, "", [f"$.compliance.policy_file: {path}: no such policy file"]
    try:
        return read_yaml(path), f"{path}: $", []
    except ConfigError as exc:
        return None, "", [f"$.compliance.policy_file: {exc}"]


def compliance_problems(section: object, base: Path) -> list[str]:
    """Every problem of a ``compliance:`` mapping (the policy's rules included)."""
    from rcingest.validation import errors_for

    if not isinstance(section, dict):
        return ["$.compliance: expected a mapping"]
    rest = {k: v for k, v in section.items() if k != "policy"}
    found = errors_for(rest, ComplianceConfig, "$.compliance")
    if found:
        return found
    data, prefix, found = _policy_data(section, base)
    if found:
        return found
    return policy_problems(data, prefix)


def resolve_policy(config: ComplianceConfig, base: Path) -> Policy:
    """The policy of a checked section (inline, or read from ``policy_file``)."""
    if config.policy is not None:
        return config.policy
    data, prefix, found = _policy_data({"policy_file": config.policy_file}, base)
    if found:
        raise ConfigError(found[0], found)
    return load_policy(data, prefix)
