"""``aiotasks.cancel``: a run is cancelled from elsewhere through its own renewals (issue 20, item 5).

Real redis-server; the runs here use a lock_timeout of 1.5 s, so their lease renews every 0.5 s
and a request reaches them quickly (a shorter one could expire on a loaded machine). Nothing
waits on time: each test waits on an event or polls a condition (``eventually``), with ``HANG``
only turning a hang into a failure.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import aiotasks
from aiotasks import InvalidConfig, InvalidDate, InvalidTaskName, Run, TaskError
from aiotasks._context import store_of
from aiotasks._metrics import exposition
from aiotasks._records import HOST, read_runs
from tests.servers import server_version
from tests.support import eventually

DATE = "20261125"
#: A short lock, so the lease's renewal interval (a third of it) is short.
LOCK = 1.5
#: A lock TTL (ms) the lease's renewals cross: it falls below it, then a renewal lifts it above.
MIDWAY = 1250
#: Bound on waiting for what must follow (guards a hang, times nothing).
HANG = 20.0
ME = f"{HOST}:{os.getpid()}"


class Sleeper:
    """An async body that waits on an event it never gets, noting when it runs and when it is cancelled."""

    def __init__(self, *, swallow: bool = False) -> None:
        self.holding = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.swallow = swallow

    async def __call__(self, run: Run) -> None:
        self.holding.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            if not self.swallow:
                raise


async def failure(runner: asyncio.Future[Any]) -> dict[str, Any]:
    with pytest.raises(TaskError) as caught:
        await asyncio.wait_for(runner, HANG)
    assert caught.value.result is not None
    return caught.value.result


async def test_a_sleeping_body_is_cancelled_recorded_with_who_asked_and_its_lock_freed(
    redis_client: Redis,
) -> None:
    """cancel() reaches the holder through its renewal: the body is cancelled, the run fails with
    reason cancelled naming the requester (result, record), the lock is free, the date runs again."""
    body = Sleeper()
    sleeper = aiotasks.task(name="sleeper", lock_timeout=LOCK)(body)
    runner = asyncio.ensure_future(sleeper(DATE, redis=redis_client))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("sleeper", DATE, redis=redis_client) is True
    result = await failure(runner)
    assert body.cancelled.is_set()
    assert (result["status"], result["reason"], result["cancelled_by"]) == ("failed", "cancelled", ME)
    assert result["errors"] == [f"cancelled by {ME}"]
    assert await redis_client.exists("lock:sleeper:" + DATE, "success:sleeper:" + DATE) == 0
    [record] = (await read_runs(store_of(redis_client), ["sleeper"], namespace=None, last=5))["sleeper"].runs
    assert (record.status, record.reason, record.cancelled_by) == ("failed", "cancelled", ME)
    assert record.to_json()["cancelled_by"] == ME
    assert record.to_json()["counters"] == {}

    async def quick(run: Run) -> None:
        pass

    again = aiotasks.task(name="sleeper", lock_timeout=LOCK)(quick)
    assert (await again(DATE, redis=redis_client))["status"] == "success"  # the request died with its run


async def test_cancelled_runs_are_counted_in_process_and_in_the_fleet_exposition(redis_client: Redis) -> None:
    """aiotasks_runs_total{outcome="cancelled"} counts the cancelled run; the exposition computed
    from records (``aiotasks metrics``) has its last_end{outcome="cancelled"} (and "failed")."""
    before = (
        REGISTRY.get_sample_value("aiotasks_runs_total", {"task": "counted", "outcome": "cancelled"}) or 0
    )
    body = Sleeper()
    counted = aiotasks.task(name="counted", lock_timeout=LOCK)(body)
    runner = asyncio.ensure_future(counted(DATE, redis=redis_client))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("counted", DATE, redis=redis_client)
    await failure(runner)
    after = REGISTRY.get_sample_value("aiotasks_runs_total", {"task": "counted", "outcome": "cancelled"})
    assert after == before + 1
    summaries = await read_runs(store_of(redis_client), ["counted"], namespace=None, last=5)
    [record] = summaries["counted"].runs
    assert record.ended is not None
    found = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(exposition(summaries.values()))
        for sample in family.samples
        if sample.name == "aiotasks_task_last_end_timestamp_seconds"
    }
    assert found == {"failed": found["failed"], "cancelled": record.ended / 1000}


async def test_a_cancel_for_a_date_nothing_runs_returns_false_and_writes_nothing(redis_client: Redis) -> None:
    """No lock for (task, date): cancel() says so (False) and writes no key."""
    assert await aiotasks.cancel("idle", DATE, redis=redis_client) is False
    assert await redis_client.keys("*") == []


@pytest.mark.parametrize(
    ("task", "date", "error"),
    [("bad name", DATE, InvalidTaskName), ("t:x", DATE, InvalidTaskName), ("t", "2026-11-25", InvalidDate)],
)
async def test_bad_input_is_refused_before_anything_is_written(
    redis_client: Redis, task: str, date: str, error: type[Exception]
) -> None:
    """An unsafe task name or a malformed date raises its typed error naming the value, and nothing
    is written (even with a run holding a lock)."""
    await redis_client.set("lock:t:" + DATE, "holder", px=60_000)
    with pytest.raises(error, match=r"bad name|t:x|2026-11-25"):
        await aiotasks.cancel(task, date, redis=redis_client)
    with pytest.raises(InvalidConfig, match="-1"):
        await aiotasks.cancel("t", DATE, redis=redis_client, wait=True, timeout=-1)
    assert await redis_client.keys("*") == [b"lock:t:" + DATE.encode()]


async def test_a_body_that_swallows_the_cancellation_ends_as_lock_lost(redis_client: Redis) -> None:
    """A body that catches the cancellation and returns never succeeds: the run is failed with
    reason lock_lost (who asked in its error), no marker, and its lock is given back."""
    body = Sleeper(swallow=True)
    stubborn = aiotasks.task(name="stubborn", lock_timeout=LOCK)(body)
    runner = asyncio.ensure_future(stubborn(DATE, redis=redis_client))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("stubborn", DATE, redis=redis_client)
    result = await failure(runner)
    assert body.cancelled.is_set()
    assert (result["reason"], result["cancelled_by"]) == ("lock_lost", ME)
    assert "ignored the cancellation" in result["errors"][0]
    assert await redis_client.exists("lock:stubborn:" + DATE, "success:stubborn:" + DATE) == 0


async def test_a_sync_body_sees_stop_requested_and_the_run_is_cancelled(redis_client: Redis) -> None:
    """A body in a worker thread gets the lost-lock signal (Run.stop_requested) and returns: the
    run is recorded cancelled by the requester."""
    holding = threading.Event()

    def worker(run: Run) -> None:
        holding.set()
        while not run.stop_requested:
            threading.Event().wait(0.01)  # a unit of work between checks

    threaded = aiotasks.task(name="threaded", lock_timeout=LOCK)(worker)
    runner = asyncio.ensure_future(threaded(DATE, redis=redis_client))
    await asyncio.to_thread(holding.wait, HANG)
    assert await aiotasks.cancel("threaded", DATE, redis=redis_client)
    result = await failure(runner)
    assert (result["reason"], result["cancelled_by"]) == ("cancelled", ME)


async def test_a_sync_body_that_ignores_stop_requested_ends_as_lock_lost(
    redis_client: Redis, redis_url: str
) -> None:
    """A thread body that never looks at stop_requested runs on: renewals stopped with the request,
    so its lock expires (another run could take the date) and, when the body returns, the run is
    lock_lost, not cancelled and never a success."""
    holding = threading.Event()

    def ignoring(run: Run) -> None:
        holding.set()
        with redis.Redis.from_url(redis_url) as own:
            while own.exists(run.lock_key):  # runs on until its lock is gone
                threading.Event().wait(0.01)

    deaf = aiotasks.task(name="deaf", lock_timeout=LOCK)(ignoring)
    runner = asyncio.ensure_future(deaf(DATE, redis=redis_client))
    await asyncio.to_thread(holding.wait, HANG)
    assert await aiotasks.cancel("deaf", DATE, redis=redis_client)
    result = await failure(runner)
    assert (result["reason"], result["cancelled_by"]) == ("lock_lost", ME)
    assert await redis_client.exists("success:deaf:" + DATE) == 0


async def test_a_run_in_a_namespace_is_cancelled_through_its_namespaced_key(redis_client: Redis) -> None:
    """With a namespace, the request is ns:cancel:T:D, next to ns:lock:T:D, and reaches the run."""
    body = Sleeper()
    sleeper = aiotasks.task(name="sleeper", lock_timeout=LOCK)(body)
    runner = asyncio.ensure_future(aiotasks.run_chain([sleeper], DATE, redis=redis_client, namespace="ns"))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("sleeper", DATE, redis=redis_client) is False  # not this namespace's
    assert await aiotasks.cancel("sleeper", DATE, redis=redis_client, namespace="ns")
    results = await asyncio.wait_for(runner, HANG)
    assert (results["sleeper"]["reason"], results["sleeper"]["cancelled_by"]) == ("cancelled", ME)
    assert await redis_client.exists("ns:lock:sleeper:" + DATE) == 0


async def test_a_cancelled_run_is_not_retried(redis_client: Redis) -> None:
    """retries=3: a body that fails after swallowing the cancellation is not tried again (one
    attempt), and a cancelled run ends with its first attempt."""
    body = Sleeper(swallow=True)

    async def failing(run: Run) -> None:
        await body(run)
        raise RuntimeError("after the cancel")

    retried = aiotasks.task(name="retried", lock_timeout=LOCK, retries=3, retry_delay=0.01)(failing)
    runner = asyncio.ensure_future(retried(DATE, redis=redis_client))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("retried", DATE, redis=redis_client)
    result = await failure(runner)
    assert (result["reason"], result["cancelled_by"]) == ("lock_lost", ME)
    assert (result.get("attempts", 1), result["warnings"]) == (1, [])  # no retry happened


async def test_wait_returns_once_the_run_stopped_and_its_lock_is_free(redis_client: Redis) -> None:
    """cancel(wait=True) returns True only after the holder gave its lock back."""
    body = Sleeper()
    sleeper = aiotasks.task(name="sleeper", lock_timeout=LOCK)(body)
    runner = asyncio.ensure_future(sleeper(DATE, redis=redis_client))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await asyncio.wait_for(aiotasks.cancel("sleeper", DATE, redis=redis_client, wait=True), HANG)
    assert body.cancelled.is_set()
    assert await redis_client.exists("lock:sleeper:" + DATE) == 0
    await failure(runner)


async def test_wait_with_a_timeout_says_the_run_has_not_stopped(redis_client: Redis) -> None:
    """A lock nobody renews (a seed-style holder) never hears the request: wait gives up after
    its timeout with CancelTimeout naming the task, and the request stays until the lock expires."""
    await redis_client.set("lock:seedy:" + DATE, "holder", px=60_000)
    with pytest.raises(aiotasks.CancelTimeout, match="seedy"):
        await aiotasks.cancel("seedy", DATE, redis=redis_client, wait=True, timeout=0.05)
    assert await redis_client.get("cancel:seedy:" + DATE) is not None


async def test_a_request_never_outlives_its_lock(redis_client: Redis) -> None:
    """The request's TTL is the lock's left: when the holder died (nobody renews), it expires with
    the lock; asked twice, the first request stands."""
    await redis_client.set("lock:dead:" + DATE, "gone", px=500)
    assert await aiotasks.cancel("dead", DATE, redis=redis_client)
    first = await redis_client.get("cancel:dead:" + DATE)
    # The lock's TTL first: a millisecond may begin between the two reads (the server's
    # clock is read per command), which only shortens the request's TTL read second.
    async with redis_client.pipeline(transaction=True) as both:
        both.pttl("lock:dead:" + DATE)
        both.pttl("cancel:dead:" + DATE)
        lock_ttl, request_ttl = await both.execute()
    assert 0 < request_ttl <= lock_ttl
    assert await aiotasks.cancel("dead", DATE, redis=redis_client)
    assert await redis_client.get("cancel:dead:" + DATE) == first
    assert isinstance(first, bytes)
    assert first.decode().startswith(ME + "|")
    assert first.endswith(b"|gone")

    async def gone() -> bool:
        return await redis_client.exists("lock:dead:" + DATE, "cancel:dead:" + DATE) == 0

    await eventually(gone, "the request expired with the lock")


@pytest.mark.skipif(server_version().number < (7,), reason="PEXPIRETIME came with Redis 7.0")
async def test_a_request_expires_no_later_than_its_lock(redis_client: Redis) -> None:
    """Compared by their absolute expiry (PEXPIRETIME), over many requests: the request's TTL is
    the lock's less a millisecond, which a millisecond begun inside the script cannot overtake
    (regression: on Redis 7.0 the request at times expired a millisecond after its lock)."""
    for attempt in range(300):
        date = f"2026{1 + attempt // 28:02d}{1 + attempt % 28:02d}"
        await redis_client.set("lock:many:" + date, "holder", px=60_000)
        assert await aiotasks.cancel("many", date, redis=redis_client)
        request_at = await redis_client.pexpiretime("cancel:many:" + date)
        lock_at = await redis_client.pexpiretime("lock:many:" + date)
        assert 0 < request_at <= lock_at, (attempt, request_at, lock_at)


async def test_a_lock_set_without_a_ttl_gives_its_request_the_default_lock_timeout(
    redis_client: Redis,
) -> None:
    """A lock with no TTL (set by hand) has no TTL to copy: the request lives the default lock
    timeout, 300 s, rather than forever."""
    await redis_client.set("lock:forever:" + DATE, "by-hand")
    assert await aiotasks.cancel("forever", DATE, redis=redis_client)
    assert 299_000 < await redis_client.pttl("cancel:forever:" + DATE) <= 300_000


async def test_a_request_for_an_earlier_run_does_not_cancel_the_next_holder(redis_client: Redis) -> None:
    """The request names the holder's token: a run that takes the date after that holder ended
    ignores it (regression: a key alone would cancel whoever renews next)."""
    await redis_client.set("lock:next:" + DATE, "earlier", px=60_000)
    assert await aiotasks.cancel("next", DATE, redis=redis_client)
    await redis_client.delete("lock:next:" + DATE)  # that run ended; its request is still there
    renewed = asyncio.Event()

    async def body(run: Run) -> None:
        # Two renewals have read the stale request, and the run goes on.
        for _ in range(2):  # a renewal: the TTL falls below MIDWAY, then rises above it
            for below in (True, False):

                async def crossed(below: bool = below) -> bool:
                    return (int(await redis_client.pttl(run.lock_key)) < MIDWAY) is below

                await eventually(crossed, "the lease renewed")
        renewed.set()

    result = await aiotasks.task(name="next", lock_timeout=LOCK)(body)(DATE, redis=redis_client)
    assert renewed.is_set()
    assert result["status"] == "success"


async def test_a_cancelled_task_blocks_its_dependents_in_a_chain(redis_client: Redis) -> None:
    """In a chain, the cancelled task fails and its dependents do not start: blocked, naming it."""
    body = Sleeper()
    first = aiotasks.task(name="first", lock_timeout=LOCK)(body)
    started: list[str] = []

    @aiotasks.task(name="second", depends_on=["first"])
    async def second(run: Run) -> None:
        started.append(run.task_name)

    chain = aiotasks.run_chain([first, second], DATE, redis=redis_client)
    runner = asyncio.ensure_future(chain)
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("first", DATE, redis=redis_client)
    by_task = await asyncio.wait_for(runner, HANG)
    assert by_task["first"]["reason"] == "cancelled"
    assert (by_task["second"]["status"], by_task["second"]["blocked_by"]) == ("skipped", "first")
    assert started == []


async def test_cancel_on_a_cluster_touches_one_slot(cluster_client: RedisCluster) -> None:
    """On Redis Cluster the request shares the lock's hash tag: the CANCEL and RENEW scripts each
    touch one slot, and the run is cancelled as on a single server."""
    body = Sleeper()
    sleeper = aiotasks.task(name="sleeper", lock_timeout=LOCK)(body)
    runner = asyncio.ensure_future(sleeper(DATE, redis=cluster_client))
    await asyncio.wait_for(body.holding.wait(), HANG)
    assert await aiotasks.cancel("sleeper", DATE, redis=cluster_client, wait=True)
    result = await failure(runner)
    assert (result["reason"], result["cancelled_by"]) == ("cancelled", ME)
    assert await cluster_client.exists("lock:{sleeper}:" + DATE) == 0
