"""Scanning settings that are wrong are said at validate time, in words that fit (issue 12)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from rcingest.errors import ConfigError
from rcingest.scanning.rules import load_rules
from rcingest.scanning.settings import ScanningConfig


def test_a_short_fingerprint_key_is_refused_and_an_empty_one_means_none() -> None:
    with pytest.raises(msgspec.ValidationError, match="at least 16 characters"):
        msgspec.convert({"fingerprint_key": "short"}, ScanningConfig)
    assert msgspec.convert({"fingerprint_key": ""}, ScanningConfig).fingerprint_key is None
    long = "k" * 16
    assert msgspec.convert({"fingerprint_key": long}, ScanningConfig).fingerprint_key == long


def test_a_missing_rule_file_is_called_a_rule_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such rule file"):
        load_rules([tmp_path / "missing.yml"])
