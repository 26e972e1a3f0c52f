"""Schedules for the ``serve`` tests. Bodies log to the scheduler's own Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Any

import aiotasks
from aiotasks import Run, Schedule


async def _tick(run: Run) -> None:
    """Logs ``slot:pid:task_id:state``; once ``hold`` is set, the first run to see it hangs."""
    held = await run.redis.exists("hold") and await run.redis.set("holder", os.getpid(), nx=True)
    state = "held" if held else "free"
    await run.redis.rpush("ticks", f"{run.date}:{os.getpid()}:{run.task_id}:{state}")
    if held:
        await asyncio.Event().wait()


tick = aiotasks.task(name="tick", recurring=True, success_ttl=600)(_tick)
#: The same body, with a lock that outlives a killed holder by 3 s at most (not 300).
beat = aiotasks.task(name="beat", recurring=True, success_ttl=600, lock_timeout=3)(_tick)


@aiotasks.task()
async def extract(run: Run) -> None:
    await run.redis.rpush("daily", f"extract:{run.date}")


@aiotasks.task(depends_on=["extract"])
async def load(run: Run) -> None:
    await run.redis.rpush("daily", f"load:{run.date}")


schedules = [
    # Overslept slots up to 3 s old still run: a busy test machine must not make gaps.
    Schedule(tick, every="1s", catchup=dt.timedelta(seconds=3)),
    Schedule([extract, load], cron="0 0 * * *"),
]
not_a_schedule = [extract, load]
dying = [Schedule(beat, every="1s", catchup=dt.timedelta(seconds=3))]


def __getattr__(name: str) -> Any:
    """Bad schedules, built only when a test names them (building one raises)."""
    if name == "bad_cron":
        return Schedule(tick, cron="61 * * * *")
    if name == "bad_zone":
        return Schedule(tick, every="1m", tz="Mars/Olympus")
    if name == "too_fast":
        return Schedule(tick, every=dt.timedelta(milliseconds=100))
    raise AttributeError(name)
