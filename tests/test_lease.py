"""The lease's deadline, on the event loop's clock moved forward by hand.

The lease (``_task._Lease``) takes its time from the event loop, the one clock
the library's timers use; here that clock is shifted by the test, so a lease of
60 s reaches its deadline when the test says, and a renewal's reply is held by a
proxy in front of the session's redis-server. Nothing waits on real time: a
``wait_for`` bound only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import RedisUnavailable, Run, TaskError
from aiotasks._store import Store, store_for
from tests.proxy import Proxy
from tests.support import eventually, load_scripts, lock_and_marker_keys

DATE = "20261125"
#: The tests' lock_timeout: long enough that real time never reaches a renewal; the clock is moved.
LEASE = 60.0
#: Bound on waiting for what must follow at once from a clock move (guards a hang, times nothing).
HANG = 10.0


class Clock:
    """The running loop's ``time()``, shifted forward by :meth:`advance`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self.shift = 0.0
        real = loop.time
        monkeypatch.setattr(loop, "time", lambda: real() + self.shift)

    def advance(self, seconds: float) -> None:
        self.shift += seconds


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(asyncio.get_running_loop(), monkeypatch)


Renewals = tuple[asyncio.Queue[None], asyncio.Queue[bool | str | Exception]]


@pytest.fixture
def renewals(monkeypatch: pytest.MonkeyPatch) -> Renewals:
    """(renewals sent, renewals' outcomes: their verdict or their error), as the lease sees them."""
    sent: asyncio.Queue[None] = asyncio.Queue()
    answered: asyncio.Queue[bool | str | Exception] = asyncio.Queue()
    renew = Store.renew

    async def observed(
        store: Store, lock_key: str, token: str, ttl_ms: int, *cancel: str | None
    ) -> bool | str:
        sent.put_nowait(None)
        try:
            held = await renew(store, lock_key, token, ttl_ms, *cancel)
        except Exception as exc:
            answered.put_nowait(exc)
            raise
        answered.put_nowait(held)
        return held

    monkeypatch.setattr(Store, "renew", observed)
    return sent, answered


