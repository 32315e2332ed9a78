"""SARIF 2.1.0 from external secret scanners to ``Finding``s, with the secret removed.

Parsed by hand (``sarif-om`` has no loader, ``sarif-tools`` drags in
matplotlib): msgspec Structs declare only the parts read, so unknown keys and
unknown tools pass, and a value of the wrong type is refused with its JSON
path.

Nosey Parker, Titus and gitleaks all put the raw secret in
``region.snippet.text``. It is used for exactly two things: the keyed
``fingerprint`` and ``redact_secret``'s excerpt. It never reaches an error
message (msgspec's messages are rebuilt from their path and expected type
only) and this module logs nothing.

Severity: the result's ``level``, else its rule's
``defaultConfiguration.level``, else SARIF's default ``warning``; mapped
error→high, warning→medium, note→low, none→info. A rule's numeric
``properties.security-severity`` (GitHub's convention, a number or a numeric
string) overrides it: ≥9 critical, ≥7 high, ≥4 medium, else low.

Rule id is ``ruleId`` (Nosey Parker's is the rule's name), the rule name is
the rule's ``name`` or else its id. Each location of a result is a finding.
Without a snippet, the fingerprint stands on the tool's non-empty
``fingerprints``/``partialFingerprints``, else on path, line and rule.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import unquote

import msgspec

from rcingest.errors import RcingestError
from rcingest.scanning.model import Finding, Severity, fingerprint, redact_secret

__all__ = ["SarifError", "findings_from_sarif", "severity_of"]

_LEVELS: dict[str, Severity] = {"error": "high", "warning": "medium", "note": "low", "none": "info"}
_TYPE_NAMES = {
    "array": "a list",
    "object": "an object",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
}
_MSGSPEC_TYPE = re.compile(r"^Expected `([^`]+)`, got `([^`]+)`(?: - at `(\$[^`]*)`)?$")
_MSGSPEC_MISSING = re.compile(
    r"^Object missing required field `([A-Za-z$]+)`(?: - at `(\$[^`]*)`)?$"
)


class SarifError(RcingestError):
    """The SARIF document is malformed; the message names the JSON path, never a value."""


class _Text(msgspec.Struct):
    text: str | None = None


class _Region(msgspec.Struct, rename="camel"):
    start_line: int | None = None
    end_line: int | None = None
    snippet: _Text | None = None


class _ArtifactLocation(msgspec.Struct):
    uri: str | None = None


class _PhysicalLocation(msgspec.Struct, rename="camel"):
    artifact_location: _ArtifactLocation | None = None
    region: _Region | None = None


class _Location(msgspec.Struct, rename="camel"):
    physical_location: _PhysicalLocation | None = None


class _Result(msgspec.Struct, rename="camel"):
    rule_id: str | None = None
    rule_index: int | None = None
    level: str | None = None
    locations: list[_Location] | None = None
    partial_fingerprints: dict[str, str] | None = None
    fingerprints: dict[str, str] | None = None


class _Configuration(msgspec.Struct):
    level: str | None = None


class _Rule(msgspec.Struct, rename="camel"):
    id: str
    name: str | None = None
    default_configuration: _Configuration | None = None
    properties: dict[str, Any] | None = None


class _Driver(msgspec.Struct):
    name: str
    rules: list[_Rule] | None = None


class _Tool(msgspec.Struct):
    driver: _Driver


class _Run(msgspec.Struct):
    tool: _Tool
    results: list[_Result] | None = None


class _Log(msgspec.Struct):
    version: str
    runs: list[_Run] | None = None


def findings_from_sarif(
    doc: bytes | str,
    *,
    key: bytes,
    tool_hint: str | None = None,
    root: str | None = None,
) -> list[Finding]:
    """The findings of every run in ``doc``.

    ``tool_hint`` names the scanner when the driver has no usable name;
    ``root`` is the scanned directory, removed from the front of result
    paths so they are the pull request's paths.
    """
    log = _decode(doc)
    if log.version != "2.1.0":
        raise SarifError("$.version: expected SARIF 2.1.0")
    if not log.runs:
        raise SarifError("$.runs: expected at least one run")
    findings: list[Finding] = []
    for run in log.runs:
        driver = run.tool.driver
        scanner = "sarif:" + (driver.name.strip() or tool_hint or "unknown").lower()
        rules = driver.rules or []
        for result in run.results or []:
            findings.extend(_findings(result, rules, scanner, key, root))
    return findings


def severity_of(level: str | None, security_severity: object = None) -> Severity:
    """The documented mapping of a SARIF level and a rule's ``security-severity``."""
    score = _score(security_severity)
    if score is not None:
        if score >= 9:
            return "critical"
        if score >= 7:
            return "high"
        if score >= 4:
            return "medium"
        return "low"
    return _LEVELS.get(level or "warning", "medium")


