"""A written pull-request policy: its rules, their scope, and the hash that versions it.

A policy is YAML under version control (inline in a pipeline's
``compliance:`` section or in its own file). Each rule has an ``id`` (shown in
reports), a ``type`` (what it checks), a ``level`` (``required`` rules decide
the verdict, ``advisory`` ones are only reported) and an optional scope:
repository and destination-branch globs. Problems are found when the file is
loaded, every one with its YAML path: an invalid regular expression, an
unknown rule type, a rule that can never pass (three approvals from two named
reviewers).

The policy hash is SHA-256 over the canonical JSON of the decoded policy, so
comments and formatting do not change it while any rule change does: an
evaluation names the hash it was made under.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from typing import Annotated, Literal

import msgspec

__all__ = [
    "ApprovalsRule",
    "BranchNameRule",
    "ChecksRule",
    "DestinationRule",
    "ForkRule",
    "Level",
    "Policy",
    "RequiredReviewersRule",
    "Rule",
    "StoryKeyRule",
    "load_policy",
    "policy_hash",
    "policy_problems",
]

Level = Literal["required", "advisory"]
RuleId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
#: An account as Bitbucket names it: ``{uuid}``, an ``account_id`` or a nickname.
Account = Annotated[str, msgspec.Meta(min_length=1)]


class _Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    """What every rule has: an id, a level and a scope."""

    id: Annotated[RuleId, msgspec.Meta(description="Shown in reports and stored outcomes.")]
    level: Annotated[
        Level, msgspec.Meta(description="required: decides the verdict; advisory: reported only.")
    ] = "required"
    description: str | None = None
    repositories: Annotated[
        list[str],
        msgspec.Meta(description="Globs of workspace/slug the rule applies to; empty: all."),
    ] = []
    branches: Annotated[
        list[str],
        msgspec.Meta(description="Globs of destination branches the rule applies to; empty: all."),
    ] = []

    def applies(self, repository: str, destination: str | None) -> bool:
        """True when ``repository`` and ``destination`` are in this rule's scope."""
        if self.repositories and not any(
            fnmatch.fnmatchcase(repository, g) for g in self.repositories
        ):
            return False
        if self.branches:
            return destination is not None and any(
                fnmatch.fnmatchcase(destination, g) for g in self.branches
            )
        return True


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        # msgspec reports a ValueError from __post_init__ with the field's path.
        raise ValueError(f"{what} is not a valid regular expression: {exc}") from None


class BranchNameRule(_Rule, tag="branch_name"):
    """The source branch's name matches ``pattern`` (``re.search``; anchor it with ``^``)."""

    pattern: str
    explanation: Annotated[
        str | None, msgspec.Meta(description="Shown when the name does not match: the convention.")
    ] = None

    def __post_init__(self) -> None:
        _compile(self.pattern, "pattern")

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.pattern, "pattern")


class RequiredReviewersRule(_Rule, tag="required_reviewers"):
    """The named accounts, and/or the repository's effective default reviewers, are reviewers."""

    accounts: list[Account] = []
    default_reviewers: Annotated[
        bool, msgspec.Meta(description="Also require the effective default reviewers.")
    ] = False
    #: Also require each of them to have approved (not only to be assigned).
    approved: bool = False

    def __post_init__(self) -> None:
        if not self.accounts and not self.default_reviewers:
            raise ValueError("requires no one: name accounts or set default_reviewers: true")


class ApprovalsRule(_Rule, tag="approvals"):
    """At least ``min`` approvals; optionally none in ``changes_requested``."""

    min: Annotated[int, msgspec.Meta(ge=1, le=50)]
    exclude_author: bool = True
    #: The author of the source head commit (Bitbucket names no pusher) does not count.
    exclude_last_pusher: bool = False
    no_changes_requested: bool = True
    #: Count only approvals from these accounts (empty: anyone's).
    from_accounts: list[Account] = []

    def __post_init__(self) -> None:
        if self.from_accounts and len(set(self.from_accounts)) < self.min:
            raise ValueError(
                f"can never pass: {self.min} approvals needed from "
                f"{len(set(self.from_accounts))} named account(s) in from_accounts"
            )


class ChecksRule(_Rule, tag="checks"):
    """Every other status on the source head is SUCCESSFUL; ``required_keys`` must be present."""

    required_keys: list[Annotated[str, msgspec.Meta(min_length=1)]] = []
    #: Status keys not counted at all (rcingest's own compliance key always is not).
    ignore_keys: list[str] = []
    #: A head with no status at all: passes (False) or fails (True).
    require_any: bool = False


