"""Story keys against the peers' own test vectors (tests/fixtures/storykeys).

Every vector runs in both modes. A vector copied from a peer also records
what the peer's test expects; where that differs from our answer in the
peer's own mode, the vector must name a reason that docs/story-keys.md
explains, and a recorded reason must not outlive the difference.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rcingest.storykeys import KeyExtractor

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "storykeys"
DATA: dict[str, Any] = yaml.safe_load((FIXTURES / "vectors.yaml").read_text(encoding="utf-8"))
SOURCES: dict[str, dict[str, str]] = DATA["sources"]
VECTORS: list[dict[str, Any]] = DATA["vectors"]
DOC = (ROOT / "docs" / "story-keys.md").read_text(encoding="utf-8")


def _id(vector: dict[str, Any]) -> str:
    return f"{vector['source']}:{vector['text'][:40]!r}"


def _ours(vector: dict[str, Any], mode: str) -> list[str]:
    return KeyExtractor(mode, vector.get("projects")).find(vector["text"])  # type: ignore[arg-type]


@pytest.mark.parametrize("vector", VECTORS, ids=[_id(v) for v in VECTORS])
def test_vector_in_both_modes(vector: dict[str, Any]) -> None:
    assert _ours(vector, "strict") == vector["strict"]
    assert _ours(vector, "lenient") == vector["lenient"]


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if SOURCES[v["source"]]["mode"] != "none"],
    ids=[_id(v) for v in VECTORS if SOURCES[v["source"]]["mode"] != "none"],
)
def test_peer_agrees_or_the_difference_is_explained(vector: dict[str, Any]) -> None:
    mode = SOURCES[vector["source"]]["mode"]
    # Peers return sets (Java HashSet, lodash uniq): compare as sets.
    agrees = set(_ours(vector, mode)) == set(vector["peer"])
    if agrees:
        assert "reason" not in vector, "a reason recorded for a difference that is gone"
    else:
        assert vector.get("reason") in documented_reasons(), vector.get("reason")


def documented_reasons() -> set[str]:
    """The reason ids of the docs' "Where we differ from the peers" section."""
    section = DOC.split("## Where we differ from the peers", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^### `([a-z0-9-]+)`", section, flags=re.MULTILINE))


def test_every_source_is_cited_with_its_licence() -> None:
    sources_md = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    used = {v["source"] for v in VECTORS}
    assert used == set(SOURCES), "a source without vectors, or a vector without a source"
    for sid, source in SOURCES.items():
        assert f"`{sid}`" in sources_md, sid
        assert source["licence"], sid
        assert source["mode"] in ("strict", "lenient", "none"), sid
        if "repository" in source:
            assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), sid
            assert source["repository"] in sources_md and source["path"], sid
        else:
            assert source["url"], sid


def test_peer_vectors_record_the_peers_expectation() -> None:
    for vector in VECTORS:
        if SOURCES[vector["source"]]["mode"] == "none":
            assert "peer" not in vector and "reason" not in vector, _id(vector)
        else:
            assert isinstance(vector.get("peer"), list), _id(vector)


def test_the_corpus_covers_every_peer_and_the_issue() -> None:
    counts: dict[str, int] = {}
    for vector in VECTORS:
        counts[vector["source"]] = counts.get(vector["source"], 0) + 1
    assert len(VECTORS) >= 180
    assert counts["jira-dvcs"] >= 60 and counts["github-for-jira"] >= 50
    # The issue's own cases, verbatim.
    issue = {v["text"] for v in VECTORS if v["source"] == "issue"}
    assert {"[BP-1.7][FLINK-11537]", "Upgrade JDK-11.0.2", "Bump MPL-2.0", "patch-2"} <= issue
    assert {"EXT_EXT-1234", "foo_bar-4710", "3EXT_EXT-1234", "my_PROJ-4", "JRA-090"} <= issue


def test_documented_reasons_are_all_used() -> None:
    used = {v["reason"] for v in VECTORS if "reason" in v}
    # The docs may explain differences that no peer test exercises (their
    # regexes, not their tests, show them); those are listed as such.
    unused = documented_reasons() - used
    for reason in unused:
        section = DOC.split(f"### `{reason}`", 1)[1].split("\n#", 1)[0]
        assert section.strip().startswith("No peer test."), reason
