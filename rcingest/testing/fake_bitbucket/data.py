"""Deterministic fake Bitbucket data: repositories x branches x commits over a time span.

Each repository has a ``main`` branch of ``commits`` linear commits and
``branches - 1`` feature branches (``feature/REL-12-login`` style names) that
fork from ``main`` and add ``own_commits`` commits each, so every branch
reaches ``commits`` commits and the older ones are shared history. The newest
``own_commits`` commits of every branch cover the last ``own_commits`` steps of
the span, interleaved in time. Messages carry Jira keys (and some look-alikes),
authors come with and without linked accounts, every commit touches 1-20
files, and each feature branch has a pull request. The same spec always gives
the same data: hashes and choices derive from ``seed`` with SHA-1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rcingest.interfaces import Window

__all__ = ["FakeCommit", "FakeData", "FakePullRequest", "FakeRepo", "GenSpec"]

_AUTHORS: list[tuple[str, str, str | None]] = [
    ("Ana Lima", "ana@acme.example", "557058:0a1b2c3d-0000-4000-8000-000000000001"),
    ("Bo Chen", "bo@acme.example", "557058:0a1b2c3d-0000-4000-8000-000000000002"),
    ("Chidi Okafor", "chidi@users.noreply.example", None),
    ("Dana Kowalski", "dana@acme.example", "557058:0a1b2c3d-0000-4000-8000-000000000004"),
    ("Émile Durand", "emile@contractor.example", None),
    ("Farah Haddad", "farah@acme.example", "557058:0a1b2c3d-0000-4000-8000-000000000006"),
]
_TOPICS = ["login", "timeout", "billing", "search", "export", "cache", "audit", "upload"]
_PROJECTS = ["REL", "OPS", "PAY", "WEB"]
_MESSAGES = [
    "{key}: fix {topic} handling",
    "{key} {topic}: add tests",
    "Refactor {topic} module ({key})",
    "Update UTF-8 decoding in {topic}",
    "Merge work on {topic}",
    "{key_lower}: tidy {topic} logging",
    "[{key}] {topic} follow-up\n\nSee also {key2} for the background.",
    "Bump SHA-256 helper used by {topic}",
]
_DIRS = ["src", "src/api", "src/core", "tests", "docs", "web/static", "scripts"]
_EXTS = [".py", ".ts", ".md", ".yaml", ".sql"]
_LANGUAGES = ["python", "typescript", "go", "java"]
_STATES = ["MERGED", "OPEN", "DECLINED", "SUPERSEDED"]


def _h(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def _n(*parts: object) -> int:
    return int(_h(*parts)[:8], 16)


@dataclass(frozen=True)
class GenSpec:
    """What to generate; the defaults make a small, quick workspace."""

    workspace: str = "acme"
    repositories: int = 3
    branches: int = 3
    #: Commits reachable from each branch.
    commits: int = 60
    #: Commits of each feature branch not on main (default: a third of ``commits``).
    own_commits: int | None = None
    #: Newest commit time (default: now, floored to the minute, at generation).
    end: datetime | None = None
    #: Time between consecutive commits of one branch.
    step: timedelta = timedelta(minutes=30)
    seed: int = 1
    #: Every Nth commit is dated ``skew`` earlier than its position (rebases, clock skew).
    out_of_order_every: int = 0
    skew: timedelta = timedelta(days=3)
    max_files: int = 20
    #: Repository slugs, in order (``service-00``, ``service-01``, ... past their end).
    slugs: tuple[str, ...] = ()


@dataclass(slots=True)
class FakeCommit:
    hash: str
    seq: int
    date: datetime
    parents: list[str]
    author: int
    message: str
    branch: str


@dataclass
class FakePullRequest:
    id: int
    title: str
    state: str
    source_branch: str
    destination_branch: str
    created_on: datetime
    updated_on: datetime
    author: int
    commits: list[str]
    description: str = ""
    # Review state (``review.py``); only the single-PR GET and webhooks show it.
    #: account id -> participant value, in the order they joined.
    participants: dict[str, dict[str, Any]] = field(default_factory=dict)
    reviewers: list[dict[str, Any]] = field(default_factory=list)
    closed_by: dict[str, Any] | None = None
    #: ``workspace/slug`` of the fork the source branch lives in (None: this repository).
    source_repository: str | None = None

    @property
    def merge_commit(self) -> str | None:
        # Modelled as a fast-forward merge: the source head, abbreviated the
        # way Bitbucket abbreviates every hash in pull request payloads.
        return self.commits[0][:12] if self.state == "MERGED" and self.commits else None


@dataclass
class FakeRepo:
    workspace: str
    slug: str
    uuid: str
    is_private: bool
    language: str
    updated_on: datetime
    owner_role: bool
    mainbranch: str = "main"
    created_on: datetime | None = None
    #: ``workspace/slug`` of the repository this is a fork of.
    fork_of: str | None = None
    commits: dict[str, FakeCommit] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)
    pull_requests: list[FakePullRequest] = field(default_factory=list)
    #: ``{"user", "reviewer_type", "type": "default_reviewer"}`` values, project level first.
    default_reviewers: list[dict[str, Any]] = field(default_factory=list)
    _order: list[FakeCommit] = field(default_factory=list)
    _cache: dict[tuple[tuple[str, ...], tuple[str, ...]], list[FakeCommit]] = field(
        default_factory=dict
    )

    @property
    def full_name(self) -> str:
        return f"{self.workspace}/{self.slug}"

    def resolve(self, rev: str) -> FakeCommit | None:
        """A branch name, full hash or unique hash prefix (4+ characters)."""
        if rev in self.heads:
            return self.commits[self.heads[rev]]
        if rev in self.commits:
            return self.commits[rev]
        if len(rev) >= 4:
            found = [c for h, c in self.commits.items() if h.startswith(rev)]
            if len(found) == 1:
                return found[0]
        return None

    def _reachable(self, start: FakeCommit) -> set[str]:
        seen: set[str] = set()
        stack = [start.hash]
        while stack:
            h = stack.pop()
            if h in seen:
                continue
            seen.add(h)
            stack.extend(self.commits[h].parents)
        return seen

    def listing(self, include: list[str], exclude: list[str]) -> list[FakeCommit] | None:
        """``git log include ^exclude``, topologically newest first; None for an unknown ref."""
        key = (tuple(include), tuple(exclude))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        starts = (
            [self.resolve(r) for r in include]
            if include
            else [self.commits[h] for h in self.heads.values()]
        )
        stops = [self.resolve(r) for r in exclude]
        if any(c is None for c in starts) or any(c is None for c in stops):
            return None
        keep: set[str] = set()
        for c in starts:
            keep |= self._reachable(c)  # type: ignore[arg-type]
        for c in stops:
            keep -= self._reachable(c)  # type: ignore[arg-type]
        out = [c for c in reversed(self._order) if c.hash in keep]
        self._cache[key] = out
        return out

    def files(self, commit_hash: str, max_files: int) -> list[dict[str, Any]]:
        """The diffstat values of one commit (1..max_files entries)."""
        n = 1 + _n("files", commit_hash) % max_files
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i in range(n):
            r = _n("file", commit_hash, i)
            folder, topic = _DIRS[r % len(_DIRS)], _TOPICS[(r >> 4) % len(_TOPICS)]
            path = f"{folder}/{topic}_{(r >> 8) % 50}{_EXTS[(r >> 14) % len(_EXTS)]}"
            if path in seen:
                continue  # one entry per path, as in a real diffstat
            seen.add(path)
            kind = (r >> 20) % 10
            status = (
                "modified"
                if kind < 6
                else "added"
                if kind < 8
                else "removed"
                if kind < 9
                else "renamed"
            )
            added = 0 if status == "removed" else (r >> 3) % 120
            removed = 0 if status == "added" else (r >> 9) % 60
            old = (
                None
                if status == "added"
                else {"path": f"old/{path}" if status == "renamed" else path, "type": "commit_file"}
            )
            new = None if status == "removed" else {"path": path, "type": "commit_file"}
            out.append(
                {
                    "type": "diffstat",
                    "status": status,
                    "lines_added": added,
                    "lines_removed": removed,
                    "old": old,
                    "new": new,
                }
            )
        return out


class FakeData:
    """A generated workspace and the answers a test expects from it."""

    def __init__(self, spec: GenSpec | None = None) -> None:
        self.spec = spec = spec or GenSpec()
        self.end = spec.end or datetime.now(UTC).replace(second=0, microsecond=0)
        self.repos: dict[str, FakeRepo] = {}
        for r in range(spec.repositories):
            self._make_repo(r)

    def _make_repo(self, r: int) -> None:
        spec = self.spec
        slug = spec.slugs[r] if r < len(spec.slugs) else f"service-{r:02d}"
        repo = FakeRepo(
            workspace=spec.workspace,
            slug=slug,
            uuid="{" + _h(spec.seed, "uuid", slug)[:8] + "-0000-4000-8000-" + _h(slug)[:12] + "}",
            is_private=r % 3 != 2,
            language=_LANGUAGES[r % len(_LANGUAGES)],
            updated_on=self.end - timedelta(days=r * 4),
            owner_role=r % 2 == 0,
        )
        own = spec.own_commits if spec.own_commits is not None else spec.commits // 3
        own = min(own, spec.commits - 1) if spec.branches > 1 else 0
        m = spec.commits
        raw: list[
            tuple[datetime, str, int, str | None]
        ] = []  # (time, branch, index, parent-branch)
        for i in range(m):
            raw.append((self.end - spec.step * (m - 1 - i), "main", i, None))
        names = ["main"]
        for k in range(1, spec.branches):
            # Branch names depend on k only, so one ``default_branches`` list
            # fits every repository, as in a workspace with a branching policy.
            key = f"{_PROJECTS[k % len(_PROJECTS)]}-{10 + _n(spec.seed, k) % 990}"
            kind = ["feature", "bugfix", "hotfix"][(k - 1) % 3]
            names.append(f"{kind}/{key}-{_TOPICS[k % len(_TOPICS)]}")
            offset = spec.step * k / (spec.branches + 1)
            for j in range(own):
                raw.append((self.end - spec.step * (own - 1 - j) - offset, names[k], j, None))
        raw.sort(key=lambda t: (t[0], t[1], t[2]))
        main_hashes: list[str] = []
        branch_hashes: dict[str, list[str]] = {n: [] for n in names}
        pending = []
        for seq, (when, branch, idx, _) in enumerate(raw):
            h = _h(spec.seed, slug, branch, idx)
            pending.append((seq, when, branch, idx, h))
            (main_hashes if branch == "main" else branch_hashes[branch]).append(h)
        branch_hashes["main"] = main_hashes
        fork = m - own - 1
        for seq, when, branch, idx, h in pending:
            if branch == "main":
                parents = [main_hashes[idx - 1]] if idx else []
            else:
                parents = [branch_hashes[branch][idx - 1]] if idx else [main_hashes[fork]]
            date = when
            if (
                spec.out_of_order_every
                and seq % spec.out_of_order_every == spec.out_of_order_every - 1
            ):
                date = when - spec.skew
            c = FakeCommit(
                h,
                seq,
                date,
                parents,
                _n(h, "author") % len(_AUTHORS),
                self._message(h, branch),
                branch,
            )
            repo.commits[h] = c
            repo._order.append(c)
        for name in names:
            repo.heads[name] = branch_hashes[name][-1]
        for k, name in enumerate(names[1:], start=1):
            hashes = list(reversed(branch_hashes[name]))
            first = repo.commits[hashes[-1]].date
            last = repo.commits[hashes[0]].date
            key = name.split("/", 1)[1].rsplit("-", 1)[0]
            repo.pull_requests.append(
                FakePullRequest(
                    id=k,
                    title=f"{key}: {name.rsplit('-', 1)[1]} improvements",
                    state=_STATES[(k - 1) % len(_STATES)],
                    source_branch=name,
                    destination_branch="main",
                    created_on=first,
                    updated_on=last + timedelta(minutes=1),
                    author=k % len(_AUTHORS),
                    commits=hashes,
                    description=f"Implements {key}.",
                )
            )
        self.repos[repo.full_name] = repo

    def _message(self, h: str, branch: str) -> str:
        r = _n(h, "msg")
        key = f"{_PROJECTS[r % len(_PROJECTS)]}-{1 + (r >> 4) % 400}"
        key2 = f"{_PROJECTS[(r >> 12) % len(_PROJECTS)]}-{1 + (r >> 16) % 400}"
        template = _MESSAGES[(r >> 8) % len(_MESSAGES)]
        return template.format(
            key=key, key2=key2, key_lower=key.lower(), topic=_TOPICS[(r >> 20) % len(_TOPICS)]
        )

    # -- what a correct scan returns -------------------------------------

    def expected_commits(
        self, window: Window, branches: list[str] | None = None, repos: list[str] | None = None
    ) -> dict[str, tuple[str, set[str]]]:
        """Every commit in ``window`` on ``branches`` (default: main): hash → (repo, branches)."""
        out: dict[str, tuple[str, set[str]]] = {}
        for name, repo in self.repos.items():
            if repos is not None and name not in repos:
                continue
            for branch in branches or [repo.mainbranch]:
                listing = repo.listing([branch], []) if branch in repo.heads else []
                for c in listing or []:
                    if window.start <= c.date < window.end:
                        out.setdefault(c.hash, (name, set()))[1].add(branch)
        return out

    def expected_pull_requests(self, window: Window) -> dict[tuple[str, int], FakePullRequest]:
        """Pull requests updated in ``window``: (repo, id) → pull request."""
        return {
            (name, pr.id): pr
            for name, repo in self.repos.items()
            for pr in repo.pull_requests
            if window.start <= pr.updated_on < window.end
        }

    def author(self, index: int) -> tuple[str, str, str | None]:
        """(display name, e-mail, account id or None) of an author index."""
        return _AUTHORS[index]

    def authors(self) -> list[tuple[str, str, str | None]]:
        """Every author, by index."""
        return list(_AUTHORS)
