"""Schedules across daylight saving time: slots strictly after their start, keys that never repeat,
intervals with no needless gap, and a Scheduler that can't spin in a repeated hour (issue 19, items 1, 3)."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from aiotasks import InvalidDate, Run, task
from aiotasks._clock import FakeClock
from aiotasks._schedule import Schedule, Slot
from aiotasks._scheduler import Scheduler
from aiotasks._trigger import trigger_key
from tests.support import eventually

BERLIN: dt.tzinfo = ZoneInfo("Europe/Berlin")


@task(recurring=True)
async def beat(run: Run) -> None:
    """Logs the slot it ran for."""
    await run.redis.rpush("beats", run.date)


@task()
async def nightly(run: Run) -> None:
    """A once-a-day task that logs its date."""
    await run.redis.rpush("nights", run.date)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def transitions(zone: str, year: int) -> list[dt.datetime]:
    """The instants (UTC, to the minute) at which ``zone``'s offset changes in ``year``."""
    tz = ZoneInfo(zone)
    found = []
    at, hour = utc(year, 1, 1), dt.timedelta(hours=1)
    while at.year == year:
        if at.astimezone(tz).utcoffset() != (at + hour).astimezone(tz).utcoffset():
            low, high = 0, 60  # the first minute of the hour with the new offset
            while high - low > 1:
                middle = (low + high) // 2
                moved = (at + dt.timedelta(minutes=middle)).astimezone(tz).utcoffset()
                low, high = (low, middle) if moved != at.astimezone(tz).utcoffset() else (middle, high)
            found.append(at + dt.timedelta(minutes=high))
        at += hour
    return found


#: Both transitions of: a European and an American zone, Lord Howe (a 30-minute shift), Sydney
#: (southern hemisphere: it falls back in April) and Santiago (southern, and it shifts at midnight).
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Australia/Sydney", "America/Santiago"]
CASES = [(zone, at) for zone in ZONES for at in transitions(zone, 2026)]

fixed_time = st.builds(lambda minute, hour: f"{minute} {hour} * * *", st.integers(0, 59), st.integers(0, 4))
sub_daily_fixed = st.one_of(
    st.sampled_from(["0,30 1-3 * * *", "15,45 0-3 * * *", "0 0-4 * * *", "0-59/20 1-2 * * *"]),
    st.builds(
        lambda minutes, hour, span: f"{','.join(map(str, sorted(minutes)))} {hour}-{hour + span} * * *",
        st.sets(st.integers(0, 59), min_size=1, max_size=4),
        st.integers(0, 3),
        st.integers(1, 2),
    ),
)
wildcard = st.sampled_from(
    [
        "0 * * * *",
        "30 * * * *",
        "*/15 1-3 * * *",
        "*/7 * * * *",
        "* 2 * * *",
        "45 */2 * * *",
        "*/20 0-4 * * *",
    ]
)
every = st.one_of(
    st.sampled_from(["7m", "15m", "30m", "40m", "45m", "1h", "90m", "2h", "5h", "1d"]),
    st.integers(1, 300).map(lambda minutes: f"{minutes}m"),
    st.integers(61, 4 * 3600).map(lambda seconds: dt.timedelta(seconds=seconds)),
)
rules = st.one_of(
    fixed_time.map(lambda cron: {"cron": cron}),
    sub_daily_fixed.map(lambda cron: {"cron": cron}),
    wildcard.map(lambda cron: {"cron": cron}),
    every.map(lambda interval: {"every": interval}),
)
#: Starts within 3 h of a transition, to the microsecond: both passes of a repeated hour.
nudges = st.builds(
    lambda seconds, micro: dt.timedelta(seconds=seconds, microseconds=micro),
    st.integers(-3 * 3600, 3 * 3600),
    st.sampled_from([0, 1, 500_000]),
)


@settings(max_examples=300, deadline=None)
@given(case=st.sampled_from(CASES), rule=rules, nudge=nudges)
def test_slots_are_after_their_start_and_the_tail_of_one_sequence(
    case: tuple[str, dt.datetime], rule: dict[str, Any], nudge: dt.timedelta
) -> None:
    """For every zone, rule and start around a transition (either pass of a repeated hour), every slot
    is strictly after the start, and the slots are those a scheduler running since the day before
    fires from then on: instants strictly increase and no key repeats (regression: a start in the
    second pass got a first-pass slot in the past, and the Scheduler spun on it)."""
    zone, transition = case
    schedule = Schedule(beat, tz=zone, **rule)
    start, end = transition + nudge, transition + dt.timedelta(hours=26)
    assert schedule.next_slot(start).at > start
    got = schedule.slots_between(start, end)
    assert all(slot.at > start for slot in got)
    reference = schedule.slots_between(transition - dt.timedelta(hours=26), end)
    assert got == [slot for slot in reference if slot.at > start]
    instants = [slot.at for slot in reference]
    assert instants == sorted(set(instants))
    assert len({slot.key for slot in reference}) == len(reference)


