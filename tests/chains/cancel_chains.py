"""Chains and schedules for the ``cancel`` CLI tests.

Bodies log ``event:date:pid`` to the Redis they run on. Their lock_timeout is short (3 s), so
their lease renews every second and a cancel request reaches them within about a second.
"""

from __future__ import annotations

import asyncio
import os

import aiotasks
from aiotasks import Run, Schedule

#: The bodies' lock_timeout: a renewal every second (long enough for a loaded CI machine).
LOCK = 3.0


@aiotasks.task(lock_timeout=LOCK)
async def sleeper(run: Run) -> None:
    """Waits on an event it never gets, until it is cancelled."""
    await run.redis.rpush("sleeping", f"started:{run.date}:{os.getpid()}")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.shield(run.redis.rpush("sleeping", f"cancelled:{run.date}:{os.getpid()}"))
        raise


@aiotasks.task(depends_on=["sleeper"])
async def after(run: Run) -> None:
    await run.redis.rpush("after", f"started:{run.date}:{os.getpid()}")


@aiotasks.task(lock_timeout=LOCK)
async def stubborn(run: Run) -> None:
    """Swallows the cancellation and returns, as a careless body might."""
    await run.redis.rpush("sleeping", f"started:{run.date}:{os.getpid()}")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await run.redis.rpush("sleeping", f"swallowed:{run.date}:{os.getpid()}")


chain = [sleeper, after]
careless = [stubborn]
# No catch-up: a replica runs only what it is triggered to run.
schedules = [Schedule([sleeper, after], cron="0 2 * * *", name="nightly", catchup=0)]
