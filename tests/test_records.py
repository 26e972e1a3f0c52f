"""Run records (issue 13): a record per run, written by the scripts a run already sends.

Every test runs against a real ``redis-server``; waits are for conditions, never durations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

import aiotasks
from aiotasks import Run, TaskError, _config, finish_task, release_lock, task_boilerplate
from aiotasks._clock import FakeClock
from aiotasks._keys import TaskKeys, paused_key, task_keys
from aiotasks._records import (
    Outcome,
    RunRecord,
    _iso_of,
    acquire_args,
    finish_args,
    iso,
    read_grid,
    read_runs,
    record_keys,
    release_args,
    retention_ms,
)
from aiotasks._scheduler import Scheduler
from aiotasks._store import Acquired, store_for
from aiotasks._views import history_text
from tests.servers import RedisServer
from tests.support import eventually
from tests.test_cli import ROOT, child_env

DATE = "20261125"


async def history(client: Redis | RedisCluster, task: str, last: int = 20) -> list[RunRecord]:
    summaries = await read_runs(store_for(client), [task], namespace=None, last=last)
    return summaries[task].runs


async def latest(client: Redis | RedisCluster, task: str) -> RunRecord:
    runs = await history(client, task, 1)
    assert runs, f"no record of {task}"
    return runs[0]


async def test_a_success_leaves_a_record(redis_client: Redis) -> None:
    """A successful run's record: status, host:pid, server times, attempts, the body's counters."""

    @aiotasks.task()
    async def counted(run: Run) -> None:
        run.result["items"] = 3

    result = await counted(DATE, redis=redis_client)
    record = await latest(redis_client, "counted")
    assert (record.task, record.date, record.task_id) == ("counted", DATE, result["task_id"])
    assert (record.status, record.reason, record.attempts) == ("success", None, 1)
    assert record.host
    assert record.pid > 0
    assert record.started is not None
    assert record.ended is not None
    assert record.ended >= record.started
    assert dict(record.counters) == {"items": 3}
    assert record.fence > 0


@pytest.mark.parametrize("kind", ["error", "timeout", "lock_lost"])
async def test_a_failure_leaves_its_reason(redis_client: Redis, kind: str) -> None:
    """A failed run's record says failed with its reason (error, timeout, lock_lost) and the first error."""

    async def body(run: Run) -> None:
        if kind == "error":
            raise ValueError("bad row 7")
        if kind == "timeout":
            await asyncio.Event().wait()
        await run.redis.delete(run.lock_key)  # the lock is gone before the finish: lock_lost

    task = aiotasks.Task(body, name=f"fails_{kind}", timeout=0.05 if kind == "timeout" else None)
    with pytest.raises(TaskError):
        await task(DATE, redis=redis_client)
    record = await latest(redis_client, task.name)
    assert (record.status, record.reason) == ("failed", kind)
    assert record.error
    if kind == "error":
        assert record.error == "Unexpected error: ValueError: bad row 7"


async def test_a_cancelled_run_leaves_cancelled(redis_client: Redis) -> None:
    """A run cancelled mid-body is recorded as failed, reason cancelled (its lock released)."""
    started = asyncio.Event()

    @aiotasks.task()
    async def waits(run: Run) -> None:
        started.set()
        await asyncio.Event().wait()

    running = asyncio.create_task(waits(DATE, redis=redis_client))
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    record = await latest(redis_client, "waits")
    assert (record.status, record.reason) == ("failed", "cancelled")
    assert await redis_client.exists(f"lock:waits:{DATE}") == 0


async def test_seed_style_runs_are_recorded(redis_client: Redis) -> None:
    """task_boilerplate + finish_task records a success; + release_lock records a failure or recurring run."""

    async def seed(name: str, *, fail: bool, recurring: bool = False) -> None:
        conn, lock_key, success_key, result, task_id = await task_boilerplate(
            name, DATE, skip_success_check=recurring, redis=redis_client
        )
        try:
            if fail:
                result["status"] = "failed"
                result["errors"].append("all items failed")
                return
            result["status"] = "success"
            if not recurring:
                await finish_task(conn, lock_key, success_key, task_id)
        finally:
            await release_lock(conn, lock_key, task_id)

    await seed("seed_ok", fail=False)
    await seed("seed_bad", fail=True)
    await seed("seed_again", fail=False, recurring=True)
    ok, bad, again = [await latest(redis_client, n) for n in ("seed_ok", "seed_bad", "seed_again")]
    assert (ok.status, bad.status, bad.reason, bad.error) == (
        "success",
        "failed",
        "error",
        "all items failed",
    )
    assert again.status == "success"


