"""Schedules for the ``trigger`` CLI tests. Bodies log ``task:key:pid`` to the scheduler's own Redis."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiotasks
from aiotasks import Run, Schedule


@aiotasks.task()
async def extract(run: Run) -> None:
    await run.redis.rpush("daily", f"extract:{run.date}:{os.getpid()}")


@aiotasks.task(depends_on=["extract"])
async def load(run: Run) -> None:
    await run.redis.rpush("daily", f"load:{run.date}:{os.getpid()}")


@aiotasks.task(lock_timeout=2)
async def hang(run: Run) -> None:
    """Logs that it started, then runs until its process is killed (its lock then frees within 2 s)."""
    await run.redis.rpush("hung", f"{run.date}:{os.getpid()}")
    await asyncio.Event().wait()


# No catch-up: a replica runs only what it is triggered to run.
schedules = [
    Schedule([extract, load], cron="0 2 * * *", name="nightly", catchup=0),
    Schedule(hang, cron="0 3 * * *", name="hanging", catchup=0),
]


def __getattr__(name: str) -> Any:
    """Bad targets, built only when a test names them."""
    if name == "twins":
        return [Schedule(extract, cron="0 2 * * *"), Schedule(extract, cron="0 4 * * *")]
    raise AttributeError(name)
