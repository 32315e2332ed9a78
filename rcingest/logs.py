"""Log output of ``run`` and ``serve``: zoned stamps, text or JSON lines, stderr and a rotated file.

Every handler carries the same ``RedactingFilter`` (``rcingest.runtime``), so a
secret reaches neither the terminal nor the file nor a log shipper. The
handlers are the root logger's, so third-party records (aiohttp's server
errors) pass the filter as well. Stamps are
in the pipeline's zone with its offset and milliseconds
(``2026-12-02T10:15:03.120-07:00``); before the pipeline is loaded they are
UTC (``+00:00``).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rcingest.errors import ConfigError
from rcingest.logconfig import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LoggingConfig
from rcingest.runtime import STANDARD_RECORD_FIELDS, RedactingFilter

if TYPE_CHECKING:  # the CLI imports this module for its options: keep it light
    from rcingest.config import Pipeline
    from rcingest.interfaces import RunContext

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Loggers of libraries that might print URLs: they go through the same filter.
LIBRARY_LOGGERS = ("aiohttp", "backoff", "peewee")
_MARK = "_rcingest"


def stamp(created: float, zone: tzinfo) -> str:
    """``2026-12-02T10:15:03.120-07:00``: the moment in ``zone``, with offset, in ms."""
    return datetime.fromtimestamp(created, zone).isoformat(timespec="milliseconds")


class ZonedFormatter(logging.Formatter):
    """The text line, stamped in the pipeline's zone instead of the host's local time."""

    def __init__(self, zone: tzinfo) -> None:
        super().__init__(TEXT_FORMAT)
        self.zone = zone

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return stamp(record.created, self.zone)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id (when known), extras.

    The record has passed the ``RedactingFilter`` by now: the message and every
    extra attribute are already redacted.
    """

    def __init__(self, zone: tzinfo, run_id: str | None = None) -> None:
        super().__init__()
        self.zone = zone
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": stamp(record.created, self.zone),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.run_id is not None:
            out["run_id"] = self.run_id
        for key, value in record.__dict__.items():
            if key not in STANDARD_RECORD_FIELDS:
                out.setdefault(key, value)
        if record.exc_info:  # only when no filter folded it into the message
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _LastResort(logging.Handler):
    """``logging.lastResort`` with the redacting filter: the message to the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # as logging's own handlers: never raise
            self.handleError(record)


def _level(name: str | None) -> int:
    return logging.getLevelName(name.upper()) if name else logging.INFO


def _file_handler(path: Path, config: LoggingConfig) -> logging.Handler:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.handlers.RotatingFileHandler(
            path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(f"log file {path}: cannot open it: {exc.strerror or exc}") from None


def setup_logging(
    verbosity: int,
    secrets: Iterable[str] = (),
    *,
    timezone: tzinfo = UTC,
    config: LoggingConfig | None = None,
    log_file: str | Path | None = None,
    log_format: str | None = None,
    run_id: str | None = None,
) -> list[logging.Handler]:
    """(Re)configure logging: stderr, and a rotated file if one is asked for, all redacted.

    ``verbosity`` is -1 (``-q``: errors only on stderr), 0 or more (``-v``:
    debug). ``log_file`` and ``log_format`` (the flags) override ``config``
    (the pipeline's ``logging:`` section). The file's level is the section's
    ``level`` (default INFO), debug with ``-v``; ``-q`` quiets only stderr, so
    a cron job's file still holds the cadence line. Calling it again replaces
    (and closes) the handlers of the previous call.
    """
    config = config or LoggingConfig()
    fmt = log_format or config.format
    chosen = _level(config.level)
    stderr_level = {-1: logging.ERROR, 0: chosen}.get(verbosity, logging.DEBUG)
    file_level = min(chosen, logging.DEBUG) if verbosity > 0 else chosen
    redacting = RedactingFilter(secrets)

    def prepare(handler: logging.Handler, level: int) -> logging.Handler:
        handler.setLevel(level)
        handler.setFormatter(
            JsonFormatter(timezone, run_id) if fmt == "json" else ZonedFormatter(timezone)
        )
        handler.addFilter(redacting)
        setattr(handler, _MARK, True)
        return handler

    handlers = [prepare(logging.StreamHandler(sys.stderr), stderr_level)]
    path = log_file or config.file
    if path:
        handlers.append(prepare(_file_handler(Path(path), config), file_level))

    # The handlers sit on the root logger, so records of every library (aiohttp's
    # "Error handling request" quoting a bad header line, asyncio, ...) pass the
    # same filter; on "rcingest" alone those reached stderr through Python's
    # last-resort handler, unredacted. Libraries keep the root's level (WARNING
    # unless someone changed it); "rcingest" gets the chosen one.
    root, own = logging.getLogger(), logging.getLogger("rcingest")
    for logger in (root, own):
        for old in list(logger.handlers):
            if getattr(old, _MARK, False):
                logger.removeHandler(old)
                if isinstance(old, logging.FileHandler):
                    old.close()
    for handler in handlers:
        root.addHandler(handler)
    own.setLevel(min(h.level for h in handlers))
    # Used only for a logger that does not propagate and has no handler of its
    # own; redacted too, so no path to stderr skips the filter.
    last_resort = _LastResort(logging.WARNING)
    last_resort.addFilter(redacting)
    logging.lastResort = last_resort
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for old_filter in list(library.filters):
            if isinstance(old_filter, RedactingFilter):
                library.removeFilter(old_filter)
        library.addFilter(redacting)
    return handlers


# --- the CLI flags: kept in click's context so commands need no extra parameters ---

_META = "rcingest.logs"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def store(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta.setdefault(_META, {})[key] = value
        return value

    return store


def log_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--log-file PATH`` and ``--log-format text|json`` (read back by ``start_logging``)."""
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        expose_value=False,
        callback=_remember("log_format"),
        help="Log lines as text (default) or one JSON object per line.",
    )(func)
    return click.option(
        "--log-file",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_remember("log_file"),
        help="Also log to this file (folder created; rotated, by default at "
        f"{DEFAULT_MAX_BYTES // 2**20} MiB with {DEFAULT_BACKUPS} kept).",
    )(func)