SWEPT: list[dict[str, Any]] = [
    *({"cron": cron} for cron in ["30 2 * * *", "15 1 * * *", "0 0 * * *", "45 23 * * *", "0,30 0-3 * * *"]),
    *({"cron": cron} for cron in ["0 * * * *", "*/20 * * * *"]),
    *({"every": every} for every in ["40m", "90m", "1h", "1d"]),
]


@pytest.mark.parametrize("rule", SWEPT, ids=lambda rule: next(iter(rule.values())))
def test_every_start_minute_around_every_transition(rule: dict[str, Any]) -> None:
    """The same property without chance: each minute from 2 h before to 2 h after each transition
    of each zone (every minute of both passes of each repeated hour) starts the right tail: its
    next (up to) three slots are those of a schedule running since the day before."""
    for zone, transition in CASES:
        schedule = Schedule(beat, tz=zone, **rule)
        reference = schedule.slots_between(
            transition - dt.timedelta(hours=26), transition + dt.timedelta(days=2)
        )
        for minute in range(-120, 121):
            start = transition + dt.timedelta(minutes=minute)
            tail = [slot for slot in reference if slot.at > start][:3]
            assert tail
            assert list(itertools.islice(schedule.slots(start), len(tail))) == tail, (zone, start)


def grid(schedule: Schedule, since: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
    """An interval's instants in ``(since, until]``: each ``interval`` of elapsed time from local midnight."""
    assert schedule.interval is not None
    day = since.astimezone(schedule.zone).date() - dt.timedelta(days=1)
    while (start := dt.datetime.combine(day, dt.time(), schedule.zone).astimezone(dt.UTC)) <= until:
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), schedule.zone).astimezone(dt.UTC)
        at = start
        while at < end:
            if since < at <= until:
                yield at
            at += schedule.interval
        day += dt.timedelta(days=1)


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(CASES), interval=every)
def test_an_interval_skips_only_instants_whose_key_already_fired(
    case: tuple[str, dt.datetime], interval: str | dt.timedelta
) -> None:
    """`every` fires every instant of its grid (elapsed time from local midnight) except one in the
    second pass of a repeated hour whose wall time, its key, fired on the first pass (regression:
    every second-pass instant was dropped, leaving gaps of up to 3 h)."""
    zone, transition = case
    schedule = Schedule(beat, tz=zone, every=interval)
    since, until = transition - dt.timedelta(hours=26), transition + dt.timedelta(hours=26)
    fired = schedule.slots_between(since, until)
    keys = {slot.key for slot in fired}
    expected = list(grid(schedule, since, until))
    assert {slot.at for slot in fired} <= set(expected)
    for at in set(expected) - {slot.at for slot in fired}:
        local = at.astimezone(schedule.zone)
        if not schedule.daily:
            assert local.fold == 1, f"{at} left out, not in a repeated hour"
        assert schedule.key(at) in keys, f"{at} left out, its key never fired"


def hhmm(slots: list[Slot]) -> list[tuple[str, str]]:
    """Each slot as (its UTC time, the wall time of its key)."""
    return [(f"{slot.at:%H:%M}", slot.key[-4:]) for slot in slots]


