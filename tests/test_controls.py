"""Fleet controls' API on a real redis-server and Redis Cluster: pause/resume a schedule or a task,
paused_tasks, clear (re-run)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

import aiotasks
from aiotasks import (
    InvalidChain,
    InvalidDate,
    InvalidSchedule,
    InvalidTaskName,
    Run,
    Schedule,
    Scheduler,
    task,
)
from aiotasks._clock import FakeClock
from aiotasks._keys import paused_key, schedule_keys, task_keys
from aiotasks._records import HOST, CellState, read_grid, read_runs
from aiotasks._store import Acquired, Paused, store_for
from aiotasks._views import summarize, summary_line
from tests.servers import RedisServer
from tests.support import eventually
from tests.test_metrics import value

DATE = "20261124"
COMPLETED, PENDING = CellState.COMPLETED, CellState.PENDING


@task()
async def extract(run: Run) -> None:
    await run.redis.rpush("ran", f"extract:{run.date}")


@task(depends_on=["extract"])
async def transform(run: Run) -> None:
    await run.redis.rpush("ran", f"transform:{run.date}")


@task(depends_on=["transform"])
async def load(run: Run) -> None:
    await run.redis.rpush("ran", f"load:{run.date}")


@task()
async def audit(run: Run) -> None:
    await run.redis.rpush("ran", f"audit:{run.date}")


@task(retention=0)
async def unrecorded(run: Run) -> None:
    await run.redis.rpush("ran", f"unrecorded:{run.date}")


CHAIN = [extract, transform, load, audit]


async def ran(client: Redis | RedisCluster) -> list[str]:
    return sorted(item.decode() for item in await client.lrange("ran", 0, -1))  # type: ignore[union-attr]


def reasons(results: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str | None, str | None]]:
    return {name: (r["status"], r.get("reason"), r.get("blocked_by")) for name, r in results.items()}


async def test_pause_task_and_resume_task_say_whether_they_changed_anything(redis_client: Redis) -> None:
    """Pausing sets the task's paused key (who, when); pausing again returns False and keeps the first
    value; resume deletes it, and again returns False."""
    key = paused_key("extract", namespace=None, cluster=False)
    assert await aiotasks.pause_task("extract", redis=redis_client) is True
    first = await redis_client.get(key)
    assert isinstance(first, bytes)
    assert first.decode().startswith(f"{HOST}:{os.getpid()}|")
    assert await aiotasks.pause_task("extract", redis=redis_client) is False
    assert await redis_client.get(key) == first
    assert await redis_client.ttl(key) == -1  # no TTL: it lasts until resumed
    assert await aiotasks.resume_task("extract", redis=redis_client) is True
    assert await aiotasks.resume_task("extract", redis=redis_client) is False
    assert await redis_client.dbsize() == 0


async def test_pause_schedule_and_resume_schedule_set_the_key_the_scheduler_reads(
    redis_client: Redis,
) -> None:
    """pause_schedule sets the schedule's paused key in its namespace (idempotently); resume removes it."""
    key = schedule_keys("nightly", namespace="prod").paused
    assert await aiotasks.pause_schedule("nightly", redis=redis_client, namespace="prod") is True
    assert await aiotasks.pause_schedule("nightly", redis=redis_client, namespace="prod") is False
    paused, _ = await store_for(redis_client).read_schedule(schedule_keys("nightly", namespace="prod"))
    assert paused is not None
    assert paused.startswith(f"{HOST}:{os.getpid()}|")
    assert await redis_client.exists(key) == 1
    assert await aiotasks.resume_schedule("nightly", redis=redis_client, namespace="prod") is True
    assert await aiotasks.resume_schedule("nightly", redis=redis_client, namespace="prod") is False
    assert await redis_client.dbsize() == 0


