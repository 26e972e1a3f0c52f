"""What a decorated run decides, case by case, against a real redis-server.

Written from a mutation campaign over ``_task.py``: each test here failed
against a change to the decorator that the rest of the suite let through.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from redis.asyncio import ConnectionPool, Redis

import aiotasks
from aiotasks import Run, TaskError, _task
from tests.servers import free_port
from tests.support import lock_and_marker_keys

DATE = "20261125"


async def test_a_recurring_task_runs_once_per_slot_but_every_time_per_date(redis_client: Redis) -> None:
    """A recurring task called with a slot key checks and writes that slot's marker (a second call
    is skipped already_completed); called with a plain date it runs every time."""
    ran: list[str] = []

    @aiotasks.task(recurring=True)
    async def tick(run: Run) -> None:
        ran.append(run.date)

    slot = f"{DATE}T0930"
    assert (await tick(slot, redis=redis_client))["status"] == "success"
    again = await tick(slot, redis=redis_client)
    assert (again["status"], again["reason"]) == ("skipped", "already_completed")
    assert await redis_client.exists(f"success:tick:{slot}") == 1
    assert (await tick(DATE, redis=redis_client))["status"] == "success"
    assert (await tick(DATE, redis=redis_client))["status"] == "success"
    assert ran == [slot, DATE, DATE]
    assert await redis_client.keys("lock:*") == []


async def test_a_body_failing_on_an_unreachable_redis_fails_with_reason_redis_unavailable(
    redis_client: Redis,
) -> None:
    """A body whose own aiotasks call finds Redis unreachable (RedisUnavailable) fails its run with
    reason redis_unavailable, the error's text in errors, and its lock released."""
    closed = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")

    @aiotasks.task()
    async def elsewhere(run: Run) -> None:
        await aiotasks.release_lock(closed, run.lock_key, run.task_id)

    try:
        with pytest.raises(TaskError) as caught:
            await elsewhere(DATE, redis=redis_client)
    finally:
        await closed.aclose()
    result = caught.value.result
    assert result is not None
    assert (result["status"], result["reason"]) == ("failed", "redis_unavailable")
    assert "127.0.0.1" in result["errors"][-1]
    assert await lock_and_marker_keys(redis_client) == []


async def test_a_task_called_from_a_body_on_the_same_client_takes_no_second_body_slot(redis_url: str) -> None:
    """Bodies sharing a client whose pool allows one body at a time: a task called from inside a
    running body (same client) runs at once, it does not wait for the slot its caller holds."""
    pool = ConnectionPool.from_url(redis_url, max_connections=3)  # minus the door's 2 lanes: 1 body
    client = Redis(connection_pool=pool)

    @aiotasks.task()
    async def inner(run: Run) -> None:
        await run.redis.ping()

    @aiotasks.task()
    async def outer(run: Run) -> None:
        run.result["inner"] = (await inner(run.date, redis=run.redis))["status"]

    try:
        result = await asyncio.wait_for(outer(DATE, redis=client), timeout=10)
        assert (result["status"], result["inner"]) == ("success", "success")
    finally:
        await client.aclose()


@pytest.mark.parametrize("end", ["low", "high"])
def test_retry_backoff_doubles_from_retry_delay_and_stops_at_60_seconds(
    monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """The pause before retry n is drawn from [retry_delay, retry_delay * 2**(n-1)], never above
    60 s (the jitter's draw pinned to either end of its range)."""
    monkeypatch.setattr(random, "uniform", (lambda low, high: low) if end == "low" else max)
    ceilings = [_task.backoff(1.5, attempt) for attempt in (1, 2, 3, 7, 30)]
    if end == "low":
        assert ceilings == [1.5, 1.5, 1.5, 1.5, 1.5]
    else:
        assert ceilings == [1.5, 3.0, 6.0, 60.0, 60.0]
    assert _task.backoff(90.0, 1) == 60.0


async def test_a_failure_the_body_already_recorded_is_listed_once(redis_client: Redis) -> None:
    """Seed style: a body that appends its error to result["errors"] and raises TaskError with the
    same text has that error listed once, not twice."""

    @aiotasks.task()
    async def recorded(run: Run) -> None:
        run.result["errors"].append("upstream down")
        raise TaskError("failed", "upstream down")

    with pytest.raises(TaskError) as caught:
        await recorded(DATE, redis=redis_client)
    assert caught.value.result is not None
    assert caught.value.result["errors"] == ["upstream down"]


async def test_retries_back_off_from_the_tasks_own_retry_delay(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause before each retry is backed off from the task's own retry_delay, attempt by attempt."""
    asked: list[tuple[float, int]] = []
    backoff = _task.backoff

    def observed(base: float, attempt: int) -> float:
        asked.append((base, attempt))
        return backoff(base, attempt)

    monkeypatch.setattr(_task, "backoff", observed)

    @aiotasks.task(retries=2, retry_delay=0.01)
    async def flaky(run: Run) -> None:
        if run.attempt < 3:
            raise TaskError("failed", f"attempt {run.attempt}")

    result = await flaky(DATE, redis=redis_client)
    assert (result["status"], result["attempts"]) == ("success", 3)
    assert asked == [(0.01, 1), (0.01, 2)]
