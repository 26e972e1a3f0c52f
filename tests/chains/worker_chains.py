"""Chains that several worker processes run together (issue 8).

Bodies log "start:<task>" / "end:<task>" to the Redis list ``log`` (a total
order). ``odds`` waits for an item on ``gate:odds`` before it ends, so a test
can keep it running on one worker. ``hold`` blocks forever on its first run
(the test SIGKILLs that worker) and ends normally afterwards.
"""

from __future__ import annotations

import asyncio
import os

import aiotasks
from aiotasks import Run


async def log(run: Run, event: str) -> None:
    await run.redis.rpush("log", f"{event}:{run.task_name}")


def step(name: str, *depends_on: str, gate: bool = False, recurring: bool = False) -> aiotasks.Task:
    async def body(run: Run) -> None:
        await log(run, "start")
        if gate:
            await run.redis.blpop([f"gate:{name}"], timeout=0)
        await asyncio.sleep(0.01)
        await log(run, "end")

    return aiotasks.Task(body, name=name, depends_on=depends_on, recurring=recurring)


chain = [
    step("extract"),
    step("analyse", "extract"),
    step("index", "analyse"),
    step("odds", gate=True),
    step("report", "index", "odds"),
]

recurring_chain = [step("odds", gate=True, recurring=True), step("report", "odds")]


@aiotasks.task(lock_timeout=2)
async def hold(run: Run) -> None:
    first_attempt = await run.redis.incr("hold:attempts") == 1  # counted before it is announced
    await run.redis.rpush("log", f"start:hold:{os.getpid()}")
    if first_attempt:
        await asyncio.Event().wait()  # the first holder is killed here
    await log(run, "end")


kill_chain = [hold, step("after", "hold")]  # the killed worker holds nothing else


@aiotasks.task()
async def always_fails(run: Run) -> None:
    await log(run, "start")
    raise RuntimeError("always fails")


failing_chain = [step("first"), always_fails, step("after", "always_fails")]
