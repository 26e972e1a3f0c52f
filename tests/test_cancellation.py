"""Cancellation at any point leaves no lock behind, and a marker only if the finish ran.

Each test holds the Redis door at an exact moment with :class:`tests.support.Gate`
(or the wire's events; no sleeps), cancels, then waits for the door to finish
what the cancelled caller started (``Store.drain``) and checks Redis. Stalls
seen from the network (a request or reply held in flight) are in
``test_door_regressions.py``, with a proxy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import pytest
from redis._parsers import _AsyncRESP3Parser
from redis.asyncio import Redis

import aiotasks
from aiotasks import Run, finish_task, release_lock, task_boilerplate
from aiotasks._keys import TaskKeys
from aiotasks._store import store_for
from tests.support import Gate, Wire, cancel_while_queued, load_scripts, lock_and_marker_keys

DATE = "20261125"


@pytest.fixture(autouse=True)
async def scripts_loaded(redis_client: Redis) -> None:
    """Gates must hold the real command, not a first NOSCRIPT answer."""
    await load_scripts(redis_client)


async def cancel_at(gate: Gate, work: Awaitable[object], client: Redis) -> None:
    """Start ``work``; once the gate holds it, cancel it: it must end at once, with the gate still
    closed. Then open the gate and wait until the door has finished what ``work`` started."""
    runner = asyncio.ensure_future(work)
    await asyncio.wait_for(gate.reached.wait(), timeout=10)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, timeout=10)
    gate.open()
    await asyncio.wait_for(store_for(client).drain(), timeout=10)


async def test_cancelled_while_acquire_is_queued_is_never_sent(redis_client: Redis, gate: Gate) -> None:
    """A caller cancelled while its acquire waits in the queue is dropped: the script never reaches Redis."""
    gate.before = {"acquire"}
    await cancel_while_queued(
        gate, redis_client, lambda: task_boilerplate("queued", DATE, redis=redis_client), "the third acquire"
    )
    names = [name for batch in gate.log for name in batch]
    assert names.count("acquire") == 2  # the two blockers, never the cancelled one
    assert await lock_and_marker_keys(redis_client) == []


async def test_cancelled_after_acquire_was_sent_gives_the_lock_back(redis_client: Redis, gate: Gate) -> None:
    """Cancelled while the acquire is in flight: its reply is awaited and the lock it took is released."""
    gate.after = {"acquire"}  # the script has run on Redis: the lock is taken, the reply held
    await cancel_at(gate, task_boilerplate("t", DATE, redis=redis_client), redis_client)
    assert await lock_and_marker_keys(redis_client) == []
    assert any("release" in batch for batch in gate.log)


async def test_cancelled_before_acquire_is_written_sends_and_gives_back_nothing(
    redis_client: Redis, gate: Gate
) -> None:
    """Cancelled before the acquire was written: a known outcome, so nothing is sent, not even a
    give-back. (Cancelled once written but before Redis ran it: see test_door_regressions.)"""
    gate.before = {"acquire"}
    await cancel_at(gate, task_boilerplate("t", DATE, redis=redis_client), redis_client)
    assert gate.log == [["acquire"]]  # the held batch, never written; no release after it
    assert await lock_and_marker_keys(redis_client) == []


@pytest.mark.parametrize("parser", ["default", "python"])
@pytest.mark.parametrize("canceller", ["native", "anyio"])
async def test_cancelled_with_the_reply_outstanding_reads_it_on_the_same_connection(
    wire: Wire, redis_url: str, redis_client: Redis, canceller: str, parser: str
) -> None:
    """A lone acquire goes out from the caller's own task. Cancelled while its reply is on its way,
    the caller returns at once; the door reads that reply on the same connection (no reconnect),
    learns the lock was taken, and gives it back. With hiredis (the default) and with redis-py's
    pure-Python parser, whose reads must both resume where the cancelled one stopped."""
    client = wire.client(redis_url, **({"parser_class": _AsyncRESP3Parser} if parser == "python" else {}))
    await client.ping()
    keys = TaskKeys("lock:t:20261125", "success:t:20261125")
    scope = anyio.CancelScope()

    async def acquire() -> None:
        with scope:
            await store_for(client).acquire(keys, "token", 60_000, check_success=True)

    # Scripts are writes: the server holds them (unanswered) until UNPAUSE.
    await redis_client.client_pause(60_000, all=False)
    wire.reset()
    wire.wrote.clear()
    runner = asyncio.ensure_future(acquire())
    try:
        await asyncio.wait_for(wire.wrote.wait(), timeout=10)
        if canceller == "native":
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(runner, timeout=10)  # back while the server still holds it
        else:
            scope.cancel()
            await asyncio.wait_for(runner, timeout=10)
            assert scope.cancelled_caught
        assert wire.commands == 1  # nothing given back yet: the reply has not come
    finally:
        await redis_client.client_unpause()
    await asyncio.wait_for(store_for(client).drain(), timeout=10)
    assert await redis_client.exists(keys.lock) == 0
    assert wire.commands == 2  # the acquire, then the give-back release
    assert wire.connects == 1  # the one the ping opened: never dropped and reopened


Work = Callable[[], Coroutine[Any, Any, object]]
CancelStyle = Callable[[Work, asyncio.Event], Awaitable[None]]


def when(moment: asyncio.Event, cancel: Callable[[], object]) -> asyncio.Task[None]:
    """A task that calls ``cancel`` once ``moment`` is set."""

    async def wait_then_cancel() -> None:
        await moment.wait()
        cancel()

    return asyncio.ensure_future(wait_then_cancel())


async def native_cancel(work: Work, started: asyncio.Event) -> None:
    runner = asyncio.ensure_future(work())
    await asyncio.wait_for(started.wait(), timeout=10)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def asyncio_timeout(work: Work, started: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    triggers = []

    async def expiring() -> None:
        async with asyncio.timeout(None) as timer:
            triggers.append(when(started, lambda: timer.reschedule(loop.time())))
            await work()

    with pytest.raises(TimeoutError):
        await expiring()
    await triggers[0]


async def anyio_scope(work: Work, started: asyncio.Event) -> None:
    with anyio.move_on_after(3600) as scope:
        trigger = when(started, lambda: setattr(scope, "deadline", anyio.current_time()))
        await work()
    await trigger
    assert scope.cancelled_caught


async def anyio_task_group(work: Work, started: asyncio.Event) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(work)
        await started.wait()
        group.cancel_scope.cancel()


@pytest.mark.parametrize("cancel", [native_cancel, asyncio_timeout, anyio_scope, anyio_task_group])
async def test_cancelled_during_the_body_releases_and_writes_no_marker(
    redis_client: Redis, cancel: CancelStyle
) -> None:
    """Native cancel, asyncio.timeout, anyio scopes mid-body: body cancelled, lock released, no marker."""
    body_started = asyncio.Event()

    @aiotasks.task()
    async def slow(run: Run) -> None:
        body_started.set()
        await asyncio.Event().wait()

    await cancel(lambda: slow(DATE, redis=redis_client), body_started)
    await store_for(redis_client).drain()
    assert await lock_and_marker_keys(redis_client) == []


async def test_cancelled_while_finish_runs_records_the_success(redis_client: Redis, gate: Gate) -> None:
    """Cancelled after the finish ran on Redis: the body's success stays recorded and the lock is gone."""

    @aiotasks.task()
    async def done(run: Run) -> None:
        return None

    gate.after = {"finish"}
    await cancel_at(gate, done(DATE, redis=redis_client), redis_client)
    assert await lock_and_marker_keys(redis_client) == [f"success:done:{DATE}".encode()]


