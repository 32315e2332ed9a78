"""Secret scans of a repository's main branch from a shallow git clone (issue 14, pattern 1).

``scan_repository`` (``scan.py``) clones one branch with the git CLI
(``clone.py``: bounded in time and size, credentials only in git's
environment), turns the checkout into ``DiffFile``s whose lines are all added
(``tree.py``) and runs the scanner plugins on them, producing a
``RepositoryScan``. ``git_auth_header`` (``auth.py``) makes the header git
needs from the ``auth:`` settings the REST client uses.
"""

from rcingest.reposcan.auth import git_auth_header, git_auth_secrets
from rcingest.reposcan.clone import (
    CloneError,
    CloneFailed,
    CloneNotFound,
    CloneRefused,
    CloneTimeout,
    CloneTooLarge,
    remote_head,
    shallow_clone,
)
from rcingest.reposcan.scan import RepositoryTarget, scan_repository
from rcingest.reposcan.tree import TreeStats, TreeTooLarge, iter_batches, read_tree

__all__ = [
    "CloneError",
    "CloneFailed",
    "CloneNotFound",
    "CloneRefused",
    "CloneTimeout",
    "CloneTooLarge",
    "RepositoryTarget",
    "TreeStats",
    "TreeTooLarge",
    "git_auth_header",
    "git_auth_secrets",
    "iter_batches",
    "read_tree",
    "remote_head",
    "scan_repository",
    "shallow_clone",
]