async def evalsha_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_chain_records_a_seed_function_that_ends_its_run_by_hand(redis_client: Redis) -> None:
    """In a chain, a seed-style function that writes its marker and deletes its lock by hand (the
    seed's verbatim pattern) is recorded as it ended (success, or failed), not abandoned; the chain
    sends one request for it, and none for a function that ended its run through finish_task."""
    from aiotasks._constants import REDIS_SUCCESS_TTL

    def seed_by_hand(name: str, fail: bool) -> Any:
        async def func(date_string: str | None = None) -> dict[str, Any]:
            l, lock_key, success_key, result, _ = await task_boilerplate(name, date_string)  # noqa: E741 (the seed's name)
            if result["status"] == "skipped":
                return result
            result["items_processed"] = 3
            try:
                if fail:
                    result["status"] = "failed"
                    raise TaskError("failed", "All items failed: 3 errors")
                result["status"] = "success"
                await l.set(success_key, "completed", ex=REDIS_SUCCESS_TTL)
                return result
            finally:
                await l.delete(lock_key)

        return func

    async def seed_through_finish(date_string: str | None = None) -> dict[str, Any]:
        conn, lock_key, success_key, result, task_id = await task_boilerplate("through", date_string)
        try:
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
            return result
        finally:
            await release_lock(conn, lock_key, task_id)

    chain = [{"id": "by_hand", "func": seed_by_hand("by_hand", fail=False)}]
    before = await evalsha_calls(redis_client)
    results = await aiotasks.run_chain(chain, DATE, redis=redis_client)
    assert results["by_hand"]["status"] == "success"
    assert await evalsha_calls(redis_client) - before == 2  # the acquire, and the chain's record of the end
    done = await latest(redis_client, "by_hand")
    assert (done.status, done.reason, done.counters) == ("success", None, {"items_processed": 3})
    assert done.ended is not None

    failing = [{"id": "by_hand_bad", "func": seed_by_hand("by_hand_bad", fail=True)}]
    results = await aiotasks.run_chain(failing, DATE, redis=redis_client)
    assert results["by_hand_bad"]["status"] == "failed"
    bad = await latest(redis_client, "by_hand_bad")
    assert (bad.status, bad.reason) == ("failed", "error")

    before = await evalsha_calls(redis_client)
    results = await aiotasks.run_chain(
        [{"id": "through", "func": seed_through_finish}], DATE, redis=redis_client
    )
    assert results["through"]["status"] == "success"
    assert await evalsha_calls(redis_client) - before == 3  # acquire, finish, the seed's release: no more
    assert (await latest(redis_client, "through")).status == "success"


async def test_skips_write_nothing(redis_client: Redis) -> None:
    """A skip (already_completed) writes no record: one run, one record."""

    @aiotasks.task()
    async def once(run: Run) -> None:
        pass

    await once(DATE, redis=redis_client)
    skipped = await once(DATE, redis=redis_client)
    assert skipped["reason"] == "already_completed"
    assert len(await history(redis_client, "once")) == 1


