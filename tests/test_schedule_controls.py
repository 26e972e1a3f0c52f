"""Schedule controls on a real redis-server: pausing a schedule, and trigger (run now) across replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

import aiotasks
from aiotasks import InvalidDate, InvalidSchedule, Run, Schedule, TriggerExpired, _scheduler, task
from aiotasks._clock import FakeClock
from aiotasks._keys import schedule_keys
from aiotasks._records import HOST, CellState, read_grid, read_runs
from aiotasks._scheduler import Scheduler, SchedulerState
from aiotasks._store import store_for
from aiotasks._trigger import TriggerRequest, trigger_key
from aiotasks._views import grid_text, history_text, status_cells_text
from tests.proxy import Proxy
from tests.servers import LocalCluster, RedisServer
from tests.support import eventually
from tests.test_metrics import value

NOON = dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC)


@task(recurring=True)
async def beat(run: Run) -> None:
    """Logs the slot it ran for."""
    await run.redis.rpush("beats", run.date)


@task(recurring=True)
async def nap(run: Run) -> None:
    """Takes a measurable time."""
    await asyncio.sleep(0.05)


@task()
async def fetch(run: Run) -> None:
    await run.redis.rpush("daily", f"fetch:{run.date}")


@task(depends_on=["fetch"])
async def store_it(run: Run) -> None:
    await run.redis.rpush("daily", f"store_it:{run.date}")


#: Who paused, as a pause key says it (``host:pid|ms``) once set by this process.
ME = f"{HOST}:{os.getpid()}"


async def pause(client: Redis | RedisCluster, name: str, namespace: str | None = None) -> None:
    """``aiotasks pause --schedule``: it was not paused before."""
    assert await aiotasks.pause_schedule(name, redis=client, namespace=namespace)


async def resume(client: Redis | RedisCluster, name: str, namespace: str | None = None) -> None:
    """``aiotasks resume --schedule``: it was paused."""
    assert await aiotasks.resume_schedule(name, redis=client, namespace=namespace)


async def listed(client: Redis | RedisCluster, key: str) -> list[str]:
    return [item.decode() for item in await client.lrange(key, 0, -1)]  # type: ignore[union-attr]


def entry(scheduler: Scheduler, index: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = scheduler.status()["schedules"][index]
    return found


async def slots_seen(replicas: list[Scheduler], runs: int, paused: int) -> None:
    """Every replica has dealt with that many slots: run (or found run) and skipped as paused."""

    async def check() -> bool:
        return all(entry(r)["runs"] >= runs and entry(r)["paused_slots"] >= paused for r in replicas)

    await eventually(check, f"{runs} runs and {paused} paused slots on every replica")


async def test_a_paused_schedule_fires_nowhere_records_each_slot_once_and_resumes_with_the_next(
    redis_client: Redis,
) -> None:
    """Paused: the catch-up's 5 slots and the next 3 pass with no run on either replica, each recorded
    'paused' once; resumed: the next slot runs once and the paused ones are not caught up."""
    clock = FakeClock(NOON)
    schedule = Schedule(beat, every="1m", name="beats", catchup=5)
    replicas = [Scheduler(schedule, redis=redis_client, clock=clock, triggers=False) for _ in range(2)]
    counted = value("aiotasks_runs_total", task="beat", outcome="paused")
    await pause(redis_client, "beats")
    async with replicas[0], replicas[1]:
        await slots_seen(replicas, 0, 5)
        await clock.sleepers(2)
        for minute in range(1, 4):
            clock.advance(60)
            await slots_seen(replicas, 0, 5 + minute)
            await clock.sleepers(2)
        assert await listed(redis_client, "beats") == []
        assert entry(replicas[0])["paused"].startswith(f"{ME}|")
        await resume(redis_client, "beats")
        clock.advance(60)
        await slots_seen(replicas, 1, 8)
        assert entry(replicas[1])["paused"] is None
    assert await listed(redis_client, "beats") == ["20260101T1204"]
    summary = (await read_runs(store_for(redis_client), ["beat"], namespace=None, last=10))["beat"]
    paused = sorted((run.date, run.status, run.task_id) for run in summary.runs if run.status == "paused")
    slots = ["20260101T1156", "20260101T1157", "20260101T1158", "20260101T1159"]
    slots += [f"20260101T120{m}" for m in range(4)]
    assert paused == [(slot, "paused", "paused") for slot in slots]
    assert all(f"paused by {ME}" in (run.error or "") for run in summary.runs if run.status == "paused")
    # Each replica counts the slots it did not fire (as with missed ones): 8 slots, 2 replicas.
    assert value("aiotasks_runs_total", task="beat", outcome="paused") - counted == 16


async def test_a_scheduler_starting_after_a_resume_does_not_catch_up_paused_slots(
    redis_client: Redis,
) -> None:
    """Regression: a restart after resume must not run, as catch-up, a daily slot that passed paused."""
    clock = FakeClock(NOON)
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly")  # catches up its last slot
    await pause(redis_client, "nightly")
    async with Scheduler(schedule, redis=redis_client, clock=clock, triggers=False) as first:
        await eventually(lambda: _true(entry(first)["paused_slots"] == 1), "the catch-up recorded paused")
    await resume(redis_client, "nightly")
    async with Scheduler(schedule, redis=redis_client, clock=clock, triggers=False) as second:
        await clock.sleepers(1)
        assert entry(second)["running"] == []
    assert await listed(redis_client, "daily") == []
    summary = await read_runs(store_for(redis_client), ["fetch", "store_it"], namespace=None, last=5)
    assert [(r.date, r.status) for r in summary["fetch"].runs] == [("20260101", "paused")]


async def _true(value: bool) -> bool:
    return value


async def test_two_replicas_run_a_trigger_once_and_force_runs_a_completed_key_again_once(
    redis_client: Redis,
) -> None:
    """A trigger is taken by one of two replicas and runs the chain once, its records saying who asked;
    a second one finds the key completed; --force runs it again, once."""
    clock = FakeClock(NOON)
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly", catchup=0)
    replicas = [Scheduler(schedule, redis=redis_client, clock=clock) for _ in range(2)]
    counted = value("aiotasks_runs_total", task="store_it", outcome="triggered")
    async with replicas[0], replicas[1]:
        first = await aiotasks.trigger(schedule, key="20251231", redis=redis_client, wait=True)
        assert first.key == "20251231"
        assert first.results is not None
        assert {name: r["status"] for name, r in first.results.items()} == {
            "fetch": "success",
            "store_it": "success",
        }
        again = await aiotasks.trigger("nightly", key="20251231", redis=redis_client, wait=True)
        assert again.results is not None
        assert {r["reason"] for r in again.results.values()} == {"already_completed"}
        forced = await aiotasks.trigger(schedule, key="20251231", force=True, redis=redis_client, wait=True)
        assert forced.results is not None
        assert {r["status"] for r in forced.results.values()} == {"success"}
        assert sum(entry(r)["triggered"] for r in replicas) == 3
    assert value("aiotasks_runs_total", task="store_it", outcome="triggered") - counted == 3
    assert await listed(redis_client, "daily") == ["fetch:20251231", "store_it:20251231"] * 2
    summary = await read_runs(store_for(redis_client), ["fetch"], namespace=None, last=5)
    assert len(summary["fetch"].runs) == 2  # the run, and the forced one (the middle one ran nothing)
    assert {run.triggered_by for run in summary["fetch"].runs} == {f"{HOST}:{os.getpid()}"}


async def test_a_trigger_no_replica_serves_expires_and_is_withdrawn(redis_client: Redis) -> None:
    """No scheduler serves the schedule: trigger raises TriggerExpired naming it, and leaves no request
    behind for a replica that starts later."""
    with pytest.raises(TriggerExpired, match=r"no replica serves schedule 'nightly': the request expired"):
        await aiotasks.trigger("nightly", key="20260101", redis=redis_client, expires=0.3)
    assert await redis_client.exists(schedule_keys("nightly", namespace=None).triggers) == 0


async def test_a_replica_drops_a_request_that_expired_before_it_was_popped(redis_client: Redis) -> None:
    """A request found already expired is dropped, not run: the replica answers 'expired'."""
    keys = schedule_keys("nightly", namespace=None)
    stale = TriggerRequest("abc123", "nightly", "20260101", False, "someone:1", 1)
    await redis_client.lpush(keys.triggers, stale.to_json())
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly", catchup=0)
    async with Scheduler(schedule, redis=redis_client, clock=FakeClock(NOON)):
        reply = await redis_client.blpop([f"{keys.triggers}:reply:abc123"], 20)
    assert reply is not None
    assert json.loads(reply[1])["state"] == "expired"
    assert await listed(redis_client, "daily") == []


def test_a_trigger_key_is_checked_against_its_schedule() -> None:
    """The default key is the latest slot at or before now; a key of the wrong kind or no slot is refused."""
    daily = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly")
    at_one = dt.datetime(2026, 1, 2, 1, 0, tzinfo=dt.UTC)
    assert trigger_key(daily, None, at_one) == "20260101"
    assert trigger_key(daily, "20251224", at_one) == "20251224"
    quarter = Schedule(beat, every="15m")
    assert trigger_key(quarter, None, at_one) == "20260102T0100"
    assert trigger_key(quarter, "20260101T2345", at_one) == "20260101T2345"
    seconds = Schedule(beat, every="10s")
    assert trigger_key(seconds, None, at_one.replace(second=15)) == "20260102T010010"
    hourly = Schedule(beat, cron="0 * * * *")
    assert trigger_key(hourly, None, at_one.replace(minute=59)) == "20260102T0100"
    for schedule, bad in [(daily, "20260101T0200"), (quarter, "20260101"), (quarter, "20260101T2344")]:
        with pytest.raises(InvalidDate, match=bad):
            trigger_key(schedule, bad, at_one)


async def test_trigger_refuses_bad_input_before_writing(redis_client: Redis) -> None:
    """A bad name, key or expiry is a typed error naming it, and nothing is written."""
    with pytest.raises(InvalidSchedule, match="'no:colons'"):
        await aiotasks.trigger("no:colons", redis=redis_client)
    with pytest.raises(InvalidDate, match="2026"):
        await aiotasks.trigger("nightly", key="2026", redis=redis_client)
    with pytest.raises(InvalidSchedule, match="-1"):
        await aiotasks.trigger("nightly", redis=redis_client, expires=-1)
    assert await redis_client.dbsize() == 0


async def test_scheduler_status_shows_pending_triggers_and_paused_from_its_last_check(
    redis_client: Redis,
) -> None:
    """At a slot the scheduler reads its controls: status then shows who paused it and waiting triggers."""
    clock = FakeClock(NOON)
    schedule = Schedule(beat, every="1m", name="beats")
    keys = schedule_keys("beats", namespace="ns")
    async with Scheduler(schedule, redis=redis_client, namespace="ns", clock=clock, triggers=False) as one:
        await clock.sleepers(1)
        await pause(redis_client, "beats", "ns")
        await redis_client.lpush(keys.triggers, "{}", "{}")
        clock.advance(30)
        await eventually(lambda: _true(entry(one)["paused_slots"] == 1), "the slot was checked")
        assert entry(one)["paused"].startswith(f"{ME}|")
        assert entry(one)["pending_triggers"] == 2


async def test_one_blocking_read_serves_triggers_on_redis_cluster(cluster_client: RedisCluster) -> None:
    """On Redis Cluster the listener's one BRPOP covers every schedule (one hash tag): both are served;
    a paused schedule's slot is read and recorded there too."""
    clock = FakeClock(NOON)
    schedules = [
        Schedule([fetch, store_it], cron="0 2 * * *", name="nightly", catchup=0),
        Schedule(beat, every="1m", name="beats"),
    ]
    async with Scheduler(schedules, redis=cluster_client, namespace="prod", clock=clock) as scheduler:
        await clock.sleepers(2)
        await pause(cluster_client, "beats", "prod")
        clock.advance(30)  # 12:01: the paused slot is read and recorded on the cluster
        await eventually(lambda: _true(entry(scheduler, 1)["paused_slots"] == 1), "the slot was skipped")
        one = await aiotasks.trigger(
            schedules[0], key="20251231", redis=cluster_client, namespace="prod", wait=True
        )
        two = await aiotasks.trigger(
            "beats", key="20260101T1100", redis=cluster_client, namespace="prod", wait=True
        )
    assert one.results is not None
    assert two.results is not None
    assert {r["status"] for r in [*one.results.values(), *two.results.values()]} == {"success"}
    assert await listed(cluster_client, "beats") == ["20260101T1100"]  # the trigger's, not 12:01's
    grid = await read_grid(store_for(cluster_client), ["beat"], ["20260101T1201"], namespace="prod")
    assert grid["beat"]["20260101T1201"].state is CellState.PAUSED


