"""What each record becomes in Chariot: asset, attribute and risk bodies and their keys.

Pure and sans-I/O, so every key is computed here, locally, the way Chariot's
server computes it (praetorian-inc/tabularium ``repository.go``, ``risk.go``,
``attribute.go``): the key is the idempotency key the state record and the
outbox are indexed by, and a second sync can tell "unchanged" without asking
Chariot anything.

- asset ``#repository#{url}#{slug}``: ``url`` is the repository's web page without
  ``.git``, a trailing ``/`` or user-info (a clone URL would give ``…/slug.git#slug.git``);
- risk ``#risk#{url}#{name}``: ``name`` lower case, no ``#`` (the server lower-cases
  it and forbids ``#``), one per (repository, rule, secret) thanks to the
  fingerprint prefix;
- attribute ``#attribute#{name}#{value}{source key}``: the value is part of the key,
  so a changed value is a new attribute and the old one must be deleted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import msgspec

from rcingest.records import Repository

__all__ = [
    "MAX_KEY",
    "SEVERITY_CODE",
    "Rollup",
    "asset_body",
    "asset_key",
    "asset_status",
    "attribute_key",
    "attribute_values",
    "body_hash",
    "fallback_group",
    "repository_group",
    "risk_key",
    "risk_name",
    "risk_open_body",
    "risk_remediated_body",
    "rollup",
]

#: Chariot keeps attribute keys within this many characters by truncating the value.
MAX_KEY = 1024
#: Finding severity → the severity letter of a Chariot risk status (``TH``, ``RC``...).
SEVERITY_CODE = {"critical": "C", "high": "H", "medium": "M", "low": "L", "info": "I"}
_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
#: Chariot comments are free text; a long excerpt is cut so a risk stays readable.
MAX_COMMENT = 500
FilteredStatus = Literal["F", "keep"]
Mask = Callable[[str], str]

_USERINFO = re.compile(r"^(https?://)[^/@]*@", re.IGNORECASE)
_NAME_CHARS = re.compile(r"[^a-z0-9._-]+")


class Rollup(msgspec.Struct, frozen=True):
    """A repository's open secret findings, summed up (Chariot has no asset risk score)."""

    max_severity: str  # "none" when there is no open finding
    open_count: int


def repository_group(repo: Repository, web_base: str) -> str:
    """The asset group: the repository's web URL, normalised as Chariot's ``formatURL`` does."""
    url = (repo.web_url or "").strip()
    if not url:
        return fallback_group(repo.full_name, web_base)
    url = _USERINFO.sub(r"\1", url)
    if not url.lower().startswith(("http://", "https://")):
        url = "https://" + url
    url = url.rstrip("/")
    if url.endswith(".git"):
        url = url[: -len(".git")]
    return url


def fallback_group(full_name: str, web_base: str) -> str:
    """The web URL a Bitbucket Cloud repository has when the record did not carry one."""
    return f"{web_base.rstrip('/')}/{full_name.strip('/')}"


def asset_key(group: str) -> str:
    """``#repository#{url}#{name}``, ``name`` being the URL's last path segment (the slug)."""
    return f"#repository#{group}#{_slug(group)}"


def _slug(group: str) -> str:
    return group.rstrip("/").rsplit("/", 1)[-1]


def asset_status(repo: Repository, filtered_status: FilteredStatus) -> str | None:
    """``A`` active, ``D`` tombstoned, ``F`` (frozen) or ``None`` (leave alone) when filtered."""
    if repo.state == "deleted":
        return "D"
    if repo.state == "filtered":
        return None if filtered_status == "keep" else "F"
    return "A"


def asset_body(group: str, status: str) -> dict[str, Any]:
    """The ``PUT /asset`` upsert, as the SDK's ``assets.add`` sends it."""
    return {
        "group": group,
        "identifier": _slug(group),
        "status": status,
        "type": "repository",
        "attackSurface": ["repository"],
    }


def attribute_values(repo: Repository, summary: Rollup | None) -> dict[str, str | None]:
    """Each attribute name and its value (``None``: not known, so none is kept in Chariot).

    ``last_activity`` is a day, not a time: the value is part of the attribute's
    key, so a time would replace the attribute on every push; a security team
    filters on "inactive for N days", which a date answers.
    """
    activity = repo.last_push or repo.updated_on
    visibility = None if repo.is_private is None else ("private" if repo.is_private else "public")
    values: dict[str, str | None] = {
        "language": repo.language or None,
        "visibility": visibility,
        "project": repo.project,
        "mainbranch": repo.mainbranch,
        "last_activity": activity.date().isoformat() if activity is not None else None,
        "bitbucket_uuid": repo.uuid,
    }
    if summary is not None:
        values["risk_max_severity"] = summary.max_severity
        values["risk_open_count"] = str(summary.open_count)
    return values


def attribute_key(source_key: str, name: str, value: str) -> tuple[str, str]:
    """The attribute's key and its value, cut so that the key fits ``MAX_KEY``."""
    room = MAX_KEY - len(f"#attribute#{name}#") - len(source_key)
    value = value[: max(room, 0)]
    return f"#attribute#{name}#{value}{source_key}", value


def risk_name(rule_id: str, fingerprint: str) -> str:
    """``secret-<rule>-<fingerprint[:12]>``, lower case, in characters Chariot keeps as they are."""
    rule = _NAME_CHARS.sub("-", rule_id.lower()).strip("-") or "rule"
    prefix = re.sub(r"[^0-9a-f]", "", fingerprint.lower())[:12] or "0"
    return f"secret-{rule}-{prefix}"


def risk_key(group: str, name: str) -> str:
    """``#risk#{dns}#{name}``; ``dns`` is the asset's group (the repository URL)."""
    return f"#risk#{group}#{name}"


def risk_open_body(
    source_key: str,
    name: str,
    *,
    severity: str,
    rule_name: str,
    rule_id: str,
    scanner: str,
    repository: str,
    branch: str,
    location: str,
    excerpt: str,
    source: str,
    mask: Mask,
) -> dict[str, Any]:
    """The ``PUT /risk`` that opens (triage state ``T``) a risk on the repository's asset.

    The comment says where and which rule, with the finding's excerpt, which
    shows at most four characters of the secret; the head hash is left out so
    that a push elsewhere in the repository does not resend every risk.
    """
    comment = f"{location} on {branch}: {rule_id} ({scanner}): {excerpt}"
    return {
        "key": source_key,
        "name": name,
        "status": "T" + SEVERITY_CODE.get(severity, "I"),
        "title": mask(f"{rule_name} in {repository}")[:MAX_COMMENT],
        "comment": mask(comment)[:MAX_COMMENT],
        "source": source,
    }


def risk_remediated_body(key: str, severity: str, branch: str, head: str) -> dict[str, Any]:
    """The ``PUT /risk`` update that marks a risk remediated (``R`` + its severity)."""
    return {
        "key": key,
        "status": "R" + SEVERITY_CODE.get(severity, "I"),
        "comment": f"no longer found on {branch} at {head[:12]}",
    }


def rollup(severities: Iterable[str]) -> Rollup:
    """The highest severity and the number of the open findings given."""
    found = list(severities)
    if not found:
        return Rollup("none", 0)
    return Rollup(max(found, key=lambda s: _RANK.get(s, 0)), len(found))


def body_hash(method: str, path: str, body: Mapping[str, Any]) -> str:
    """A stable hash of a request (sorted keys), to tell a change from a repeat."""
    encoded = msgspec.json.encode({"m": method, "p": path, "b": body}, order="sorted")
    return hashlib.sha256(encoded).hexdigest()
