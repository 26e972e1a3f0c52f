"""Schedule math on fixed instants: cron, intervals, time zones, both DST transitions, catch-up, offsets."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from aiotasks import InvalidChain, InvalidInput, InvalidSchedule, Run, task
from aiotasks._keys import check_schedule_name
from aiotasks._schedule import Schedule, Slot


@task(recurring=True)
async def odds(run: Run) -> None:
    """A recurring task for sub-daily schedules."""


@task()
async def report(run: Run) -> None:
    """A once-a-day task."""


@task(success_ttl=3600)
async def short_lived(run: Run) -> None:
    """A task whose markers live one hour."""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def keys(slots: list[Slot]) -> list[str]:
    return [slot.key for slot in slots]


def test_daily_cron_keys_runs_by_the_logical_date_in_its_zone() -> None:
    """A daily schedule keys by its local date, not UTC's: 02:00 in Tokyo is the previous UTC day."""
    schedule = Schedule(report, cron="0 2 * * *", tz="Asia/Tokyo")
    slots = schedule.slots_between(utc(2026, 11, 24, 12), utc(2026, 11, 26, 12))
    assert [(slot.at, slot.key) for slot in slots] == [
        (utc(2026, 11, 24, 17), "20261125"),
        (utc(2026, 11, 25, 17), "20261126"),
    ]
    assert schedule.daily


def test_date_offset_shifts_the_logical_date() -> None:
    """date_offset=-1: the run firing on the 25th processes the 24th (Airflow's data interval)."""
    schedule = Schedule([report], cron="0 2 * * *", tz="Europe/Berlin", date_offset=-1)
    assert schedule.next_slot(utc(2026, 11, 24, 12)) == Slot(utc(2026, 11, 25, 1), "20261124")


def test_sub_daily_schedules_key_by_slot_in_their_zone() -> None:
    """Several runs a day: slots keyed YYYYMMDDTHHMM in the schedule's zone (seconds if `every` has them)."""
    quarter = Schedule(odds, every="15m", tz="America/New_York")
    assert keys(quarter.slots_between(utc(2026, 1, 1, 4, 50), utc(2026, 1, 1, 5, 30))) == [
        "20260101T0000",
        "20260101T0015",
        "20260101T0030",
    ]
    assert not quarter.daily
    second = Schedule(odds, every=dt.timedelta(seconds=1))
    assert second.next_slot(utc(2026, 1, 1, 12, 0, 0) + dt.timedelta(microseconds=5)).key == "20260101T120001"
    hourly = Schedule(odds, cron="5 * * * *", tz="Asia/Kolkata")
    assert hourly.next_slot(utc(2026, 1, 1, 0, 0)) == Slot(utc(2026, 1, 1, 0, 35), "20260101T0605")


def test_intervals_count_from_local_midnight() -> None:
    """`every` restarts at each local midnight, so 7h fires at 00, 07, 14, 21 every day."""
    schedule = Schedule(odds, every="7h", tz="Europe/Berlin")
    got = schedule.slots_between(utc(2026, 1, 1, 22), utc(2026, 1, 2, 22, 59))
    assert keys(got) == ["20260102T0000", "20260102T0700", "20260102T1400", "20260102T2100"]


def test_spring_forward_daily_runs_once_right_after_the_jump() -> None:
    """Berlin skips 02:00-03:00 on 2026-03-29: a 02:30 daily schedule runs once that day, at 03:00."""
    schedule = Schedule(report, cron="30 2 * * *", tz="Europe/Berlin")
    slots = schedule.slots_between(utc(2026, 3, 27, 12), utc(2026, 3, 30, 12))
    assert [(slot.at, slot.key) for slot in slots] == [
        (utc(2026, 3, 28, 1, 30), "20260328"),
        (utc(2026, 3, 29, 1, 0), "20260329"),
        (utc(2026, 3, 30, 0, 30), "20260330"),
    ]


def test_fall_back_daily_runs_once_in_the_repeated_hour() -> None:
    """Berlin repeats 02:00-03:00 on 2026-10-25: a 02:30 daily schedule runs once, on the first pass."""
    schedule = Schedule(report, cron="30 2 * * *", tz="Europe/Berlin")
    slots = schedule.slots_between(utc(2026, 10, 24, 12), utc(2026, 10, 26, 12))
    assert [(slot.at, slot.key) for slot in slots] == [
        (utc(2026, 10, 25, 0, 30), "20261025"),
        (utc(2026, 10, 26, 1, 30), "20261026"),
    ]