class StoryKeyRule(_Rule, tag="story_key"):
    """A Jira key in the title or source branch (any of ``in``) and/or in every commit."""

    in_: Annotated[
        list[Literal["title", "source_branch", "description"]],
        msgspec.Meta(description="Where one key suffices (any of these)."),
    ] = msgspec.field(default_factory=lambda: ["title", "source_branch"], name="in")
    every_commit: Annotated[
        bool, msgspec.Meta(description="Each commit of the pull request needs a key too.")
    ] = False
    mode: Literal["strict", "lenient"] | None = None
    #: Project keys allowed (``[REL, OPS]``); absent: the story_keys enricher's setting.
    projects: list[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]+$")]] | None = None

    def __post_init__(self) -> None:
        if not self.in_ and not self.every_commit:
            raise ValueError("checks nothing: set `in` or every_commit: true")


class ForkRule(_Rule, tag="no_fork"):
    """The source branch is in the destination repository, or in an allowed fork."""

    allowed_forks: list[str] = []


class DestinationRule(_Rule, tag="destination"):
    """The destination branch is not one merged into directly only (``forbidden`` globs)."""

    forbidden: list[str] = []
    #: When set, only these destination globs are allowed.
    allowed: list[str] = []

    def __post_init__(self) -> None:
        if not self.forbidden and not self.allowed:
            raise ValueError("checks nothing: set forbidden or allowed")


Rule = (
    BranchNameRule
    | RequiredReviewersRule
    | ApprovalsRule
    | ChecksRule
    | StoryKeyRule
    | ForkRule
    | DestinationRule
)
RULE_TYPES = (
    "branch_name",
    "required_reviewers",
    "approvals",
    "checks",
    "story_key",
    "no_fork",
    "destination",
)


class Policy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A named list of rules; the verdict is ``non_compliant`` when a required rule fails."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "policy"
    rules: Annotated[list[Rule], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"two rules have the id {rule.id!r}")
            seen.add(rule.id)


def policy_hash(policy: Policy) -> str:
    """``sha256:<hex>`` of the policy's canonical JSON (sorted keys, defaults included)."""
    canonical = msgspec.json.encode(msgspec.to_builtins(policy), order="sorted")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


_RULE_CLASSES: dict[str, type[_Rule]] = {
    "branch_name": BranchNameRule,
    "required_reviewers": RequiredReviewersRule,
    "approvals": ApprovalsRule,
    "checks": ChecksRule,
    "story_key": StoryKeyRule,
    "no_fork": ForkRule,
    "destination": DestinationRule,
}


def policy_problems(data: object, prefix: str) -> list[str]:
    """Every problem of a policy mapping, each as ``$.path: message`` under ``prefix``.

    Rules are checked one by one against their own type, so a file with an
    unknown rule type and a bad regular expression elsewhere reports both.
    """
    from rcingest.validation import did_you_mean, errors_for, unknown_field

    if not isinstance(data, dict):
        return [f"{prefix}: expected a mapping with `rules`"]
    found: list[str] = []
    for key in data:
        if key not in ("name", "rules"):
            found.append(f"{prefix}.{key}: {unknown_field(key, ('name', 'rules'))}")
    found += errors_for({"name": data.get("name", "policy"), "rules": []}, _Header, prefix)
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        found.append(f"{prefix}.rules: expected a non-empty list of rules")
        return found
    ids: dict[str, int] = {}
    for i, rule in enumerate(rules):
        where = f"{prefix}.rules[{i}]"
        if not isinstance(rule, dict):
            found.append(f"{where}: expected a mapping with `id` and `type`")
            continue
        kind = rule.get("type")
        if kind is None:
            found.append(f"{where}.type: missing required field (one of {', '.join(RULE_TYPES)})")
            continue
        cls = _RULE_CLASSES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            found.append(
                f"{where}.type: unknown rule type {kind!r}{did_you_mean(str(kind), RULE_TYPES)}"
                f" (one of {', '.join(RULE_TYPES)})"
            )
            continue
        found += errors_for(rule, cls, where)
        rid = rule.get("id")
        if isinstance(rid, str):
            if rid in ids:
                found.append(f"{where}.id: {rid!r} is already the id of rules[{ids[rid]}]")
            ids.setdefault(rid, i)
    return list(dict.fromkeys(found))


def load_policy(data: object, prefix: str = "$") -> Policy:
    """The ``Policy`` of ``data``; ``ConfigError`` listing every problem otherwise."""
    from rcingest.errors import ConfigError

    found = policy_problems(data, prefix)
    if found:
        head = found[0] if len(found) == 1 else f"{len(found)} problems in the policy"
        raise ConfigError(head, found)
    return msgspec.convert(data, Policy)


class _Header(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "policy"
    rules: list[object] = []
