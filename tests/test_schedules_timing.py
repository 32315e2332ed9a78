"""schedules: config validation and next-run math (pure, with fixed times)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest

from rcingest.schedules import ScheduleConfig, SchedulesConfig, parse_duration, schedules_problems
from rcingest.schedules.timing import (
    MISSED_CAP,
    draw_jitter,
    plan_next,
    slot_after,
    slot_at_or_before,
)

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    """A UTC moment from ``YYYY-MM-DD HH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def convert(data: object) -> SchedulesConfig:
    return msgspec.convert(data, SchedulesConfig)


# -- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(45, 45.0), (0.2, 0.2), ("0.2s", 0.2), ("30m", 1800.0), ("6h", 21600.0), ("24h", 86400.0),
     ("1h30m", 5400.0), ("2d", 172800.0), ("90s", 90.0)],
)  # fmt: skip
def test_durations(value: float | str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["6x", "h", "", "-1s", "6 h", -3])
def test_bad_durations(value: float | str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_config_defaults_and_forms() -> None:
    schedules = convert(
        {
            "full_sync": {"every": "24h", "jitter": "10m"},
            "incremental_sync": {"every": 21600},
            "scan": {"cron": "0  3 * * 1-5", "timezone": "Europe/Berlin", "on_missed": "skip"},
        }
    )
    full = schedules["full_sync"]
    assert full.interval == timedelta(hours=24) and full.jitter_seconds == 600
    assert (full.on_missed, full.enabled, full.zone) == ("run_once", True, ZoneInfo("UTC"))
    assert schedules["incremental_sync"].interval == timedelta(hours=6)
    scan = schedules["scan"]
    assert scan.cron == "0 3 * * 1-5" and scan.interval is None and scan.zone == BERLIN
    assert scan.describe() == 'cron "0 3 * * 1-5" (Europe/Berlin)'


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"cron": "0 25 * * *"}, "cron '0 25 * * *': not a valid cron expression"),
        ({"cron": "every day"}, "cron 'every day': expected 5 fields"),
        ({"cron": "0 0 3 * * *"}, "cron '0 0 3 * * *': expected 5 fields"),
        ({"every": "6h", "cron": "0 3 * * *"}, "set every or cron, not both"),
        ({}, "missing every (an interval such as 6h) or cron"),
        ({"jitter": "5m"}, "missing every"),
        ({"every": 0}, "must be longer than 0 seconds"),
        ({"every": "6h", "timezone": "Europe/Berlin"}, "timezone applies to cron only"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "'Mars/Olympus': not an IANA"),
        ({"every": "6x"}, "Expected `str` matching regex"),
        ({"every": "6h", "on_missed": "always"}, "Invalid enum value 'always'"),
    ],
)
def test_config_errors(entry: dict[str, object], message: str) -> None:
    with pytest.raises((msgspec.ValidationError, ValueError)) as caught:
        convert({"scan": entry})
    # msgspec wraps the ValueError of __post_init__; its text is kept.
    assert message in str(caught.value)


def test_unknown_fields_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `evry`"):
        convert({"scan": {"evry": "6h"}})


def test_problems_name_their_job() -> None:
    found = schedules_problems(
        {
            "full_sync": {"cron": "0 25 * * *"},
            "scan": {"evry": 1},
            "Bad-Name": {"every": 1},
            "nightly": {"every": "1h"},
        },
        known={"full_sync", "scan", "incremental_sync"},
    )
    assert found == [
        "$.schedules.full_sync: cron '0 25 * * *': not a valid cron expression",
        "$.schedules.scan.evry: unknown field; did you mean 'every'?",
        "$.schedules.Bad-Name: job names are lower case letters, digits and _",
        "$.schedules.nightly: unknown job (known: full_sync, incremental_sync, scan)",
    ]
    assert schedules_problems(None) == []
    assert schedules_problems([1]) == ["$.schedules: expected a mapping of job name to schedule"]


# -- intervals -----------------------------------------------------------------------


