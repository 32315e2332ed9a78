"""The ``scanning:`` section of a pipeline: what every scanning source shares."""

from __future__ import annotations

from typing import Annotated

import msgspec

from rcingest.scanning.keys import DEFAULT_KEY_FILE

__all__ = ["DEFAULT_MAX_DIFF_BYTES", "ScanningConfig"]

#: A pull request diff over this is reported "too large to scan", not half-scanned.
DEFAULT_MAX_DIFF_BYTES = 10 * 1024 * 1024


class ScanningConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Shared by the scanners and the sources that scan (pull requests, repositories)."""

    fingerprint_key: Annotated[
        str | None,
        msgspec.Meta(
            description="Key of finding fingerprints (${RCINGEST_FINGERPRINT_KEY}); the same "
            "for every daemon writing one database. Absent: key_file, created on first use."
        ),
    ] = None
    key_file: Annotated[
        str,
        msgspec.Meta(description="Where a generated fingerprint key is kept (mode 0600)."),
    ] = DEFAULT_KEY_FILE
    max_diff_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=1024,
            description="A pull request diff larger than this is reported too large to scan.",
        ),
    ] = DEFAULT_MAX_DIFF_BYTES

    def __post_init__(self) -> None:
        if self.fingerprint_key == "":
            self.fingerprint_key = None  # ``${RCINGEST_FINGERPRINT_KEY:-}`` left empty
        if self.fingerprint_key is not None and len(self.fingerprint_key) < 16:
            # Checked here so `rcingest validate` says it, not the first scan.
            raise ValueError("fingerprint_key: at least 16 characters")