async def test_a_paused_task_is_skipped_with_reason_paused_and_writes_nothing(redis_client: Redis) -> None:
    """A paused decorated task (with or without records) is skipped 'paused': no lock, no record, no
    marker; the skip is counted; resumed, it runs."""
    await aiotasks.pause_task("extract", redis=redis_client)
    await aiotasks.pause_task("unrecorded", redis=redis_client)
    before = await redis_client.dbsize()
    counted = value("aiotasks_runs_total", task="extract", outcome="paused")
    result = await extract(DATE, redis=redis_client)
    assert (result["status"], result["reason"]) == ("skipped", "paused")
    other = await unrecorded(DATE, redis=redis_client)
    assert (other["status"], other["reason"]) == ("skipped", "paused")
    assert await redis_client.dbsize() == before  # nothing written
    assert value("aiotasks_runs_total", task="extract", outcome="paused") - counted == 1
    await aiotasks.resume_task("extract", redis=redis_client)
    assert (await extract(DATE, redis=redis_client))["status"] == "success"
    assert await ran(redis_client) == [f"extract:{DATE}"]


async def test_task_boilerplate_skips_a_paused_task(redis_client: Redis) -> None:
    """The seed-style entry point honours the pause too: skipped, reason paused, no lock."""
    await aiotasks.pause_task("seedy", redis=redis_client)
    _, lock_key, _, result, _ = await aiotasks.task_boilerplate("seedy", DATE, redis=redis_client)
    assert (result["status"], result["reason"]) == ("skipped", "paused")
    assert await redis_client.exists(lock_key) == 0


async def test_a_chain_skips_a_paused_task_blocks_its_dependents_and_runs_the_rest(
    redis_client: Redis,
) -> None:
    """In a chain: the paused task is skipped 'paused', its dependent 'dependency_paused' naming it,
    the next one 'dependency_blocked'; an independent task still runs."""
    await aiotasks.pause_task("extract", redis=redis_client)
    results = await aiotasks.run_chain(CHAIN, DATE, redis=redis_client)
    assert reasons(results) == {
        "extract": ("skipped", "paused", None),
        "transform": ("skipped", "dependency_paused", "extract"),
        "load": ("skipped", "dependency_blocked", "transform"),
        "audit": ("success", None, None),
    }
    assert await ran(redis_client) == [f"audit:{DATE}"]


async def test_a_completed_task_paused_stays_completed_and_its_dependents_run(redis_client: Redis) -> None:
    """A pause stops runs, not what is done: a paused task already completed for the date is skipped as
    already_completed, so its dependents run."""
    await extract(DATE, redis=redis_client)
    await aiotasks.pause_task("extract", redis=redis_client)
    results = await aiotasks.run_chain(CHAIN, DATE, redis=redis_client)
    assert results["extract"]["reason"] == "already_completed"
    assert {results[name]["status"] for name in ("transform", "load", "audit")} == {"success"}


async def test_a_retried_acquire_that_took_the_lock_before_the_pause_keeps_it(redis_client: Redis) -> None:
    """Regression guard: an acquire retried after a lost reply, whose first attempt took the lock just
    before a pause landed, must get its lock back (Acquired), not 'paused', which would leave the lock
    nobody gives back; another token is refused as paused."""
    store = store_for(redis_client)
    keys = task_keys("extract", DATE, namespace=None, cluster=False)
    first = await store.acquire(keys, "tok1", 60_000, check_success=True, retention_ms=60_000)
    await aiotasks.pause_task("extract", redis=redis_client)
    again = await store.acquire(keys, "tok1", 60_000, check_success=True, retention_ms=60_000)
    assert isinstance(first, Acquired)
    assert isinstance(again, Acquired)
    assert again.fence == first.fence
    assert isinstance(await store.acquire(keys, "tok2", 60_000, check_success=True), Paused)


async def test_paused_tasks_names_the_paused_ones_and_who_paused_them(redis_client: Redis) -> None:
    """paused_tasks maps each paused task to 'host:pid|ms' and leaves the others out."""
    await aiotasks.pause_task("load", redis=redis_client, namespace="prod")
    found = await aiotasks.paused_tasks(["extract", "load"], redis=redis_client, namespace="prod")
    assert list(found) == ["load"]
    assert found["load"].split("|")[1].isdigit()
    assert await aiotasks.paused_tasks([], redis=redis_client) == {}
    assert await aiotasks.paused_tasks(["load"], redis=redis_client) == {}  # another namespace


