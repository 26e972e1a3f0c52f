"""What the Redis door does with outcomes its caller no longer waits for, against a real redis-server.

Written from a mutation campaign over ``_store.py``: each test here failed
against a change to the door that the rest of the suite let through.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import Run, TaskError, release_lock
from aiotasks._store import store_for
from tests.proxy import Proxy
from tests.support import Gate, cancel_while_queued, eventually, load_scripts, lock_and_marker_keys

DATE = "20261125"
#: Bound on waiting for what must happen at once (guards a hang, times nothing).
HANG = 10.0


async def test_a_release_cancelled_while_it_waits_for_a_lane_is_still_sent(
    redis_client: Redis, gate: Gate
) -> None:
    """A release queued behind busy lanes whose caller is cancelled is not dropped with it: the door
    sends it once a lane is free (a release is never unwanted), and the lock is gone."""
    await load_scripts(redis_client)
    await redis_client.set(f"lock:mine:{DATE}", "tok")
    gate.before = {"acquire"}
    await cancel_while_queued(
        gate, redis_client, lambda: release_lock(redis_client, f"lock:mine:{DATE}", "tok"), "the release"
    )
    await asyncio.wait_for(store_for(redis_client).drain(), HANG)
    assert await lock_and_marker_keys(redis_client) == []


async def test_an_acquire_whose_reply_never_came_is_given_back(
    proxy: Proxy, redis_client: Redis, gate: Gate
) -> None:
    """An acquire that ran on Redis but whose reply timed out (outcome unknown) fails the run with
    redis_unavailable, and the door gives the lock back on the same connection, written right
    behind the unanswered acquire (no new connection, whose handshake could stall too), rather
    than leave the lock for lock_timeout."""
    await load_scripts(redis_client)
    client = Redis.from_url(proxy.url, socket_timeout=0.5)
    ran: list[str] = []

    @aiotasks.task(lock_timeout=600)
    async def unanswered(run: Run) -> None:
        ran.append(run.task_id)

    try:
        await client.ping()
        proxy.hold_replies()  # the acquire runs on Redis; its reply stays here
        with pytest.raises(TaskError) as caught:
            await unanswered(DATE, redis=client)
        assert caught.value.result is not None
        assert caught.value.result["reason"] == "redis_unavailable"
        assert ran == []
        assert gate.log == [["acquire"]]  # the give-back is no batch of its own: it trails the acquire

        async def given_back() -> bool:
            return await redis_client.exists(f"lock:unanswered:{DATE}") == 0

        await eventually(given_back, "the lock is given back while the replies are still held")
    finally:
        proxy.release_replies()
        await client.aclose()
