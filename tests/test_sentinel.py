"""Sentinel: a client from redis.asyncio.sentinel.Sentinel works as any other client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio.sentinel import Sentinel as AsyncSentinel

import aiotasks
from aiotasks import Run, finish_task, task_boilerplate
from tests.servers import RedisServer, Sentinel

DATE = "20261125"


@pytest.fixture(scope="module")
def sentinel() -> Iterator[Sentinel]:
    with RedisServer() as master, Sentinel(master) as watching:
        yield watching


@aiotasks.task()
async def watched(run: Run) -> None:
    run.result["via"] = "sentinel"


async def test_sentinel_managed_client_runs_tasks(sentinel: Sentinel) -> None:
    """A master_for() client runs decorated tasks, the seed's flow and a chain."""
    manager = AsyncSentinel([("127.0.0.1", sentinel.port)], socket_timeout=2)  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2
    client = manager.master_for("mymaster", socket_timeout=2)
    try:
        assert (await watched(DATE, redis=client))["status"] == "success"
        conn, lock_key, success_key, result, task_id = await task_boilerplate("seed", DATE, redis=client)
        assert result["status"] == "pending"
        assert await finish_task(conn, lock_key, success_key, task_id) is True
        results = await aiotasks.run_chain([watched], "20261126", redis=client)
        assert results["watched"]["status"] == "success"
        assert await client.keys("lock:*") == []
    finally:
        await client.aclose()
        for server in manager.sentinels:
            await server.aclose()
