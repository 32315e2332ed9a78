"""rcingest: a plugin-based ingest engine for Bitbucket Cloud evidence.

The public API for plugin authors: ``hookimpl``, the record Structs and the
component base classes.
"""

from __future__ import annotations

from importlib import metadata

from rcingest.hookspecs import hookimpl
from rcingest.interfaces import (
    Batch,
    ComponentConfig,
    Enricher,
    RunContext,
    Scanner,
    Sink,
    Source,
    StateStore,
    Stats,
    Window,
)
from rcingest.records import (
    Checkpoint,
    Commit,
    FileChange,
    PullRequest,
    PullRequestRef,
    Record,
    Repository,
    StoryKey,
    WebhookDelivery,
)

try:
    __version__ = metadata.version("rcingest")
except metadata.PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Batch",
    "Checkpoint",
    "Commit",
    "ComponentConfig",
    "Enricher",
    "FileChange",
    "PullRequest",
    "PullRequestRef",
    "Record",
    "Repository",
    "RunContext",
    "Scanner",
    "Sink",
    "Source",
    "StateStore",
    "Stats",
    "StoryKey",
    "WebhookDelivery",
    "Window",
    "__version__",
    "hookimpl",
]
