"""Secret-scan the main branch of each repository that changed (integration pattern 1).

Called by the ``bitbucket_repositories`` source after a sync. A repository
is looked at only when it changed since its last concluded scan
(``needs_scan``: its ``updated_on`` moved, or it was never scanned): an
unchanged repository costs nothing. For one that changed, ``git ls-remote``
tells whether the main branch head moved (a push to another branch also
moves ``updated_on``); only then is it shallow-cloned and scanned
(``rcingest.reposcan``). A scan that did not conclude (timeout, too large,
failed) is tried again on the next sync; a repository gone meanwhile (404)
is tombstoned, not reported as an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from rcingest.inventory.sync import InventoryState, key_of, needs_scan
from rcingest.records import Record, Repository

__all__ = ["clone_url", "scan_changed"]


def clone_url(template: str, repo: Repository) -> str:
    """The HTTPS clone URL of ``repo`` (``{full_name}`` in ``template``)."""
    return template.replace("{full_name}", repo.full_name)


async def scan_changed(
    source: Any, before: InventoryState, after: InventoryState, listed: Sequence[Repository]
) -> AsyncIterator[Record]:
    from rcingest.reposcan.auth import git_auth_header, git_auth_secrets
    from rcingest.reposcan.scan import RepositoryTarget, scan_repository

    cfg, ctx = source.config, source.context
    clone = cfg.clone
    header = git_auth_header(cfg.auth, ctx.logger)
    secrets = set(ctx.secrets) | set(git_auth_secrets(cfg.auth))
    for repo in listed:
        if not needs_scan(before, repo) or repo.mainbranch is None:
            continue
        key = key_of(repo)
        prev = before.known.get(key)
        url = clone_url(clone.url, repo)
        target = RepositoryTarget(repository=repo.full_name, branch=repo.mainbranch, clone_url=url)
        result = await scan_repository(
            target,
            ctx.scanners,
            auth_header=header,
            allowed_host=urlsplit(url).netloc,
            max_bytes=clone.max_bytes,
            timeout=clone.timeout,
            max_file_bytes=clone.max_file_bytes,
            previous_head=prev.head if prev is not None else None,
            secrets=secrets,
            git=clone.git,
        )
        known = after.known[key]
        if result is None:  # the main branch did not move
            ctx.stats.incr("inventory.scan_unchanged")
            continue
        ctx.stats.incr(f"inventory.scan_{result.state}")
        if result.state == "not_found":
            # Deleted between listing and scanning: a tombstone, not an error.
            after.known[key] = msgspec.structs.replace(known, state="deleted")
            yield Repository(
                full_name=repo.full_name,
                uuid=repo.uuid,
                state="deleted",
                state_reason="gone while scanning (not found)",
            )
            continue
        if result.state in ("findings", "clean"):
            after.known[key] = msgspec.structs.replace(known, head=result.head)
        else:
            # Not concluded: forget the listing's time so the next sync tries again.
            after.known[key] = msgspec.structs.replace(known, updated_on=None)
            ctx.logger.warning(
                "%s: main branch not scanned (%s): %s", repo.full_name, result.state, result.reason
            )
        yield result