async def test_clear_removes_markers_downstream_in_chain_order_so_they_run_again(redis_client: Redis) -> None:
    """clear(tasks=[transform], downstream=True) removes transform's and load's markers (not extract's,
    not audit's) and returns those that existed, in chain order; the next run repeats exactly those."""
    await aiotasks.run_chain(CHAIN, DATE, redis=redis_client)
    cleared = await aiotasks.clear(CHAIN, DATE, tasks=["transform"], downstream=True, redis=redis_client)
    assert cleared == ["transform", "load"]
    assert await aiotasks.clear(CHAIN, DATE, tasks=["transform"], redis=redis_client) == []
    results = await aiotasks.run_chain(CHAIN, DATE, redis=redis_client)
    assert {name: r["status"] for name, r in results.items()} == {
        "extract": "skipped",
        "transform": "success",
        "load": "success",
        "audit": "skipped",
    }
    assert await aiotasks.clear(CHAIN, DATE, redis=redis_client) == ["extract", "transform", "load", "audit"]


async def test_a_cleared_date_shows_pending_in_the_grid_and_history_keeps_its_run(
    redis_client: Redis,
) -> None:
    """Regression guard: the grid falls back on a run's record when there is no marker (markers expire
    before records), so a cleared date must not still read 'completed': it reads 'pending' until it
    runs again; history keeps the cleared run."""
    store = store_for(redis_client)
    await extract(DATE, redis=redis_client)
    assert (await read_grid(store, ["extract"], [DATE], namespace=None))["extract"][DATE].state is COMPLETED
    assert await aiotasks.clear([extract], DATE, redis=redis_client) == ["extract"]
    assert (await read_grid(store, ["extract"], [DATE], namespace=None))["extract"][DATE].state is PENDING
    assert len((await read_runs(store, ["extract"], namespace=None, last=5))["extract"].runs) == 1
    await extract(DATE, redis=redis_client)
    assert (await read_grid(store, ["extract"], [DATE], namespace=None))["extract"][DATE].state is COMPLETED


async def test_controls_refuse_bad_input_before_writing(redis_client: Redis) -> None:
    """A bad task or schedule name, a bad date, a task not in the chain: a typed error naming the value,
    and nothing is written."""
    await aiotasks.run_chain(CHAIN, DATE, redis=redis_client)
    before = await redis_client.dbsize()
    with pytest.raises(InvalidTaskName, match="'no:colons'"):
        await aiotasks.pause_task("no:colons", redis=redis_client)
    with pytest.raises(InvalidTaskName, match=r"'\{x\}'"):
        await aiotasks.resume_task("{x}", redis=redis_client)
    with pytest.raises(InvalidSchedule, match="'bad name'"):
        await aiotasks.pause_schedule("bad name", redis=redis_client)
    with pytest.raises(InvalidTaskName, match="'a b'"):
        await aiotasks.paused_tasks(["extract", "a b"], redis=redis_client)
    with pytest.raises(InvalidChain, match="'nope'"):
        await aiotasks.clear(CHAIN, DATE, tasks=["extract", "nope"], redis=redis_client)
    with pytest.raises(InvalidDate, match="'2026'"):
        await aiotasks.clear(CHAIN, "2026", redis=redis_client)
    assert await redis_client.dbsize() == before
    assert await aiotasks.clear(CHAIN, DATE, tasks="audit", redis=redis_client) == ["audit"]  # a bare id