async def test_paused_slots_and_triggered_runs_show_in_the_grid_and_history(redis_client: Redis) -> None:
    """The grid marks a paused slot '=' and lists it; history and status say who triggered a run."""
    clock = FakeClock(NOON)
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly")
    await pause(redis_client, "nightly")
    async with Scheduler(schedule, redis=redis_client, clock=clock) as scheduler:
        await eventually(lambda: _true(entry(scheduler)["paused_slots"] == 1), "today's slot paused")
        await aiotasks.trigger(schedule, key="20251231", redis=redis_client, wait=True)
    store = store_for(redis_client)
    dates = ["20251231", "20260101"]
    grid = await read_grid(store, ["fetch", "store_it"], dates, namespace=None)
    text = grid_text(dates, grid)
    assert "  fetch     +=" in text
    assert "20260101 fetch: paused (" in text
    day = {name: cells["20251231"] for name, cells in grid.items()}
    assert f"triggered by {HOST}:{os.getpid()}" in status_cells_text("20251231", day)
    runs = (await read_runs(store, ["fetch"], namespace=None, last=5))["fetch"].runs
    assert f"triggered by {HOST}:{os.getpid()}" in history_text(runs)
    assert [run.to_json()["triggered_by"] for run in runs] == [f"{HOST}:{os.getpid()}", None]  # newest first


