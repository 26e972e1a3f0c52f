"""Schedules and chains for the web console tests. Bodies log ``task:key:pid`` to the run's Redis.

No cron of these fires during a test (1 January, 00:00 UTC) and none catches up:
a replica runs them only when triggered; ``tick`` fires every second.
"""

from __future__ import annotations

import asyncio
import os

import aiotasks
from aiotasks import Run, Schedule

#: The error text of ``report``: HTML that must show as text.
HTML_ERROR = "<script>alert('pwned')</script><b>bold</b> & more"


@aiotasks.task()
async def extract(run: Run) -> None:
    run.result["rows"] = 42
    await run.redis.rpush("ran", f"extract:{run.date}:{os.getpid()}")


@aiotasks.task(depends_on=["extract"])
async def transform(run: Run) -> None:
    await run.redis.rpush("ran", f"transform:{run.date}:{os.getpid()}")


@aiotasks.task()
async def report(run: Run) -> None:
    raise RuntimeError(HTML_ERROR)


@aiotasks.task(lock_timeout=3)
async def crunch(run: Run) -> None:
    """Logs that it started, then runs until cancelled or killed (its lock renews every second)."""
    await run.redis.rpush("started", f"crunch:{run.date}:{os.getpid()}")
    await asyncio.Event().wait()


@aiotasks.task(recurring=True, success_ttl=3600)
async def beat(run: Run) -> None:
    await run.redis.rpush("beats", f"{run.date}:{os.getpid()}")


NEVER = "0 0 1 1 *"
nightly = [extract, transform]
broken = [report]
slow = [crunch]
schedules = [
    Schedule(nightly, cron=NEVER, name="nightly", catchup=0),
    Schedule(broken, cron=NEVER, name="broken", catchup=0),
    Schedule(slow, cron=NEVER, name="slow", catchup=0),
    Schedule(beat, every="1s", name="tick"),
]
