"""Which repositories the inventory keeps: visibility, language, project, names, activity.

A repository a filter keeps out is still recorded, with ``state: filtered``
and the filter that decided (``state_reason``), so "why is this repository
not in Chariot?" has an answer. BBQL ``q`` goes to Bitbucket instead: what
it excludes is never listed, so it cannot be recorded.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta
from typing import Annotated, Literal

import msgspec

from rcingest.records import Repository

__all__ = ["RepositoryFilters", "filtered_reason"]


class RepositoryFilters(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Filters applied to each listed repository, in this order."""

    visibility: Annotated[
        Literal["any", "private", "public"],
        msgspec.Meta(description="Keep only private or only public repositories."),
    ] = "any"
    languages: Annotated[
        list[str], msgspec.Meta(description="Keep only these languages (case-insensitive).")
    ] = []
    projects: Annotated[list[str], msgspec.Meta(description="Keep only these project keys.")] = []
    names: Annotated[
        list[str], msgspec.Meta(description="Globs of slugs or workspace/slug to keep.")
    ] = []
    exclude_names: Annotated[
        list[str], msgspec.Meta(description="Globs of slugs or workspace/slug to leave out.")
    ] = []
    #: Keep only repositories updated (pushed to) in the last N days.
    active_within_days: Annotated[int, msgspec.Meta(ge=1)] | None = None


def _matches(repo: Repository, globs: list[str]) -> bool:
    slug = repo.full_name.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(repo.full_name, g) or fnmatch.fnmatchcase(slug, g) for g in globs
    )


def filtered_reason(repo: Repository, filters: RepositoryFilters, now: datetime) -> str | None:
    """Why ``filters`` keep ``repo`` out (the first filter that does), or None to keep it."""
    if filters.visibility != "any" and repo.is_private is not None:
        private = filters.visibility == "private"
        if repo.is_private != private:
            return f"visibility: {'public' if repo.is_private is False else 'private'}"
    if filters.languages:
        wanted = {x.lower() for x in filters.languages}
        if (repo.language or "").lower() not in wanted:
            return f"language: {repo.language or 'none'}"
    if filters.projects and (repo.project or "") not in filters.projects:
        return f"project: {repo.project or 'none'}"
    if filters.names and not _matches(repo, filters.names):
        return "names: no pattern matches"
    if filters.exclude_names and _matches(repo, filters.exclude_names):
        return "exclude_names: a pattern matches"
    if filters.active_within_days is not None:
        last = repo.last_push or repo.updated_on
        if last is None or last < now - timedelta(days=filters.active_within_days):
            return f"active_within_days: no activity in {filters.active_within_days} days"
    return None