def test_interval_slots_are_aligned_to_the_epoch() -> None:
    every6h = ScheduleConfig(every="6h")
    assert slot_after(every6h, at("2024-01-01 00:03")) == at("2024-01-01 06:00")
    assert slot_after(every6h, at("2024-01-01 06:00")) == at("2024-01-01 12:00")
    assert slot_at_or_before(every6h, at("2024-01-01 06:00")) == at("2024-01-01 06:00")
    assert slot_at_or_before(every6h, at("2024-01-01 05:59")) == at("2024-01-01 00:00")
    # Sub-second steps are exact (integer microseconds), with no drift after many steps.
    tick = ScheduleConfig(every=0.2)
    moment = at("2024-01-01 00:00")
    for _ in range(1000):
        moment = slot_after(tick, moment)
    assert moment == at("2024-01-01 00:03:20")


def test_interval_on_time() -> None:
    every6h = ScheduleConfig(every="6h")
    plan = plan_next(every6h, at("2024-01-01 06:00:04"), at("2024-01-01 06:00:09"))
    assert (plan.slot, plan.due, plan.missed, plan.catch_up) == (
        at("2024-01-01 12:00"),
        at("2024-01-01 12:00"),
        0,
        False,
    )


def test_downtime_run_once_runs_one_catch_up_now() -> None:
    every6h = ScheduleConfig(every="6h", jitter="10m")
    now = at("2024-01-02 07:30")
    plan = plan_next(every6h, at("2024-01-01 00:05"), now, jitter=300)
    # Slots 06:00, 12:00, 18:00, 00:00, 06:00 were missed: one run, now, without jitter.
    assert (plan.slot, plan.due, plan.missed, plan.catch_up) == (
        at("2024-01-02 06:00"),
        now,
        5,
        True,
    )
    # After that run (started now) the next one is the regular slot after it.
    after = plan_next(every6h, now, now + timedelta(seconds=30), jitter=300)
    assert after.slot == at("2024-01-02 12:00") and not after.catch_up
    assert after.due == at("2024-01-02 12:05")


def test_downtime_skip_waits_for_the_next_slot() -> None:
    every6h = ScheduleConfig(every="6h", on_missed="skip")
    plan = plan_next(every6h, at("2024-01-01 00:05"), at("2024-01-02 07:30"), jitter=12)
    assert plan.slot == at("2024-01-02 12:00") and plan.missed == 5 and not plan.catch_up
    assert plan.due == at("2024-01-02 12:00:12")


def test_never_ran() -> None:
    now = at("2024-01-01 09:00")
    once = plan_next(ScheduleConfig(every="6h"), None, now)
    assert (once.slot, once.due, once.missed, once.catch_up) == (
        at("2024-01-01 06:00"),
        now,
        1,
        True,
    )
    skip = plan_next(ScheduleConfig(every="6h", on_missed="skip"), None, now)
    assert (skip.slot, skip.due, skip.catch_up) == (at("2024-01-01 12:00"),) * 2 + (False,)


def test_a_run_that_outlasted_its_slot_counts_as_missed() -> None:
    every10m = ScheduleConfig(every="10m")
    # Started at 00:00, finished at 00:25: the 00:10 and 00:20 slots passed meanwhile.
    plan = plan_next(every10m, at("2024-01-01 00:00"), at("2024-01-01 00:25"))
    assert plan.catch_up and plan.missed == 2 and plan.slot == at("2024-01-01 00:20")


def test_missed_slots_are_counted_up_to_a_cap() -> None:
    minutely = ScheduleConfig(cron="* * * * *")
    plan = plan_next(minutely, at("2024-01-01 00:00"), at("2024-02-01 00:00"))
    assert plan.missed == MISSED_CAP and plan.slot == at("2024-02-01 00:00")
    assert plan_next(ScheduleConfig(every=1), at("2024-01-01"), at("2024-02-01")).missed == (
        MISSED_CAP
    )


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_next(ScheduleConfig(every=60), None, datetime(2024, 1, 1))


# -- jitter --------------------------------------------------------------------------


def test_jitter_bounds_and_seed() -> None:
    schedule = ScheduleConfig(every="1h", jitter="10m")
    rng = random.Random(7)
    drawn = [draw_jitter(schedule, rng) for _ in range(2000)]
    assert all(0 <= d <= 600 for d in drawn)
    assert min(drawn) < 60 and max(drawn) > 540  # spread over the whole range
    again = random.Random(7)
    assert [draw_jitter(schedule, again) for _ in range(2000)] == drawn
    assert draw_jitter(ScheduleConfig(every="1h"), rng) == 0.0
    plan = plan_next(schedule, at("2024-01-01 00:00:30"), at("2024-01-01 00:01"), drawn[0])
    assert plan.due - plan.slot == timedelta(seconds=drawn[0])
    assert plan.slot == at("2024-01-01 01:00")