async def test_fence_grows_across_acquisitions_and_expired_locks(redis_client: Redis) -> None:
    """run.fence grows strictly with every acquisition of a (task, date), also after a lock expired."""
    fences: list[int] = []

    @aiotasks.task(recurring=True)
    async def fenced(run: Run) -> None:
        fences.append(run.fence)

    for _ in range(3):
        await fenced(DATE, redis=redis_client)
    store = store_for(redis_client)
    keys = task_keys("fenced", DATE, namespace=None, cluster=False)
    keep = retention_ms()
    expiring = await store.acquire(keys, "expiring", 50, check_success=False, retention_ms=keep)
    assert isinstance(expiring, Acquired)
    fences.append(expiring.fence)

    async def lock_gone() -> bool:
        return await redis_client.exists(keys.lock) == 0

    await eventually(lock_gone, "the 50 ms lock expired")
    after = await store.acquire(keys, "after", 10_000, check_success=False, retention_ms=keep)
    assert isinstance(after, Acquired)
    fences.append(after.fence)
    assert fences == sorted(set(fences))
    assert len(fences) == 5
    # A retried acquire (same token) hands back the same fence, it doesn't take a new one.
    again = await store.acquire(keys, "after", 10_000, check_success=False, retention_ms=keep)
    assert isinstance(again, Acquired)
    assert again.fence == after.fence


