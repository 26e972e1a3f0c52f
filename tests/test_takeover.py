"""A slot whose holder died mid-body is taken over once its lock expires (issue 19.2).

A "dead holder" is a run started through ``task_boilerplate`` (so it has a
record) that nobody renews nor ends: what a SIGKILLed or OOM-killed worker
leaves. The tests make its lock run out once the replicas watch it, so what is
checked never depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from aiotasks import Run, Schedule, _chain, release_lock, run_chain, task, task_boilerplate
from aiotasks._clock import FakeClock
from aiotasks._records import RunRecord, read_runs
from aiotasks._scheduler import Scheduler
from aiotasks._store import store_for
from tests.support import eventually, until
from tests.test_cli import cli
from tests.test_scheduler import NOON, runs_done, ticks
from tests.test_serve import SCHEDULES, by_slot, serve
from tests.test_serve import ticks as serve_ticks

SLOT = "20260101T1201"  # the first slot after NOON of an every="1m" schedule
TODAY = "20260101"  # the key of a daily schedule's slot at 02:00 on NOON's day


@task(recurring=True, lock_timeout=5, success_ttl=600)
async def beat(run: Run) -> None:
    """Logs ``slot:task_id``: once per slot (recurring: under a slot key it writes its marker)."""
    await run.redis.rpush("beats", f"{run.date}:{run.task_id}")


@task(lock_timeout=5)
async def pull(run: Run) -> None:
    await run.redis.rpush("nightly", f"pull:{run.date}:{run.task_id}")


@task(depends_on=["pull"], lock_timeout=5)
async def push(run: Run) -> None:
    await run.redis.rpush("nightly", f"push:{run.date}")


_REAL_PAUSE = _chain._pause


class Watching:
    """Stands in for the chain's pause between polls of a holder: holds every pause until
    :meth:`release` (so the test knows who watches), then pauses as the chain would."""

    def __init__(self) -> None:
        self.held = 0
        self.released = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        if not self.released.is_set():
            self.held += 1
            await self.released.wait()
        await _REAL_PAUSE(seconds)

    async def by(self, count: int) -> None:
        async def enough() -> bool:
            return self.held >= count

        await eventually(enough, f"{count} replica(s) watch the holder")

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def watching(monkeypatch: pytest.MonkeyPatch) -> Watching:
    watch = Watching()
    monkeypatch.setattr(_chain, "_pause", watch)
    return watch


async def die_holding(client: Redis, name: str, key: str) -> str:
    """Start a run of ``name`` for ``key`` as a worker would, then 'die': never renew nor end it."""
    _, lock_key, _, result, task_id = await task_boilerplate(name, key, redis=client, lock_timeout=60)
    assert result["status"] == "pending"
    assert await client.get(lock_key) == task_id.encode()
    return task_id


async def expire(client: Redis, lock_key: str) -> None:
    """The dead holder's last TTL runs out (nobody renews it): now rather than in a minute."""
    await client.pexpire(lock_key, 1)

    async def gone() -> bool:
        return not await client.exists(lock_key)

    await eventually(gone, f"{lock_key} expired")


async def records(client: Redis, name: str, key: str) -> list[RunRecord]:
    """The runs of ``name`` for ``key``, oldest first."""
    summary = (await read_runs(store_for(client), [name], namespace=None, last=20))[name]
    return sorted((run for run in summary.runs if run.date == key), key=lambda run: run.started or 0)


async def test_replicas_that_saw_lock_held_take_a_dead_holders_slot_over_once(
    redis_client: Redis, watching: Watching
) -> None:
    """Regression (19.2: the replicas got lock_held, moved on, and nothing redid the slot): two
    replicas fire a recurring task's slot whose holder died mid-body; both watch the dead lock and,
    once it expires, one runs the body, exactly once; the other finds it done. The records read the
    dead run ``abandoned``, then the new one's success."""
    dead = await die_holding(redis_client, "beat", SLOT)
    clock = FakeClock(NOON)
    replicas = [
        Scheduler(Schedule(beat, every="1m"), redis=redis_client, clock=clock, triggers=False)
        for _ in range(2)
    ]
    async with replicas[0], replicas[1]:
        await clock.sleepers(2)
        clock.advance(30)  # 12:01:00: both fire SLOT and find the dead holder's lock
        await watching.by(2)
        assert await ticks(redis_client, "beats") == []
        await expire(redis_client, f"lock:beat:{SLOT}")
        watching.release()
        for replica in replicas:
            await runs_done(replica, 1)
        outcomes = sorted(str(replica.status()["schedules"][0]["last_outcome"]) for replica in replicas)
    [(slot, ran)] = [entry.split(":") for entry in await ticks(redis_client, "beats")]
    assert slot == SLOT
    assert ran != dead
    assert outcomes == ["skipped", "success"]  # one ran it; the other found it done
    assert await redis_client.exists(f"success:beat:{SLOT}") == 1
    assert [(run.task_id, run.status) for run in await records(redis_client, "beat", SLOT)] == [
        (dead, "abandoned"),
        (ran, "success"),
    ]


