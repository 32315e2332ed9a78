"""Run-time plumbing shared by the CLI commands: run ids, git SHA, secret redaction.

Log handlers and formats are in ``rcingest.logs``.
"""

from __future__ import annotations

import logging
import re
import secrets as _secrets
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # redact() and the log filter are used by the light CLI path
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


#: Shorter values are never replaced by substring: "pw" or " " would rewrite
#: ordinary words and spaces in logs and stored rows (``Update***README``).
#: Configured webhook secrets are refused at start below this length and more
#: (``weak_secret``); this guard covers every other value redaction is given.
MIN_REDACTED_LENGTH = 8
#: The webhook daemon's rule (``weak_secret``): at least this long and with at
#: least ``MIN_DISTINCT`` different characters (``aaaaaaaaaaaaaaaa`` is refused).
MIN_SECRET_LENGTH = 16
MIN_DISTINCT = 8


def weak_secret(value: str, *, strict: bool = True) -> str | None:
    """Why ``value`` is too weak to be a webhook secret, or None when it will do.

    ``strict`` (the daemon's pipeline): at least 16 characters, not only
    whitespace, at least 8 distinct characters. Not strict (the embedding
    API, whose runbook example is ``super-secret``): not only whitespace and
    at least 8 characters, the floor below which redaction would corrupt text.
    The answer never quotes the value.
    """
    minimum = MIN_SECRET_LENGTH if strict else MIN_REDACTED_LENGTH
    rule = f"at least {minimum} characters"
    if strict:
        rule += f", {MIN_DISTINCT} of them distinct (e.g. `openssl rand -hex 32`)"
    if not value.strip():
        problem = "is empty or only whitespace"
    elif len(value) < minimum:
        problem = f"has {len(value)} characters"
    elif strict and len(set(value)) < MIN_DISTINCT:
        problem = f"has {len(set(value))} distinct characters"
    else:
        return None
    return f"{problem}; use {rule}"


def redactable(secrets: Iterable[str]) -> frozenset[str]:
    """The values long enough to be masked by substring (see ``MIN_REDACTED_LENGTH``)."""
    return frozenset(v for v in secrets if len(v) >= MIN_REDACTED_LENGTH and v.strip())


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secret values and without credentials in URLs.

    Values shorter than ``MIN_REDACTED_LENGTH`` (or only whitespace) are
    skipped: replacing them by substring would corrupt unrelated text.
    """
    for value in sorted(redactable(secrets), key=len, reverse=True):
        text = text.replace(value, "***")
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***:***@", text)
    return _QUERY_SECRETS.sub(r"\g<key>***", text)


#: Attributes every LogRecord has; anything else on a record is an ``extra`` (redacted too).
STANDARD_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _redact_value(value: Any, secrets: frozenset[str]) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, secrets) for v in value]
    return redact(str(value), secrets)


class RedactingFilter(logging.Filter):
    """Rewrites every log record so that no secret value reaches a handler.

    The message, the traceback and every ``extra`` attribute (which the JSON
    log format prints) are redacted.
    """

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
        for key, value in list(record.__dict__.items()):
            if key not in STANDARD_RECORD_FIELDS:
                record.__dict__[key] = _redact_value(value, self.secrets)
        return True


def setup_logging(verbosity: int, secrets: Iterable[str] = ()) -> list[logging.Handler]:
    """Log to stderr at ERROR (``-q``), INFO (default) or DEBUG (``-v``), redacting secrets.

    Kept for callers of this older place; ``rcingest.logs.setup_logging`` also
    takes the pipeline's zone, a log file and the JSON format.
    """
    from rcingest.logs import setup_logging as setup  # logs imports this module

    return setup(verbosity, secrets)


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
    from rcingest.interfaces import RunContext

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
        # Only the values redaction uses: sinks that mask stored strings by
        # substring (the database sink) read these, and "pw" or " " would
        # rewrite every commit message that contains them.
        secrets=redactable(pipeline.secrets),
    )
