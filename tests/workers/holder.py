"""A worker that takes a task's lock and reports it: ``python -m tests.workers.holder URL TASK DATE MODE``.

MODE ``hang``: a decorated task (``lock_timeout`` 1 s, renewed while the
process lives) whose body prints ``{"task_id", "fence"}`` on one line and then
waits forever, for the test to SIGKILL the process mid-body.
MODE ``once``: one recurring run that prints the same line and succeeds.
"""

from __future__ import annotations

import asyncio
import json
import sys

from redis.asyncio import Redis

import aiotasks


async def main(url: str, task: str, date: str, mode: str) -> None:
    async def body(run: aiotasks.Run) -> None:
        print(json.dumps({"task_id": run.task_id, "fence": run.fence}), flush=True)
        if mode == "hang":
            await asyncio.Event().wait()

    client = Redis.from_url(url)
    try:
        await aiotasks.Task(body, name=task, lock_timeout=1.0, recurring=True)(date, redis=client)
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
