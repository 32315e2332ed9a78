"""The normaliser yields to the request path while deliveries arrive, within its bound.

A real SQLite inbox and the real normaliser; the deliveries are ones the
decoder refuses, so each is parked as soon as the normaliser gets to it and
the time it did is what the test reads (no pipeline is needed for that).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rcingest.inbox.derive import DecodeSettings
from rcingest.inbox.model import Arrival
from rcingest.inbox.normaliser import Normaliser
from rcingest.inbox.store import Inbox
from rcingest.records import Record


def arrival(i: int) -> Arrival:
    return Arrival(
        request_uuid=f"u-{i}",
        event="repo:push",
        repository="acme/api",
        received_at=time.time(),
        headers={"X-Event-Key": "repo:push"},
        body=b'{"push": 1}',  # the decoder refuses it: parked at once
    )


async def deliver(records: list[Record]) -> str | None:
    return None


async def run_burst(tmp_path: Path, defer: float, seconds: float) -> tuple[list[float], float]:
    """Append a delivery every 10 ms for ``seconds``; when each was normalised, from the start."""
    inbox = Inbox(str(tmp_path / "inbox.db"))
    await inbox.open()
    handled: list[float] = []
    start = time.monotonic()

    def observe(outcome: str, n: int) -> None:
        handled.extend([time.monotonic() - start] * n)

    normaliser = Normaliser(
        inbox,
        deliver,
        settings=DecodeSettings(),
        observe=lambda outcome, n: observe(outcome, n) if outcome == "parked" else None,
        busy=inbox.busy,
        defer=defer,
        poll_interval=0.05,
    )
    inbox.on_append = normaliser.wake
    task = asyncio.create_task(normaliser.run())
    try:
        i = 0
        while time.monotonic() - start < seconds:
            await inbox.append(arrival(i))
            i += 1
            await asyncio.sleep(0.01)
        burst_end = time.monotonic() - start
        deadline = time.monotonic() + 10
        while len(handled) < i and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(handled) == i, f"{len(handled)} of {i} normalised"
        assert (await inbox.counts())["parked"] == i
    finally:
        normaliser.stop()
        await asyncio.wait_for(task, 10)
        await inbox.close()
    return handled, burst_end


async def test_the_normaliser_waits_while_deliveries_arrive_but_no_longer_than_defer(
    tmp_path: Path,
) -> None:
    handled, burst_end = await run_burst(tmp_path, defer=0.4, seconds=1.2)
    # Nothing before the bound ran out, although deliveries were there all along ...
    assert min(handled) >= 0.35
    # ... and the bound holds under sustained arrivals: normalised during the burst.
    assert min(handled) < burst_end - 0.3
    assert len([t for t in handled if t < burst_end]) > 0


async def test_without_defer_the_normaliser_keeps_up_during_the_burst(tmp_path: Path) -> None:
    handled, _ = await run_burst(tmp_path, defer=0.0, seconds=0.6)
    assert min(handled) < 0.3


async def test_a_quiet_inbox_is_normalised_at_once(tmp_path: Path) -> None:
    inbox = Inbox(str(tmp_path / "inbox.db"))
    await inbox.open()
    normaliser = Normaliser(
        inbox, deliver, settings=DecodeSettings(), busy=inbox.busy, defer=30.0, poll_interval=5
    )
    inbox.on_append = normaliser.wake
    task = asyncio.create_task(normaliser.run())
    try:
        await inbox.append(arrival(1))
        start = time.monotonic()
        while (await inbox.counts())["parked"] < 1:
            assert time.monotonic() - start < 5, "a lone delivery waited out the defer bound"
            await asyncio.sleep(0.01)
        # One delivery makes the inbox busy for 50 ms only, not for the 30 s bound.
        assert time.monotonic() - start < 2
    finally:
        normaliser.stop()
        await asyncio.wait_for(task, 10)
        await inbox.close()


async def test_stopping_does_not_wait_for_the_defer_bound(tmp_path: Path) -> None:
    inbox = Inbox(str(tmp_path / "inbox.db"))
    await inbox.open()
    normaliser = Normaliser(
        inbox, deliver, settings=DecodeSettings(), busy=lambda: True, defer=30.0
    )
    inbox.on_append = normaliser.wake
    await inbox.append(arrival(1))
    task = asyncio.create_task(normaliser.run())
    try:
        await asyncio.sleep(0.2)
        assert (await inbox.counts())["parked"] == 0  # busy for ever: waiting
        started = time.monotonic()
        normaliser.stop(drain=5.0)
        await asyncio.wait_for(task, 10)
        assert time.monotonic() - started < 2
        assert (await inbox.counts())["parked"] == 1  # drained, not left behind
    finally:
        await inbox.close()
