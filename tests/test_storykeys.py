"""Story keys: the extraction table (real messages, branch names, look-alikes), the enricher.

The peers' own vectors are in tests/test_storykeys_vectors.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from rcingest.default_plugins.story_keys import StoryKeysConfig, StoryKeysEnricher
from rcingest.interfaces import RunContext
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.records import (
    Commit,
    PullRequest,
    PullRequestRef,
    Repository,
    StoryKey,
    WebhookDelivery,
)
from rcingest.storykeys import DEFAULT_IGNORE, ORIGIN_ORDER, KeyExtractor, merge_story_keys

FIXTURES = Path(__file__).parent / "fixtures" / "bitbucket"
NOW = datetime(2026, 11, 23, tzinfo=UTC)

# (text, strict keys, lenient keys): commit messages and branch names as people
# write them, and the look-alikes that must not become keys.
TABLE: list[tuple[str, list[str], list[str]]] = [
    ("JENKINS-75182 Fix NPE when the diffstat is empty", ["JENKINS-75182"], ["JENKINS-75182"]),
    ("[JENKINS-74980] Use the API token", ["JENKINS-74980"], ["JENKINS-74980"]),
    ("REL-12: login throttling (follow-up to REL-9)", ["REL-12", "REL-9"], ["REL-12", "REL-9"]),
    ("Merged in feature/REL-12-login (pull request #42)", ["REL-12"], ["REL-12"]),
    ("feature/REL-12-login", ["REL-12"], ["REL-12"]),
    ("bugfix/OPS-7_timeout", ["OPS-7"], ["OPS-7"]),
    ("hotfix-OPS-8", ["OPS-8"], ["OPS-8"]),
    ("(OPS-1) #comment deployed #time 1h", ["OPS-1"], ["OPS-1"]),
    ("MY_PROJ-4 keys may hold an underscore", ["MY_PROJ-4"], ["MY_PROJ-4"]),
    ("J2-123 digits in a project key", ["J2-123"], ["J2-123"]),
    ("REL-12 and REL-12 again", ["REL-12"], ["REL-12"]),
    ("rel-12 lower case", [], ["REL-12"]),
    ("feature/rel-12-login", [], ["REL-12"]),
    ("Rel-12 mixed case", [], ["REL-12"]),
    # Not keys in either mode.
    ("Convert to UTF-8", [], []),
    ("hash with SHA-256 and sha-1", [], []),
    ("dates in ISO-8601", [], []),
    ("X-509 certificates", [], []),
    ("patch CVE-2021-44228 (log4shell)", [], []),
    ("times in UTC-7 for Phoenix", [], []),
    ("REL-0 has no issue zero", [], []),
    ("REL-012 has a leading zero", [], []),
    ("xREL-12 is inside a word", [], ["XREL-12"]),  # lenient: a key of its own
    ("REL-12b is inside a word", [], []),
    ("REL-12x", [], []),
    ("2REL-12", [], []),
    ("REL 12 has no hyphen", [], []),
    ("22-123 has no project", [], []),
    ("A-1 is a single letter", [], []),
    ("non-blocking read-through cache", [], []),
    ("Release/release 1", [], []),
    ("release/release-1", [], []),  # lenient's RELEASE is in the default ignore list
    ('Revert "Add retry"\n\nThis reverts commit 0a1b2c3d.', [], []),
    ("", [], []),
    ("修改密码验证\n", [], []),
    # Letters and digits of any script glue onto a key in strict mode...
    ("caféREL-12", [], ["REL-12"]),
    ("REL-12é fix", [], ["REL-12"]),
    ("ÉREL-5", [], ["REL-5"]),
    ("REL-12٣", [], ["REL-12"]),
    ("ΔREL-3 and REL-4ж", [], ["REL-3", "REL-4"]),
    # ...but accents and other scripts around it, with a space or a sign, do not.
    (
        "Réparé: REL-12 «REL-13» ĳ REL-14.",
        ["REL-12", "REL-13", "REL-14"],
        ["REL-12", "REL-13", "REL-14"],
    ),
    # Scripts written without spaces: a key glued to them is still a key.
    ("修复REL-12问题", ["REL-12"], ["REL-12"]),
    ("ログインREL-7を修正", ["REL-7"], ["REL-7"]),
    # Underscores are key characters: a key is the whole run before the
    # hyphen, never its tail; underscores that open the run are punctuation.
    ("EXT3_EXT-1234 and J_2-5", ["EXT3_EXT-1234", "J_2-5"], ["EXT3_EXT-1234", "J_2-5"]),
    ("bugfix_REL-7", [], ["BUGFIX_REL-7"]),
    ("x__REL-1", [], ["X__REL-1"]),
    ("__REL-1__ and (_OPS-2)", ["REL-1", "OPS-2"], ["REL-1", "OPS-2"]),
    ("修复_REL-12", ["REL-12"], ["REL-12"]),
    ("Mixed_Case_KEY-3", [], ["MIXED_CASE_KEY-3"]),
    # A number followed by "." and a digit is a version; other full stops are not.
    ("see REL-12.", ["REL-12"], ["REL-12"]),
    ("REL-12.patch applied", ["REL-12"], ["REL-12"]),
    ("REL-12...", ["REL-12"], ["REL-12"]),
    ("MY_PROJ-4.1 and python-3.11 and v2-1.0", [], []),
    ("JDK-8212345: backport", ["JDK-8212345"], ["JDK-8212345"]),
    # Automatic branch words are in the default ignore list, in both modes.
    ("PATCH-2 ISSUE-3 BITBUCKET-4", [], []),
    ("czechboy0-patch-6", [], []),
]


@pytest.mark.parametrize(("text", "strict", "lenient"), TABLE)
def test_extraction_table(text: str, strict: list[str], lenient: list[str]) -> None:
    assert KeyExtractor("strict").find(text) == strict
    assert KeyExtractor("lenient").find(text) == lenient


def test_fixture_branch_names() -> None:
    """The branch list of a real repository: feature/BB-1 and BB-2 are keys, release-1 is not."""
    data = json.loads((FIXTURES / "rest_refs-branches-list_jenkins.json").read_text())
    names = [b["name"] for b in data["values"]]
    assert sorted(names) == ["feature/BB-1", "feature/BB-2", "master", "release/release-1"]
    strict = KeyExtractor("strict")
    assert {n: strict.find(n) for n in names} == {
        "feature/BB-1": ["BB-1"],
        "feature/BB-2": ["BB-2"],
        "master": [],
        "release/release-1": [],
    }
    # The lenient trap: release-1 matches the lenient pattern; the ignore list
    # drops it, and an empty ignore list lets it through.
    assert KeyExtractor("lenient").find("release/release-1") == []
    assert KeyExtractor("lenient", ignore=[]).find("release/release-1") == ["RELEASE-1"]


def test_fixture_messages_and_titles_hold_no_keys() -> None:
    """No commit message or PR title in the fixtures holds a key (nor a false positive)."""
    texts = []
    for path in sorted(FIXTURES.glob("*.json")):

        def walk(node: object) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("message", "title") and isinstance(v, str):
                        texts.append(v)
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(json.loads(path.read_text(encoding="utf-8")))
    assert len(texts) > 20
    extractor = KeyExtractor("strict")
    # "BUILD test" (a PR title) and "[CI] Release version 1.0.0" must not match.
    assert [t for t in texts if extractor.find(t)] == []


def test_projects_allow_list_replaces_the_ignore_list() -> None:
    text = "REL-1 OPS-2 ABC-3 UTF-8"
    assert KeyExtractor(projects=["rel", "OPS"]).find(text) == ["REL-1", "OPS-2"]
    # An allow-list decides alone: a listed look-alike is kept.
    assert KeyExtractor(projects=["UTF"]).find(text) == ["UTF-8"]
    assert KeyExtractor(ignore=[]).find("UTF-8") == ["UTF-8"]
    assert "UTF" in DEFAULT_IGNORE and "SHA" in DEFAULT_IGNORE and "ISO" in DEFAULT_IGNORE


def test_automatic_branch_words_are_the_ignore_list_at_work() -> None:
    # Not a special rule: with the list off they are keys like any other.
    text = "patch-2 feature/issue-819 x-edited-online-with-bitbucket-1560433073473"
    assert KeyExtractor("lenient").find(text) == []
    assert KeyExtractor("lenient", ignore=[]).find(text) == [
        "PATCH-2",
        "ISSUE-819",
        "BITBUCKET-1560433073473",
    ]
    assert KeyExtractor("lenient", projects=["PATCH"]).find(text) == ["PATCH-2"]


def test_projects_match_every_key_jira_allows_in_both_modes() -> None:
    text = "MY_PROJ-4 my_proj-5 J2-6 EXT3_EXT-7 x_MY_PROJ-8"
    projects = ["my_proj", "J2", "EXT3_EXT"]
    assert KeyExtractor("strict", projects).find(text) == ["MY_PROJ-4", "J2-6", "EXT3_EXT-7"]
    assert KeyExtractor("lenient", projects).find(text) == [
        "MY_PROJ-4",
        "MY_PROJ-5",
        "J2-6",
        "EXT3_EXT-7",
    ]


@pytest.mark.parametrize("entry", ["REL-12", "A", "1REL", "MY PROJ", "_REL", "RÉL", "", "REL\n"])
def test_entries_that_are_not_project_keys_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"projects: .* is not a Jira project key"):
        KeyExtractor(projects=["REL", entry])
    with pytest.raises(ValueError, match=r"ignore: .* is not a Jira project key"):
        KeyExtractor(ignore=[entry])
    # From YAML: the config's pattern refuses them, or (a trailing newline,
    # which a JSON Schema pattern's "$" lets through) building the enricher
    # does; validate, run and serve do both.
    assert _refused_by_config({"projects": ["REL", entry]})
    assert _refused_by_config({"ignore": [entry]})


def _refused_by_config(raw: dict[str, object]) -> bool:
    try:
        config = msgspec.convert(raw, StoryKeysConfig)
        KeyExtractor(config.mode, config.projects, config.ignore)
    except (msgspec.ValidationError, ValueError):
        return True
    return False


def test_config_accepts_every_project_key_jira_allows() -> None:
    keys = ["REL", "rel", "J2", "MY_PROJ", "EXT3_EXT", "AB_"]
    config = msgspec.convert({"projects": keys, "ignore": keys}, StoryKeysConfig)
    assert config.projects == keys and config.ignore == keys
    assert KeyExtractor(config.mode, config.projects, config.ignore).find("AB_-1") == ["AB_-1"]


def test_bad_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        KeyExtractor("loose")  # type: ignore[arg-type]


def test_merge_unites_origins_and_keeps_order() -> None:
    existing = [StoryKey("REL-1", ("branch",)), StoryKey("OPS-2", ("message",))]
    merged = merge_story_keys(existing, {"REL-1": ["message", "branch"], "NEW-3": ["pr_title"]})
    # Origins are listed in the documented order: message, branch, pr_title, pr_branch.
    assert merged == [
        StoryKey("REL-1", ("message", "branch")),
        StoryKey("OPS-2", ("message",)),
        StoryKey("NEW-3", ("pr_title",)),
    ]
    assert merge_story_keys(merged, {"REL-1": ["message"]}) == merged
    assert merge_story_keys(existing, {}) == existing


def test_merge_lists_origins_in_the_documented_order() -> None:
    existing = [StoryKey("REL-1", ("pr_title",))]
    merged = merge_story_keys(existing, {"REL-1": ["pr_branch", "message", "branch"]})
    assert merged == [StoryKey("REL-1", ("message", "branch", "pr_title", "pr_branch"))]
    assert ORIGIN_ORDER == ("message", "branch", "pr_title", "pr_branch")


def test_merge_into_nothing_orders_origins_too() -> None:
    # The fast path (no keys yet) must give what the general path gives.
    found = {"REL-1": ["pr_branch", "message"], "OPS-2": ["branch"]}
    assert merge_story_keys([], found) == [
        StoryKey("REL-1", ("message", "pr_branch")),
        StoryKey("OPS-2", ("branch",)),
    ]
    # An origin outside the documented list (a plugin's own) goes last, by name.
    odd = {"REL-1": ["zz_custom", "branch", "aa_custom"]}
    assert merge_story_keys([], odd) == [  # type: ignore[arg-type]
        StoryKey("REL-1", ("branch", "aa_custom", "zz_custom"))  # type: ignore[arg-type]
    ]


def _enricher(**config: object) -> StoryKeysEnricher:
    ctx = RunContext(
        run_id="t",
        pipeline_name="t",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=NOW,
        base_dir=Path("."),
        source_id="t:src",
    )
    return StoryKeysEnricher(StoryKeysConfig(**config), ctx)  # type: ignore[arg-type]


def test_enricher_commit_all_origins() -> None:
    commit = Commit(
        hash="a" * 40,
        repository="acme/api",
        date=NOW,
        message="REL-12 login throttling",
        branches=["feature/REL-12-login", "main", "release/OPS-3", "feature/OLD-1"],
        # Only the branches that brought the commit lend keys; OLD-1 merely contains it.
        new_on=["feature/REL-12-login", "release/OPS-3"],
        pull_requests=[PullRequestRef(7, "OPS-3 and REL-12: ship", "feature/ABC-9-x")],
    )
    out = _enricher().enrich(commit)
    assert isinstance(out, Commit)
    assert out.story_keys == [
        StoryKey("REL-12", ("message", "branch", "pr_title"), ("feature/REL-12-login",)),
        StoryKey("OPS-3", ("branch", "pr_title"), ("release/OPS-3",)),
        StoryKey("ABC-9", ("pr_branch",)),
    ]
    assert commit.story_keys == []  # the input is not changed
    assert _enricher().enrich(out) is out  # enriching twice changes nothing


def test_enricher_pull_request_and_other_records() -> None:
    pr = PullRequest(
        id=1,
        repository="acme/api",
        title="REL-5 tidy",
        state="OPEN",
        source_branch="bugfix/REL-6",
        destination_branch="main",
        created_on=NOW,
        updated_on=NOW,
        story_keys=[StoryKey("OLD-1", ("pr_title",))],
    )
    out = _enricher().enrich(pr)
    assert isinstance(out, PullRequest)
    assert [(k.key, k.origins) for k in out.story_keys] == [
        ("OLD-1", ("pr_title",)),
        ("REL-5", ("pr_title",)),
        ("REL-6", ("pr_branch",)),
    ]
    repo = Repository(full_name="acme/REL-1")
    delivery = WebhookDelivery(request_uuid="u", event="repo:push", received_at=NOW)
    assert _enricher().enrich(repo) is repo
    assert _enricher().enrich(delivery) is delivery
    plain = Commit(hash="b" * 40, repository="acme/api", date=NOW, message="no keys here")
    assert _enricher().enrich(plain) is plain


def test_enricher_lenient_with_projects() -> None:
    commit = Commit(
        hash="c" * 40, repository="a/b", date=NOW, message="rel-1 ops-2 abc-3", branches=[]
    )
    out = _enricher(mode="lenient", projects=["REL", "OPS"]).enrich(commit)
    assert [k.key for k in out.story_keys] == ["REL-1", "OPS-2"]  # type: ignore[union-attr]


def test_enricher_is_registered_as_story_keys() -> None:
    registry = Registry(make_plugin_manager(only_builtins=True))
    registered = registry.get("enricher", "story_keys")
    assert registered.component is StoryKeysEnricher
    assert registered.distribution == "rcingest"


def test_docs_list_the_default_ignore_list() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "story-keys.md").read_text()
    assert ", ".join(f"`{p}`" for p in DEFAULT_IGNORE) in doc
