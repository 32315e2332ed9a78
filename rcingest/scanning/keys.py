"""The key of finding fingerprints: configured, or created once per installation.

Fingerprints must be stable across runs (a finding is "fixed" when a later
head no longer has its fingerprint; Chariot risks are named after it) and
must not be computable by someone who only guesses secrets. So the key is
either configured (``fingerprint_key: ${RCINGEST_FINGERPRINT_KEY}``, shared
by every daemon writing one database) or generated on first use into a file
readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from rcingest.errors import ConfigError

__all__ = ["DEFAULT_KEY_FILE", "load_fingerprint_key"]

DEFAULT_KEY_FILE = "data/bitbucket/fingerprint.key"
_MIN_LENGTH = 16


def load_fingerprint_key(configured: str | None, key_file: str | Path = DEFAULT_KEY_FILE) -> bytes:
    """The configured key, else the key file's content, else a new key file's."""
    if configured:
        if len(configured) < _MIN_LENGTH:
            raise ConfigError(f"fingerprint_key: at least {_MIN_LENGTH} characters")
        return configured.encode()
    path = Path(key_file).expanduser()
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"fingerprint key file {path}: cannot read it: {exc}") from None
    if len(text) < _MIN_LENGTH:
        raise ConfigError(f"fingerprint key file {path}: too short (at least {_MIN_LENGTH})")
    return text.encode()


def _create(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key + "\n")
    return key
