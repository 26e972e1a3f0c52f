"""Faults survived: dropped connections, Redis down, stopped or stalled mid-run, retried scripts."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.asyncio import Redis

import aiotasks
from aiotasks import RedisUnavailable, Run, Settings, TaskError, task_boilerplate
from aiotasks._keys import TaskKeys
from aiotasks._store import Acquired, Completed, Held, store_for
from tests.proxy import Proxy
from tests.servers import RedisServer, server_version
from tests.support import Gate, eventually, load_scripts, lock_and_marker_keys
from tests.test_cli import ROOT, child_env

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


# -- a read-only replica ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and a replica of it (``--replicaof``), the link up."""
    with (
        RedisServer() as primary,
        RedisServer(["--replicaof", "127.0.0.1", str(primary.port)]) as follower,
        redis.Redis.from_url(follower.url) as sync,
    ):
        deadline = time.monotonic() + 20
        while sync.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "the replica never linked to its primary"
            time.sleep(0.02)
        yield primary, follower


async def test_read_only_replica_is_a_clear_error_and_locks_nothing(
    replica: tuple[RedisServer, RedisServer],
) -> None:
    """Pointed at a read-only replica: RedisUnavailable saying so, the body never runs, no key written."""
    primary, follower = replica
    client = Settings.from_url(follower.url, retries=0).create_client()
    ran: list[str] = []

    @aiotasks.task()
    async def on_replica(run: Run) -> None:
        ran.append(run.task_id)

    try:
        with pytest.raises(RedisUnavailable, match="read-only replica") as caught:
            await task_boilerplate("t", DATE, redis=client)
        assert f"127.0.0.1:{follower.port}" in str(caught.value)
        with pytest.raises(TaskError) as failed:
            await on_replica(DATE, redis=client)
    finally:
        await client.aclose()
    assert failed.value.result is not None
    assert (failed.value.result["status"], failed.value.result["reason"]) == ("failed", "redis_unavailable")
    assert "read-only replica" in failed.value.message
    assert ran == []
    for server in (primary, follower):
        with redis.Redis.from_url(server.url) as sync:
            assert sync.keys("*") == []


