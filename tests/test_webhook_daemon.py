"""The daemon end to end: real aiohttp server on 127.0.0.1:0, the runner, story keys, SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

import rcingest
import rcingest.default_plugins.bitbucket_webhook as webhook_plugin
import rcingest.default_plugins.database as database_plugin
import rcingest.default_plugins.story_keys as story_keys_plugin
from rcingest.config import load_pipeline
from rcingest.errors import ConfigError
from rcingest.interfaces import RunContext
from rcingest.pipeline import Runner
from rcingest.plugins import Registry, make_plugin_manager
from rcingest.webhooks import sign
from rcingest.webhooks.inbox_app import _SLOT as INBOX_SLOT

FIX = Path(__file__).parent / "fixtures" / "bitbucket"
SECRET = "whsec-Zq8Kp2-daemon-test"
PUSH = FIX / "webhook_repo-push_single-commit_go-scm-2018.json"


class FlakyConfig(rcingest.ComponentConfig):
    pass


class FlakySink(rcingest.Sink[FlakyConfig]):
    """Fails every write while ``FlakySink.failing`` is set (an unreachable database)."""

    Config = FlakyConfig
    failing = False
    #: Seconds the first write takes (a slow disk): deliveries pile up behind it.
    first_delay = 0.0
    sizes: list[int] = []

    async def write(self, batch: rcingest.Batch) -> None:
        if FlakySink.failing:
            raise OSError("database unreachable (injected)")
        FlakySink.sizes.append(len(batch.checkpoints))
        if len(FlakySink.sizes) == 1 and FlakySink.first_delay:
            await asyncio.sleep(FlakySink.first_delay)


class TestPlugins:
    @rcingest.hookimpl
    def register_sinks(self, register: Callable[..., None]) -> None:
        register("test_flaky", FlakySink)


def registry() -> Registry:
    return Registry(
        make_plugin_manager(
            load_entrypoints=False,
            extra=[
                ("bitbucket_webhook", webhook_plugin),
                ("database", database_plugin),
                ("story_keys", story_keys_plugin),
                ("test", TestPlugins()),
            ],
        )
    )


class Daemon:
    def __init__(self, runner: Runner, db: Path) -> None:
        self.runner = runner
        self.db = db
        port = runner.source.bound_port  # type: ignore[attr-defined]
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/webhooks/bitbucket"

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return conn.execute(sql).fetchall()

    async def settled(self, timeout: float = 15.0) -> None:
        """Wait until the inbox holds nothing to normalise (now) and the pipeline is idle."""
        source: Any = self.runner.source
        if source.app is None or INBOX_SLOT not in source.app:
            return  # the committed path: a 200 came after the commit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            state = source.app[INBOX_SLOT].state
            if state is None:
                return
            counts = await state.inbox.counts()
            if counts["pending"] == 0 and source.intake.depth == 0:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"the inbox was not normalised within {timeout}s")


#: URL -> daemon: post() waits for a delivery's records, as tests of stored rows need.
_DAEMONS: dict[str, Daemon] = {}


@contextlib.asynccontextmanager
async def daemon(
    tmp_path: Path, source: dict[str, Any] | None = None, sinks: list[dict[str, Any]] | None = None
) -> AsyncIterator[Daemon]:
    db = tmp_path / "commits.db"
    pipeline = tmp_path / "webhook.yaml"
    config = {
        "port": 0,
        "secret": SECRET,
        "backfill_queue": f"{tmp_path}/backfill.db",
        "inbox": f"{tmp_path}/inbox.db",
    }
    spec = {
        "name": "hooks",
        "source": {"type": "bitbucket_webhook", "config": {**config, **(source or {})}},
        "enrichers": [{"type": "story_keys"}],
        "sinks": [*(sinks or []), {"type": "database", "config": {"database": str(db)}}],
    }
    pipeline.write_text(json.dumps(spec))  # JSON is YAML
    loaded = load_pipeline(pipeline, registry())
    context = RunContext(
        run_id="serve-1",
        pipeline_name="hooks",
        timezone=ZoneInfo("America/Phoenix"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="hooks:bitbucket_webhook",
        mode="serve",
        secrets=loaded.secrets | {SECRET},
    )
    runner = Runner(loaded, context)
    task = asyncio.create_task(runner.run())
    for _ in range(500):
        if runner.source.bound_port is not None or task.done():  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    if task.done():
        await task
    d = Daemon(runner, db)
    _DAEMONS[d.url] = d
    try:
        yield d
    finally:
        _DAEMONS.pop(d.url, None)
        await runner.stop()
        result = await asyncio.wait_for(task, 30)
        assert result.status == "succeeded"


def signed(
    raw: bytes, event: str = "repo:push", uuid: str = "req-1", **extra: str
) -> dict[str, str]:
    return {
        "X-Event-Key": event,
        "X-Request-UUID": uuid,
        "X-Hook-UUID": "{hook}",
        "X-Hub-Signature": sign(raw, SECRET),
        "Content-Type": "application/json",
        **extra,
    }


async def post(url: str, raw: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST a delivery; with a daemon of ``daemon()`` on the inbox path, return once
    what it acknowledged is normalised (so its rows can be read)."""
    async with aiohttp.ClientSession() as s, s.post(url, data=raw, headers=headers) as r:
        status, text = r.status, await r.text()
    d = _DAEMONS.get(url)
    if d is not None and status == 200:
        await d.settled()
    return status, text


