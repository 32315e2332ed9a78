"""Run-time plumbing shared by the CLI commands: run ids, git SHA, logging with redaction."""

from __future__ import annotations

import logging
import re
import secrets as _secrets
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from rcingest.config import Pipeline
from rcingest.interfaces import RunContext

log = logging.getLogger("rcingest")

# user:password@ (or :password@) in any URL, e.g. postgresql://u:p@host/db or https://u:t@host/
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]*:[^/@\s]+@")
# password=..., token=..., key=... in a query string or a libpq key=value string.
# No word boundary on purpose: x_token=, api_key= and the like are masked too.
_QUERY_SECRETS = re.compile(
    r"(?P<key>(?:password|passwd|pwd|token|key|secret)=)[^&;#\s]+", re.IGNORECASE
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secret values and without credentials in URLs."""
    for value in sorted(secrets, key=len, reverse=True):
        if value:
            text = text.replace(value, "***")
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***:***@", text)
    return _QUERY_SECRETS.sub(r"\g<key>***", text)


class RedactingFilter(logging.Filter):
    """Rewrites every log record so that no secret value reaches a handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = frozenset(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks print str(exc); render them now, redacted.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.msg = f"{record.msg}\n{redact(formatted, self.secrets)}"
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(verbosity: int, secrets: Iterable[str] = ()) -> logging.Handler:
    """Log to stderr at ERROR (``-q``), INFO (default) or DEBUG (``-v``), redacting secrets."""
    level = {-1: logging.ERROR, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger("rcingest")
    for old in list(root.handlers):
        if getattr(old, "_rcingest", False):
            root.removeHandler(old)
    handler._rcingest = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Library loggers that might print URLs go through the same filter.
    for name in ("aiohttp", "backoff", "peewee"):
        logging.getLogger(name).addFilter(handler.filters[0])
    return handler


def git_sha(cwd: Path | None = None) -> str | None:
    """The commit of the git checkout the run starts in, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH is the point
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def new_run_id(now: datetime) -> str:
    """Sortable and unique: ``20261123T062337Z-3f9a1c``."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{_secrets.token_hex(3)}"


def make_context(
    pipeline: Pipeline, *, mode: Literal["run", "serve"] = "run", dry_run: bool = False
) -> RunContext:
    now = datetime.now(UTC)
    return RunContext(
        run_id=new_run_id(now),
        pipeline_name=pipeline.config.name,
        timezone=pipeline.timezone,
        started_at=now,
        base_dir=pipeline.path.parent,
        source_id=f"{pipeline.config.name}:{pipeline.source.label}",
        mode=mode,
        dry_run=dry_run,
        git_sha=git_sha(Path.cwd()),
        secrets=pipeline.secrets,
    )
