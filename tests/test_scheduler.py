"""The Scheduler on an injected clock and an in-process store: replicas, late wakes, catch-up, stop."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from redis.asyncio import Redis

from aiotasks import InvalidInput, Run, Schedule, task
from aiotasks._clock import FakeClock
from aiotasks._schedule import Slot
from aiotasks._scheduler import Scheduler, SchedulerState
from tests.support import Wire, eventually

NOON = dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC)


@task(recurring=True)
async def tick(run: Run) -> None:
    """Logs the slot it ran for."""
    await run.redis.rpush("ticks", run.date)


@task()
async def extract(run: Run) -> None:
    await run.redis.rpush("daily", f"extract:{run.date}")


@task(depends_on=["extract"])
async def load(run: Run) -> None:
    await run.redis.rpush("daily", f"load:{run.date}")


gate: dict[str, asyncio.Event] = {}


@task()
async def slow(run: Run) -> None:
    """Runs until the test releases it."""
    await run.redis.rpush("slow", run.task_id)
    await gate["release"].wait()


async def ticks(client: Redis, key: str = "ticks") -> list[str]:
    return [item.decode() for item in await client.lrange(key, 0, -1)]  # type: ignore[union-attr]


async def runs_done(scheduler: Scheduler, count: int) -> None:
    async def check() -> bool:
        return sum(int(entry["runs"]) for entry in scheduler.status()["schedules"]) >= count

    await eventually(check, f"{count} runs finished")


async def test_replicas_run_each_slot_once_and_sleep_until_the_next(fake_redis: Redis) -> None:
    """Two schedulers on one store fire every slot; its body runs once; between slots they only sleep."""
    clock = FakeClock(NOON)
    schedule = Schedule(tick, every="1m")
    replicas = [Scheduler([schedule], redis=fake_redis, clock=clock) for _ in range(2)]
    async with replicas[0], replicas[1]:
        await clock.sleepers(2)
        assert clock.next_wake == dt.datetime(2026, 1, 1, 12, 1, tzinfo=dt.UTC)
        assert replicas[0].status()["schedules"][0]["next_key"] == "20260101T1201"
        for minute in range(1, 4):
            clock.advance(60)
            for replica in replicas:
                await runs_done(replica, minute)
            await clock.sleepers(2)
        assert await ticks(fake_redis) == ["20260101T1201", "20260101T1202", "20260101T1203"]
        state = replicas[1].status()
        assert state["state"] == "running"
        assert state["schedules"][0]["last_key"] == "20260101T1203"
        assert state["schedules"][0]["next_fire"] == "2026-01-01T12:04:00Z"
    assert replicas[0].state is SchedulerState.STOPPED
    assert replicas[0].status()["schedules"][0]["next_fire"] is None


async def test_between_slots_a_scheduler_sends_nothing_to_redis(redis_url: str, wire: Wire) -> None:
    """Idle means idle: from the end of one slot to the next, not one request reaches Redis (no polling)
    when the trigger listener is off; a slot costs its controls' read, then its run."""
    client = wire.client(redis_url)
    clock = FakeClock(NOON)
    schedules = [Schedule(tick, every="1m"), Schedule([extract, load], cron="0 2 * * *", catchup=0)]
    async with Scheduler(schedules, redis=client, clock=clock, triggers=False) as scheduler:
        await clock.sleepers(2)
        clock.advance(30)  # 12:01:00: the first slot
        await runs_done(scheduler, 1)
        await clock.sleepers(2)
        wire.reset()
        for _ in range(59):  # to 12:01:59, a second at a time: a polling loop would wake and ask
            clock.advance(1)
            for _ in range(10):
                await asyncio.sleep(0)  # let whatever the step woke run
            await clock.sleepers(2)
        assert (wire.round_trips, wire.commands) == (0, 0)
        clock.advance(1)  # 12:02:00: the next slot
        await runs_done(scheduler, 2)
    # The counter does see the slot: the controls' read, acquire, the body's RPUSH, finish.
    assert wire.commands == 4
    assert [tick.decode() for tick in await client.lrange("ticks", 0, -1)] == [  # type: ignore[union-attr]
        "20260101T1201",
        "20260101T1202",
    ]