async def start_holder(url: str, task: str, mode: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """A worker process (tests/workers/holder.py) that took the lock; what its body printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.workers.holder", url, task, DATE, mode,
        cwd=ROOT, env=child_env(), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    return process, json.loads(line)


async def test_fence_grows_across_processes(redis_url: str, redis_client: Redis) -> None:
    """Acquisitions from two processes and this one: every fence is larger than the one before."""
    fences = []

    @aiotasks.task(name="shared", recurring=True)
    async def here(run: Run) -> None:
        fences.append(run.fence)

    for _ in range(2):
        process, seen = await start_holder(redis_url, "shared", "once")
        assert await process.wait() == 0
        fences.append(seen["fence"])
        await here(DATE, redis=redis_client)
    assert fences == sorted(set(fences))
    assert len(fences) == 4


async def test_grid_cells_from_hand_written_records(redis_client: Redis) -> None:
    """Each rule of a cell's state, on records written by hand: the GRID script skips the marker
    only where it can't change the cell, and sends the counters only when they name who
    triggered or cancelled the run."""
    days = [f"202611{day:02d}" for day in range(1, 10)]
    commands: list[tuple[str, ...]] = [
        ("SET", f"success:hand:{days[0]}", "1"),  # a marker, no record
        ("SET", f"success:hand:{days[1]}", "1"),  # a marker and a failed latest run
        ("HSET", f"run:hand:{days[1]}", "a", "1|1000|7|h", "a:o", "2000|failed|error|1|boom", "l", "a"),
        ("SET", f"success:hand:{days[2]}", "1"),  # a marker and a success whose start expired
        ("HSET", f"run:hand:{days[2]}", "b:o", "2000|success||1|", "l", "b"),
        ("HSET", f"run:hand:{days[3]}", "c:o", "2000|success||1|", "l", "c"),  # the same, no marker
        ("SET", f"success:hand:{days[4]}", "1"),  # a marker and the lock held: running
        ("SET", f"lock:hand:{days[4]}", "d"),
        ("HSET", f"run:hand:{days[4]}", "d", "1|1000|7|h", "l", "d"),
        ("HSET", f"run:hand:{days[5]}", "e", "1|1000|7|h", "e:o", "2000|success||1|", "l", "e"),
        ("HSET", f"run:hand:{days[5]}", "e:c", '{"triggered_by": "ops:1", "rows": 3}'),
        ("HSET", f"run:hand:{days[6]}", "f", "1|1000|7|h", "f:o", "2000|success||1|", "l", "f"),
        ("HSET", f"run:hand:{days[6]}", "f:c", '{"rows": 3}'),
        ("HSET", f"run:hand:{days[7]}", "g", "1|1000|7|h", "g:o", "2000|failed|cancelled|1|x", "l", "g"),
        ("HSET", f"run:hand:{days[7]}", "g:c", '{"cancelled_by": "ops:2"}'),
    ]
    for kind, key, *values in commands:
        if kind == "SET":
            await redis_client.set(key, values[0])
        else:
            await redis_client.hset(key, mapping=dict(zip(values[::2], values[1::2], strict=True)))
    cells = (await read_grid(store_for(redis_client), ["hand"], days, namespace=None))["hand"]
    assert [cells[day].state.value for day in days] == [
        "completed",
        "completed",
        "completed",
        "pending",
        "running",
        "completed",
        "completed",
        "failed",
        "pending",
    ]
    assert [cells[day].run is None for day in days[:4]] == [True, True, True, True]
    running, untold = cells[days[4]].run, cells[days[6]].run
    assert running is not None
    assert running.status == "running"
    assert cells[days[5]].to_json()["triggered_by"] == "ops:1"
    assert untold is not None
    assert untold.counters == {}  # not sent: a cell shows none
    assert cells[days[7]].to_json()["cancelled_by"] == "ops:2"
    assert await read_grid(store_for(redis_client), ["hand"], [], namespace=None) == {"hand": {}}


def test_iso_is_datetime_s_text() -> None:
    """The fast formatter's text is ``datetime``'s, across days, the epoch and its range's ends."""
    day = 86_400_000
    for ms in (0, 1, -1, 999, day - 1, day, -day, -day - 1, 1_735_700_000_123, 2**32 * 1000 - 1):
        assert iso(ms) == _iso_of(ms), ms
    assert iso(2**32 * 1000 + 5) == _iso_of(2**32 * 1000 + 5)
    assert iso(None) is None


async def test_a_killed_worker_shows_abandoned(redis_url: str, redis_client: Redis) -> None:
    """A worker SIGKILLed mid-body: running while its lock lives, abandoned once it expired."""
    process, seen = await start_holder(redis_url, "killed", "hang")
    record = await latest(redis_client, "killed")
    assert (record.task_id, record.status, record.fence) == (seen["task_id"], "running", seen["fence"])
    assert record.pid == process.pid
    process.send_signal(signal.SIGKILL)
    await process.wait()

    async def abandoned() -> bool:
        return (await latest(redis_client, "killed")).status == "abandoned"

    await eventually(abandoned, "the killed worker's record reads abandoned")
    grid = await read_grid(store_for(redis_client), ["killed"], [DATE], namespace=None)
    assert grid["killed"][DATE].state == "abandoned"

    # After the next run of that (task, date), which gets a larger fence, it still reads abandoned.
    fences = []

    @aiotasks.task(name="killed", recurring=True)
    async def next_run(run: Run) -> None:
        fences.append(run.fence)

    await next_run(DATE, redis=redis_client)
    killed = [run for run in await history(redis_client, "killed") if run.task_id == seen["task_id"]]
    assert [run.status for run in killed] == ["abandoned"]
    assert fences[0] > seen["fence"]


async def test_records_expire_with_their_retention(redis_client: Redis) -> None:
    """Every record key gets the retention as TTL, and is gone once it passed."""

    @aiotasks.task(retention=0.5)
    async def brief(run: Run) -> None:
        pass

    await brief(DATE, redis=redis_client)
    record_keys_found = [k for k in await redis_client.keys("run*")]
    assert len(record_keys_found) == 2  # the date's runs hash, the task's index
    for key in record_keys_found:
        assert 0 < await redis_client.pttl(key) <= 500

    async def gone() -> bool:
        return not await redis_client.keys("run*")

    await eventually(gone, "the records expired")


async def test_the_index_is_trimmed_to_the_retention(redis_client: Redis) -> None:
    """Index entries older than the retention go: about one acquisition in 16 trims (by the server
    clock's microseconds), so 400 acquisitions miss every trim with odds of 6e-12."""
    store = store_for(redis_client)
    keep = retention_ms()
    first = task_keys("trimmed", DATE, namespace=None, cluster=False)
    assert isinstance(
        await store.acquire(first, "t0", 60_000, check_success=True, retention_ms=keep), Acquired
    )
    await redis_client.zadd("runs:trimmed", {"19990101:old": 1})  # a run long past the retention
    for day in range(1, 400):
        keys = task_keys(
            "trimmed", f"2027{day // 28 + 1:02d}{day % 28 + 1:02d}", namespace=None, cluster=False
        )
        await store.acquire(keys, f"t{day}", 60_000, check_success=True, retention_ms=keep)
    assert await redis_client.zscore("runs:trimmed", "19990101:old") is None
    assert await redis_client.zscore("runs:trimmed", f"{DATE}:t0") is not None


def test_record_arguments_follow_the_lock_key() -> None:
    """The scripts get the runs hash and index of the lock key's own task, namespace and hash tag,
    the acquire also the task's paused key (last), and no record keys for a caller's own lock key
    (nor a paused key) or a retention of 0 (the paused key still)."""
    keep = retention_ms()
    for namespace, cluster, state, index in [
        (None, False, b"run:t:20261125", b"runs:t"),
        ("app", True, b"app:run:{t}:20261125", b"app:runs:{t}"),
    ]:
        keys = task_keys("t", DATE, namespace=namespace, cluster=cluster)
        paused = paused_key("t", namespace=namespace, cluster=cluster).encode()
        outcome = Outcome(keep, "success", ended=2, fresh=True)
        assert acquire_args(keys, "tok", 9, True, keep)[:6] == (
            5,
            keys.lock,
            keys.success,
            state,
            index,
            paused,
        )
        assert finish_args(keys, "tok", 9, "completed", outcome)[:5] == (
            4,
            keys.lock,
            keys.success,
            state,
            index,
        )
        assert release_args(keys.lock, "tok", outcome)[:4] == (3, keys.lock, state, index)
        assert acquire_args(keys, "tok", 9, True, 0)[:4] == (3, keys.lock, keys.success, paused)
    own = TaskKeys("my-own-lock", "my-own-marker")
    assert acquire_args(own, "tok", 9, True, keep)[0] == 2
    assert release_args("my-own-lock", "tok", Outcome(keep, "failed", "error"))[0] == 1


async def test_a_failure_with_counters_and_no_start_is_recorded_whole(redis_client: Redis) -> None:
    """A release whose outcome has no end (the script reads the clock) and carries counters writes
    both, and its failure becomes the index's last failure."""
    store = store_for(redis_client)
    keep = retention_ms()
    keys = task_keys("ended", DATE, namespace=None, cluster=False)
    assert isinstance(
        await store.acquire(keys, "tok", 60_000, check_success=True, retention_ms=keep), Acquired
    )
    outcome = Outcome(keep, "failed", "error", 2, "boom", '{"rows":1}')
    assert await store.release(keys.lock, "tok", outcome) is True
    record = await latest(redis_client, "ended")
    assert (record.status, record.reason, record.attempts, record.error) == ("failed", "error", 2, "boom")
    assert dict(record.counters) == {"rows": 1}
    assert record.started is not None
    assert record.ended is not None
    assert record.ended >= record.started
    assert await redis_client.zscore("runs:ended", "~f") == record.ended
    assert await redis_client.zscore("runs:ended", "~s") is None


async def test_retention_zero_writes_no_record(redis_client: Redis) -> None:
    """retention=0 turns records off: only the seed's keys are written."""

    @aiotasks.task(retention=0)
    async def unrecorded(run: Run) -> None:
        assert run.fence == 0

    await unrecorded(DATE, redis=redis_client)
    assert await redis_client.keys("*") == [f"success:unrecorded:{DATE}".encode()]


@pytest.mark.parametrize("bad", ["-1", "soon", "inf", "nan", True])
def test_a_bad_retention_is_refused(bad: Any) -> None:
    """A retention that is not a duration raises InvalidConfig naming it."""
    with pytest.raises(aiotasks.InvalidConfig, match="retention"):
        retention_ms(bad)


def test_retention_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retentions read as seconds or with a unit; the default is AIOTASKS_RETENTION, else 30 days."""
    assert [retention_ms(v) for v in ("90", "2m", "1h", "1d", 1.5)] == [
        90_000,
        120_000,
        3_600_000,
        86_400_000,
        1500,
    ]
    monkeypatch.delenv("AIOTASKS_RETENTION", raising=False)
    assert retention_ms() == 30 * 86_400_000
    monkeypatch.setenv("AIOTASKS_RETENTION", "7d")
    assert retention_ms() == 7 * 86_400_000
    monkeypatch.setenv("AIOTASKS_RETENTION", "12h")  # read at every run, not once
    assert retention_ms() == 12 * 3_600_000
    monkeypatch.setenv("AIOTASKS_RETENTION", "soon")
    for _ in range(2):  # refused every time, not only the first
        with pytest.raises(aiotasks.InvalidConfig, match="AIOTASKS_RETENTION"):
            retention_ms()
    assert [retention_ms(0), retention_ms(60)] == [0, 60_000]


def test_record_keys_follow_the_lock_key() -> None:
    """Record keys are derived from any lock key task_keys builds (namespace, cluster tag)."""
    found = record_keys("app:lock:{t}:20261125")
    assert found is not None
    assert (found.task, found.date, found.state, found.history) == (
        "t",
        DATE,
        "app:run:{t}:20261125",
        "app:runs:{t}",
    )
    assert (found.records, found.locks) == ("app:run:{t}:", "app:lock:{t}:")
    assert record_keys("my-own-lock") is None


async def test_a_password_never_reaches_a_record() -> None:
    """A body error quoting the client's password is stored with *** (records, grid, history)."""
    secret = "pw-Rec0rd-s3cret"
    with RedisServer(password=secret) as server:
        client = Redis.from_url(f"redis://:{secret}@127.0.0.1:{server.port}/0")

        @aiotasks.task()
        async def leaky(run: Run) -> None:
            run.result["url"] = f"redis://:{secret}@db"
            raise RuntimeError(f"cannot reach redis://:{secret}@db")

        try:
            with pytest.raises(TaskError):
                await leaky(DATE, redis=client)
            dump = []
            for key in await client.keys("*"):
                kind = await client.type(key)
                if kind == b"hash":
                    value: Any = await client.hgetall(key)
                else:
                    value = await (client.zrange(key, 0, -1) if kind == b"zset" else client.get(key))
                dump.append(repr((key, value)))
            runs = await history(client, "leaky")
            grid = await read_grid(store_for(client), ["leaky"], [DATE], namespace=None)
        finally:
            await client.aclose()
    assert runs
    assert runs[0].error == "Unexpected error: RuntimeError: cannot reach redis://:***@db"
    texts = [*dump, json.dumps(runs[0].to_json()), json.dumps(grid["leaky"][DATE].to_json())]
    assert not [text for text in texts if secret in text]


async def test_records_on_a_cluster(cluster_client: RedisCluster) -> None:
    """On a 3-master cluster every record script is single-slot: runs, history, grid and fences work."""
    names = [f"c{i}" for i in range(12)]  # spread over the masters
    fences: dict[str, list[int]] = {}

    def make(name: str) -> aiotasks.Task:
        async def body(run: Run) -> None:
            fences.setdefault(run.task_name, []).append(run.fence)
            if run.date == "20261126":
                raise ValueError("bad day")

        return aiotasks.Task(body, name=name, recurring=True)

    tasks = [make(name) for name in names]
    for date in (DATE, "20261126", DATE):
        results = await asyncio.gather(
            *(t(date, redis=cluster_client) for t in tasks), return_exceptions=True
        )
        assert len(results) == len(names)
    slots = {cluster_client.keyslot(f"{{{name}}}") for name in names}
    assert len({cluster_client.nodes_manager.get_node_from_slot(s).name for s in slots}) > 1
    summaries = await read_runs(store_for(cluster_client), names, namespace=None, last=10)
    for name in names:
        statuses = [run.status for run in summaries[name].runs]
        assert statuses == ["success", "failed", "success"]
        assert fences[name][0] < fences[name][2]
    grid = await read_grid(store_for(cluster_client), names, [DATE, "20261126", "20261127"], namespace=None)
    for name in names:
        assert [grid[name][d].state for d in (DATE, "20261126", "20261127")] == [
            "completed",
            "failed",
            "pending",
        ]


@aiotasks.task(recurring=True)
async def every_minute(run: Run) -> None:
    await run.redis.rpush("every_minute", run.date)


async def test_slots_a_scheduler_missed_read_missed_in_history_and_status(redis_client: Redis) -> None:
    """A scheduler woken 3 slots late (fake clock, no catch-up) leaves a 'missed' record for each slot
    it skipped, shown by history and the status cell; a second replica that missed them too writes
    no second record, and the slot that ran reads completed."""
    clock = FakeClock(dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC))
    schedule = aiotasks.Schedule(every_minute, every="1m")
    replicas = [Scheduler([schedule], redis=redis_client, clock=clock) for _ in range(2)]
    async with replicas[0], replicas[1]:
        await clock.sleepers(2)
        clock.advance(dt.timedelta(minutes=3, seconds=10))

        async def recorded() -> bool:
            runs = await history(redis_client, "every_minute")
            return all(s.status()["schedules"][0]["runs"] >= 1 for s in replicas) and len(runs) >= 3

        await eventually(recorded, "both replicas ran the current slot and recorded the missed ones")
    runs = await history(redis_client, "every_minute")
    assert sorted((run.date, run.status) for run in runs) == [
        ("20260101T1201", "missed"),
        ("20260101T1202", "missed"),
        ("20260101T1203", "success"),
    ]
    missed = next(run for run in runs if run.status == "missed")
    assert "slot missed" in str(missed.error)
    cells = await read_grid(
        store_for(redis_client), ["every_minute"], ["20260101T1201", "20260101T1203"], namespace=None
    )
    assert [cell.state.value for cell in cells["every_minute"].values()] == ["missed", "completed"]