async def test_read_only_reply_is_a_known_outcome_nothing_to_give_back(
    replica: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (an error reply was taken for an unknown outcome: the door tried to give back a
    lock and warned it could not): an acquire whose first reply was lost, retried on a replica
    that answers READONLY, fails with nothing given back and no warning."""
    primary, follower = replica
    keys = TaskKeys(f"lock:ro:{DATE}", f"success:ro:{DATE}")
    with redis.Redis.from_url(primary.url) as sync:
        # Our token's lock, replicated (a failover demoted the server that took it): a give-back
        # would reach its DEL, and be refused READONLY.
        sync.set(keys.lock, "tok", px=60_000)
        assert sync.wait(1, 10_000) == 1
        try:
            async with Proxy(follower.port) as proxy:
                client = Redis.from_url(proxy.url)  # the door retries for it
                try:
                    await client.ping()
                    proxy.drop_next_reply()
                    with (
                        caplog.at_level(logging.INFO, logger="aiotasks"),
                        pytest.raises(RedisUnavailable, match="read-only replica"),
                    ):
                        await store_for(client).acquire(keys, "tok", 60_000, check_success=True)
                    await store_for(client).drain()  # a give-back, if any, has its outcome
                finally:
                    await client.aclose()
            assert proxy.dropped.is_set()  # the first attempt's outcome really was unknown
        finally:
            sync.delete(keys.lock)
            sync.wait(1, 10_000)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_cli_on_a_read_only_replica_exits_3(replica: tuple[RedisServer, RedisServer]) -> None:
    """The CLI against a replica: exit 3 (Redis trouble), saying it is a read-only replica."""
    _, follower = replica
    done = subprocess.run(
        [sys.executable, "-m", "aiotasks", "run", "tests/chains/cli_chains.py:chain", "--date", DATE,
         "--redis-url", follower.url],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "read-only replica" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


# -- a stalled server: DEBUG SLEEP --------------------------------------------------------------------

#: Seconds Redis sleeps: far longer than the client's socket_timeout, so a run that waited for
#: Redis to wake, instead of failing, finds it awake.
STALL = 3.0
STALLED_CLIENT_TIMEOUT = 0.2


def _debug_command_args() -> list[str]:
    """Redis 7 (and Valkey, forked from 7.2) refuses DEBUG unless enabled; Redis 6 has no such option."""
    return ["--enable-debug-command", "yes"] if server_version().number >= (7,) else []


@pytest.fixture
async def sleepy() -> AsyncIterator[tuple[RedisServer, Redis]]:
    """A server that accepts DEBUG SLEEP, and an admin client (not the library's) to send it."""
    with RedisServer(_debug_command_args()) as server:
        admin = Redis.from_url(server.url)
        try:
            yield server, admin
        finally:
            await admin.aclose()


async def stall(server: RedisServer, admin: Redis) -> asyncio.Future[object]:
    """Send ``DEBUG SLEEP`` and return once Redis is asleep; the future completes when it wakes."""
    command = admin.execute_command("DEBUG", "SLEEP", STALL)  # type: ignore[no-untyped-call]
    sleeper: asyncio.Future[object] = asyncio.ensure_future(command)

    async def asleep() -> bool:
        return server.asleep()

    await eventually(asleep, "Redis is inside DEBUG SLEEP")
    return sleeper


async def locks(server: RedisServer) -> list[bytes]:
    client = Redis.from_url(server.url)
    try:
        return [key for key in await client.keys("lock:*") if isinstance(key, bytes)]
    finally:
        await client.aclose()


async def test_debug_sleep_mid_run_fails_while_redis_sleeps_and_leaves_no_lock(
    sleepy: tuple[RedisServer, Redis],
) -> None:
    """Regression (a stalled finish whose EVALSHA Redis did not have cached left the lock): Redis
    stalls (DEBUG SLEEP) as the run ends: it fails with redis_unavailable while Redis still sleeps
    (bounded by socket_timeout, not by the stall); once Redis wakes, nothing is locked."""
    server, admin = sleepy
    client = Settings.from_url(server.url, retries=0, socket_timeout=STALLED_CLIENT_TIMEOUT).create_client()
    stalls: list[asyncio.Future[object]] = []

    # A long lock: the lock can't simply expire while the test looks at it.
    @aiotasks.task(lock_timeout=60)
    async def stalled(run: Run) -> None:
        stalls.append(await stall(server, admin))

    try:
        # No scripts cached beforehand: the finish, the first this server sees, is an EVALSHA that
        # Redis answers NOSCRIPT when it wakes. The door wrote it once more as EVAL behind it.
        with pytest.raises(TaskError) as caught:
            await stalled(DATE, redis=client)
        assert server.asleep(), "the run waited for Redis to wake instead of failing"
        assert caught.value.result is not None
        assert (caught.value.result["status"], caught.value.result["reason"]) == (
            "failed",
            "redis_unavailable",
        )
        await stalls[0]  # Redis is awake
        # The finish was written before the stall, so Redis runs it when it wakes: the lock goes
        # (and the marker the finished body earned appears, although the run reported a failure).

        async def unlocked() -> bool:
            return await locks(server) == []

        await eventually(unlocked, "the lock is gone after Redis woke", within=10)
    finally:
        await client.aclose()


async def test_debug_sleep_during_the_acquire_leaves_no_lock(
    sleepy: tuple[RedisServer, Redis],
) -> None:
    """Regression: Redis stalls (DEBUG SLEEP) with an acquire in flight: the run fails with
    redis_unavailable while Redis sleeps, and once Redis wakes the lock taken for it is given back
    (not left for lock_timeout)."""
    server, admin = sleepy
    client = Settings.from_url(server.url, retries=0, socket_timeout=STALLED_CLIENT_TIMEOUT).create_client()
    ran: list[str] = []

    @aiotasks.task(lock_timeout=60)
    async def never(run: Run) -> None:
        ran.append(run.task_id)

    try:
        await load_scripts(admin)
        await client.ping()  # a connection, open and idle: the acquire is written at once
        sleeper = await stall(server, admin)
        with pytest.raises(TaskError) as caught:
            await never(DATE, redis=client)
        assert server.asleep(), "the run waited for Redis to wake instead of failing"
        assert caught.value.result is not None
        assert caught.value.result["reason"] == "redis_unavailable"
        assert ran == []
        await sleeper

        async def unlocked() -> bool:
            return await locks(server) == []

        await eventually(unlocked, "the lock is given back after Redis woke", within=3)
    finally:
        await client.aclose()