async def test_a_daily_catch_up_into_a_dead_lock_takes_it_over_and_runs_the_dependents(
    redis_client: Redis, watching: Watching
) -> None:
    """19.2's daily case: a pod restarted after an OOM-kill catches up today's chain while the
    killed run's lock still lives; it watches it, runs the task once it expires, then its
    dependent: the nightly chain is done that day, the dead run reads ``abandoned``."""
    dead = await die_holding(redis_client, "pull", TODAY)
    clock = FakeClock(NOON)
    schedule = Schedule([pull, push], cron="0 2 * * *")  # catches up its last slot (02:00 today)
    async with Scheduler(schedule, redis=redis_client, clock=clock, triggers=False) as scheduler:
        await watching.by(1)
        assert await ticks(redis_client, "nightly") == []  # the dependent waits too
        await expire(redis_client, f"lock:pull:{TODAY}")
        watching.release()
        await runs_done(scheduler, 1)
        assert scheduler.status()["schedules"][0]["last_outcome"] == "success"
    [pulled, pushed] = await ticks(redis_client, "nightly")
    ran = pulled.removeprefix(f"pull:{TODAY}:")
    assert ran != dead
    assert pushed == f"push:{TODAY}"
    assert [(run.task_id, run.status) for run in await records(redis_client, "pull", TODAY)] == [
        (dead, "abandoned"),
        (ran, "success"),
    ]


async def test_stopping_ends_a_watch_at_once_rather_than_after_grace(
    redis_client: Redis, watching: Watching
) -> None:
    """A replica that only watches another worker's run does not hold its stop for it: with an hour
    of grace, stop() returns once the watch ends (the slot: skipped, lock_held); the holder's lock
    is untouched and the body never ran here."""
    await redis_client.set(f"lock:beat:{SLOT}", "other123", px=60_000)  # a live holder elsewhere
    clock = FakeClock(NOON)
    scheduler = Scheduler(
        Schedule(beat, every="1m"), redis=redis_client, clock=clock, triggers=False, grace=3600
    )
    async with scheduler:
        await clock.sleepers(1)
        clock.advance(30)
        await watching.by(1)
        await asyncio.wait_for(scheduler.stop(), timeout=20)  # bounds a hang; times nothing
    assert scheduler.status()["schedules"][0]["last_outcome"] == "skipped"
    assert await redis_client.get(f"lock:beat:{SLOT}") == b"other123"
    assert await ticks(redis_client, "beats") == []


async def test_a_seed_style_recurring_function_under_a_slot_key_keeps_lock_held(fake_redis: Redis) -> None:
    """Only a decorated recurring task is known to write its marker under a slot key: a seed-style
    function declared recurring keeps the seed's semantics (skipped, lock_held; dependents
    dependency_lock_held) rather than being waited for, which could run it twice in a row."""

    async def odds(date_string: str | None = None) -> dict[str, Any]:
        _, lock_key, _, result, task_id = await task_boilerplate("odds", date_string, True)
        if result["status"] == "pending":
            await release_lock(fake_redis, lock_key, task_id)
            result["status"] = "success"
        return result

    async def report(date_string: str | None = None) -> dict[str, Any]:
        return {"status": "success"}

    await fake_redis.set(f"lock:odds:{SLOT}", "other123", px=60_000)
    chain = [
        {"id": "odds", "func": odds, "recurring": True},
        {"id": "report", "func": report, "depends_on": ["odds"]},
    ]
    results = await run_chain(chain, SLOT, redis=fake_redis, wait_timeout=5)  # bounds a regression
    assert (results["odds"]["status"], results["odds"]["reason"]) == ("skipped", "lock_held")
    assert results["report"]["reason"] == "dependency_lock_held"


@pytest.mark.timeout(90)
def test_a_sigkilled_holders_slot_is_redone_once_by_another_serve_replica(redis_url: str) -> None:
    """Regression (19.2, real processes): three ``serve`` replicas of a 1 s recurring task whose
    lock lives 3 s; the holder is SIGKILLed mid-body (its body said it started). Once its lock
    expires, one of the two others redoes that slot, once; its records read ``abandoned`` (the
    killed run), then ``success``."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        replicas = [serve(redis_url, f"{SCHEDULES}:dying", "--grace", "0.5") for _ in range(3)]
        try:
            until(lambda: len(by_slot(client)) >= 2, "2 slots ran", *replicas)
            client.set("hold", 1)
            until(lambda: any(state == "held" for *_, state in serve_ticks(client)), "a body is held")
            [(slot, pid, dead)] = [(s, p, t) for s, p, t, state in serve_ticks(client) if state == "held"]
            victim = next(r for r in replicas if r.pid == int(pid))
            victim.kill()  # SIGKILL: no release, no outcome; its lock lives on until its TTL runs out
            victim.communicate(timeout=20)
            others = [r for r in replicas if r is not victim]
            until(lambda: len(by_slot(client)[slot]) == 2, "another replica redid the slot", *others)
        finally:
            for replica in replicas:
                if replica.poll() is None:
                    replica.send_signal(signal.SIGTERM)
            errors = [replica.communicate(timeout=20)[1] for replica in replicas]
        assert victim.returncode == -signal.SIGKILL
        assert [r.returncode for r in replicas if r is not victim] == [143, 143], errors
        runs = by_slot(client)
        assert runs[slot][0] == pid != runs[slot][1]
        for key, pids in runs.items():  # the victim may have died inside another slot's run too
            assert len(pids) == 1 or (len(pids) == 2 and pids[0] == pid != pids[1]), (key, pids)
        history = cli("history", f"{SCHEDULES}:beat", "--last", "1000", "--json", "--redis-url", redis_url)
        assert history.returncode == 0, history.stderr
        records = [run for run in json.loads(history.stdout)["runs"] if run["date"] == slot]
        assert [(run["task_id"] == dead, run["status"]) for run in reversed(records)] == [
            (True, "abandoned"),
            (False, "success"),
        ]
