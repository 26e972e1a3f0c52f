"""A worker racing others through every key: ``python -m tests.workers.race URL MODE KEYS COROUTINES``.

MODE is ``decorator`` (``@aiotasks.task``) or ``tuple`` (``task_boilerplate`` + ``finish_task``).
All workers block on the list ``go`` (one item each) so they start together. Each body checks it
is alone (an in-body ``SET NX`` flag must not already exist) and appends its
task id to ``ran:<date>``; ``overlaps`` counts bodies that found another inside.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import sys

from redis.asyncio import Redis

import aiotasks
from aiotasks import finish_task, release_lock, task_boilerplate


async def body(client: Redis, date: str, task_id: str) -> None:
    if not await client.set(f"running:{date}", task_id, nx=True, px=60_000):
        await client.incr("overlaps")
    await client.rpush(f"ran:{date}", task_id)
    await asyncio.sleep(0)  # others race while this body holds the lock
    await client.delete(f"running:{date}")


@aiotasks.task(name="race")
async def decorated(run: aiotasks.Run) -> None:
    await body(run.redis, run.date, run.task_id)  # type: ignore[arg-type]


async def seed_style(client: Redis, date: str) -> None:
    conn, lock_key, success_key, result, task_id = await task_boilerplate("race", date, redis=client)
    if result["status"] == "skipped":
        return
    try:
        await body(client, date, task_id)
        await finish_task(conn, lock_key, success_key, task_id)
    finally:
        await release_lock(conn, lock_key, task_id)


async def main(url: str, mode: str, keys: int, coroutines: int) -> None:
    client = Redis.from_url(url)
    dates = [(dt.date(2026, 1, 1) + dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(keys)]
    await client.blpop(["go"], timeout=60)

    async def worker(seed: int) -> None:
        order = dates[:]
        random.Random(seed).shuffle(order)
        for date in order:
            if mode == "decorator":
                await decorated(date, redis=client)
            else:
                await seed_style(client, date)

    try:
        await asyncio.gather(*(worker(seed) for seed in range(coroutines)))
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
