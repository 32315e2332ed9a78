"""Keys and bodies, computed locally as Chariot's server computes them (fixtures/SOURCES.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from rcingest_chariot import mapping

from rcingest.records import Repository


def test_the_asset_key_is_tabulariums() -> None:
    # repository_test.go: NewRepository("https://bitbucket.org/praetorian-inc/tabularium").
    group = "https://bitbucket.org/praetorian-inc/tabularium"
    assert mapping.asset_key(group) == (
        "#repository#https://bitbucket.org/praetorian-inc/tabularium#tabularium"
    )
    body = mapping.asset_body(group, "A")
    assert body == {
        "group": group,
        "identifier": "tabularium",
        "status": "A",
        "type": "repository",
        "attackSurface": ["repository"],
    }


@pytest.mark.parametrize(
    "web_url",
    [
        "https://bitbucket.org/acme/api",
        "https://bitbucket.org/acme/api/",
        "https://bitbucket.org/acme/api.git",
        "https://someone@bitbucket.org/acme/api.git",
        "bitbucket.org/acme/api",
        None,  # no web URL in the record: {web_base}/{full_name}
    ],
)
def test_the_group_is_the_web_url_without_git_slash_or_user(web_url: str | None) -> None:
    repo = Repository(full_name="acme/api", web_url=web_url)
    group = mapping.repository_group(repo, "https://bitbucket.org")
    assert group == "https://bitbucket.org/acme/api"
    assert mapping.asset_key(group) == "#repository#https://bitbucket.org/acme/api#api"


@pytest.mark.parametrize(
    ("state", "filtered", "status"),
    [
        ("active", "F", "A"),
        ("deleted", "F", "D"),
        ("deleted", "keep", "D"),
        ("filtered", "F", "F"),
        ("filtered", "keep", None),
    ],
)
def test_asset_status(state: str, filtered: mapping.FilteredStatus, status: str | None) -> None:
    repo = Repository(full_name="acme/api", state=state)  # type: ignore[arg-type]
    assert mapping.asset_status(repo, filtered) == status


def test_attributes(repo: Callable[..., Repository]) -> None:
    values = mapping.attribute_values(
        repo("api", last_push=datetime(2026, 11, 16, 23, 59, tzinfo=UTC)), None
    )
    assert values == {
        "language": "python",
        "visibility": "private",
        "project": "SEC",
        "mainbranch": "main",
        "last_activity": "2026-11-16",  # a day: the value is part of the key
        "bitbucket_uuid": values["bitbucket_uuid"],
    }
    with_rollup = mapping.attribute_values(
        repo("api", is_private=False, language=""), mapping.Rollup("critical", 3)
    )
    assert with_rollup["visibility"] == "public"
    assert with_rollup["language"] is None  # unknown: no attribute at all
    assert with_rollup["last_activity"] == "2026-11-10"  # updated_on without a push
    assert (with_rollup["risk_max_severity"], with_rollup["risk_open_count"]) == ("critical", "3")


def test_attribute_key_as_tabularium_and_cut_to_1024() -> None:
    source = "#repository#https://bitbucket.org/ws/r#r"
    assert mapping.attribute_key(source, "language", "python") == (
        "#attribute#language#python#repository#https://bitbucket.org/ws/r#r",
        "python",
    )
    key, value = mapping.attribute_key(source, "project", "x" * 2000)
    assert len(key) == mapping.MAX_KEY and key.endswith(source) and value == "x" * len(value)


def test_risk_names_are_stable_lower_case_and_without_hash() -> None:
    assert mapping.risk_name("aws.access_key", "AB12CD34EF56AB12CD34") == (
        "secret-aws.access_key-ab12cd34ef56"
    )
    name = mapping.risk_name("NP.Generic #1 (API Key)", "00ff" * 8)
    assert name == "secret-np.generic-1-api-key-00ff00ff00ff"
    assert "#" not in name and " " not in name and name == name.lower()
    group = "https://bitbucket.org/acme/api"
    assert mapping.risk_key(group, name) == f"#risk#{group}#{name}"


def test_risk_bodies_open_and_remediated() -> None:
    source = "#repository#https://bitbucket.org/acme/api#api"
    body = mapping.risk_open_body(
        source,
        "secret-aws-ab12",
        severity="critical",
        rule_name="AWS access key",
        rule_id="aws",
        scanner="secrets",
        repository="acme/api",
        branch="main",
        location="a.py:3",
        excerpt="key = AKIA*** hunter2",
        source="rcingest-secrets",
        mask=lambda s: s.replace("hunter2", "***"),
    )
    assert body["key"] == source and body["status"] == "TC" and body["source"] == "rcingest-secrets"
    assert body["title"] == "AWS access key in acme/api"
    assert body["comment"] == "a.py:3 on main: aws (secrets): key = AKIA*** ***"
    done = mapping.risk_remediated_body("#risk#x#y", "medium", "main", "c" * 40)
    assert done == {
        "key": "#risk#x#y",
        "status": "RM",
        "comment": "no longer found on main at cccccccccccc",
    }
    assert {mapping.SEVERITY_CODE[s] for s in ("critical", "high", "medium", "low", "info")} == set(
        "CHMLI"
    )


def test_rollup_and_hash() -> None:
    assert mapping.rollup([]) == mapping.Rollup("none", 0)
    assert mapping.rollup(["low", "critical", "medium"]) == mapping.Rollup("critical", 3)
    a = mapping.body_hash("PUT", "/asset", {"a": 1, "b": [1, 2]})
    assert a == mapping.body_hash("PUT", "/asset", {"b": [1, 2], "a": 1})  # key order is no change
    assert a != mapping.body_hash("PUT", "/risk", {"a": 1, "b": [1, 2]})