class Body:
    """An async body that holds its lock until ``done`` is set or it is cancelled, with events for each."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.done = asyncio.Event()

    async def __call__(self, run: Run) -> None:
        self.holding.set()
        try:
            await self.done.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def lost(runner: Awaitable[object], client: Redis, proxy: Proxy) -> None:
    """``runner`` failed with lock_lost; once Redis answers again, no lock or marker is left."""
    with pytest.raises(TaskError) as caught:
        await asyncio.wait_for(runner, HANG)
    assert caught.value.result is not None
    assert (caught.value.result["status"], caught.value.result["reason"]) == ("failed", "lock_lost")
    proxy.release_replies()

    async def clean() -> bool:
        return await lock_and_marker_keys(client) == []

    await eventually(clean, "the lost run's lock is given back")


async def test_a_stall_from_the_first_renewal_on_cancels_the_body_at_lock_timeout(
    proxy: Proxy, proxied: Redis, redis_client: Redis, clock: Clock, renewals: Renewals
) -> None:
    """Before any renewal is confirmed the lock counts as valid for lock_timeout from the acquire:
    with the first renewal's reply held, the body is still running at lock_timeout / 3 and is
    cancelled (lock_lost, no marker) once lock_timeout has passed."""
    sent, _ = renewals
    body = Body()
    stalled = aiotasks.task(name="stalled", lock_timeout=LEASE)(body)
    runner = asyncio.ensure_future(stalled(DATE, redis=proxied))
    await asyncio.wait_for(body.holding.wait(), HANG)
    proxy.hold_replies()
    clock.advance(LEASE / 3)  # the first renewal is due: it runs on Redis, its reply is held
    await asyncio.wait_for(sent.get(), HANG)
    assert not body.cancelled.is_set()
    clock.advance(LEASE * 2 / 3 + 1)  # lock_timeout since the acquire, nothing confirmed since
    await asyncio.wait_for(body.cancelled.wait(), HANG)
    await lost(runner, redis_client, proxy)


async def test_a_renewal_counts_from_when_it_was_sent_not_when_its_reply_came(
    proxy: Proxy, proxied: Redis, redis_client: Redis, clock: Clock, renewals: Renewals
) -> None:
    """A renewal whose reply came late confirms the lock only until its sending time + lock_timeout
    (Redis may have run it at once): when the next renewal stalls, the body is cancelled then,
    not lock_timeout after the late reply."""
    sent, answered = renewals
    body = Body()
    stalled = aiotasks.task(name="stalled", lock_timeout=LEASE)(body)
    runner = asyncio.ensure_future(stalled(DATE, redis=proxied))
    await asyncio.wait_for(body.holding.wait(), HANG)
    proxy.hold_replies()
    clock.advance(LEASE / 3)  # t0 + 20: the first renewal is sent; its reply is held
    await asyncio.wait_for(sent.get(), HANG)
    clock.advance(LEASE / 2)  # t0 + 50: the reply comes; the lock is confirmed until t0 + 80
    proxy.release_replies()
    assert await asyncio.wait_for(answered.get(), HANG) is True
    proxy.hold_replies()
    clock.advance(LEASE / 3)  # t0 + 70: the next renewal is sent; its reply is held
    await asyncio.wait_for(sent.get(), HANG)
    assert not body.cancelled.is_set()
    clock.advance(LEASE / 6 + 1)  # t0 + 81: past the first renewal's sending time + lock_timeout
    await asyncio.wait_for(body.cancelled.wait(), HANG)
    await lost(runner, redis_client, proxy)


async def test_a_renewal_that_failed_is_tried_again_before_the_lock_runs_out(
    proxy: Proxy, redis_client: Redis, clock: Clock, renewals: Renewals
) -> None:
    """A renewal that fails (here its reply outlived socket_timeout) is tried again within a second,
    not at the next third of lock_timeout: its success keeps the body running past the deadline
    the failed one left, and the run succeeds."""
    sent, answered = renewals
    await load_scripts(redis_client)
    client = Redis.from_url(proxy.url, socket_timeout=5)
    try:
        body = Body()
        blip = aiotasks.task(name="blip", lock_timeout=LEASE)(body)
        runner = asyncio.ensure_future(blip(DATE, redis=client))
        await asyncio.wait_for(body.holding.wait(), HANG)
        proxy.hold_replies()
        clock.advance(LEASE / 3)  # t0 + 20: the first renewal is sent; its reply is held
        await asyncio.wait_for(sent.get(), HANG)
        clock.advance(6)  # t0 + 26: past socket_timeout, the renewal fails
        assert isinstance(await asyncio.wait_for(answered.get(), HANG), RedisUnavailable)
        proxy.release_replies()
        clock.advance(1)  # t0 + 27: tried again
        await asyncio.wait_for(sent.get(), HANG)
        assert await asyncio.wait_for(answered.get(), HANG) is True  # confirmed until t0 + 87
        clock.advance(LEASE * 2 / 3)  # t0 + 67: the next renewal is due, and lock_timeout since t0
        await asyncio.wait_for(sent.get(), HANG)
        assert await asyncio.wait_for(answered.get(), HANG) is True
        assert not body.cancelled.is_set()
        body.done.set()
        result = await asyncio.wait_for(runner, HANG)
        assert result["status"] == "success"
        assert await redis_client.keys("lock:*") == []
    finally:
        proxy.release_replies()
        await client.aclose()


async def test_a_cancellation_after_the_lock_was_lost_still_cancels_the_run(
    redis_client: Redis, clock: Clock, renewals: Renewals
) -> None:
    """The lease cancels the run's task when the lock is lost, and that cancellation alone becomes
    lock_lost: a body that swallows it and is then cancelled by its caller ends cancelled (the
    caller's CancelledError, not a TaskError), and the lock another run took is left to it."""
    sent, answered = renewals
    swallowed, cancelled = asyncio.Event(), asyncio.Event()

    async def stubborn(run: Run) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # the lease's: kept going, as a careless body might
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runs = aiotasks.task(name="stubborn", lock_timeout=LEASE)(stubborn)
    runner = asyncio.ensure_future(runs(DATE, redis=redis_client))
    lock = f"lock:stubborn:{DATE}"

    async def locked() -> bool:
        return bool(await redis_client.exists(lock))

    await eventually(locked, "the run holds its lock")
    await redis_client.set(lock, "another-run")  # taken: the next renewal finds it gone
    clock.advance(LEASE / 3)
    await asyncio.wait_for(sent.get(), HANG)
    assert await asyncio.wait_for(answered.get(), HANG) is False
    await asyncio.wait_for(swallowed.wait(), HANG)
    runner.cancel()
    await asyncio.wait_for(cancelled.wait(), HANG)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, HANG)
    assert await redis_client.get(lock) == b"another-run"