def _decode(doc: bytes | str) -> _Log:
    if isinstance(doc, str):
        doc = doc.encode("utf-8", "surrogateescape")
    doc = doc.removeprefix(b"\xef\xbb\xbf")  # a BOM some Windows tools write
    try:
        return msgspec.json.decode(doc, type=_Log)
    except msgspec.ValidationError as exc:
        raise SarifError(_validation_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        # msgspec's JSON errors give a reason and a byte offset, no content.
        raise SarifError(f"not valid JSON: {str(exc)[:120]}") from None


def _validation_message(raw: str) -> str:
    """msgspec's message reduced to path and expected type (values may be secrets)."""
    if match := _MSGSPEC_TYPE.match(raw):
        # "array | null" is an optional list: null is allowed, but not the point.
        kinds = [t for t in match[1].split(" | ") if t != "null"] or ["null"]
        expected = " or ".join(_TYPE_NAMES.get(t, "a " + t) for t in kinds)
        return f"{match[3] or '$'}: expected {expected}"
    if match := _MSGSPEC_MISSING.match(raw):
        return f"{match[2] or '$'}.{match[1]}: missing"
    at = re.search(r" - at `(\$[^`]*)`$", raw)
    return f"{at[1] if at else '$'}: invalid value"


def _findings(
    result: _Result, rules: list[_Rule], scanner: str, key: bytes, root: str | None
) -> list[Finding]:
    """One finding per location: Nosey Parker groups every place a secret
    occurs into one result, and each place deserves its own annotation."""
    rule = _rule_of(result, rules)
    rule_id = result.rule_id or (rule.id if rule else None) or "unknown"
    # Not shortDescription: Nosey Parker puts the rule's regex there.
    rule_name = (rule.name if rule else None) or rule_id
    level = result.level
    if level is None and rule and rule.default_configuration:
        level = rule.default_configuration.level
    score = (rule.properties or {}).get("security-severity") if rule else None
    severity = severity_of(level, score)
    places = [loc.physical_location for loc in result.locations or []] or [None]
    findings = []
    for physical in places:
        region = physical.region if physical else None
        artifact = physical.artifact_location if physical else None
        path = _clean_path(artifact.uri if artifact else None, root)
        # Titus writes 0 for an unknown line; lines are 1-based.
        start = region.start_line if region and region.start_line else 1
        end = region.end_line if region and region.end_line and region.end_line >= start else start
        secret = region.snippet.text if region and region.snippet else None
        if secret:
            digest, excerpt = fingerprint(key, rule_id, secret), redact_secret(secret)
        else:
            digest, excerpt = fingerprint(key, rule_id, _identity(result, path, start)), "***"
        findings.append(
            Finding(
                path=path,
                line_start=start,
                line_end=end,
                rule_id=rule_id,
                rule_name=rule_name,
                severity=severity,
                fingerprint=digest,
                excerpt=excerpt,
                scanner=scanner,
            )
        )
    return findings


def _rule_of(result: _Result, rules: list[_Rule]) -> _Rule | None:
    if result.rule_index is not None and 0 <= result.rule_index < len(rules):
        return rules[result.rule_index]
    for rule in rules:
        if rule.id == result.rule_id:
            return rule
    return None


def _identity(result: _Result, path: str, line: int) -> str:
    """What stands for the secret when the tool gave no snippet.

    The tool's own fingerprints, when they say anything (gitleaks writes its
    commit fields even when scanning a directory, all empty); else the
    place, so the same finding on the same line keeps its fingerprint.
    """
    parts = [
        f"{kind}:{name}={value}"
        for kind, table in (("fp", result.fingerprints), ("partial", result.partial_fingerprints))
        for name, value in sorted((table or {}).items())
        if value
    ]
    return "\x1f".join(parts) if parts else f"location:{path}:{line}"


def _clean_path(uri: str | None, root: str | None) -> str:
    if not uri:
        return ""
    path = uri
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    path = unquote(path)  # SARIF URIs are percent-encoded ("my%20file.py")
    if root:
        base = root.rstrip("/") + "/"
        path = path.removeprefix(base)
    return path.removeprefix("./")


def _score(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if not isinstance(value, int | float | str):
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None