@pytest.mark.parametrize("rule", [{"cron": "*/30 * * * *"}, {"every": "30m"}])
def test_sub_daily_slots_never_repeat_a_key_across_dst(rule: dict[str, Any]) -> None:
    """Across both transitions sub-daily slot keys strictly increase: the repeated hour fires once."""
    schedule = Schedule(odds, tz="Europe/Berlin", **rule)
    fall = schedule.slots_between(utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
    assert keys(fall) == [
        "20261025T0130", "20261025T0200", "20261025T0230", "20261025T0300", "20261025T0330", "20261025T0400",
    ]  # fmt: skip
    spring = schedule.slots_between(utc(2026, 3, 29, 0), utc(2026, 3, 29, 2))
    assert keys(spring) == ["20260329T0130", "20260329T0300", "20260329T0330", "20260329T0400"]
    for slots in (fall, spring):
        assert keys(slots) == sorted(set(keys(slots)))


def test_catchup_defaults_daily_last_slot_sub_daily_none() -> None:
    """On start a daily schedule catches up its last slot; a sub-daily one catches up nothing."""
    now = utc(2026, 11, 25, 9)
    assert Schedule(report, cron="0 2 * * *").catchup_slots(now) == [Slot(utc(2026, 11, 25, 2), "20261125")]
    assert Schedule(odds, every="15m").catchup_slots(now) == []


def test_catchup_by_count_and_by_reach_back_oldest_first() -> None:
    """catchup=N runs the last N slots, catchup=timedelta those within it; oldest first."""
    now = utc(2026, 11, 25, 9, 7)
    by_count = Schedule(odds, every="15m", catchup=3).catchup_slots(now)
    assert keys(by_count) == ["20261125T0830", "20261125T0845", "20261125T0900"]
    by_time = Schedule(odds, every="15m", catchup=dt.timedelta(minutes=20)).catchup_slots(now)
    assert keys(by_time) == ["20261125T0900"]


def test_catchup_never_reaches_past_the_markers_ttl() -> None:
    """Catch-up stops where success markers may have expired: completed runs are never repeated."""
    schedule = Schedule(short_lived, every="15m", catchup=dt.timedelta(days=2))
    assert schedule.horizon == dt.timedelta(hours=1)
    assert len(schedule.catchup_slots(utc(2026, 11, 25, 9, 7))) == 4
    daily = Schedule(report, cron="0 2 * * *", catchup=5)
    assert keys(daily.catchup_slots(utc(2026, 11, 25, 9))) == ["20261125"]


def test_a_late_wake_runs_the_current_slot_and_reports_older_ones_missed() -> None:
    """Woken late, the newest slot runs; older ones run within catchup, the rest are missed."""
    none = Schedule(odds, every="1m")
    run, missed = none.due(utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 5, 30))
    assert keys(run) == ["20260101T1205"]
    assert keys(missed) == ["20260101T1201", "20260101T1202", "20260101T1203", "20260101T1204"]
    two = Schedule(odds, every="1m", catchup=2)
    run, missed = two.due(utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 5, 30))
    assert keys(run) == ["20260101T1203", "20260101T1204", "20260101T1205"]
    assert keys(missed) == ["20260101T1201", "20260101T1202"]
    assert none.due(utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 0, 59)) == ([], [])


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cron": "61 * * * *"}, "'61 * * * *'"),
        ({"cron": "0 0 * *"}, "'0 0 * *'"),
        ({"cron": "0 0 0 * * *"}, "'0 0 0 * * *'"),
        ({"cron": "@daily"}, "'@daily'"),
        ({"cron": "* * * * *", "every": "1m"}, "both"),
        ({}, "neither"),
        ({"every": "500ms"}, "'500ms'"),
        ({"every": dt.timedelta(milliseconds=500)}, "under 1 second"),
        ({"every": dt.timedelta(seconds=1.5)}, "whole number"),
        ({"every": "2d"}, "'2d'"),
        ({"every": "soon"}, "'soon'"),
        ({"every": "1m", "tz": "Mars/Olympus"}, "'Mars/Olympus'"),
        ({"every": "1m", "tz": "../etc/passwd"}, "'../etc/passwd'"),
        ({"every": "1m", "catchup": -1}, "-1"),
        ({"every": "1m", "catchup": "3 days"}, "'3 days'"),
        ({"every": "1m", "date_offset": -1}, "-1"),
        ({"cron": "0 2 * * *", "date_offset": 1.5}, "1.5"),
    ],
)
def test_bad_schedules_are_refused_naming_the_value(options: dict[str, Any], named: str) -> None:
    """Bad cron, both/neither rule, sub-second or fractional intervals, unknown zones, bad catch-up/offset."""
    with pytest.raises(InvalidSchedule) as caught:
        Schedule(odds, **options)
    assert isinstance(caught.value, InvalidInput)
    assert named in str(caught.value)


@pytest.mark.parametrize("target", [42, "chain", None, [], print])
def test_a_target_that_is_not_a_chain_or_task_is_refused(target: object) -> None:
    """A schedule's target must be a chain or a decorated task; anything else is refused, naming it."""
    with pytest.raises((InvalidSchedule, InvalidChain)):
        Schedule(target, every="1m")


def test_a_schedule_name_is_checked_and_default_names_stay_valid_and_distinct() -> None:
    """A bad name= is refused naming it; default names (tasks joined by ',') are valid, and two long
    chains that differ only past the cut still get different names."""
    with pytest.raises(InvalidSchedule, match="'night ly'"):
        Schedule(report, cron="0 2 * * *", name="night ly")
    assert Schedule([report, odds], every="1h").name == "report,odds"

    def chain(last: str) -> list[dict[str, Any]]:
        return [{"id": f"{'t' * 60}{i}", "func": report} for i in range(4)] + [{"id": last, "func": report}]

    first = Schedule(chain("tail_a"), every="1h").name
    second = Schedule(chain("tail_b"), every="1h").name
    assert first is not None
    assert second is not None
    assert first != second
    assert len(first) <= 200
    check_schedule_name(first)
