"""A soak worker: ``python -m tests.workers.soak URL RUNS KEYS SEED``.

Runs RUNS calls of decorated tasks over KEYS (task, date) pairs with random
body failures and random cancellations landing anywhere (while the acquire is
queued or in flight, in the body, during the finish). Bodies record, in Redis:
``started:<key>`` / ``completed:<key>`` (their task ids, in order),
``violations:overlap`` (another body of the key was inside) and
``violations:after_marker`` (a body started although the key's marker existed).

It prints one JSON line: how many calls ended in each outcome, and the
``[task:date, task_id]`` of every run it saw succeed.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from redis.asyncio import Redis

import aiotasks
from aiotasks import Run, TaskError
from aiotasks._cancel import shielded
from aiotasks._store import AnyRedis

TASKS = 10


async def body(run: Run) -> None:
    key = f"{run.task_name}:{run.date}"
    flag = f"running:{key}"
    client = run.redis
    if await client.exists(run.success_key):
        await client.incr("violations:after_marker")
    try:
        # A cancellation can land while SET runs on the server; the finally then still clears the flag.
        if not await client.set(flag, run.task_id, nx=True, px=60_000):
            await client.incr("violations:overlap")
        await client.rpush(f"started:{key}", run.task_id)
        await asyncio.sleep(random.uniform(0, 0.002))
        if random.random() < 0.15:
            raise RuntimeError("random failure")
        await client.rpush(f"completed:{key}", run.task_id)
    finally:
        # The timeout can land in this cleanup too: it must finish before the lock goes.
        await shielded(clear(client, flag, run.task_id))


async def clear(client: AnyRedis, flag: str, task_id: str) -> None:
    if await client.get(flag) == task_id.encode():  # only this run's flag (the lock is still ours)
        await client.delete(flag)


TASK_OBJECTS = [aiotasks.Task(body, name=f"soak{index}", lock_timeout=30) for index in range(TASKS)]


async def main(url: str, runs: int, keys: int, seed: int) -> None:
    random.seed(seed)
    client = Redis.from_url(url)
    dates = [f"2026{1 + d // 28:02d}{1 + d % 28:02d}" for d in range(max(1, keys // TASKS))]
    await client.blpop(["go"], timeout=60)
    outcomes = {"success": 0, "skipped": 0, "failed": 0, "cancelled": 0}
    successes: list[tuple[str, str]] = []

    async def one() -> None:
        task = random.choice(TASK_OBJECTS)
        date = random.choice(dates)
        deadline = random.choice([None, None, random.uniform(0, 0.004)])
        try:
            async with asyncio.timeout(deadline):
                result = await task(date, redis=client)
            outcomes[result["status"]] += 1
            if result["status"] == "success":
                successes.append((f"{task.name}:{date}", result["task_id"]))
        except TaskError:
            outcomes["failed"] += 1
        except TimeoutError:
            outcomes["cancelled"] += 1

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    try:
        await asyncio.gather(*(worker(runs // 8) for _ in range(8)))
    finally:
        await client.aclose()
    print(json.dumps({"outcomes": outcomes, "successes": successes}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
