"""The sink end to end against the fake Chariot: what it sends, what it skips, what it keeps."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from rcingest_chariot import ChariotSink
from rcingest_chariot.fake import FakeChariot

from rcingest.interfaces import Batch
from rcingest.records import Record, Repository

DAY = 86400.0
API = "#repository#https://bitbucket.org/acme/api#api"
WEB = "#repository#https://bitbucket.org/acme/web#web"
OLD = "#repository#https://bitbucket.org/acme/old#old"
SKIP = "#repository#https://bitbucket.org/acme/skip#skip"
AWS = "secret-aws.access_key-ab12ab12ab12"
SLACK = "secret-slack.token-cd34cd34cd34"
Factory = Callable[..., ChariotSink]


def risk(slug: str, name: str) -> str:
    return f"#risk#https://bitbucket.org/acme/{slug}#{name}"


async def sync(make_sink: Factory, records: Sequence[Record], **config: Any) -> ChariotSink:
    """One run: open, write one batch, flush, close; returns the (closed) sink."""
    sink = make_sink(**config)
    async with sink:
        await sink.write(Batch(records=list(records)))
        await sink.flush()
    return sink


def attributes_of(chariot: FakeChariot, key: str) -> dict[str, str]:
    return {a["name"]: a["value"] for a in chariot.attributes.values() if a["source"] == key}


@pytest.fixture
def inventory(repo: Callable[..., Repository], scan: Any, finding: Any) -> list[Record]:
    """Two active repositories (one with two secrets), one tombstoned, one filtered out."""
    return [
        repo("api"),
        repo("web", language="typescript", is_private=False),
        repo("old", state="deleted", state_reason="gone"),
        repo("skip", state="filtered", state_reason="language"),
        scan(
            "api",
            [
                finding(),
                finding("slack.token", "cd34" * 8, severity="critical", path="ci.yml", line_end=14),
            ],
        ),
        scan("web", []),
    ]


async def test_first_sync(
    make_sink: Factory, chariot: FakeChariot, inventory: list[Record]
) -> None:
    sink = await sync(make_sink, inventory)
    assert {k: a["status"] for k, a in chariot.assets.items()} == {
        API: "A",
        WEB: "A",
        OLD: "D",
        SKIP: "F",
    }
    assert attributes_of(chariot, API) == {
        "language": "python",
        "visibility": "private",
        "project": "SEC",
        "mainbranch": "main",
        "last_activity": "2026-11-10",
        "bitbucket_uuid": attributes_of(chariot, API)["bitbucket_uuid"],
        "risk_max_severity": "critical",
        "risk_open_count": "2",
    }
    web = attributes_of(chariot, WEB)
    assert (web["visibility"], web["risk_max_severity"], web["risk_open_count"]) == (
        "public",
        "none",
        "0",
    )
    assert attributes_of(chariot, OLD) == {} and attributes_of(chariot, SKIP) == {}
    assert {k: r["status"] for k, r in chariot.risks.items()} == {
        risk("api", AWS): "TH",
        risk("api", SLACK): "TC",
    }
    slack = chariot.risks[risk("api", SLACK)]
    assert slack["title"] == "AWS access key in acme/api"
    assert slack["comments"] == ['ci.yml:12-14 on main: slack.token (secrets): AWS_KEY = "AKIA***"']
    assert slack["source"] == "rcingest-secrets"
    # Assets went first: no attribute or risk was refused for a missing asset.
    assert all(r.status == 200 for r in chariot.received)
    stats = sink.context.stats
    assert stats.get("chariot.sent") == chariot.requests() == 4 + 16 + 2
    assert stats.get("chariot.pending") == 0 and stats.get("chariot.failed") == 0


async def test_a_second_identical_sync_sends_nothing_until_the_ttl_margin(
    make_sink: Factory, chariot: FakeChariot, clock: Any, inventory: list[Record]
) -> None:
    await sync(make_sink, inventory)
    before = dict(chariot.counts)
    clock.advance(1 * DAY)
    second = await sync(make_sink, inventory)
    assert dict(chariot.counts) == before  # not even a token exchange
    # 22 requests, the roll-up attributes of the two scanned repositories offered twice
    # (with their repository and with their scan).
    assert second.context.stats.get("chariot.skipped") == 22 + 4
    assert second.context.stats.get("chariot.sent") == 0

    clock.advance(25 * DAY)  # 26 days after the first send: re-touched
    third = await sync(make_sink, [])
    retouched = chariot.requests() - sum(n for r, n in before.items() if r != "GET /token")
    # Active and frozen assets, the active ones' attributes and the open risks; not the D.
    assert retouched == 3 + 16 + 2 == third.context.stats.get("chariot.retouched")
    assert chariot.assets[OLD]["history"] == ["D"]
    assert chariot.assets[API]["visited"] == clock()
    clock.advance(1 * DAY)
    count = chariot.requests()
    await sync(make_sink, inventory)
    assert chariot.requests() == count


async def test_a_tombstone_deletes_and_the_asset_is_no_longer_kept_alive(
    make_sink: Factory, chariot: FakeChariot, clock: Any, inventory: list[Record], repo: Any
) -> None:
    await sync(make_sink, inventory)
    clock.advance(DAY)
    await sync(make_sink, [repo("api", state="deleted", state_reason="gone")])
    assert chariot.assets[API]["status"] == "D" and chariot.assets[API]["history"] == ["A", "D"]
    assert chariot.bodies("PUT /asset")[-1]["status"] == "D"
    clock.advance(26 * DAY)
    count = len(chariot.received)
    await sync(make_sink, [])
    bodies = [r.body for r in chariot.received[count:] if r.body]
    touched = {b.get("key") or b.get("group") for b in bodies}
    assert API not in touched and risk("api", AWS) not in touched
    assert "https://bitbucket.org/acme/api" not in touched
    # Back (restored): the asset and everything on it are sent and kept alive again.
    await sync(make_sink, [repo("api")])
    assert chariot.assets[API]["status"] == "A"


async def test_a_finding_gone_is_remediated_and_the_rollup_replaced(
    make_sink: Factory, chariot: FakeChariot, inventory: list[Record], scan: Any, finding: Any
) -> None:
    await sync(make_sink, inventory)
    count = chariot.requests()
    await sync(make_sink, [scan("api", [finding()], head="b" * 40)])
    assert chariot.risks[risk("api", SLACK)]["status"] == "RC"
    assert (
        chariot.risks[risk("api", SLACK)]["comments"][-1]
        == "no longer found on main at bbbbbbbbbbbb"
    )
    assert chariot.risks[risk("api", AWS)]["status"] == "TH"  # still there: not sent again
    attrs = attributes_of(chariot, API)
    assert (attrs["risk_max_severity"], attrs["risk_open_count"]) == ("high", "1")
    # One remediation, two new roll-up values and the deletes of the two old ones.
    assert chariot.requests() - count == 5 and chariot.counts["DELETE /attribute"] == 2
    # It comes back: opened again.
    await sync(make_sink, [scan("api", [finding(), finding("slack.token", "cd34" * 8)])])
    assert chariot.risks[risk("api", SLACK)]["status"] == "TH"


async def test_an_inconclusive_scan_changes_no_risk(
    make_sink: Factory, chariot: FakeChariot, inventory: list[Record], scan: Any
) -> None:
    await sync(make_sink, inventory)
    count = chariot.requests()
    await sync(make_sink, [scan("api", [], state="timeout", reason="clone took too long")])
    assert chariot.requests() == count
    assert chariot.risks[risk("api", SLACK)]["status"] == "TC"


async def test_a_changed_fact_replaces_its_attribute(
    make_sink: Factory, chariot: FakeChariot, inventory: list[Record], repo: Any
) -> None:
    await sync(make_sink, inventory)
    await sync(make_sink, [repo("api", language="go", project=None)])
    attrs = attributes_of(chariot, API)
    assert attrs["language"] == "go" and "project" not in attrs
    assert [b["key"] for b in chariot.bodies("DELETE /attribute")] == [
        "#attribute#language#python" + API,
        "#attribute#project#SEC" + API,
    ]


async def test_filtered_left_alone(
    make_sink: Factory, chariot: FakeChariot, repo: Any, clock: Any
) -> None:
    await sync(make_sink, [repo("skip")])
    count = chariot.requests()
    filtered = repo("skip", state="filtered", state_reason="inactive")
    sink = await sync(make_sink, [filtered], filtered_status="keep")
    assert chariot.requests() == count and chariot.assets[SKIP]["status"] == "A"
    assert sink.context.stats.get("chariot.left_alone") == 1
    clock.advance(26 * DAY)  # and no longer kept alive by this sink
    await sync(make_sink, [], filtered_status="keep")
    assert chariot.requests() == count


async def test_chariot_down_loses_nothing_and_catches_up(
    make_sink: Factory, chariot: FakeChariot, clock: Any, inventory: list[Record]
) -> None:
    chariot.down()
    sink = make_sink(retry_interval=60)
    async with sink:
        await sink.write(Batch(records=inventory))
        await sink.flush()  # returns: the changes are in the outbox, durably
        assert sink.outbox() == {"pending": 22, "parked": 0}
        tried = chariot.counts["GET /token"]
        await sink.flush()  # paused: Chariot was down a moment ago
        assert chariot.counts["GET /token"] == tried and chariot.assets == {}
    # Closing flushed once more, still paused: nothing tried, the count reported.
    assert chariot.counts["GET /token"] == tried
    assert sink.context.stats.get("chariot.pending") == 22
    assert chariot.assets == {}
    clock.advance(3600)

    # The next run, an hour later, with Chariot back: everything arrives.
    chariot.up()
    later = await sync(make_sink, [])
    assert later.outbox() == {"pending": 0, "parked": 0}
    assert len(chariot.assets) == 4 and len(chariot.risks) == 2 and len(chariot.attributes) == 16


async def test_a_flush_after_the_outage_within_one_run(
    make_sink: Factory, chariot: FakeChariot, clock: Any, inventory: list[Record]
) -> None:
    chariot.fail("PUT /asset", times=1000, status=503)
    sink = make_sink(retry_interval=30)
    async with sink:
        await sink.write(Batch(records=inventory))
        await sink.flush()
        assert chariot.assets == {} and sink.outbox()["pending"] == 22
        chariot.faults.failures.clear()
        clock.advance(31)
        await sink.flush()
        assert sink.outbox()["pending"] == 0
    assert len(chariot.assets) == 4 and len(chariot.risks) == 2
    assert sink.context.stats.get("chariot.failed") >= 1


async def test_a_refusal_is_parked_logged_once_and_retried_on_request(
    make_sink: Factory,
    chariot: FakeChariot,
    inventory: list[Record],
    caplog: pytest.LogCaptureFixture,
) -> None:
    chariot.forbid("PUT /risk", "not allowed to write risks")
    caplog.set_level(logging.INFO)
    sink = await sync(make_sink, inventory)
    assert sink.outbox() == {"pending": 0, "parked": 2}
    assert len(chariot.assets) == 4 and chariot.risks == {}
    refusals = [r for r in caplog.records if "not allowed to write risks" in r.getMessage()]
    assert len(refusals) == 1 and "parked" in refusals[0].getMessage()
    count = chariot.counts["PUT /risk"]
    await sync(make_sink, [])  # parked: not tried again
    assert chariot.counts["PUT /risk"] == count
    chariot.faults.forbidden.clear()
    again = await sync(make_sink, [], retry_parked=True)
    assert again.outbox() == {"pending": 0, "parked": 0} and len(chariot.risks) == 2


async def test_a_scan_of_an_unlisted_repository_creates_its_asset(
    make_sink: Factory, chariot: FakeChariot, scan: Any, finding: Any
) -> None:
    await sync(make_sink, [scan("lone", [finding()])])
    key = "#repository#https://bitbucket.org/acme/lone#lone"
    assert chariot.assets[key]["status"] == "A"
    assert risk("lone", AWS) in chariot.risks


async def test_no_secret_reaches_chariot_the_state_file_or_the_logs(
    make_sink: Factory,
    chariot: FakeChariot,
    tmp_path: Path,
    scan: Any,
    finding: Any,
    repo: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rcingest.testing import make_test_context

    leaked = "hunter2-planted-secret"
    context = make_test_context(tmp_path, secrets=frozenset({leaked}))
    caplog.set_level(logging.DEBUG)
    chariot.fail("PUT /risk", times=1, status=503)
    sink = make_sink(context=context)
    async with sink:
        # An excerpt a scanner got wrong still carries a known secret: it is masked.
        bad = finding(excerpt=f"password = {leaked}")
        await sink.write(Batch(records=[repo("api"), scan("api", [bad])]))
        await sink.flush()
    assert chariot.risks[risk("api", AWS)]["comments"] == [
        "config/settings.py:12 on main: aws.access_key (secrets): password = ***"
    ]
    texts = [chariot.dump(), caplog.text]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240
    assert any(p.name == "chariot.db" for p in files)
    texts += [p.read_bytes().decode("utf-8", "replace") for p in files]
    for text in texts:
        assert leaked not in text and chariot.key_secret not in text
        assert "eyJhbGciOiAiSFMyNTYi" not in text  # no JWT either


async def test_a_token_expiring_mid_sync_is_renewed(
    make_sink: Factory, chariot: FakeChariot, clock: Any, repo: Any
) -> None:
    chariot.token_lifetime = 120
    sink = make_sink()
    async with sink:
        await sink.write(Batch(records=[repo("api")]))
        await sink.flush()
        clock.advance(200)  # the first token is dead by now
        await sink.write(Batch(records=[repo("web")]))
        await sink.flush()
        chariot.revoke_tokens()  # and one the server drops before its time
        await sink.write(Batch(records=[repo("ops")]))
        await sink.flush()
        assert sink.outbox()["pending"] == 0
    assert chariot.tokens_issued == 3 and len(chariot.assets) == 3
    assert [r.status for r in chariot.received if r.status == 401] == [401]


async def test_honours_the_sink_contract(
    make_sink: Factory, chariot: FakeChariot, tmp_path: Path
) -> None:
    from rcingest.testing import check_sink_contract

    # The sink stores nothing of a commit; what it stored on the server is dump()ed.
    await check_sink_contract(
        lambda ctx: make_sink(context=ctx), tmp_path=tmp_path, dump=chariot.dump
    )
    # The sample repository (no web_url) became one asset, sent once despite the replay.
    assert list(chariot.assets) == [API]
    assert chariot.counts["PUT /asset"] == 1


def test_installed_and_registered() -> None:
    from rcingest.plugins import Registry, describe_plugins, make_plugin_manager

    manager = make_plugin_manager()
    found = Registry(manager).get("sink", "chariot")
    assert found.distribution == "rcingest-chariot" and found.component is ChariotSink
    listed = {p["distribution"] for p in describe_plugins(manager, include_builtins=False)}
    assert "rcingest-chariot" in listed


async def test_a_pipeline_file_with_credentials_from_the_environment(
    chariot: FakeChariot, tmp_path: Path
) -> None:
    from rcingest.config import load_pipeline
    from rcingest.pipeline import Runner
    from rcingest.plugins import Registry, make_plugin_manager
    from rcingest.runtime import make_context

    records = tmp_path / "records.jsonl"
    records.write_text(
        '{"type":"repository","full_name":"acme/api","web_url":"https://bitbucket.org/acme/api",'
        '"language":"python","is_private":true}\n'
        '{"type":"repo_scan","repository":"acme/api","branch":"main","head":"' + "a" * 40 + '",'
        '"state":"findings","scanned_at":"2026-11-17T10:00:00Z","findings":[{"path":"a.py",'
        '"line_start":1,"line_end":1,"rule_id":"aws.access_key","rule_name":"AWS access key",'
        '"severity":"high","fingerprint":"' + "ab12" * 8 + '","excerpt":"AKIA***"}]}\n',
        encoding="utf-8",
    )
    state = tmp_path / "state" / "chariot.db"
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(
        f"""
name: chariot-sync
source: {{type: records_file, config: {{path: "{records}"}}}}
sinks:
  - type: chariot
    config:
      api: "${{CHARIOT_API}}"
      key_id: "${{CHARIOT_KEY_ID}}"
      key_secret: "${{CHARIOT_KEY_SECRET}}"
      state_file: "{state}"
""",
        encoding="utf-8",
    )
    environ = {
        "CHARIOT_API": chariot.api,
        "CHARIOT_KEY_ID": chariot.key_id,
        "CHARIOT_KEY_SECRET": chariot.key_secret,
    }
    pipeline = load_pipeline(pipeline_file, Registry(make_plugin_manager()), environ=environ)
    context = make_context(pipeline)
    assert chariot.key_secret in context.secrets  # ${VAR} values are the run's secrets
    result = await Runner(pipeline, context).run()
    assert result.status == "succeeded"
    assert chariot.assets[API]["status"] == "A"
    assert chariot.risks[risk("api", AWS)]["status"] == "TH"
    assert (
        context.stats.get("chariot.sent") == chariot.requests() == 1 + 4 + 1
    )  # asset, 2 facts + roll-up, risk
