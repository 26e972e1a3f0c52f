"""Scheduler.status() from the first moment a scheduler says it runs (what a health check reads)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from aiotasks import Schedule
from aiotasks._clock import FakeClock
from aiotasks._scheduler import Scheduler
from tests.support import Gate
from tests.test_scheduler import NOON, extract, load, runs_done, tick


async def test_status_says_running_with_every_next_fire_as_soon_as_async_with_returns(
    redis_client: Redis, gate: Gate
) -> None:
    """Regression (test_service_example's race: /health read ``next_fire`` None right after start):
    entering ``async with Scheduler`` returned before the scheduler ran, and a daily schedule's
    driver set its next fire only after its catch-up's read of Redis. Now the body of the
    ``async with`` sees ``running`` and every schedule's next fire, even while that read is held."""
    gate.before.add("schedule")  # the catch-up's read of the schedule's controls
    clock = FakeClock(NOON)
    schedules = [Schedule(tick, every="1m"), Schedule([extract, load], cron="0 2 * * *")]
    async with Scheduler(schedules, redis=redis_client, clock=clock, triggers=False) as scheduler:
        first = scheduler.status()
        assert first["state"] == "running"
        # 12:00:30: the next minute; the daily 02:00 is tomorrow's (today's is being caught up).
        assert [entry["next_key"] for entry in first["schedules"]] == ["20260101T1201", "20260102"]
        assert [entry["next_fire"] for entry in first["schedules"]] == [
            "2026-01-01T12:01:00Z",
            "2026-01-02T02:00:00Z",
        ]
        await asyncio.wait_for(gate.reached.wait(), timeout=20)  # bounds a hang; times nothing
        assert scheduler.status() == first  # the catch-up is held mid-read: nothing went missing
        gate.open()
        await runs_done(scheduler, 1)  # the catch-up ran
        assert [entry["next_key"] for entry in scheduler.status()["schedules"]] == [
            "20260101T1201",
            "20260102",
        ]
