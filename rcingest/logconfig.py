"""The ``logging:`` section of a pipeline file: where logs go, in which format, how far back.

Only the shape lives here (a strict Struct, so ``rcingest validate`` and the
JSON Schema know it); ``rcingest.logs`` turns it into handlers.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

#: Level names accepted in ``logging.level``, in either case.
LevelName = Literal["debug", "info", "warning", "error", "DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]

#: 10 MiB per file before it is rotated.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Logs of run and serve: stderr, and a rotated file when `file` is set.

    The --log-file and --log-format flags override `file` and `format`.
    """

    file: Annotated[
        str | None,
        msgspec.Meta(
            description="Log file, created with its folder; relative to the working "
            "directory. Absent: stderr only."
        ),
    ] = None
    format: Annotated[
        LogFormat,
        msgspec.Meta(
            description="text: one stamped line per record; json: one JSON object per "
            "line (time, level, logger, message, run_id). Applies to stderr and the file."
        ),
    ] = "text"
    level: Annotated[
        LevelName | None,
        msgspec.Meta(
            description="Lowest level logged (default info); -q and -v still decide for stderr."
        ),
    ] = None
    max_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=0, description="Size in bytes at which the file is rotated to FILE.1 (0: never)."
        ),
    ] = DEFAULT_MAX_BYTES
    backups: Annotated[
        int,
        msgspec.Meta(ge=0, description="Rotated files kept (FILE.1 ... FILE.N); older go."),
    ] = DEFAULT_BACKUPS
