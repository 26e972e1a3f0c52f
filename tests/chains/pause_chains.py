"""Schedules for the pause/resume CLI tests: two 1-second schedules and a daily chain.

Bodies log ``key:pid`` to the scheduler's own Redis, one list per task.
"""

from __future__ import annotations

import datetime as dt
import os

import aiotasks
from aiotasks import Run, Schedule


async def _log(run: Run) -> None:
    await run.redis.rpush(run.task_name, f"{run.date}:{os.getpid()}")


@aiotasks.task(recurring=True, success_ttl=600)
async def pulse(run: Run) -> None:
    await _log(run)


@aiotasks.task(recurring=True, success_ttl=600, depends_on=["pulse"])
async def echo(run: Run) -> None:
    await _log(run)


@aiotasks.task(recurring=True, success_ttl=600)
async def other(run: Run) -> None:
    await _log(run)


@aiotasks.task()
async def extract(run: Run) -> None:
    await _log(run)


@aiotasks.task(depends_on=["extract"])
async def load(run: Run) -> None:
    await _log(run)


#: Overslept slots up to 3 s old still run: a busy test machine must not make gaps.
RECENT = dt.timedelta(seconds=3)
schedules = [
    Schedule([pulse, echo], every="1s", name="pulse", catchup=RECENT),
    Schedule(other, every="1s", name="other", catchup=RECENT),
    Schedule([extract, load], cron="0 2 * * *", name="nightly", catchup=0),
]
nightly = [extract, load]