EVENTS = [
    ("webhook_repo-push_3-changes-one-truncated_jenkins-2017.json", "repo:push"),
    ("webhook_repo-push_single-commit_go-scm-2018.json", "repo:push"),
    ("webhook_repo-push_branch-create-2-commits_go-scm-2018.json", "repo:push"),
    ("webhook_repo-push_branch-delete_go-scm-2018.json", "repo:push"),
    ("webhook_repo-push_tag-create_go-scm-2018.json", "repo:push"),
    ("webhook_repo-push_atlassian-doc-example_go-playground.json", "repo:push"),
    ("webhook_pullrequest-created_go-scm-2018.json", "pullrequest:created"),
    ("webhook_pullrequest-updated_go-scm-2018.json", "pullrequest:updated"),
    ("webhook_pullrequest-fulfilled_go-scm-2018.json", "pullrequest:fulfilled"),
    ("webhook_pullrequest-rejected_go-scm-2018.json", "pullrequest:rejected"),
    ("webhook_pullrequest-created_jenkins-2024.json", "pullrequest:created"),
]


async def test_every_fixture_is_stored(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        for i, (name, event) in enumerate(EVENTS):
            raw = (FIX / name).read_bytes()
            status, text = await post(d.url, raw, signed(raw, event, uuid=f"req-{i}"))
            assert status == 200, (name, text)
        deliveries = d.rows(
            "SELECT request_uuid, event, outcome FROM deliveries ORDER BY request_uuid"
        )
        assert len(deliveries) == len(EVENTS)
        # No REST credentials: the truncated push is stored as truncated.
        assert ("req-0", "repo:push", "truncated") in deliveries
        commits = {h for (h,) in d.rows("SELECT hash FROM commits")}
        assert "325d37697849f4b1fe42cb19c20134af08e03a82" in commits
        assert "141977fedf5cf35aa290ac87d4b5177ac4cd9de1" in commits
        assert len(commits) == 6 + 2 + 1  # jenkins push 6, go-scm 2 (one shared), doc example 1
        branches = set(d.rows("SELECT commit_hash, branch FROM commit_branches"))
        assert ("141977fedf5cf35aa290ac87d4b5177ac4cd9de1", "master") in branches
        assert ("141977fedf5cf35aa290ac87d4b5177ac4cd9de1", "develop") in branches
        prs = d.rows("SELECT repository, id, state FROM pull_requests ORDER BY repository, id")
        assert prs == [
            ("amuniz/test-repos", 735, "OPEN"),
            ("brydzewski/foo", 1, "MERGED"),
            ("brydzewski/foo", 2, "DECLINED"),
        ]


async def test_pushed_branch_lends_no_key_without_the_api(tmp_path: Path) -> None:
    """The payload cannot tell which listed commits the branch brought: no branch key.

    (With REST credentials the backfill job finds them; tests/test_branch_keys.py.)
    """
    raw = PUSH.read_bytes().replace(b'"name": "master"', b'"name": "feature/REL-42-login"')
    async with daemon(tmp_path) as d:
        assert (await post(d.url, raw, signed(raw)))[0] == 200
        assert ("REL-42", "branch") not in d.rows("SELECT key, origin FROM story_keys")
        # Which branch contains the commit is still recorded.
        assert ("feature/REL-42-login",) in d.rows("SELECT branch FROM commit_branches")


async def test_bad_input_table_stores_nothing(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    async with daemon(tmp_path) as d:
        cases = [
            (raw, {"X-Event-Key": "repo:push", "X-Request-UUID": "a"}, 401),
            (raw, {**signed(raw, uuid="b"), "X-Hub-Signature": sign(raw + b"x", SECRET)}, 401),
            (b"{not json", signed(b"{not json", uuid="c"), 400),
            (b'{"push": 1}', signed(b'{"push": 1}', uuid="d"), 400),
            (b"x" * 262_145, signed(b"x" * 262_145, uuid="e"), 413),
            (raw, signed(raw, event="repo:fork", uuid="f"), 202),
            (raw, signed(raw, event="nope:nothing", uuid="g"), 202),
        ]
        for body, headers, expected in cases:
            status, text = await post(d.url, body, headers)
            assert status == expected, text
            assert SECRET not in text

        # Chunked upload without Content-Length: still cut off at the limit.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"y" * 10_000

        async with (
            aiohttp.ClientSession() as s,
            s.post(d.url, data=chunks(), headers=signed(b"", uuid="h")) as r,
        ):
            assert r.status == 413
        assert d.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
        assert d.rows("SELECT COUNT(*) FROM commits") == [(0,)]
        # Still alive after all that.
        assert (await post(d.url, raw, signed(raw, uuid="ok")))[0] == 200
        async with aiohttp.ClientSession() as s, s.get(d.base + "/metrics") as r:
            text = await r.text()
        assert "rcingest_webhook_signature_failures_total 2.0" in text
        assert 'outcome="too_large"' in text and 'outcome="bad_request"' in text


async def test_repeated_delivery_changes_only_last_seen(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    async with daemon(tmp_path) as d:
        assert (await post(d.url, raw, signed(raw, uuid="dup")))[0] == 200
        before = d.rows("SELECT * FROM deliveries")
        commits_before = d.rows("SELECT * FROM commits")
        status, text = await post(d.url, raw, signed(raw, uuid="dup", **{"X-Attempt-Number": "1"}))
        assert status == 200 and "duplicate" in text
        after = d.rows("SELECT * FROM deliveries")
        assert len(after) == 1
        cols = [c[1] for c in d.rows("PRAGMA table_info(deliveries)")]
        changed = {
            cols[i] for i, (x, y) in enumerate(zip(before[0], after[0], strict=True)) if x != y
        }
        assert changed <= {"last_seen_at"}
        # The replay refreshes the commits' last_seen_at (tests/test_replay_last_seen.py), only.
        assert [row[:-1] for row in d.rows("SELECT * FROM commits")] == [
            row[:-1] for row in commits_before
        ]


async def test_failed_write_answers_503_and_the_daemon_stays_up(tmp_path: Path) -> None:
    # The committed path (ack: committed) answers after the commit; the inbox
    # path's answer to a failing sink is in tests/test_inbox_daemon.py.
    raw = PUSH.read_bytes()
    async with daemon(tmp_path, {"ack": "committed"}, sinks=[{"type": "test_flaky"}]) as d:
        FlakySink.failing = True
        try:
            status, text = await post(d.url, raw, signed(raw, uuid="retry-me"))
            assert status == 503, text
            async with aiohttp.ClientSession() as s, s.get(d.base + "/readyz") as r:
                assert r.status == 503
        finally:
            FlakySink.failing = False
        assert d.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
        # Bitbucket's retry of the same delivery now succeeds.
        status, _ = await post(
            d.url, raw, signed(raw, uuid="retry-me", **{"X-Attempt-Number": "2"})
        )
        assert status == 200
        assert d.rows("SELECT request_uuid, attempt FROM deliveries") == [("retry-me", 2)]
        assert d.runner.context.stats.get("pipeline.failed_batches") >= 1


async def test_health_ready_metrics(tmp_path: Path) -> None:
    async with daemon(tmp_path) as d:
        async with aiohttp.ClientSession() as s:
            async with s.get(d.base + "/healthz") as r:
                assert r.status == 200
            # Listening comes a moment before the pipeline consumes (more under
            # load): readiness is what says when; wait for it, bounded.
            for _ in range(100):
                async with s.get(d.base + "/readyz") as r:
                    ready, text = r.status, await r.text()
                if ready == 200:
                    break
                await asyncio.sleep(0.05)
            assert ready == 200, text
            raw = PUSH.read_bytes()
            async with s.post(d.url, data=raw, headers=signed(raw)) as r:
                assert r.status == 200
            await d.settled()
            async with s.get(d.base + "/metrics") as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
        assert 'rcingest_webhook_deliveries_total{event="repo:push",outcome="stored"} 1.0' in text
        assert 'rcingest_webhook_records_written_total{type="commit"} 1.0' in text
        assert "rcingest_webhook_write_latency_seconds_count" in text
        assert "rcingest_webhook_queue_depth 0.0" in text
        assert "rcingest_webhook_inbox_pending 0.0" in text
        assert "rcingest_webhook_normalisation_lag_seconds 0.0" in text
        assert 'rcingest_webhook_inbox_normalised_total{outcome="done"} 1.0' in text
        assert "rcingest_webhook_normaliser_healthy 1.0" in text
        assert "rcingest_webhook_backfill_requests_total" in text or "backfill" in text
        # The readiness probe is a real commit: its cursor row is in the database.
        assert d.rows("SELECT stream FROM source_cursors") == [("webhook.readyz",)]


async def test_stop_drains_in_flight_deliveries(tmp_path: Path) -> None:
    raws = [PUSH.read_bytes()] * 20
    async with daemon(tmp_path) as d:
        async with aiohttp.ClientSession() as s:

            async def one(i: int) -> int:
                async with s.post(d.url, data=raws[i], headers=signed(raws[i], uuid=f"u{i}")) as r:
                    return r.status

            tasks = [asyncio.create_task(one(i)) for i in range(20)]
            await asyncio.sleep(0)
            statuses = await asyncio.gather(*tasks)
        ok = statuses.count(200)
        assert ok == 20
        await d.settled()
        stored = d.rows("SELECT COUNT(*) FROM deliveries")[0][0]
        assert stored == ok


async def test_insecure_must_be_explicit(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "source: {type: bitbucket_webhook, config: {port: 0}}\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path}/x.db'}}}}]\n"
    )
    loaded = load_pipeline(pipeline, registry())
    ctx = RunContext(
        run_id="n",
        pipeline_name="n",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="n:s",
        mode="serve",
    )
    # A configuration problem (exit 2), naming the YAML path, not a failed run.
    with pytest.raises(
        ConfigError, match=r"\$\.source \(bitbucket_webhook\): no webhook secret.*insecure: true"
    ):
        Runner(loaded, ctx)


async def test_insecure_accepts_unsigned_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    raw = PUSH.read_bytes()
    pipeline_src = "insecure: true"
    pipeline = tmp_path / "insecure.yaml"
    pipeline.write_text(
        "source: {type: bitbucket_webhook, config: "
        f"{{port: 0, {pipeline_src}, backfill_queue: '{tmp_path}/b2.db', "
        f"inbox: '{tmp_path}/i2.db'}}}}\n"
        f"sinks: [{{type: database, config: {{database: '{tmp_path}/y.db'}}}}]\n"
    )
    loaded = load_pipeline(pipeline, registry())
    ctx = RunContext(
        run_id="i",
        pipeline_name="i",
        timezone=ZoneInfo("UTC"),
        started_at=datetime.now(UTC),
        base_dir=tmp_path,
        source_id="i:s",
        mode="serve",
    )
    runner = Runner(loaded, ctx)
    task = asyncio.create_task(runner.run())
    for _ in range(1000):  # bounded: a daemon that failed to start must not hang the suite
        if runner.source.bound_port is not None or task.done():  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.01)
    assert runner.source.bound_port is not None, "the daemon did not start"  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{runner.source.bound_port}/webhooks/bitbucket"  # type: ignore[attr-defined]
    status, _ = await post(url, raw, {"X-Event-Key": "repo:push", "X-Request-UUID": "x"})
    await runner.stop()
    await task
    assert status == 200
    assert any("UNSIGNED" in r.getMessage() for r in caplog.records)


async def test_runbook_secret_header_when_enabled(tmp_path: Path) -> None:
    raw = PUSH.read_bytes()
    plain = {"X-Event-Key": "repo:push", "X-Request-UUID": "s-1", "X-Webhook-Secret": SECRET}
    async with daemon(tmp_path, source={"accept_secret_header": True}) as d:
        assert (await post(d.url, raw, plain))[0] == 200
        wrong = {**plain, "X-Request-UUID": "s-2", "X-Webhook-Secret": SECRET[:-1] + "?"}
        assert (await post(d.url, raw, wrong))[0] == 401
        assert d.rows("SELECT request_uuid FROM deliveries") == [("s-1",)]


async def raw_post(port: int, headers: bytes, body: bytes) -> tuple[int, bytes]:
    """POST with header bytes as sent (aiohttp's client would refuse non-ASCII ones)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /webhooks/bitbucket HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_header_bytes_that_are_not_utf8_are_refused_not_a_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = PUSH.read_bytes()
    good = b"X-Webhook-Secret: " + SECRET.encode() + b"\r\n"
    async with daemon(tmp_path, source={"accept_secret_header": True}) as d:
        port = d.runner.source.bound_port  # type: ignore[attr-defined]
        cases = [
            (b"X-Event-Key: repo:push\r\nX-Webhook-Secret: \xff\xfe\r\n", 401),
            (b"X-Event-Key: repo:push\r\n" + good + b"X-Request-UUID: \xff\r\n", 400),
            (b"X-Event-Key: repo:push\r\n" + good + b"X-Hook-UUID: caf\xc3\xa9\r\n", 400),
            (b"X-Event-Key: repo:\xff\r\n" + good, 400),
            (
                b"X-Event-Key: repo:push\r\n" + good + b"X-Request-UUID: " + b"u" * 201 + b"\r\n",
                400,
            ),
        ]
        for headers, expected in cases:
            status, body = await raw_post(port, headers, raw)
            assert status == expected, body
            assert json.loads(body)["status"] == expected
        assert d.rows("SELECT COUNT(*) FROM deliveries") == [(0,)]
        # An absurd (unsigned) attempt number is clamped, and its neighbours are unharmed.
        results = await asyncio.gather(
            post(d.url, raw, signed(raw, uuid="big", **{"X-Attempt-Number": "9" * 20})),
            *(post(d.url, raw, signed(raw, uuid=f"n-{i}")) for i in range(4)),
        )
        assert [status for status, _ in results] == [200] * 5
        assert d.rows("SELECT request_uuid, attempt FROM deliveries ORDER BY 1") == [
            ("big", 1000),
            *((f"n-{i}", 1) for i in range(4)),
        ]
    assert "Traceback" not in caplog.text and "Error handling request" not in caplog.text


async def test_secret_never_written(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    raw = PUSH.read_bytes()
    async with daemon(tmp_path, source={"accept_secret_header": True}) as d:
        await post(d.url, raw, signed(raw, uuid="ok-1"))
        await post(d.url, raw, {"X-Event-Key": "repo:push", "X-Webhook-Secret": SECRET + "x"})
        await post(d.url, raw, {**signed(raw, uuid="bad"), "X-Hub-Signature": "sha256=00"})
        async with aiohttp.ClientSession() as s, s.get(d.base + "/metrics") as r:
            metrics_text = await r.text()
    for path in tmp_path.iterdir():
        if path.is_file() and path.suffix != ".yaml":
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text and SECRET not in metrics_text
    assert sign(raw, SECRET).split("=")[1] not in caplog.text


async def test_group_commit_writes_concurrent_deliveries_together(tmp_path: Path) -> None:
    FlakySink.sizes, FlakySink.first_delay = [], 0.5
    raw = PUSH.read_bytes()
    try:
        # Group commit of the committed path; the inbox's own is in test_inbox_store.py.
        async with daemon(tmp_path, {"ack": "committed"}, sinks=[{"type": "test_flaky"}]) as d:
            async with aiohttp.ClientSession() as s:

                async def one(i: int) -> int:
                    headers = signed(raw, uuid=f"g{i}")
                    async with s.post(d.url, data=raw, headers=headers) as r:
                        return r.status

                first = asyncio.create_task(one(0))
                while not FlakySink.sizes:  # the first delivery is being written, slowly
                    await asyncio.sleep(0.005)
                statuses = await asyncio.gather(first, *(one(i) for i in range(1, 25)))
            batches = d.runner.context.stats.get("database.batches")
    finally:
        FlakySink.first_delay = 0.0
    assert statuses == [200] * 25
    # The 24 deliveries that arrived during the first write went in together.
    assert FlakySink.sizes[:2] == [1, 24]
    assert batches == 2