# -- cron, timezones, DST ------------------------------------------------------------


def test_cron_in_a_timezone() -> None:
    three = ScheduleConfig(cron="0 3 * * *", timezone="Europe/Berlin")
    # 03:00 in Berlin: 02:00 UTC in winter (CET), 01:00 UTC in summer (CEST).
    assert slot_after(three, at("2024-01-10 12:00")) == at("2024-01-11 02:00")
    assert slot_after(three, at("2024-07-10 12:00")) == at("2024-07-11 01:00")
    assert slot_at_or_before(three, at("2024-07-11 01:00")) == at("2024-07-11 01:00")
    assert slot_at_or_before(three, at("2024-07-11 00:59")) == at("2024-07-10 01:00")
    utc = ScheduleConfig(cron="0 3 * * *")
    assert slot_after(utc, at("2024-07-10 12:00")) == at("2024-07-11 03:00")
    weekdays = ScheduleConfig(cron="0 9 * * 1-5", timezone="America/New_York")
    # Friday 2024-03-08 10:00 EST → Monday 2024-03-11 09:00 EDT (13:00 UTC).
    assert slot_after(weekdays, at("2024-03-08 15:00")) == at("2024-03-11 13:00")


def test_cron_spring_forward_runs_a_skipped_time_after_the_change() -> None:
    # 2024-03-31 in Berlin: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
    half_past_two = ScheduleConfig(cron="30 2 * * *", timezone="Europe/Berlin")
    slot = slot_after(half_past_two, at("2024-03-30 12:00"))
    assert slot == at("2024-03-31 01:30")  # 03:30 CEST
    assert slot.astimezone(BERLIN).strftime("%H:%M %Z") == "03:30 CEST"
    assert slot_after(half_past_two, slot) == at("2024-04-01 00:30")  # 02:30 CEST
    # Half-hourly across the gap: 02:00 and 02:30 fold into 03:00 and 03:30, each once.
    half_hourly = ScheduleConfig(cron="*/30 * * * *", timezone="Europe/Berlin")
    moment, seen = at("2024-03-30 23:45"), []
    for _ in range(5):
        moment = slot_after(half_hourly, moment)
        seen.append(moment.astimezone(BERLIN).strftime("%H:%M"))
    assert seen == ["01:00", "01:30", "03:00", "03:30", "04:00"]


def test_cron_fall_back_runs_a_repeated_time_once() -> None:
    # 2024-10-27 in Berlin: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    half_past_two = ScheduleConfig(cron="30 2 * * *", timezone="Europe/Berlin")
    first = slot_after(half_past_two, at("2024-10-26 12:00"))
    assert first == at("2024-10-27 00:30")  # 02:30 CEST, the first occurrence
    assert slot_after(half_past_two, first) == at("2024-10-28 01:30")  # not 02:30 CET
    hourly = ScheduleConfig(cron="0 * * * *", timezone="Europe/Berlin")
    moment, seen = at("2024-10-26 23:30"), []
    for _ in range(3):
        moment = slot_after(hourly, moment)
        seen.append(moment)
    assert seen == [at("2024-10-27 00:00"), at("2024-10-27 02:00"), at("2024-10-27 03:00")]
    # A daemon started during the repeated hour does not rerun its first half.
    assert slot_after(hourly, at("2024-10-27 01:10")) == at("2024-10-27 02:00")
    assert slot_at_or_before(hourly, at("2024-10-27 01:10")) == at("2024-10-27 00:00")


def test_cron_downtime() -> None:
    daily = ScheduleConfig(cron="0 3 * * *", timezone="Europe/Berlin")
    now = at("2024-01-05 12:00")
    plan = plan_next(daily, at("2024-01-01 02:00:05"), now)
    assert plan.catch_up and plan.missed == 4 and plan.slot == at("2024-01-05 02:00")
    skip = ScheduleConfig(cron="0 3 * * *", timezone="Europe/Berlin", on_missed="skip")
    later = plan_next(skip, at("2024-01-01 02:00:05"), now, jitter=60)
    assert later.slot == at("2024-01-06 02:00") and later.due == at("2024-01-06 02:01")
