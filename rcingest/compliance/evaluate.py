"""Evaluate a policy against one pull request's facts: pure, no I/O.

Each rule in scope gives ``pass`` or ``fail`` with a sentence saying what was
found, how to fix it, and the facts it used; a rule whose facts could not be
read gives ``error`` and, when required, fails closed. The verdict is
``non_compliant`` when any required rule fails or errs.

rcingest's own compliance status is never counted as a check of itself: the
``checks`` rule leaves out ``own_keys`` (the compliance status key), or a
FAILED compliance status would keep the pull request failing forever.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from rcingest.compliance.facts import Person, PullRequestFacts
from rcingest.compliance.policy import (
    ApprovalsRule,
    BranchNameRule,
    ChecksRule,
    DestinationRule,
    ForkRule,
    Policy,
    RequiredReviewersRule,
    Rule,
    StoryKeyRule,
    policy_hash,
)
from rcingest.compliance.records import ComplianceEvaluation, RuleOutcome
from rcingest.storykeys import KeyExtractor

__all__ = ["StoryKeyDefaults", "evaluate", "needs"]

#: (mode, projects) of the pipeline's story_keys enricher, used where a rule says nothing.
StoryKeyDefaults = tuple[str, list[str] | None]
_Check = Callable[[Any, PullRequestFacts, "_Env"], RuleOutcome]


class _Env:
    def __init__(self, own_keys: Collection[str], story: StoryKeyDefaults) -> None:
        self.own_keys = set(own_keys)
        self.story = story


def _out(
    rule: Rule, outcome: str, message: str, fix: str | None = None, **facts: Any
) -> RuleOutcome:
    return RuleOutcome(
        rule_id=rule.id,
        type=type(rule).__struct_config__.tag or "",  # type: ignore[arg-type]
        level=rule.level,
        outcome=outcome,  # type: ignore[arg-type]
        message=message,
        fix=None if outcome == "pass" else fix,
        facts=facts,
    )


def _names(people: list[Person]) -> str:
    return ", ".join(p.shown for p in people) or "no one"


def _branch_name(rule: BranchNameRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    branch = f.source_branch or ""
    if rule.regex.search(branch):
        return _out(
            rule, "pass", f"source branch {branch!r} follows the naming rule", branch=branch
        )
    why = rule.explanation or f"branch names must match {rule.pattern}"
    return _out(
        rule,
        "fail",
        f"source branch {branch!r} does not follow the naming rule: {why}",
        "push the work to a branch whose name follows the rule and open the pull request from it",
        branch=branch,
        pattern=rule.pattern,
    )


def _is_reviewer(f: PullRequestFacts, name_or_person: str | Person) -> tuple[bool, bool]:
    """(assigned as reviewer, approved) for an account name or a person."""

    def same(p: Person) -> bool:
        if isinstance(name_or_person, Person):
            return p.ident == name_or_person.ident
        return p.is_(name_or_person)

    assigned = any(same(p) for p in f.reviewers) or any(
        same(x.user) and x.role == "REVIEWER" for x in f.participants
    )
    approved = any(same(x.user) and x.approved for x in f.participants)
    return assigned, approved


def _required_reviewers(rule: RequiredReviewersRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    required: list[str | Person] = list(rule.accounts)
    if rule.default_reviewers:
        if f.default_reviewers is None:
            why = f.unreadable.get("default_reviewers", "not read")
            return _out(
                rule,
                "error",
                f"the repository's default reviewers could not be read: {why}",
                "give the token read access to the repository's settings "
                "(read:repository), or drop default_reviewers from the rule",
            )
        author = f.author.ident if f.author else None
        # Bitbucket never makes the author a reviewer of their own pull request.
        required += [p for p in f.default_reviewers if p.ident != author]
    missing, unapproved = [], []
    for who in required:
        assigned, approved = _is_reviewer(f, who)
        shown = who.shown if isinstance(who, Person) else who
        if not assigned:
            missing.append(shown)
        elif rule.approved and not approved:
            unapproved.append(shown)
    facts: dict[str, Any] = {
        "required": [w.shown if isinstance(w, Person) else w for w in required]
    }
    facts["reviewers"] = [p.shown for p in f.reviewers]
    if missing:
        return _out(
            rule,
            "fail",
            f"required reviewers not assigned: {', '.join(dict.fromkeys(missing))}",
            "add them as reviewers of the pull request",
            **facts,
        )
    if unapproved:
        return _out(
            rule,
            "fail",
            f"required reviewers have not approved: {', '.join(dict.fromkeys(unapproved))}",
            "ask them to review and approve",
            **facts,
        )
    return _out(rule, "pass", f"required reviewers assigned ({len(required)})", **facts)


def _approvals(rule: ApprovalsRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    if rule.exclude_last_pusher and f.head_author is None and f.commit_messages is None:
        return _out(rule, "error", "the source head's author could not be read", "re-run the check")
    excluded: set[str] = set()
    if rule.exclude_author and f.author:
        excluded.add(f.author.ident)
    if rule.exclude_last_pusher and f.head_author:
        excluded.add(f.head_author.ident)
    approvers = [p for p in f.participants if p.approved]
    counted = [
        p
        for p in approvers
        if p.user.ident not in excluded
        and (not rule.from_accounts or any(p.user.is_(a) for a in rule.from_accounts))
    ]
    changes = [p for p in f.participants if p.state == "changes_requested"]
    facts: dict[str, Any] = {
        "approvers": [
            {"user": p.user.shown, "approved_on": p.participated_on.isoformat()}
            if p.participated_on
            else {"user": p.user.shown}
            for p in approvers
        ],
        "counted": len(counted),
        "required": rule.min,
    }
    if rule.no_changes_requested and changes:
        facts["changes_requested"] = [p.user.shown for p in changes]
        return _out(
            rule,
            "fail",
            f"changes requested by {_names([p.user for p in changes])}",
            "address the requested changes and ask for the request to be removed",
            **facts,
        )
    if len(counted) < rule.min:
        left_out = [p.user for p in approvers if p not in counted]
        note = f" (not counted: {_names(left_out)})" if left_out else ""
        return _out(
            rule,
            "fail",
            f"{len(counted)} of {rule.min} approvals{note}",
            f"get {rule.min - len(counted)} more approval(s)"
            + (" from " + ", ".join(rule.from_accounts) if rule.from_accounts else ""),
            **facts,
        )
    return _out(rule, "pass", f"{len(counted)} of {rule.min} approvals", **facts)


def _checks(rule: ChecksRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    ignored = env.own_keys | set(rule.ignore_keys)
    statuses = [s for s in f.statuses if s.key not in ignored]
    facts: dict[str, Any] = {"statuses": {s.key: s.state for s in statuses}}
    bad = [s for s in statuses if s.state != "SUCCESSFUL"]
    present = {s.key for s in statuses}
    missing = [k for k in rule.required_keys if k not in present]
    if "statuses" in f.unreadable:
        return _out(rule, "error", f"statuses could not be read: {f.unreadable['statuses']}")
    problems = [f"{s.name or s.key} is {s.state}" for s in bad]
    problems += [f"required check {k} has not reported" for k in missing]
    if not statuses and rule.require_any:
        problems.append("no check has reported on the source head")
    if problems:
        return _out(
            rule,
            "fail",
            "; ".join(problems),
            "fix or re-run the failing checks; every check must be SUCCESSFUL",
            **facts,
        )
    return _out(rule, "pass", f"{len(statuses)} check(s), all SUCCESSFUL", **facts)


def _story_key(rule: StoryKeyRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    mode, projects = env.story
    extractor = KeyExtractor(
        rule.mode or mode,  # type: ignore[arg-type]
        rule.projects if rule.projects is not None else projects,
    )
    texts = {"title": f.title, "source_branch": f.source_branch or "", "description": f.description}
    found = {place: extractor.find(texts[place]) for place in rule.in_}
    facts: dict[str, Any] = {"keys": {k: v for k, v in found.items() if v}}
    problems = []
    if rule.in_ and not any(found.values()):
        problems.append(
            f"no story key in the {' or the '.join(p.replace('_', ' ') for p in rule.in_)}"
        )
    if rule.every_commit:
        if f.commit_messages is None:
            return _out(rule, "error", "the pull request's commits could not be read", **facts)
        without = [m.split("\n", 1)[0][:60] for m in f.commit_messages if not extractor.find(m)]
        facts["commits"] = len(f.commit_messages)
        if without:
            facts["commits_without_key"] = without[:20]
            problems.append(f"{len(without)} of {len(f.commit_messages)} commits have no story key")
    if problems:
        return _out(
            rule,
            "fail",
            "; ".join(problems),
            "name the Jira story (PROJ-123) in the pull request title or branch"
            + (", and in every commit message" if rule.every_commit else ""),
            **facts,
        )
    return _out(rule, "pass", "story key present", **facts)


def _no_fork(rule: ForkRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    source = f.source_repository
    if source is None or source == f.repository:
        return _out(rule, "pass", "the source branch is in this repository")
    if any(fnmatch.fnmatchcase(source, g) for g in rule.allowed_forks):
        return _out(rule, "pass", f"from the allowed fork {source}", fork=source)
    return _out(
        rule,
        "fail",
        f"the pull request comes from the fork {source}",
        "push the branch to this repository (or add the fork to allowed_forks)",
        fork=source,
    )


def _destination(rule: DestinationRule, f: PullRequestFacts, env: _Env) -> RuleOutcome:
    dest = f.destination_branch or ""
    if any(fnmatch.fnmatchcase(dest, g) for g in rule.forbidden) or (
        rule.allowed and not any(fnmatch.fnmatchcase(dest, g) for g in rule.allowed)
    ):
        return _out(
            rule,
            "fail",
            f"{dest!r} may not be the destination of a pull request",
            "retarget the pull request to an allowed branch",
            destination=dest,
        )
    return _out(rule, "pass", f"destination {dest!r} is allowed", destination=dest)


_CHECKS: dict[type, _Check] = {
    BranchNameRule: _branch_name,
    RequiredReviewersRule: _required_reviewers,
    ApprovalsRule: _approvals,
    ChecksRule: _checks,
    StoryKeyRule: _story_key,
    ForkRule: _no_fork,
    DestinationRule: _destination,
}


def needs(policy: Policy, repository: str, destination: str | None) -> set[str]:
    """The facts beyond the single-PR read the rules in scope need."""
    wanted: set[str] = set()
    for rule in policy.rules:
        if not rule.applies(repository, destination):
            continue
        if isinstance(rule, RequiredReviewersRule) and rule.default_reviewers:
            wanted.add("default_reviewers")
        if isinstance(rule, ChecksRule):
            wanted.add("statuses")
        if (isinstance(rule, StoryKeyRule) and rule.every_commit) or (
            isinstance(rule, ApprovalsRule) and rule.exclude_last_pusher
        ):
            wanted.add("commits")
    return wanted


def evaluate(
    policy: Policy,
    facts: PullRequestFacts,
    *,
    own_keys: Collection[str] = ("rcingest-compliance",),
    story: StoryKeyDefaults = ("strict", None),
    trigger: str = "run",
    now: datetime | None = None,
) -> ComplianceEvaluation:
    """The evaluation of ``facts`` under ``policy`` (frozen when the PR is merged)."""
    env = _Env(own_keys, story)
    outcomes = []
    for rule in policy.rules:
        if not rule.applies(facts.repository, facts.destination_branch):
            outcomes.append(_out(rule, "not_applicable", "not in this rule's scope"))
            continue
        outcomes.append(_CHECKS[type(rule)](rule, facts, env))
    failed = any(o.level == "required" and o.outcome in ("fail", "error") for o in outcomes)
    return ComplianceEvaluation(
        repository=facts.repository,
        pull_request_id=facts.pull_request_id,
        head=facts.head or "",
        policy_name=policy.name,
        policy_hash=policy_hash(policy),
        evaluated_at=now or datetime.now(UTC),
        verdict="non_compliant" if failed else "compliant",
        pr_state=facts.state,
        title=facts.title,
        source_branch=facts.source_branch,
        destination_branch=facts.destination_branch,
        outcomes=outcomes,
        facts=facts,
        trigger=trigger,
        frozen=facts.state == "MERGED",
    )