async def test_task_pause_and_clear_on_redis_cluster(cluster_client: RedisCluster) -> None:
    """On Redis Cluster the pause key shares the task's hash tag (the acquire script reads it in one
    slot): a paused task is skipped 'paused', paused_tasks reads keys on several nodes, clear works."""
    key = paused_key("extract", namespace="prod", cluster=True)
    assert key == "prod:paused:{extract}"
    lock = task_keys("extract", DATE, namespace="prod", cluster=True).lock
    assert cluster_client.keyslot(key) == cluster_client.keyslot(lock)
    assert await aiotasks.pause_task("extract", redis=cluster_client, namespace="prod")
    assert await aiotasks.pause_task("audit", redis=cluster_client, namespace="prod")
    found = await aiotasks.paused_tasks(["extract", "load", "audit"], redis=cluster_client, namespace="prod")
    assert sorted(found) == ["audit", "extract"]
    results = await aiotasks.run_chain(CHAIN, DATE, redis=cluster_client, namespace="prod")
    assert reasons(results)["transform"] == ("skipped", "dependency_paused", "extract")
    assert results["audit"]["reason"] == "paused"
    assert await aiotasks.resume_task("extract", redis=cluster_client, namespace="prod")
    await aiotasks.run_chain(CHAIN, DATE, redis=cluster_client, namespace="prod")
    assert await aiotasks.clear(CHAIN, DATE, redis=cluster_client, namespace="prod") == [
        "extract",
        "transform",
        "load",
    ]


async def test_scheduler_status_names_the_tasks_its_last_run_found_paused(redis_client: Redis) -> None:
    """Scheduler.status() lists, per schedule, the chain's tasks its last slot found paused (and none once
    resumed); the slot's run skipped them and blocked their dependents."""
    clock = FakeClock(dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC))
    schedule = Schedule([extract, transform], every="1m", name="etl")
    await aiotasks.pause_task("extract", redis=redis_client)
    async with Scheduler(schedule, redis=redis_client, clock=clock, triggers=False) as scheduler:
        await clock.sleepers(1)
        clock.advance(30)
        await eventually(lambda: _true(scheduler.status()["schedules"][0]["runs"] == 1), "12:01 ran")
        assert scheduler.status()["schedules"][0]["paused_tasks"] == ["extract"]
        await aiotasks.resume_task("extract", redis=redis_client)
        await clock.sleepers(1)
        clock.advance(60)
        await eventually(lambda: _true(scheduler.status()["schedules"][0]["runs"] == 2), "12:02 ran")
        assert scheduler.status()["schedules"][0]["paused_tasks"] == []
    assert await ran(redis_client) == ["extract:20260101T1202", "transform:20260101T1202"]


async def _true(value: bool) -> bool:
    return value


async def test_a_redis_restart_forgets_a_task_pause_and_nothing_stays_locked() -> None:
    """A Redis without persistence restarted while a task is paused: the pause is lost (documented), the
    next attempt runs once, and no lock was left behind by the paused attempts."""
    with RedisServer() as server:
        client = Redis.from_url(server.url)
        try:
            await aiotasks.pause_task("extract", redis=client)
            assert (await extract(DATE, redis=client))["reason"] == "paused"
            server.restart()
            assert await aiotasks.paused_tasks(["extract"], redis=client) == {}
            assert (await extract(DATE, redis=client))["status"] == "success"
            assert (await extract(DATE, redis=client))["reason"] == "already_completed"
            assert await client.keys("lock:*") == []
            assert await ran(client) == [f"extract:{DATE}"]
        finally:
            await client.aclose()


def test_run_counts_what_a_pause_holds_as_paused_and_a_failure_still_fails() -> None:
    """The summary counts a paused task, its dependent and theirs (blocked only by the pause) as
    'paused', exit 0; a failure beside them still makes the exit code 1, and a task blocked by a
    failure is 'blocked'."""
    paused = {"status": "skipped", "reason": "paused"}
    results: dict[str, dict[str, Any]] = {
        "a": paused,
        "b": {"status": "skipped", "reason": "dependency_paused", "blocked_by": "a"},
        "c": {"status": "skipped", "reason": "dependency_blocked", "blocked_by": "b"},
        "d": {"status": "success"},
    }
    summary = summarize(results, 0.1)
    assert (summary["paused"], summary["blocked"], summary["exit_code"]) == (3, 0, 0)
    assert summary_line(DATE, summary).endswith("0 failed, 0 blocked, 3 paused in 0.10s")
    results["e"] = {"status": "failed", "reason": "error"}
    results["f"] = {"status": "skipped", "reason": "dependency_failed", "blocked_by": "e"}
    summary = summarize(results, 0.1)
    assert (summary["paused"], summary["failed"], summary["blocked"], summary["exit_code"]) == (3, 1, 1, 1)
