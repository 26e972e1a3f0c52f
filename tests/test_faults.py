"""Faults survived: dropped connections, Redis down, stopped or stalled mid-run, retried scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import RedisUnavailable, Run, Settings, TaskError, task_boilerplate
from aiotasks._keys import TaskKeys
from aiotasks._store import Acquired, Completed, Held, store_for
from tests.servers import RedisServer
from tests.support import Gate, eventually, load_scripts, lock_and_marker_keys

DATE = "20261125"


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server this test may stop, stall and restart; AOF on, so what was written survives a restart."""
    with RedisServer(["--appendonly", "yes", "--appendfsync", "always"]) as server:
        yield server


async def kill_library_connections(admin: Redis) -> int:
    """CLIENT KILL every normal connection but the admin's own; returns how many were killed."""
    return int(await admin.client_kill_filter(_type="normal", skipme=True))


async def test_connection_killed_between_acquire_and_finish(redis_url: str, redis_client: Redis) -> None:
    """Regression (Redis.from_url clients never retry): CLIENT KILL mid-run; the door retries the finish."""
    client = Redis.from_url(redis_url)
    bodies = 0

    @aiotasks.task()
    async def dropped(run: Run) -> None:
        nonlocal bodies
        bodies += 1
        assert await kill_library_connections(redis_client) >= 1

    try:
        result = await dropped(DATE, redis=client)
    finally:
        await client.aclose()
    assert result["status"] == "success"
    assert bodies == 1
    assert await lock_and_marker_keys(redis_client) == [f"success:dropped:{DATE}".encode()]


async def test_connection_killed_while_acquire_is_in_flight(
    redis_client: Redis, redis_url: str, gate: Gate
) -> None:
    """The acquire's connection dies as it is sent: the retried acquire (same token) takes the lock once."""
    client = Settings.from_url(redis_url).create_client()
    await load_scripts(redis_client)
    try:
        await client.ping()  # the connection the acquire will use exists
        gate.before = {"acquire"}

        @aiotasks.task()
        async def flaky_link(run: Run) -> None:
            run.result["ran"] = True

        runner = asyncio.ensure_future(flaky_link(DATE, redis=client))
        await asyncio.wait_for(gate.reached.wait(), timeout=10)
        await kill_library_connections(redis_client)
        gate.open()
        result = await runner
    finally:
        await client.aclose()
    assert (result["status"], result["ran"]) == ("success", True)
    assert await redis_client.keys("lock:*") == []


async def test_redis_down_at_start_is_a_clear_bounded_error(own_server: RedisServer) -> None:
    """Redis down before the run: RedisUnavailable naming host:port, after the client's bounded retries."""
    own_server.halt()
    client = Settings.from_url(own_server.url, retries=2, connect_timeout=0.5).create_client()
    try:
        with pytest.raises(RedisUnavailable, match=f"127.0.0.1:{own_server.port}"):
            await task_boilerplate("t", DATE, redis=client)

        @aiotasks.task()
        async def never(run: Run) -> None:
            raise AssertionError("must not run")

        with pytest.raises(TaskError) as caught:
            await never(DATE, redis=client)
        assert caught.value.result is not None
        assert caught.value.result["reason"] == "redis_unavailable"
    finally:
        await client.aclose()


async def test_redis_stopped_mid_run_fails_the_run_then_recovers(own_server: RedisServer) -> None:
    """Redis stops mid-body: the run fails (redis_unavailable), no marker; once back, runs work again."""
    client = Settings.from_url(
        own_server.url, retries=1, connect_timeout=0.5, socket_timeout=1
    ).create_client()

    @aiotasks.task(lock_timeout=1)
    async def interrupted(run: Run) -> None:
        if run.result.get("second"):
            return
        await asyncio.to_thread(own_server.halt)

    try:
        with pytest.raises(TaskError) as caught:
            await interrupted(DATE, redis=client)
        assert caught.value.result is not None
        assert (caught.value.result["status"], caught.value.result["reason"]) == (
            "failed",
            "redis_unavailable",
        )
        await asyncio.to_thread(own_server.restart)
        assert await client.exists(f"success:interrupted:{DATE}") == 0  # the AOF kept no marker

        @aiotasks.task(name="interrupted")
        async def again(run: Run) -> None:
            return None

        async def succeeded() -> bool:
            return bool((await again(DATE, redis=client))["status"] == "success")

        await eventually(succeeded, "a run succeeded after Redis came back (the old lock expired)")
    finally:
        await client.aclose()


async def test_stalled_redis_fails_cleanly_then_recovers(own_server: RedisServer) -> None:
    """A frozen Redis (SIGSTOP): the finish times out, the run fails; after SIGCONT runs work again."""
    client = Settings.from_url(own_server.url, retries=0, socket_timeout=0.5).create_client()

    @aiotasks.task(lock_timeout=2)
    async def frozen(run: Run) -> None:
        own_server.pause()

    try:
        with pytest.raises(TaskError) as caught:
            await frozen(DATE, redis=client)
        assert caught.value.result is not None
        assert caught.value.result["reason"] == "redis_unavailable"
        assert "Timeout" in caught.value.message or "timed out" in caught.value.message.lower()
        own_server.resume()

        async def recovered() -> bool:
            try:
                return bool((await _after_stall(DATE, redis=client))["status"] == "success")
            except TaskError:
                return False

        await eventually(recovered, "runs succeed again after the stall")
    finally:
        own_server.resume()
        await client.aclose()


@aiotasks.task(name="after_stall")
async def _after_stall(run: Run) -> None:
    return None


async def test_scripts_are_safe_to_retry(redis_client: Redis) -> None:
    """Retried acquire (same token) is acquired, retried finish sees its marker; renew never stretches."""
    store = store_for(redis_client)
    keys = TaskKeys(f"lock:r:{DATE}", f"success:r:{DATE}")
    assert await store.acquire(keys, "tok", 10_000, check_success=True) == Acquired()
    assert await store.acquire(keys, "tok", 10_000, check_success=True) == Acquired()
    held = await store.acquire(keys, "other", 10_000, check_success=True)
    assert isinstance(held, Held)
    assert held.holder == "tok"
    assert 0 < held.ttl_ms <= 10_000
    assert await store.renew(keys.lock, "tok", 10_000) is True
    assert await redis_client.pttl(keys.lock) <= 10_000
    assert await store.renew(keys.lock, "other", 10_000) is False
    assert await store.finish(keys, "tok", 60) is True
    assert await store.finish(keys, "tok", 60) is True  # the retry sees the marker it wrote
    assert await store.release(keys.lock, "tok") is False
    assert await store.acquire(keys, "tok", 10_000, check_success=True) == Completed()
    assert await redis_client.keys("lock:*") == []