def child_log_flags(ctx: click.Context) -> list[str]:
    """The log flags given to this command, for a child process started with the same ones."""
    flags = ctx.meta.get(_META, {})
    out: list[str] = []
    if "log_format" in flags:
        out += ["--log-format", str(flags["log_format"])]
    if "log_file" in flags:
        out += ["--log-file", str(flags["log_file"])]
    return out


def own_log_file(ctx: click.Context, pipeline: Pipeline, tag: str) -> None:
    """Log to ``<file>.<tag><suffix>`` instead of the configured file, when there is one.

    Two processes must not share one rotated file (each would rotate it under
    the other): ``rcingest normalise`` writes ``rcingest.normaliser.log`` next to
    the daemon's ``rcingest.log``.
    """
    flags = ctx.meta.setdefault(_META, {})
    section = pipeline.config.logging
    path = flags.get("log_file") or (section.file if section is not None else None)
    if path:
        p = Path(path)
        flags["log_file"] = str(p.with_name(f"{p.stem}.{tag}{p.suffix}"))


def start_logging(
    ctx: click.Context,
    verbosity: int,
    pipeline: Pipeline | None = None,
    context: RunContext | None = None,
) -> None:
    """Set up logging from the flags and, once loaded, the pipeline (its zone, section, secrets).

    Called before the pipeline is loaded (UTC stamps, flags only) and again
    after, with the ``Pipeline`` and its ``RunContext``. A log file that
    cannot be opened is a configuration error (exit 2).
    """
    flags = ctx.meta.get(_META, {})
    try:
        setup_logging(
            verbosity,
            pipeline.secrets if pipeline is not None else (),
            timezone=pipeline.timezone if pipeline is not None else UTC,
            config=pipeline.config.logging if pipeline is not None else None,
            log_file=flags.get("log_file"),
            log_format=flags.get("log_format"),
            run_id=context.run_id if context is not None else None,
        )
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
