"""The built-in secrets engine and the ``secrets`` scanner (issue 12)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from rcingest.default_plugins.scanners import SecretsConfig, SecretsScanner
from rcingest.scanning.allowlist import Allowlist
from rcingest.scanning.engine import SecretsEngine, entropy, is_lookalike
from rcingest.scanning.model import AddedLine, DiffFile
from rcingest.scanning.rules import load_rules
from rcingest.testing import check_scanner_contract

RULES = load_rules()
KEY = b"engine-test-key-0123456789"
AWS = "AKIAZ7VRSQ5TJPHKXW4Q"
GITHUB = "ghp_R8v2Kq9sLm4Tx7Wb1Zc5Nd3Hf6Jg0Ya8Pe2Q"
PEM = [
    "-----BEGIN RSA PRIVATE KEY-----",
    "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi7ZcfRfnKUnRUb3mLqW0Fj1fVp",
    "kS9ohLxS6r8ZkzZr0xU1k3Q8mN2bV7cD4eF5gH6iJ7kL8mN9oP0qR1sT2uV3wX4y",
    "-----END RSA PRIVATE KEY-----",
]


def file(path: str, lines: dict[int, str]) -> DiffFile:
    return DiffFile(path=path, added=[AddedLine(n, t) for n, t in sorted(lines.items())])


def scan(*files: DiffFile, allowlist: Allowlist | None = None) -> tuple[list, set[str]]:  # type: ignore[type-arg]
    return SecretsEngine(RULES, KEY, allowlist).scan(files)


def test_a_private_key_spans_its_lines() -> None:
    found, _ = scan(file("deploy/id_rsa", {10 + i: line for i, line in enumerate(PEM)}))
    [key] = found
    assert (key.rule_id, key.line_start, key.line_end) == ("np.pem.1", 11, 12)


def test_only_consecutive_added_lines_join_a_block() -> None:
    # A key whose middle line was not added is not one block: not a key of this change.
    lines = {1: PEM[0], 2: PEM[1], 5: PEM[2], 6: PEM[3]}
    found, _ = scan(file("k.pem", lines))
    assert [f.rule_id for f in found] == []


def test_no_finding_holds_the_secret_and_fingerprints_are_keyed() -> None:
    found, _ = scan(file("a.env", {3: f"AWS_ACCESS_KEY_ID={AWS}", 4: f"GH={GITHUB}"}))
    assert {f.rule_id for f in found} == {"np.aws.1", "np.github.1"}
    for f in found:
        encoded = msgspec.json.encode(f).decode()
        for secret in (AWS, GITHUB):
            assert secret[:5] not in encoded
    moved, _ = scan(file("b.env", {40: f"key {AWS}"}))
    assert moved[0].fingerprint == next(f for f in found if f.rule_id == "np.aws.1").fingerprint
    other, _ = SecretsEngine(RULES, b"another-key-0123456789").scan([file("a", {1: AWS})])
    assert other[0].fingerprint != moved[0].fingerprint


def test_keywords_prefilter_which_rules_run() -> None:
    engine = SecretsEngine(RULES, KEY)
    keyed = {r.id for r in engine._keyed}
    assert "np.aws.1" in keyed and not engine._always  # every shipped rule has keywords
    found, _ = scan(file("x.min.js", {1: "var a=" + "b" * 5000 + ";"}))
    assert found == []


def test_the_same_finding_on_one_line_is_reported_once() -> None:
    found, _ = scan(file("a", {1: f"{AWS} {AWS}"}))
    assert len(found) == 1


def test_a_secret_a_specific_rule_names_is_not_reported_again_as_generic() -> None:
    stripe = "sk_live_51Mx8Kq2Lz9Vt4Rn7Wb1Cs5Dy3Hf6Jg0Pa8Qe2T"
    lines = {1: f'api_key = "{stripe}"', 2: 'DB_PASSWORD = "Tq7#mZ2!vKp9@Lr4"'}
    found, _ = scan(file("settings.py", lines))
    assert sorted((f.line_start, f.rule_id) for f in found) == [
        (1, "np.stripe.1"),
        (2, "rc.generic.1"),
    ]
    # Without the specific rule the generic one still reports the assignment.
    generic_only = [r for r in RULES if r.generic]
    found, _ = SecretsEngine(generic_only, KEY).scan([file("settings.py", lines)])
    assert sorted(f.line_start for f in found) == [1, 2]


def test_allowlist_by_path_rule_and_fingerprint_and_inline_markers() -> None:
    lines = {1: f"KEY={AWS}", 2: f"GH={GITHUB}  # rcingest:allow np.github.1"}
    found, allowed = scan(file("src/app.py", lines))
    gh = next(f for f in found if f.rule_id == "np.github.1")
    aws = next(f for f in found if f.rule_id == "np.aws.1")
    assert allowed == {gh.fingerprint}
    _, by_path = scan(
        file("tests/fixtures/keys.txt", {1: AWS}), allowlist=Allowlist(paths=["tests/**"])
    )
    assert len(by_path) == 1
    _, by_rule = scan(file("a.py", {1: AWS}), allowlist=Allowlist(rules=["np.aws.1"]))
    assert by_rule == {aws.fingerprint}
    _, by_fp = scan(file("a.py", {1: AWS}), allowlist=Allowlist(fingerprints=[aws.fingerprint]))
    assert by_fp == {aws.fingerprint}
    # A marker for another rule allows nothing here.
    _, other = scan(file("a.py", {1: f"{AWS} # rcingest:allow np.github.1"}))
    assert other == set()


@pytest.mark.parametrize(
    ("value", "generic", "expected"),
    [
        ("AKIAIOSFODNN7EXAMPLE", False, True),
        ("ghp_" + "x" * 36, False, True),
        ("3f786850e387550fdab836ed7e6dc881de23001b", True, True),
        ("3f786850e387550fdab836ed7e6dc881de23001b", False, False),
        ("123e4567-e89b-12d3-a456-426614174000", True, True),
        (AWS, False, False),
    ],
)
def test_lookalikes(value: str, generic: bool, expected: bool) -> None:
    assert is_lookalike(value, generic) is expected


def test_entropy() -> None:
    assert entropy("aaaa") == 0 and entropy("abcd") == 2.0 and entropy("") == 0


def test_binary_and_deleted_files_are_not_scanned() -> None:
    found, _ = scan(
        DiffFile(path="logo.png", binary=True, status="binary"),
        DiffFile(path="old.env", status="deleted", removed=3),
    )
    assert found == []


async def test_the_secrets_scanner_passes_the_contract(tmp_path: Path) -> None:
    await check_scanner_contract(
        lambda ctx: SecretsScanner(SecretsConfig(), ctx),
        secret=GITHUB,
        line_text=f"GITHUB_TOKEN={GITHUB}",
        tmp_path=tmp_path,
    )