async def test_between_slots_the_trigger_listener_is_all_a_scheduler_sends(
    redis_url: str, wire: Wire
) -> None:
    """What idle costs with the trigger listener on: one BRPOP at a time over every schedule's
    trigger list, nothing else, between slots."""
    client = wire.client(redis_url)
    clock = FakeClock(NOON)
    schedules = [Schedule(tick, every="1m"), Schedule([extract, load], cron="0 2 * * *", catchup=0)]
    async with Scheduler(schedules, redis=client, clock=clock):
        await clock.sleepers(2)
        wire.reset()

        async def two_reads() -> bool:
            return wire.round_trips >= 2

        await eventually(two_reads, "the listener read twice")
        sent = list(wire.written)
    for request in sent:
        name, *keys, timeout = request.split(b"\r\n")[2:-1:2]
        assert (name, keys, timeout) == (
            b"BRPOP",
            [b"schedule:{aiotasks}:tick:triggers", b"schedule:{aiotasks}:extract,load:triggers"],
            b"1.0",
        )


async def test_a_late_wake_runs_the_current_slot_and_reports_the_missed(fake_redis: Redis) -> None:
    """Woken 3 slots late with no catch-up: the current slot runs, the others go to on_missed."""
    clock = FakeClock(NOON)
    missed: list[Slot] = []
    scheduler = Scheduler(
        [Schedule(tick, every="1m")],
        redis=fake_redis,
        clock=clock,
        on_missed=lambda schedule, slot: missed.append(slot),
    )
    async with scheduler:
        await clock.sleepers(1)
        clock.advance(dt.timedelta(minutes=3, seconds=10))
        await runs_done(scheduler, 1)
    assert await ticks(fake_redis) == ["20260101T1203"]
    assert [slot.key for slot in missed] == ["20260101T1201", "20260101T1202"]
    assert scheduler.status()["schedules"][0]["missed"] == 2


async def test_daily_chain_catches_up_its_last_slot_once_across_replicas(fake_redis: Redis) -> None:
    """Started at 12:00 after a 02:00 slot, two replicas run today's chain once, in dependency order."""
    clock = FakeClock(NOON)
    schedule = Schedule([extract, load], cron="0 2 * * *", tz="Europe/Berlin")
    replicas = [Scheduler(schedule, redis=fake_redis, clock=clock) for _ in range(2)]
    async with replicas[0], replicas[1]:
        for replica in replicas:
            await runs_done(replica, 1)
    assert await ticks(fake_redis, "daily") == ["extract:20260101", "load:20260101"]


@pytest.mark.parametrize("finishes", [True, False])
async def test_stop_lets_runs_finish_within_grace_then_cancels_and_releases(
    fake_redis: Redis, finishes: bool
) -> None:
    """Stopping: a run that ends within grace succeeds; one that doesn't is cancelled and its lock freed."""
    gate["release"] = asyncio.Event()
    clock = FakeClock(NOON)
    scheduler = Scheduler(
        [Schedule(slow, every="1m")], redis=fake_redis, clock=clock, grace=0 if not finishes else 60
    )
    async with scheduler:
        await clock.sleepers(1)
        clock.advance(30)

        async def started() -> bool:
            return await fake_redis.llen("slow") == 1

        await eventually(started, "the slow body started")
        stopping = asyncio.create_task(scheduler.stop())
        await eventually(lambda: _true(scheduler.state is not SchedulerState.RUNNING), "stopping")
        if finishes:
            gate["release"].set()
        await stopping
    assert await fake_redis.exists("lock:slow:20260101T1201") == 0
    assert await fake_redis.exists("success:slow:20260101T1201") == int(finishes)
    assert scheduler.status()["schedules"][0]["last_outcome"] == ("success" if finishes else None)


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("bad", [[], [42], "nightly", None])
def test_scheduler_refuses_what_is_not_a_schedule(bad: object) -> None:
    """A Scheduler needs Schedule objects; anything else is refused before it starts."""
    with pytest.raises(InvalidInput):
        Scheduler(bad)  # type: ignore[arg-type]


async def test_a_scheduler_runs_once(fake_redis: Redis) -> None:
    """serve() after a stop is refused: a Scheduler's state only moves forward."""
    scheduler = Scheduler(Schedule(tick, every="1m"), redis=fake_redis, clock=FakeClock(NOON))
    async with scheduler:
        pass
    with pytest.raises(RuntimeError, match="stopped"):
        await scheduler.serve()
