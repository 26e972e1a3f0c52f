"""Run hooks (issue 13): callbacks get each finished run's record, and can't change the run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import Run, RunRecord, TaskError, _hooks, finish_task, release_lock, task_boilerplate

DATE = "20261125"


@pytest.fixture
def received() -> Iterator[list[RunRecord]]:
    """Records given to an async hook (registered for the test only)."""
    seen: list[RunRecord] = []

    async def hook(record: RunRecord) -> None:
        seen.append(record)

    aiotasks.add_run_hook(hook)
    yield seen
    aiotasks.remove_run_hook(hook)


async def test_a_hook_gets_each_finished_run_after_its_lock_is_released(
    redis_client: Redis, received: list[RunRecord]
) -> None:
    """Success and failure each reach the hook once, with the lock already released."""
    locks_seen = []

    async def lock_free(record: RunRecord) -> None:
        locks_seen.append(await redis_client.exists(f"lock:{record.task}:{record.date}"))

    aiotasks.add_run_hook(lock_free)
    try:

        @aiotasks.task()
        async def good(run: Run) -> None:
            run.result["rows"] = 2

        @aiotasks.task()
        async def broken(run: Run) -> None:
            raise ValueError("nope")

        result = await good(DATE, redis=redis_client)
        await good(DATE, redis=redis_client)  # a skip: no record, no hook
        with pytest.raises(TaskError):
            await broken(DATE, redis=redis_client)
    finally:
        aiotasks.remove_run_hook(lock_free)
    assert [(r.task, r.status, r.reason) for r in received] == [
        ("good", "success", None),
        ("broken", "failed", "error"),
    ]
    assert received[0].task_id == result["task_id"]
    assert received[0].fence > 0
    assert dict(received[0].counters) == {"rows": 2}
    assert received[1].error == "Unexpected error: ValueError: nope"
    assert locks_seen == [0, 0]


async def test_sync_hooks_and_seed_style_runs(redis_client: Redis) -> None:
    """A plain def hook (run in a thread) gets a seed-style run's record, from finish_task."""
    seen: list[RunRecord] = []
    aiotasks.add_run_hook(seen.append)
    try:
        conn, lock_key, success_key, result, task_id = await task_boilerplate(
            "seedy", DATE, redis=redis_client
        )
        try:
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
        finally:
            await release_lock(conn, lock_key, task_id)
    finally:
        aiotasks.remove_run_hook(seen.append)
    assert [(r.task, r.task_id, r.status) for r in seen] == [("seedy", task_id, "success")]


async def test_a_failing_hook_changes_nothing(redis_client: Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A hook that raises is logged; the run's result and marker are as without it."""

    def explode(record: RunRecord) -> None:
        raise RuntimeError("hook bug")

    aiotasks.add_run_hook(explode)
    try:

        @aiotasks.task()
        async def fine(run: Run) -> None:
            pass

        with caplog.at_level(logging.ERROR, logger="aiotasks.hooks"):
            result = await fine(DATE, redis=redis_client)
    finally:
        aiotasks.remove_run_hook(explode)
    assert result["status"] == "success"
    assert await redis_client.exists(f"success:fine:{DATE}") == 1
    assert "hook bug" in caplog.text


async def test_a_slow_hook_is_abandoned(
    redis_client: Redis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook that never returns is abandoned after HOOK_TIMEOUT, logged; the run returns its success."""
    monkeypatch.setattr(_hooks, "HOOK_TIMEOUT", 0.05)

    async def stuck(record: RunRecord) -> None:
        await asyncio.Event().wait()

    aiotasks.add_run_hook(stuck)
    try:

        @aiotasks.task()
        async def quick(run: Run) -> None:
            pass

        with caplog.at_level(logging.WARNING, logger="aiotasks.hooks"):
            result = await quick(DATE, redis=redis_client)
    finally:
        aiotasks.remove_run_hook(stuck)
    assert result["status"] == "success"
    assert "abandoned" in caplog.text


async def test_a_cancelled_run_reaches_the_hook(redis_client: Redis) -> None:
    """A cancelled run's record (failed, cancelled) reaches the hook, in the background."""
    started, delivered = asyncio.Event(), asyncio.Event()
    seen: list[RunRecord] = []

    async def hook(record: RunRecord) -> None:
        seen.append(record)
        delivered.set()

    @aiotasks.task()
    async def endless(run: Run) -> None:
        started.set()
        await asyncio.Event().wait()

    aiotasks.add_run_hook(hook)
    try:
        running = asyncio.create_task(endless(DATE, redis=redis_client))
        await started.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await delivered.wait()
    finally:
        aiotasks.remove_run_hook(hook)
    assert [(r.status, r.reason) for r in seen] == [("failed", "cancelled")]


def test_a_hook_must_be_callable() -> None:
    """add_run_hook refuses what can't be called, naming it."""
    with pytest.raises(aiotasks.InvalidConfig, match="42"):
        aiotasks.add_run_hook(42)  # type: ignore[arg-type]
