"""findings_from_sarif on hand-made SARIF in the shapes gitleaks, Nosey Parker and Titus write."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from rcingest.errors import RcingestError
from rcingest.scanning.model import Finding, fingerprint
from rcingest.scanning.sarif import SarifError, findings_from_sarif, severity_of

FIXTURES = Path(__file__).parent / "fixtures" / "sarif"
KEY = b"test-fingerprint-key"
ROOT = "/tmp/rcingest-scan-abc123"
AWS = "AKIAQWERTYUIOPASDFGH"
GITHUB = "ghp_R4nd0mL00k1ngT0k3nF0rT3st1ngOnly1234"
SLACK = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
PASSWORD = "hunter2hunter2"
PLANTED = [AWS, GITHUB, SLACK, PASSWORD]


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def findings(name: str, **kwargs: object) -> list[Finding]:
    return findings_from_sarif(load(name), key=KEY, root=ROOT, **kwargs)  # type: ignore[arg-type]


def assert_no_secret(found: list[Finding]) -> None:
    blob = msgspec.json.encode(found).decode()
    for secret in PLANTED:
        # Not even a 5-character piece of it (excerpts show at most 4).
        for start in range(len(secret) - 4):
            assert secret[start : start + 5] not in blob, secret[:4]


def test_gitleaks() -> None:
    found = findings("gitleaks.sarif")
    assert [(f.path, f.line_start, f.line_end, f.rule_id) for f in found] == [
        ("config/app.py", 21, 21, "aws-access-token"),
        ("dir with space/ci.yml", 4, 4, "github-pat"),
    ]
    aws = found[0]
    assert aws.scanner == "sarif:gitleaks"
    assert aws.rule_name == "aws-access-token"  # gitleaks rules have no name
    assert aws.severity == "medium"  # no level: SARIF's default "warning"
    assert aws.fingerprint == fingerprint(KEY, "aws-access-token", AWS)
    assert aws.excerpt == "AKIA***"
    assert_no_secret(found)


def test_noseyparker_one_finding_per_location() -> None:
    found = findings("noseyparker.sarif")
    assert [(f.path, f.line_start, f.rule_id) for f in found] == [
        ("config/app.py", 21, "AWS API Key"),
        ("deploy/env.sh", 3, "AWS API Key"),
        ("notify.py", 7, "Slack Token"),
    ]
    # The rule's shortDescription is its regex: never used as its name.
    assert {f.rule_name for f in found} == {"AWS API Key", "Slack Token"}
    assert {f.scanner for f in found} == {"sarif:noseyparker-cli"}
    # Same secret in two places, same fingerprint: recognised across files.
    assert found[0].fingerprint == found[1].fingerprint == fingerprint(KEY, "AWS API Key", AWS)
    assert found[2].excerpt == "xoxb***"
    assert_no_secret(found)


def test_titus_file_uris_and_missing_snippet() -> None:
    github, aws = findings("titus.sarif")
    assert (github.path, github.line_start, github.rule_id, github.rule_name) == (
        "dir with space/ci.yml",
        4,
        "np.github.1",
        "GitHub Personal Access Token",
    )
    assert github.scanner == "sarif:titus"
    assert github.fingerprint == fingerprint(KEY, "np.github.1", GITHUB)
    # Empty snippet and zero lines: line 1, fingerprint from place and rule.
    assert (aws.path, aws.line_start, aws.line_end, aws.excerpt) == ("config/app.py", 1, 1, "***")
    assert aws.fingerprint == fingerprint(KEY, "np.aws.1", "location:config/app.py:1")
    assert_no_secret([github, aws])


def test_the_same_secret_from_gitleaks_and_titus_differs_only_by_rule_id() -> None:
    leak = findings("gitleaks.sarif")[1]
    titus = findings("titus.sarif")[0]
    assert leak.fingerprint == fingerprint(KEY, "github-pat", GITHUB)
    assert titus.fingerprint == fingerprint(KEY, "np.github.1", GITHUB)


def test_without_root_paths_stay_as_the_tool_wrote_them() -> None:
    found = findings_from_sarif(load("titus.sarif"), key=KEY)
    assert found[0].path == ROOT + "/dir with space/ci.yml"


def test_unknown_tool_generic_mapping() -> None:
    found = findings("unknown_tool.sarif")
    assert [(f.path, f.line_start, f.line_end, f.rule_id, f.severity) for f in found] == [
        ("src/my file.py", 10, 12, "ACME001", "critical"),  # security-severity 9.1
        ("README.md", 2, 2, "ACME002", "low"),  # defaultConfiguration note
        ("", 1, 1, "ACME003", "info"),  # no location; "high" is not a score
        ("x.cfg", 5, 5, "ACME004", "high"),
    ]
    assert {f.scanner for f in found} == {"sarif:acmescan"}
    assert found[0].rule_name == "Hard-coded password"
    assert found[0].fingerprint == fingerprint(KEY, "ACME001", "fp:acme/v1=a1b2c3")
    assert found[3].excerpt == "hun***"
    assert_no_secret(found)


def test_fingerprints_need_the_key() -> None:
    one = findings_from_sarif(load("gitleaks.sarif"), key=b"k1")
    two = findings_from_sarif(load("gitleaks.sarif"), key=b"k2")
    assert one[0].fingerprint != two[0].fingerprint


def test_str_input_and_bom() -> None:
    text = load("gitleaks.sarif").decode()
    assert findings_from_sarif(text, key=KEY) == findings_from_sarif(
        b"\xef\xbb\xbf" + text.encode(), key=KEY
    )


def test_tool_hint_names_a_nameless_driver() -> None:
    doc = (
        b'{"version":"2.1.0","runs":[{"tool":{"driver":{"name":" "}},"results":[{"ruleId":"r"}]}]}'
    )
    [found] = findings_from_sarif(doc, key=KEY, tool_hint="MyTool")
    assert found.scanner == "sarif:mytool"


@pytest.mark.parametrize(
    ("level", "score", "expected"),
    [
        ("error", None, "high"),
        ("warning", None, "medium"),
        ("note", None, "low"),
        ("none", None, "info"),
        (None, None, "medium"),
        ("bogus", None, "medium"),
        ("note", 9.0, "critical"),
        ("note", "7", "high"),
        ("error", 4, "medium"),
        ("error", 3.9, "low"),
        ("error", "n/a", "high"),
        ("error", "nan", "high"),
        ("error", True, "high"),
    ],
)
def test_severity_mapping(level: str | None, score: object, expected: str) -> None:
    assert severity_of(level, score) == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("malformed_truncated.sarif", "not valid JSON"),
        ("malformed_version.sarif", "$.version: expected SARIF 2.1.0"),
        ("malformed_no_runs.sarif", "$.runs: expected at least one run"),
        ("malformed_locations.sarif", "$.runs[0].results[3].locations: expected a list"),
        (
            "malformed_line_is_secret.sarif",
            "$.runs[0].results[0].locations[0].physicalLocation.region.startLine: "
            "expected an integer",
        ),
    ],
)
def test_malformed_sarif_names_the_path_never_the_value(name: str, message: str) -> None:
    with pytest.raises(SarifError) as caught:
        findings(name)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, RcingestError)
    for secret in PLANTED:
        assert secret[:8] not in str(caught.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"[]", "$: expected an object"),
        (b'{"runs": []}', "$.version: missing"),
        (b'{"version": "2.1.0", "runs": [{"tool": {}}]}', "$.runs[0].tool.driver: missing"),
        (b'{"version": "2.1.0", "runs": []}', "$.runs: expected at least one run"),
        (b"", "not valid JSON"),
    ],
)
def test_structural_errors(doc: bytes, message: str) -> None:
    with pytest.raises(SarifError, match=message.replace("$", r"\$").replace("[", r"\[")):
        findings_from_sarif(doc, key=KEY)