@pytest.mark.parametrize(
    ("zone", "interval", "since", "expected"),
    [
        # Berlin falls back at 01:00 UTC (03:00 CEST -> 02:00 CET); local midnight is 22:00 UTC.
        (
            "Europe/Berlin",
            "90m",
            utc(2026, 10, 24, 21, 59),
            [("22:00", "0000"), ("23:30", "0130"), ("01:00", "0200"), ("02:30", "0330"), ("04:00", "0500")],
        ),
        (
            "Europe/Berlin",
            "40m",
            utc(2026, 10, 24, 23, 59),
            [("00:00", "0200"), ("00:40", "0240"), ("01:20", "0220"), ("02:00", "0300"), ("02:40", "0340")],
        ),
        (  # every wall time of the second pass fired on the first: 1 h 30 between 02:30 CEST and 03:00 CET
            "Europe/Berlin",
            "30m",
            utc(2026, 10, 24, 23, 59),
            [("00:00", "0200"), ("00:30", "0230"), ("02:00", "0300"), ("02:30", "0330"), ("03:00", "0400")],
        ),
        # Lord Howe falls back half an hour at 15:00 UTC (02:00 +11 -> 01:30 +10:30); midnight is 13:00 UTC.
        (
            "Australia/Lord_Howe",
            "1h",
            utc(2026, 4, 4, 13, 59),
            [("14:00", "0100"), ("15:00", "0130"), ("16:00", "0230"), ("17:00", "0330")],
        ),
        (
            "Australia/Lord_Howe",
            "30m",
            utc(2026, 4, 4, 13, 59),
            [("14:00", "0100"), ("14:30", "0130"), ("15:30", "0200"), ("16:00", "0230"), ("16:30", "0300")],
        ),
    ],
)
def test_fall_back_intervals_fire_second_pass_wall_times_that_never_fired(
    zone: str, interval: str, since: dt.datetime, expected: list[tuple[str, str]]
) -> None:
    """In a repeated hour an interval fires its grid instants whose wall time did not fire on the
    first pass (90m: 02:00 CET; 40m: 02:20 CET, a key below the one before it) and skips those that
    did (30m in Berlin, one in Lord Howe): the longest gap is what unique keys need, no longer."""
    schedule = Schedule(beat, every=interval, tz=zone)
    assert hhmm(schedule.slots_between(since, since + dt.timedelta(hours=8))[: len(expected)]) == expected


def test_a_7_minute_interval_keeps_its_pace_through_the_repeated_hour() -> None:
    """`every="7m"` over Berlin's fall-back: no second-pass wall time fired on the first pass, so the
    slots are 7 minutes apart throughout (regression: a 1 h 10 gap)."""
    schedule = Schedule(beat, every="7m", tz="Europe/Berlin")
    slots = schedule.slots_between(utc(2026, 10, 24, 22), utc(2026, 10, 25, 3))
    assert {later.at - earlier.at for earlier, later in itertools.pairwise(slots)} == {
        dt.timedelta(minutes=7)
    }
    assert len({slot.key for slot in slots}) == len(slots) == 5 * 60 // 7


FALL_BACK = ["0100", "0130", "0200", "0230", "0300", "0330"]


@pytest.mark.parametrize(
    ("cron", "since", "until", "expected"),
    [
        # Spring forward (01:00 UTC, 02:00 CET -> 03:00 CEST): 02:00 and 02:30 fire as one slot at 03:00.
        ("0,30 1-3 * * *", utc(2026, 3, 28, 23), utc(2026, 3, 29, 2), ["0100", "0130", "0300", "0330"]),
        ("*/30 1-3 * * *", utc(2026, 3, 28, 23), utc(2026, 3, 29, 2), ["0100", "0130", "0300", "0330"]),
        # Fall back: each wall time once, on its first pass, fixed-time or wildcard alike.
        ("0,30 1-3 * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 3), [*FALL_BACK]),
        ("*/30 1-3 * * *", utc(2026, 10, 24, 22), utc(2026, 10, 25, 3), [*FALL_BACK]),
    ],
)  # fmt: skip
def test_sub_daily_crons_at_both_transitions(
    cron: str, since: dt.datetime, until: dt.datetime, expected: list[str]
) -> None:
    """Sub-daily crons in Berlin: at spring-forward the skipped times come as the first slot after the
    jump (keyed by its wall time); in the repeated hour each wall time fires once."""
    slots = Schedule(beat, cron=cron, tz="Europe/Berlin").slots_between(since, until)
    assert [slot.key[-4:] for slot in slots] == expected


def test_a_daily_interval_fires_once_on_a_25_hour_day() -> None:
    """`every="1d"` fires at each local midnight only (regression: Berlin's 25-hour 2026-10-25 also
    fired at 23:00 CET, 24 h after its midnight, repeating the key 20261025)."""
    schedule = Schedule(nightly, every="1d", tz="Europe/Berlin")
    assert schedule.slots_between(utc(2026, 10, 24, 12), utc(2026, 10, 26, 12)) == [
        Slot(utc(2026, 10, 24, 22), "20261025"),
        Slot(utc(2026, 10, 25, 23), "20261026"),
    ]


def test_a_fixed_time_cron_started_in_the_second_pass_waits_for_the_next_day() -> None:
    """Started at 02:10 CET (fold=1) on Berlin's fall-back day, `30 2 * * *` has fired that day (at
    02:30 CEST): its next slot is the next day's (regression: the past first-pass 02:30 CEST)."""
    schedule = Schedule(nightly, cron="30 2 * * *", tz="Europe/Berlin")
    start = dt.datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)
    assert schedule.next_slot(start) == Slot(utc(2026, 10, 26, 1, 30), "20261026")
    assert schedule.catchup_slots(start) == [Slot(utc(2026, 10, 25, 0, 30), "20261025")]


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(CASES), rule=rules)
def test_trigger_accepts_every_slot_key_around_a_transition(
    case: tuple[str, dt.datetime], rule: dict[str, Any]
) -> None:
    """`aiotasks trigger KEY` accepts the key of every slot around a transition, a second-pass one
    too (regression: the first slot after a spring-forward jump, 03:00, was refused)."""
    zone, transition = case
    schedule = Schedule(beat, tz=zone, **rule)
    later = transition + dt.timedelta(days=3)
    for slot in schedule.slots_between(
        transition - dt.timedelta(hours=2), transition + dt.timedelta(hours=3)
    ):
        assert trigger_key(schedule, None, slot.at) == slot.key
        if not schedule.daily:
            assert trigger_key(schedule, slot.key, later) == slot.key


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ({"every": "40m"}, "20261025T0210"),  # on neither pass's grid
        ({"every": "30m"}, "20260329T0230"),  # skipped by the spring-forward jump
        ({"cron": "0,30 1-3 * * *"}, "20260329T0200"),  # fired as 03:00, keyed T0300
    ],
)
def test_trigger_refuses_a_wall_time_that_is_no_slot(rule: dict[str, Any], key: str) -> None:
    """A key that names no slot of the schedule is refused, across DST too."""
    with pytest.raises(InvalidDate, match="no such slot"):
        trigger_key(Schedule(beat, tz="Europe/Berlin", **rule), key, utc(2026, 11, 1))