@pytest.mark.parametrize("fast", [True, False], ids=["environ's own dict", "os.environ.get"])
def test_the_environment_is_read_as_os_environ_says_at_every_call(
    monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """``_config.environ`` (namespace and retention, every run) sees what os.environ holds now,
    through os.environ's own dict or, where that is missing, the public way."""
    if not fast:
        monkeypatch.setattr(_config, "_ENVIRON", None)
    monkeypatch.setenv("AIOTASKS_NAMESPACE", "first")
    assert _config.environ(b"AIOTASKS_NAMESPACE") == b"first"
    assert _config.env_namespace() == "first"
    monkeypatch.setenv("AIOTASKS_NAMESPACE", "second")
    assert _config.env_namespace() == "second"
    monkeypatch.setenv("AIOTASKS_NAMESPACE", "")
    assert _config.env_namespace() is None
    monkeypatch.delenv("AIOTASKS_NAMESPACE")
    assert _config.environ(b"AIOTASKS_NAMESPACE") is None
    monkeypatch.setenv("AIOTASKS_NAMESPACE", "no:colons")
    with pytest.raises(aiotasks.InvalidConfig, match="no:colons"):
        _config.env_namespace()
    monkeypatch.setenv("AIOTASKS_RETENTION", "2h")
    assert retention_ms() == 2 * 3_600_000


def test_history_text_aligns_its_columns() -> None:
    """Regression: `history` printed each task name and outcome at its own width, so the columns
    after them wandered. Each column is as wide as its widest entry; a run with no start says '-'."""
    runs = [
        RunRecord("report", "20261125", "t1", "success", host="vm", pid=7, started=1_764_000_000_000,
                  ended=1_764_000_000_250, attempts=1),
        RunRecord("task_contributions_analysis", "20261125T0200", "t2", "failed", reason="redis_unavailable",
                  host="worker-2", pid=12345, started=1_764_000_000_000, ended=1_764_000_001_000, attempts=3,
                  error="boom\nsecond line"),
        RunRecord("extract", "20261124", "t3", "abandoned", host="vm", pid=8),
    ]  # fmt: skip
    lines = history_text(runs).splitlines()
    assert len({line.index(run.task) for line, run in zip(lines, runs, strict=True)}) == 1, lines
    starts = {line_of(lines, "success"), line_of(lines, "failed"), line_of(lines, "abandoned")}
    assert len(starts) == 1, lines
    hosts = {lines[0].index("vm:7"), lines[1].index("worker-2:12345"), lines[2].index("vm:8")}
    assert len(hosts) == 1, lines
    assert lines[0].index("2025-") == lines[1].index("2025-")
    assert lines[2].endswith("-")
    assert lines[1].endswith("x3  boom")
    assert all(line == line.rstrip() for line in lines)


def line_of(lines: list[str], word: str) -> int:
    return next(line.index(word) for line in lines if word in line)
