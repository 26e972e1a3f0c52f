"""Regressions of the Redis door (issue 12: items 1, 4, 5, 6 and 13a), each against real redis-servers.

Stalls and lost replies come from :class:`tests.proxy.Proxy`, a loopback proxy
in front of the session's redis-server: a test learns from its events that a
request or reply is being held, so nothing here waits on time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import redis
from redis.asyncio import Connection, ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import aiotasks
from aiotasks import (
    AioTasksError,
    RedisAuthError,
    RedisUnavailable,
    Run,
    TaskError,
    finish_task,
    release_lock,
    task_boilerplate,
)
from aiotasks import _store as door
from aiotasks._keys import TaskKeys
from aiotasks._store import Acquired, store_for
from aiotasks._wire import pool_limit, take
from tests.proxy import Proxy
from tests.servers import LocalCluster, RedisServer, free_port
from tests.support import eventually, lock_and_marker_keys

DATE = "20261125"
KEYS = TaskKeys(f"lock:t:{DATE}", f"success:t:{DATE}")
#: Generous bound on waiting for something that must happen at once (guards a hang, times nothing).
HANG = 10.0


# -- cancelling at an exact moment, four ways -----------------------------------------

Work = Callable[[], Awaitable[object]]


async def cancel_when(moment: asyncio.Event, work: Work, how: str) -> None:
    """Run ``work``; once ``moment`` is set, cancel it ``how``; return when ``work`` has ended.

    ``native`` Task.cancel(), ``timeout`` asyncio.timeout expiring, ``scope``
    anyio CancelScope.cancel(), ``move_on`` an anyio.move_on_after deadline
    passing. Each must end ``work`` with its usual outcome.
    """
    loop = asyncio.get_running_loop()
    if how == "native":
        runner = asyncio.ensure_future(work())
        await asyncio.wait_for(moment.wait(), HANG)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(runner, HANG)
        return

    async def guarded() -> None:
        if how == "timeout":
            with pytest.raises(TimeoutError):
                await expiring()
        elif how == "scope":
            with anyio.CancelScope() as scope:
                fire(scope.cancel)
                await work()
            assert scope.cancelled_caught
        else:
            with anyio.move_on_after(3600) as scope:
                fire(lambda: setattr(scope, "deadline", anyio.current_time()))
                await work()
            assert scope.cancelled_caught

    async def expiring() -> None:
        async with asyncio.timeout(None) as timer:
            fire(lambda: timer.reschedule(loop.time()))
            await work()

    def fire(cancel: Callable[[], object]) -> None:
        async def when() -> None:
            await moment.wait()
            cancel()

        trigger = loop.create_task(when())
        triggers.append(trigger)

    triggers: list[asyncio.Task[None]] = []
    await asyncio.wait_for(guarded(), HANG)
    await asyncio.gather(*triggers)


CANCELLERS = ["native", "timeout", "scope", "move_on"]


# -- item 5: cancellation no longer waits for Redis ----------------------------------


@pytest.mark.parametrize("how", CANCELLERS)
async def test_cancelled_acquire_returns_while_its_reply_is_held_then_the_lock_is_given_back(
    proxy: Proxy, proxied: Redis, redis_client: Redis, how: str
) -> None:
    """Regression (issue 12.5, cancellation waited for Redis): an acquire cancelled with its reply
    outstanding returns at once; the door reads the reply on the same connection and gives back
    the lock it took."""
    store = store_for(proxied)
    proxy.hold_replies()
    await cancel_when(proxy.reply_held, lambda: store.acquire(KEYS, "tok", 60_000, check_success=True), how)
    assert not proxy._replies_open.is_set()  # the caller is back while Redis's answer is still held
    assert await redis_client.get(KEYS.lock) == b"tok"  # the script ran: the lock was taken
    proxy.release_replies()
    await asyncio.wait_for(store.drain(), HANG)
    assert await redis_client.exists(KEYS.lock) == 0  # given back once the reply said it was ours
    assert proxy.connections == 1  # read on the same connection: never dropped and reopened
    assert await store.status(KEYS) == door.LockState(False, None, -2)  # and it still works


@pytest.mark.parametrize("how", CANCELLERS)
async def test_cancelled_acquire_not_yet_run_is_given_back_once_it_runs(
    proxy: Proxy, proxied: Redis, redis_client: Redis, how: str
) -> None:
    """Regression (issue 12, weak gate test): an acquire cancelled after it was written but before
    Redis ran it returns at once; when it does run, the lock it takes is given back."""
    store = store_for(proxied)
    proxy.hold_requests()
    await cancel_when(proxy.request_held, lambda: task_boilerplate("t", DATE, redis=proxied), how)
    assert await redis_client.exists(KEYS.lock) == 0  # not run yet: the caller did not wait for it
    proxy.release_requests()
    await asyncio.wait_for(store.drain(), HANG)
    assert await lock_and_marker_keys(redis_client) == []


@pytest.mark.parametrize("how", CANCELLERS)
async def test_cancelled_release_returns_at_once_and_still_takes_effect(
    proxy: Proxy, proxied: Redis, redis_client: Redis, how: str
) -> None:
    """Regression (issue 12.5: asyncio.timeout(0.2) around a release against a stall took the
    stall's length, never returned with socket_timeout=None): the caller returns while the release
    is held, and the release still lands."""
    store = store_for(proxied)
    assert await store.acquire(KEYS, "tok", 60_000, check_success=True) == Acquired()
    proxy.hold_requests()
    await cancel_when(proxy.request_held, lambda: release_lock(proxied, KEYS.lock, "tok"), how)
    assert await redis_client.get(KEYS.lock) == b"tok"  # not released yet: the caller did not wait
    proxy.release_requests()
    await asyncio.wait_for(store.drain(), HANG)
    assert await redis_client.exists(KEYS.lock) == 0


async def test_release_cancelled_before_it_is_written_is_still_sent(
    redis_url: str, redis_client: Redis
) -> None:
    """A release whose caller is cancelled before the request is written (here: while connecting)
    is still sent by the door: a release is never unwanted."""
    await redis_client.set(KEYS.lock, "tok")
    client = Redis.from_url(redis_url)  # no connection yet: the release must connect first
    try:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await release_lock(client, KEYS.lock, "tok")
        assert scope.cancelled_caught
        await asyncio.wait_for(store_for(client).drain(), HANG)
    finally:
        await client.aclose()
    assert await redis_client.exists(KEYS.lock) == 0


@pytest.mark.parametrize("how", ["native", "scope"])
async def test_cancelled_finish_returns_at_once_and_still_records_the_success(
    proxy: Proxy, proxied: Redis, redis_client: Redis, how: str
) -> None:
    """Regression (issue 12.5): a finish cancelled once written returns at once, and takes effect."""
    conn, lock_key, success_key, result, token = await task_boilerplate("t", DATE, redis=proxied)
    assert result["status"] == "pending"
    proxy.hold_requests()
    await cancel_when(proxy.request_held, lambda: finish_task(conn, lock_key, success_key, token), how)
    assert await redis_client.exists(success_key) == 0
    proxy.release_requests()
    await asyncio.wait_for(store_for(proxied).drain(), HANG)
    assert await lock_and_marker_keys(redis_client) == [success_key.encode()]


@pytest.mark.parametrize("how", CANCELLERS)
async def test_cancelled_run_returns_without_waiting_for_its_release_reply(
    proxy: Proxy, proxied: Redis, redis_client: Redis, how: str
) -> None:
    """Regression (issue 12.5): a decorated run cancelled mid-body gives its lock back and returns
    while Redis's answer to that release is still held (the door reads it later)."""
    started = asyncio.Event()
    releasing = asyncio.Event()

    @aiotasks.task(name="t")
    async def body(run: Run) -> None:
        proxy.hold_replies()
        started.set()
        await asyncio.Event().wait()

    async def when_released() -> None:
        await started.wait()
        await proxy.reply_held.wait()  # the cleanup's release ran; its reply is held
        releasing.set()

    watcher = asyncio.ensure_future(when_released())
    moment = asyncio.Event()
    started_then_cancel = asyncio.ensure_future(_chain_events(started, moment))
    await cancel_when(moment, lambda: body(DATE, redis=proxied), how)
    await asyncio.wait_for(watcher, HANG)
    await started_then_cancel
    assert releasing.is_set()
    assert not proxy._replies_open.is_set()  # returned before the release's reply arrived
    assert await redis_client.exists(KEYS.lock) == 0  # the release itself ran
    proxy.release_replies()
    await asyncio.wait_for(store_for(proxied).drain(), HANG)
    assert await proxied.ping()


async def _chain_events(first: asyncio.Event, then: asyncio.Event) -> None:
    await first.wait()
    then.set()


async def test_run_whose_lock_was_lost_returns_without_waiting_for_redis(
    proxy: Proxy, proxied: Redis
) -> None:
    """Regression (issue 12.5: a lock_lost run returned only when Redis answered): the lease's
    renewal gets no answer, the lock's TTL passes, the run fails with lock_lost while Redis's
    replies are still held."""
    started = asyncio.Event()

    @aiotasks.task(name="t", lock_timeout=0.3)
    async def stalled(run: Run) -> None:
        proxy.hold_replies()  # from the first renewal on, Redis's answers are held
        started.set()
        await asyncio.Event().wait()

    with pytest.raises(TaskError) as caught:
        await asyncio.wait_for(stalled(DATE, redis=proxied), HANG)
    assert started.is_set()
    assert caught.value.result is not None
    assert caught.value.result["reason"] == "lock_lost"
    assert proxy.reply_held.is_set()
    assert not proxy._replies_open.is_set()  # returned while Redis's answers were held
    proxy.release_replies()
    await asyncio.wait_for(store_for(proxied).drain(), HANG)


# -- item 6: a release's outcome survives a retry ----------------------------------------


async def test_release_whose_reply_was_lost_reports_it_released(
    proxy: Proxy, proxied: Redis, redis_client: Redis
) -> None:
    """Regression (issue 12.6): the connection drops after Redis ran the release; the door's retry
    finds no lock and reports True (the first attempt released it), not False."""
    store = store_for(proxied)
    assert await store.acquire(KEYS, "tok", 60_000, check_success=True) == Acquired()
    proxy.drop_next_reply()
    assert await release_lock(proxied, KEYS.lock, "tok") is True
    assert proxy.dropped.is_set()  # the reply really was lost, and the release retried
    assert proxy.connections == 2
    assert await redis_client.exists(KEYS.lock) == 0


async def test_release_of_a_lock_held_by_another_run_stays_false_after_a_retry(
    proxy: Proxy, proxied: Redis, redis_client: Redis
) -> None:
    """A retried release that finds another run's lock still reports False, and leaves it alone."""
    await redis_client.set(KEYS.lock, "other")
    proxy.drop_next_reply()
    assert await release_lock(proxied, KEYS.lock, "tok") is False
    assert proxy.dropped.is_set()
    assert await redis_client.get(KEYS.lock) == b"other"


async def test_release_of_an_expired_lock_is_false_without_a_retry(proxied: Redis) -> None:
    """Without a lost reply, releasing a lock that is gone reports False, as before."""
    assert await release_lock(proxied, KEYS.lock, "tok") is False


async def test_recurring_run_whose_release_reply_was_lost_succeeds(
    proxy: Proxy, proxied: Redis, redis_client: Redis
) -> None:
    """Regression (issue 12.6: a recurring @task that succeeded was reported failed/lock_lost when
    its release's reply was lost and the retry found no lock)."""

    @aiotasks.task(name="t", recurring=True)
    async def recurring(run: Run) -> None:
        proxy.drop_next_reply()  # the next reply is the release's

    result = await recurring(DATE, redis=proxied)
    assert (result["status"], result["reason"]) == ("success", None)
    assert proxy.dropped.is_set()
    assert await lock_and_marker_keys(redis_client) == []


# -- item 4: an unreachable Redis fails as fast as the client itself --------------------


class CountingConnection(Connection):
    """Counts TCP connect attempts (redis-py's ``_connect``), whoever makes them."""

    attempts = 0

    async def _connect(self) -> None:
        type(self).attempts += 1
        await super()._connect()  # type: ignore[no-untyped-call]


@pytest.fixture
async def unreachable() -> AsyncIterator[Callable[[], Redis]]:
    """Clients of a closed local port that retry connecting twice (3 attempts), without backoff."""
    port = free_port()
    clients: list[Redis] = []
    CountingConnection.attempts = 0

    def make() -> Redis:
        pool = ConnectionPool(
            connection_class=CountingConnection,
            host="127.0.0.1",
            port=port,
            retry=Retry(NoBackoff(), 2),
        )
        clients.append(Redis.from_pool(pool))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


async def test_unreachable_redis_costs_the_clients_own_connect_attempts_only(
    unreachable: Callable[[], Redis], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 12.4: 8x slower than redis-py, then gave back a lock it never sent): a
    refused connect is a known outcome: as many connect attempts as the client's own ping, no
    give-back, no warning."""
    with pytest.raises(redis.ConnectionError):
        await unreachable().ping()
    own = CountingConnection.attempts  # 3 on redis-py 8 (it retries a refused connect), 1 on 6.x
    assert own >= 1

    CountingConnection.attempts = 0
    with caplog.at_level(logging.INFO, logger="aiotasks"), pytest.raises(RedisUnavailable):
        await task_boilerplate("t", DATE, redis=unreachable())
    assert CountingConnection.attempts == own

    CountingConnection.attempts = 0

    @aiotasks.task(name="t")
    async def never(run: Run) -> None:
        raise AssertionError("must not run")

    with caplog.at_level(logging.INFO, logger="aiotasks"), pytest.raises(TaskError) as caught:
        await never(DATE, redis=unreachable())
    assert caught.value.result is not None
    assert caught.value.result["reason"] == "redis_unavailable"
    assert CountingConnection.attempts == own
    assert [r.getMessage() for r in caplog.records if r.name.startswith("aiotasks.store")] == []


# -- item 1: pool limits make the door wait, never leak a lock -------------------------------


async def test_full_pool_makes_the_door_wait_for_a_connection_not_fail(
    redis_url: str, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 12.1: MaxConnectionsError from the client's pool failed the finish and
    left the lock): with every pooled connection taken by others, the door's finishes wait for
    one and every run succeeds, leaving no lock."""
    pool = ConnectionPool.from_url(redis_url, max_connections=4)
    client = Redis.from_pool(pool)
    bodies_in = 0
    all_in = asyncio.Event()
    go = asyncio.Event()

    @aiotasks.task()
    async def patient(run: Run) -> None:
        nonlocal bodies_in
        bodies_in += 1
        if bodies_in == 2:  # a pool of 4 lets 2 bodies in at once (4 minus the door's 2 lanes)
            all_in.set()
        await go.wait()

    runs = [
        asyncio.ensure_future(aiotasks.Task(patient.__wrapped__, name=f"p{i}")(DATE, redis=client))  # type: ignore[attr-defined]
        for i in range(2)
    ]
    try:
        await asyncio.wait_for(all_in.wait(), HANG)
        taken = [await take(pool) for _ in range(pool.max_connections)]  # the pool is full
        with caplog.at_level(logging.INFO, logger="aiotasks.store"):
            go.set()

            async def door_waits() -> bool:
                return any("free connection" in r.getMessage() for r in caplog.records)

            await eventually(door_waits, "the door waits for a free connection")
            assert await redis_client.keys("lock:*")  # the finishes have not gone out
            for connection in taken:
                await pool.release(connection)
            results = await asyncio.wait_for(asyncio.gather(*runs), HANG)
    finally:
        await client.aclose()
    assert [r["status"] for r in results] == ["success"] * 2
    assert await redis_client.keys("lock:*") == []


async def test_pool_limit_is_reported_as_a_local_limit(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 12.1: "Redis ... is unavailable: MaxConnectionsError" for a local limit):
    when no connection comes free in time, the error says it is the client's pool limit."""
    monkeypatch.setattr(door, "POOL_WAIT", 0.0)
    pool = ConnectionPool.from_url(redis_url, max_connections=1)
    client = Redis.from_pool(pool)
    taken = await take(pool)
    try:
        with pytest.raises(RedisUnavailable) as caught:
            await task_boilerplate("t", DATE, redis=client)
    finally:
        await pool.release(taken)
        await client.aclose()
    message = str(caught.value)
    assert "max_connections" in message
    assert "local limit" in message
    assert "is unavailable" not in message


def test_pool_limit_is_recognised_in_both_of_redis_pys_forms() -> None:
    """Older redis-py's asyncio pool says "Too many connections" with a plain ConnectionError;
    newer ones raise MaxConnectionsError. Both are a pool limit; a refused connect is not."""
    assert pool_limit(redis.exceptions.MaxConnectionsError())
    assert pool_limit(redis.ConnectionError("Too many connections"))
    assert not pool_limit(redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."))


async def test_cluster_under_pool_pressure_leaves_no_lock(cluster: LocalCluster) -> None:
    """Regression (issue 12.1): 500 concurrent runs on a default RedisCluster whose bodies use
    run.redis heavily: the door's commands never fail on the per-node pool limit, so whatever the
    bodies meet, no run leaves its lock and no run fails because of the door."""
    client = RedisCluster.from_url(cluster.url)

    async def heavy(run: Run) -> None:
        for step in range(5):
            await run.redis.incr(f"work:{{{run.task_name}}}:{step}")

    try:
        outcomes = await asyncio.gather(
            *(aiotasks.Task(heavy, name=f"c{i}")(DATE, redis=client) for i in range(500)),
            return_exceptions=True,
        )
        locks = [key async for key in client.scan_iter(match="lock:*")]
    finally:
        await client.aclose()
    assert locks == []
    for outcome in outcomes:
        if isinstance(outcome, TaskError):  # a body may meet the pool limit itself, never the door
            assert outcome.result is not None
            assert outcome.result["reason"] != "redis_unavailable", outcome.result
        else:
            assert not isinstance(outcome, BaseException), outcome
    assert sum(isinstance(o, dict) and o["status"] == "success" for o in outcomes) > 0


# -- item 13a: Redis errors are also redis-py's ------------------------------------------


async def test_redis_unavailable_is_caught_by_the_seeds_except_redis_error(
    unreachable: Callable[[], Redis],
) -> None:
    """Regression (issue 12.13: seed code catching redis.RedisError missed RedisUnavailable)."""
    try:
        await task_boilerplate("t", DATE, redis=unreachable())
    except redis.RedisError as exc:
        caught: Any = exc
    assert isinstance(caught, RedisUnavailable)
    assert isinstance(caught, redis.exceptions.ConnectionError)
    assert isinstance(caught, AioTasksError)
    assert repr(caught).startswith("RedisUnavailable(")


async def test_refused_credentials_are_a_redis_authentication_error() -> None:
    """RedisAuthError is also redis-py's AuthenticationError (and so a RedisError)."""
    with RedisServer(password="s3cret") as server:
        client = Redis.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        try:
            with pytest.raises(redis.AuthenticationError) as caught:
                await task_boilerplate("t", DATE, redis=client)
        finally:
            await client.aclose()
    assert isinstance(caught.value, RedisAuthError)
    assert isinstance(caught.value, AioTasksError)
    assert "wrong" not in str(caught.value)


# -- the door's retries of a written command -----------------------------------------------


async def test_a_written_command_whose_replies_are_lost_is_tried_door_attempts_times(
    proxy: Proxy, proxied: Redis, redis_client: Redis
) -> None:
    """A request written and then cut off (the reply lost with its connection) is tried again, on a
    new connection each time, DOOR_ATTEMPTS times in all; then the run fails with RedisUnavailable
    and the lock that those attempts may have taken (they did: same token) is given back."""
    proxy.drop_script_replies(door.DOOR_ATTEMPTS)
    with pytest.raises(RedisUnavailable):
        await store_for(proxied).acquire(KEYS, "tok", 60_000, check_success=True)
    assert proxy._drop_scripts == 0  # every attempt reached Redis and lost its reply

    async def released() -> bool:
        return await redis_client.exists(KEYS.lock) == 0

    await eventually(released, "the lock the lost attempts took is given back")


async def test_a_command_whose_last_attempt_is_answered_succeeds(proxy: Proxy, proxied: Redis) -> None:
    """One lost reply fewer than DOOR_ATTEMPTS: the last attempt is answered and the acquire
    reports the lock taken (the retries reused the token, so the earlier landings are its own)."""
    proxy.drop_script_replies(door.DOOR_ATTEMPTS - 1)
    assert await store_for(proxied).acquire(KEYS, "tok", 60_000, check_success=True) == Acquired()
    assert proxy.connections == door.DOOR_ATTEMPTS  # the first attempt on the pinged connection