def runs(scheduler: Scheduler) -> int:
    return int(scheduler.status()["schedules"][0]["runs"])


async def settle(scheduler: Scheduler, clock: FakeClock, fired: int) -> None:
    """Wait until the scheduler has finished ``fired`` runs and sleeps until a later slot, or has spun:
    fired more (a spinning driver never sleeps on the fake clock, it only yields)."""

    async def settled() -> bool:
        return (runs(scheduler) >= fired and clock.pending >= 1) or runs(scheduler) > fired

    await eventually(settled, f"{fired} run(s) finished and the scheduler asleep")
    assert runs(scheduler) == fired, "the scheduler spun, firing one slot again and again"


async def test_a_scheduler_started_in_the_second_pass_fires_once_and_sleeps(fake_redis: Redis) -> None:
    """Regression (issue 19): a replica started at 02:10 CET (fold=1) on Berlin's fall-back day with
    `30 2 * * *` fired the past 02:30 CEST slot again and again without sleeping. Now it catches up
    that day's slot once, sleeps until the next day's 02:30 and fires it once."""
    clock = FakeClock(dt.datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN))
    schedule = Schedule(nightly, cron="30 2 * * *", tz="Europe/Berlin")
    async with Scheduler(schedule, redis=fake_redis, clock=clock, triggers=False) as scheduler:
        await settle(scheduler, clock, 1)
        assert clock.next_wake == utc(2026, 10, 26, 1, 30)
        clock.advance(clock.next_wake - clock.now())
        await settle(scheduler, clock, 2)
        assert clock.next_wake == utc(2026, 10, 27, 1, 30)
    assert [night.decode() for night in await fake_redis.lrange("nights", 0, -1)] == [  # type: ignore[union-attr]
        "20261025",
        "20261026",
    ]


class _StaleFirst(Schedule):
    """A schedule that breaks :meth:`Schedule.slots`' promise: it first yields a slot an hour old."""

    def slots(self, after: dt.datetime) -> Iterator[Slot]:
        stale = after - dt.timedelta(hours=1)
        yield Slot(stale, self.key(stale))
        yield from super().slots(after)


async def test_the_driver_skips_a_slot_not_after_the_last_one(
    fake_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot not after the scheduler's last instant is logged and skipped, never fired: the driver
    can't loop on it without sleeping (defence in depth for the issue 19 spin)."""
    caplog.set_level(logging.WARNING, logger="aiotasks.scheduler")
    clock = FakeClock(utc(2026, 1, 1, 12, 0))
    schedule = _StaleFirst(beat, every="1m")
    async with Scheduler(schedule, redis=fake_redis, clock=clock, triggers=False) as scheduler:
        await settle(scheduler, clock, 0)
        assert scheduler.status()["schedules"][0]["next_key"] == "20260101T1201"
        clock.advance(60)
        await settle(scheduler, clock, 1)
    assert [beat.decode() for beat in await fake_redis.lrange("beats", 0, -1)] == ["20260101T1201"]  # type: ignore[union-attr]
    skipped = [record.getMessage() for record in caplog.records if "skipping slot" in record.getMessage()]
    assert any("20260101T1100" in message for message in skipped)
    assert any("20260101T1101" in message for message in skipped)