async def acquired_late(
    proxy: Proxy, proxied: Redis, clock: Clock, lease: float, late: float
) -> tuple[Body, asyncio.Future[dict[str, Any]]]:
    """Start a run whose acquire's reply the proxy holds while the clock moves ``late`` seconds (t0:
    when Redis ran it); return once its body holds the lock, with every reply held again."""
    body = Body()
    slow = aiotasks.task(name="slow", lock_timeout=lease)(body)
    proxy.hold_replies()
    runner = asyncio.ensure_future(slow(DATE, redis=proxied))
    await asyncio.wait_for(proxy.reply_held.wait(), HANG)  # t0: the acquire ran; its reply is held
    clock.advance(late)
    proxy.release_replies()  # t0 + late: the run learns it holds the lock
    await asyncio.wait_for(body.holding.wait(), HANG)
    proxy.hold_replies()
    return body, runner


async def test_the_lock_counts_as_valid_from_when_the_acquire_was_sent_not_from_its_reply(
    proxy: Proxy, proxied: Redis, redis_client: Redis, clock: Clock, renewals: Renewals
) -> None:
    """Redis may have taken the lock as soon as the acquire arrived: with the acquire's reply held
    for half of lock_timeout and the first renewal's reply held too, the body is cancelled
    lock_timeout after the acquire was sent, not lock_timeout after its reply came."""
    sent, _ = renewals
    body, runner = await acquired_late(proxy, proxied, clock, LEASE, LEASE / 2)  # t0 + 30
    clock.advance(LEASE / 3)  # t0 + 50: the first renewal is sent; its reply is held
    await asyncio.wait_for(sent.get(), HANG)
    assert not body.cancelled.is_set()
    clock.advance(LEASE / 6 + 1)  # t0 + 61: past lock_timeout since the acquire was sent
    await asyncio.wait_for(body.cancelled.wait(), HANG)
    await lost(runner, redis_client, proxy)


async def test_an_acquire_whose_reply_outlived_the_lock_arms_the_deadline_at_once(
    proxy: Proxy, proxied: Redis, redis_client: Redis, clock: Clock
) -> None:
    """An acquire whose reply came after more than 2/3 of lock_timeout: the lock may run out
    before the first renewal is due, so the deadline is armed from the start. (A long lease:
    the first renewal stays further away in real time than the wait for the cancellation.)"""
    lease = 600.0
    body, runner = await acquired_late(proxy, proxied, clock, lease, lease * 5 / 6)  # t0 + 500
    clock.advance(lease / 6 + 1)  # t0 + 601: no renewal was due yet (at t0 + 700), the lock may be gone
    await asyncio.wait_for(body.cancelled.wait(), HANG)
    await lost(runner, redis_client, proxy)


async def test_runs_started_together_share_a_timer_for_their_first_renewal(
    redis_client: Redis, clock: Clock, renewals: Renewals
) -> None:
    """Runs of one client due at about the same time wait on one loop timer for their first renewal
    (issue 22: a timer of its own, cancelled by nearly every run, cost a run more than the rest of its
    lease); each still renews when due, and a run that ended first is taken out, never renewed."""
    sent, answered = renewals
    bodies = [Body() for _ in range(3)]
    runners = [
        asyncio.ensure_future(
            aiotasks.task(name=f"shared{i}", lock_timeout=LEASE)(body)(DATE, redis=redis_client)
        )
        for i, body in enumerate(bodies)
    ]
    for body in bodies:
        await asyncio.wait_for(body.holding.wait(), HANG)
    due = store_for(redis_client).renewals
    assert sum(map(len, due.values())) == 3
    assert len(due) <= 2
    bodies[0].done.set()
    assert (await asyncio.wait_for(runners[0], HANG))["status"] == "success"
    assert sum(map(len, due.values())) == 2
    clock.advance(LEASE / 3)
    assert [await asyncio.wait_for(answered.get(), HANG) for _ in range(2)] == [True, True]
    assert sent.qsize() == 2
    assert not due
    for body in bodies[1:]:
        body.done.set()
    assert [(await asyncio.wait_for(r, HANG))["status"] for r in runners[1:]] == ["success", "success"]
