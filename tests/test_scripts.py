"""The Lua scripts' contract, one behaviour each, through the door against a real redis-server.

Written from a mutation campaign over ``_scripts.py``: each test here failed
against a change to a script that the rest of the suite let through.
"""

from __future__ import annotations

from redis.asyncio import Redis

from aiotasks._keys import TaskKeys
from aiotasks._store import Acquired, store_for

DATE = "20261125"
KEYS = TaskKeys(f"lock:s:{DATE}", f"success:s:{DATE}")


async def test_a_retried_acquire_resets_the_ttl_it_finds(redis_client: Redis) -> None:
    """An acquire that finds its own token (a retry whose first reply was lost) sets the TTL to
    lock_timeout again: the lease counts lock_timeout from this acquire, so a TTL left short would
    let another worker in while the body still believes it holds the lock."""
    await redis_client.set(KEYS.lock, "tok", px=1_000)
    store = store_for(redis_client)
    assert await store.acquire(KEYS, "tok", 300_000, check_success=True) == Acquired()
    assert 1_000 < await redis_client.pttl(KEYS.lock) <= 300_000


async def test_status_reads_marker_holder_and_ttl_in_milliseconds(redis_client: Redis) -> None:
    """status() reports the marker (not the lock) as completed, the holder's token, and the lock's
    TTL in milliseconds (the chain's poll waits by it), -2 once there is no lock."""
    store = store_for(redis_client)
    assert await store.acquire(KEYS, "tok", 300_000, check_success=True) == Acquired()
    held = await store.status(KEYS)
    assert (held.completed, held.holder) == (False, "tok")
    assert 1_000 < held.ttl_ms <= 300_000
    assert await store.finish(KEYS, "tok", 60) is True
    done = await store.status(KEYS)
    assert (done.completed, done.holder, done.ttl_ms) == (True, None, -2)