async def test_cancelled_before_finish_reaches_redis_writes_no_marker(
    redis_client: Redis, gate: Gate
) -> None:
    """Cancelled before the finish reached Redis: no marker, and the lock is released."""

    @aiotasks.task()
    async def done(run: Run) -> None:
        return None

    gate.before = {"finish"}
    await cancel_at(gate, done(DATE, redis=redis_client), redis_client)
    assert await lock_and_marker_keys(redis_client) == []


async def test_cancelled_mid_release_still_releases(redis_client: Redis, gate: Gate) -> None:
    """Regression (redis-py #3847 analogue): a cancellation during the release does not leave the lock."""

    @aiotasks.task()
    async def failing(run: Run) -> None:
        raise ValueError("boom")

    gate.before = {"release"}
    await cancel_at(gate, failing(DATE, redis=redis_client), redis_client)
    assert await lock_and_marker_keys(redis_client) == []


async def test_seed_style_finally_survives_cancellation(redis_client: Redis) -> None:
    """Seed-style code whose body is cancelled releases in its finally; release_lock is safe to call then."""
    started = asyncio.Event()

    async def seed_task() -> None:
        conn, lock_key, success_key, _, task_id = await task_boilerplate("seed", DATE, redis=redis_client)
        try:
            started.set()
            await asyncio.Event().wait()
            await finish_task(conn, lock_key, success_key, task_id)
        finally:
            await release_lock(conn, lock_key, task_id)

    runner = asyncio.ensure_future(seed_task())
    await asyncio.wait_for(started.wait(), timeout=10)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await lock_and_marker_keys(redis_client) == []


async def test_cancelled_thread_body_is_waited_for_then_released(redis_client: Redis) -> None:
    """A cancelled sync body is asked to stop and waited for (threads can't be killed); then the lock goes."""
    started = threading.Event()
    finished = threading.Event()

    @aiotasks.task()
    def worker(run: Run) -> None:
        started.set()
        while not run.stop_requested:
            threading.Event().wait(0.005)
        finished.set()

    runner = asyncio.ensure_future(worker(DATE, redis=redis_client))
    await asyncio.to_thread(started.wait, 10)
    assert await redis_client.exists(f"lock:worker:{DATE}") == 1
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert finished.is_set()  # the lock was not released while the thread still ran
    await store_for(redis_client).drain()
    assert await lock_and_marker_keys(redis_client) == []