async def test_two_schedules_with_one_name_are_refused() -> None:
    """Two schedules sharing a name would share their controls: the Scheduler refuses them, naming it."""
    with pytest.raises(InvalidSchedule, match="'beat'"):
        Scheduler([Schedule(beat, every="1m"), Schedule(beat, every="5m")])


async def test_stop_lets_the_listeners_read_end_and_runs_what_it_pops(
    redis_client: Redis, proxy: Proxy, proxied: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: stopping must not cut the listener's blocking read: Redis may have handed it a
    request already (here: its reply is held on the way), which would be lost. The stopping replica
    reads it and runs it under the grace; nothing is left in the list or blocked."""
    monkeypatch.setattr(_scheduler, "TRIGGER_BLOCK", 5.0)  # the read in flight outlasts the steps below
    keys = schedule_keys("nightly", namespace=None)
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly", catchup=0)
    scheduler = Scheduler(schedule, redis=proxied, clock=FakeClock(NOON))
    async with scheduler:
        await eventually(lambda: _blocked(redis_client, 1), "the listener is blocked in BRPOP")
        proxy.hold_replies()
        late = TriggerRequest("late1", "nightly", "20251229", False, "someone:1", 2**53)
        await redis_client.lpush(keys.triggers, late.to_json())
        await proxy.reply_held.wait()  # Redis popped it for the listener; the reply is on its way
        scheduler.request_stop()
        await eventually(lambda: _true(scheduler.state is SchedulerState.STOPPING), "stopping")
        proxy.release_replies()
    assert await listed(redis_client, "daily") == ["fetch:20251229", "store_it:20251229"]
    assert await redis_client.llen(keys.triggers) == 0
    assert await _blocked(redis_client, 0)


async def _blocked(client: Redis, count: int) -> bool:
    info = await client.info("clients")
    return int(info["blocked_clients"]) == count


async def test_a_request_pushed_twice_runs_once(redis_client: Redis) -> None:
    """Regression: a push retried after a lost reply puts one request on the list twice; both copies are
    popped, but only the first claims it: the chain (even with force) runs once."""
    keys = schedule_keys("nightly", namespace=None)
    twice = TriggerRequest("dup1", "nightly", "20251230", True, "someone:1", 2**53)
    await redis_client.lpush(keys.triggers, twice.to_json(), twice.to_json())
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly", catchup=0)
    replies = f"{keys.triggers}:reply:dup1"
    async with Scheduler(schedule, redis=redis_client, clock=FakeClock(NOON)) as scheduler:
        states = []
        while "done" not in states:
            popped = await redis_client.blpop([replies], 20)
            assert popped is not None
            states.append(json.loads(popped[1])["state"])
        await eventually(lambda: _true(not scheduler.status()["schedules"][0]["running"]), "idle again")
        assert await redis_client.llen(keys.triggers) == 0
        assert entry(scheduler)["triggered"] == 1
    assert states == ["taken", "done"]
    assert await listed(redis_client, "daily") == ["fetch:20251230", "store_it:20251230"]


async def test_a_replica_refuses_a_key_that_is_not_its_schedules(redis_client: Redis) -> None:
    """A trigger by bare name with a slot key for a daily schedule: the replica refuses it, and the
    requester raises InvalidDate naming the key; nothing runs."""
    schedule = Schedule([fetch, store_it], cron="0 2 * * *", name="nightly", catchup=0)
    async with Scheduler(schedule, redis=redis_client, clock=FakeClock(NOON)):
        with pytest.raises(InvalidDate, match="'20251231T0200'"):
            await aiotasks.trigger("nightly", key="20251231T0200", redis=redis_client)
    assert await listed(redis_client, "daily") == []


async def test_a_redis_restart_forgets_a_pause_and_the_listener_comes_back() -> None:
    """A Redis without persistence restarted while a schedule is paused: the pause is lost (the next
    slot runs, once), and the trigger listener reconnects by itself and serves again."""
    with RedisServer() as server:
        client = Redis.from_url(server.url)
        clock = FakeClock(NOON)
        schedule = Schedule(beat, every="1m", name="beats")
        try:
            async with Scheduler(schedule, redis=client, clock=clock) as scheduler:
                await clock.sleepers(1)
                await pause(client, "beats")
                clock.advance(30)
                await eventually(lambda: _true(entry(scheduler)["paused_slots"] == 1), "12:01 paused")
                await clock.sleepers(1)
                server.restart()
                clock.advance(60)
                await eventually(lambda: _true(entry(scheduler)["runs"] == 1), "12:02 ran")
                taken = await aiotasks.trigger(schedule, key="20260101T1100", redis=client, wait=True)
                assert taken.results is not None
            assert await listed(client, "beats") == ["20260101T1202", "20260101T1100"]
        finally:
            await client.aclose()


async def test_a_paused_slot_is_not_the_last_run_duration_metrics_report(redis_client: Redis) -> None:
    """Regression: a paused slot's record (no run, 0 s) newer than the last run must not become the
    task's last run duration (``aiotasks_last_run_duration_seconds``)."""
    clock = FakeClock(NOON)
    async with Scheduler(Schedule(nap, every="1m"), redis=redis_client, clock=clock, triggers=False) as one:
        await clock.sleepers(1)
        clock.advance(30)
        await eventually(lambda: _true(entry(one)["runs"] == 1), "12:01 ran")
        await clock.sleepers(1)
        await pause(redis_client, "nap")
        clock.advance(60)
        await eventually(lambda: _true(entry(one)["paused_slots"] == 1), "12:02 paused")
    summary = (await read_runs(store_for(redis_client), ["nap"], namespace=None, last=5))["nap"]
    assert [run.status for run in summary.runs] == ["paused", "success"]
    assert summary.last_duration == summary.runs[1].duration
    assert summary.last_duration is not None
    assert summary.last_duration >= 0.05


@pytest.mark.parametrize("kind", ["plain", "cluster"])
async def test_a_watcher_blocks_for_half_the_socket_timeout_at_most(
    kind: str, redis_url: str, cluster: LocalCluster
) -> None:
    """A blocking read longer than the client's socket_timeout would fail: it blocks half of it."""
    client: Redis | RedisCluster = (
        Redis.from_url(redis_url, socket_timeout=0.4)
        if kind == "plain"
        else RedisCluster.from_url(cluster.nodes[0].url, socket_timeout=0.4)
    )
    try:
        watcher = store_for(client).watcher()
        assert watcher.block(1.0) == pytest.approx(0.2)
        assert await watcher.pop(["schedule:{aiotasks}:x:triggers"], 1.0) is None  # no timeout error
        await watcher.close()
    finally:
        await client.aclose()
