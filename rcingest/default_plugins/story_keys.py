"""The ``story_keys`` enricher: Jira keys from messages, branches and pull requests."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from rcingest.hookspecs import RegisterEnricher, hookimpl
from rcingest.interfaces import ComponentConfig, Enricher, RunContext
from rcingest.records import Commit, PullRequest, Record, StoryKey, StoryKeyOrigin
from rcingest.storykeys import (
    DEFAULT_IGNORE,
    PROJECT_KEY_PATTERN,
    KeyExtractor,
    merge_story_keys,
)

#: A project key as Jira allows it (``REL``, ``J2``, ``MY_PROJ``; any case):
#: an entry that is not one (``REL-1``, ``A``) could never match, so it is refused.
ProjectKey = Annotated[str, msgspec.Meta(pattern=PROJECT_KEY_PATTERN)]


class StoryKeysConfig(ComponentConfig):
    """Settings of the ``story_keys`` enricher."""

    #: ``strict``: what Bitbucket and Jira link (uppercase only);
    #: ``lenient``: case-insensitive, then upper-cased (GitHub for Jira).
    mode: Literal["strict", "lenient"] = "strict"
    #: Keep only these project keys (``[REL, OPS, MY_PROJ]``, case-insensitive);
    #: the ignore list then does not apply.
    projects: list[ProjectKey] | None = None
    #: Project keys that are look-alikes, dropped when ``projects`` is not set.
    ignore: list[ProjectKey] = msgspec.field(default_factory=lambda: list(DEFAULT_IGNORE))


class StoryKeysEnricher(Enricher[StoryKeysConfig]):
    """Adds ``story_keys`` to commits and pull requests; other records pass unchanged.

    Commit: the message (``message``), each branch that brought it
    (``new_on``, origin ``branch``, naming the branch as evidence), each pull
    request's title (``pr_title``) and source branch (``pr_branch``). Pull
    request: its title and source branch. Keys already on the record are kept
    and merged with the new ones.
    """

    Config = StoryKeysConfig

    def __init__(self, config: StoryKeysConfig, context: RunContext) -> None:
        super().__init__(config, context)
        self.extractor = KeyExtractor(config.mode, config.projects, config.ignore)

    def enrich(self, record: Record) -> Record:
        """``record`` with its story keys filled in (a copy), or ``record`` itself."""
        texts: list[tuple[StoryKeyOrigin, str]]
        if isinstance(record, Commit):
            texts = [("message", record.message)]
            # Only the branches that brought the commit lend their key (records.md).
            texts.extend(("branch", b) for b in record.new_on)
            for pr in record.pull_requests:
                texts.append(("pr_title", pr.title))
                texts.append(("pr_branch", pr.source_branch))
        elif isinstance(record, PullRequest):
            texts = [("pr_title", record.title), ("pr_branch", record.source_branch)]
        else:
            return record
        found = self.extractor.extract(texts)
        if not found:
            return record
        merged = merge_story_keys(record.story_keys, found)
        # merge_story_keys keeps keys and origins; the branch evidence is kept here.
        if isinstance(record, Commit) and (
            record.new_on or any(sk.branches for sk in record.story_keys)
        ):
            merged = self._branch_evidence(record, merged)
        if merged == record.story_keys:
            return record
        return msgspec.structs.replace(record, story_keys=merged)

    def _branch_evidence(self, commit: Commit, merged: list[StoryKey]) -> list[StoryKey]:
        """``merged`` with each ``branch`` key naming the branches that lent it."""
        lent: dict[str, list[str]] = {
            sk.key: list(sk.branches) for sk in commit.story_keys if sk.branches
        }
        for branch in commit.new_on:
            for key in self.extractor.find(branch):
                names = lent.setdefault(key, [])
                if branch not in names:
                    names.append(branch)
        return [
            msgspec.structs.replace(sk, branches=tuple(lent[sk.key]))
            if sk.key in lent and "branch" in sk.origins
            else sk
            for sk in merged
        ]


@hookimpl
def register_enrichers(register: RegisterEnricher) -> None:
    """Register the ``story_keys`` enricher."""
    # Overridable: a team with its own key rules can register a "story_keys"
    # enricher in its plugin and pipelines keep naming the same type.
    register("story_keys", StoryKeysEnricher, overridable=True)
