"""Exactly once across OS processes: workers racing on the same keys never run a body twice."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from redis.asyncio import Redis

KEYS = 300
ROOT = Path(__file__).resolve().parent.parent


async def test_processes_and_coroutines_race_on_hundreds_of_keys(redis_client: Redis, redis_url: str) -> None:
    """4 processes x 16 coroutines race through 300 keys (both APIs): each body ran once, alone."""
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.workers.race", redis_url, mode, str(KEYS), "16", cwd=ROOT
        )
        for mode in ("decorator", "tuple", "decorator", "tuple")
    ]
    await redis_client.rpush("go", *range(len(workers)))
    codes = [await worker.wait() for worker in workers]
    assert codes == [0, 0, 0, 0]
    assert await redis_client.get("overlaps") is None
    ran = [await redis_client.llen(key) for key in await redis_client.keys("ran:*")]
    assert len(ran) == KEYS
    assert set(ran) == {1}
    assert len(await redis_client.keys("success:race:*")) == KEYS
    assert await redis_client.keys("lock:*") == []
