"""Chains for the CLI tests. Bodies log to the chain's own Redis list ``log`` ("start:x", "end:x")."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import aiotasks
from aiotasks import Run, TaskError, finish_task, release_lock, task_boilerplate


async def log(run: Run, event: str) -> None:
    await run.redis.rpush("log", f"{event}:{run.task_name}")


def logged(name: str, *, depends_on: tuple[str, ...] = (), fail: bool = False) -> aiotasks.Task:
    async def body(run: Run) -> None:
        await log(run, "start")
        if fail:
            raise RuntimeError(f"{name} always fails")
        await log(run, "end")

    return aiotasks.Task(body, name=name, depends_on=depends_on)


chain = [logged("a"), logged("b", depends_on=("a",)), logged("c")]
failing = [logged("a", fail=True), logged("b", depends_on=("a",)), logged("c")]
cyclic = [
    {"id": "x", "func": logged("x"), "depends_on": ["y"]},
    {"id": "y", "func": logged("y"), "depends_on": ["x"]},
]
dangling = [{"id": "x", "func": logged("x"), "depends_on": ["ghost"]}]
not_a_chain = 42


@aiotasks.task()
async def slow(run: Run) -> None:
    """Signals that it started, then runs until cancelled."""
    await log(run, "start")
    await asyncio.Event().wait()


@aiotasks.task()
async def sync_started(run: Run) -> None:
    await log(run, "start")


@aiotasks.task(depends_on=["sync_started"])
def slow_sync(run: Run) -> None:
    """A thread body that stops when asked (run.stop_requested)."""
    while not run.stop_requested:
        threading.Event().wait(0.01)


slow_chain = [slow]
slow_sync_chain = [sync_started, slow_sync]


def seed(name: str) -> Any:
    """A seed-style task that uses the connection it is given directly."""

    async def func(date_string: str | None = None) -> dict[str, Any]:
        conn, lock_key, success_key, result, task_id = await task_boilerplate(name, date_string)
        if result["status"] == "skipped":
            return result
        try:
            await conn.incr("bodies")
            await asyncio.sleep(0.01)
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
            return result
        except Exception as exc:
            raise TaskError("failed", str(exc), result) from exc
        finally:
            await release_lock(conn, lock_key, task_id)

    return func


WIDTH = int(os.environ.get("WIDE", "300"))
wide_seed = [{"id": f"s{i}", "func": seed(f"s{i}")} for i in range(WIDTH)] + [
    {"id": "last", "func": seed("last"), "depends_on": [f"s{i}" for i in range(WIDTH)]}
]


def _decorated(name: str, depends_on: tuple[str, ...] = ()) -> aiotasks.Task:
    async def body(run: Run) -> None:
        await run.redis.incr("bodies")
        await asyncio.sleep(0.01)

    return aiotasks.Task(body, name=name, depends_on=depends_on)


wide_decorated = [_decorated(f"d{i}") for i in range(WIDTH)] + [
    _decorated("last", tuple(f"d{i}" for i in range(WIDTH)))
]


# -- issue 12: signals, Redis dying mid-run, settings that must take effect --------------------------


@aiotasks.task(depends_on=["quick"])
async def slow_after(run: Run) -> None:
    """Runs after ``quick`` and until cancelled."""
    await log(run, "start")
    await asyncio.Event().wait()


partly_slow = [logged("quick"), slow_after, logged("last", depends_on=("slow_after",))]


def _slow(name: str) -> aiotasks.Task:
    async def body(run: Run) -> None:
        await log(run, "start")
        await asyncio.Event().wait()

    return aiotasks.Task(body, name=name)


@aiotasks.task()
def slow_thread(run: Run) -> None:
    """A thread body that runs until asked to stop: its lock is given back after the others'."""
    while not run.stop_requested:
        threading.Event().wait(0.01)


#: WIDTH async tasks that log "start" and run until cancelled, and one thread body: on a signal
#: the async runs give their locks back at once, and the thread's run a moment later.
wide_slow = [_slow(f"w{i}") for i in range(WIDTH)] + [slow_thread]


@aiotasks.task()
async def stubborn_started(run: Run) -> None:
    await log(run, "start")


@aiotasks.task(depends_on=["stubborn_started"])
def stubborn(run: Run) -> None:
    """A thread body that ignores run.stop_requested (bounded, so a failed test can't leave it behind)."""
    threading.Event().wait(120)


stubborn_chain = [stubborn_started, stubborn]


@aiotasks.task()
async def outlives_redis(run: Run) -> None:
    """Logs its start, then returns once the server has closed its connections (it was stopped)."""
    client: Any = run.redis
    kwargs = client.connection_pool.connection_kwargs
    reader, writer = await asyncio.open_connection(kwargs["host"], kwargs["port"])
    writer.write(b"PING\r\n")
    await reader.readline()
    await log(run, "start")
    await reader.read()  # b"" once the server is gone
    writer.close()


redis_dies = [outlives_redis]


@aiotasks.task()
async def probe(run: Run) -> None:
    """Reports the settings of the client the CLI built, so a test can see a variable take effect."""
    client: Any = run.redis
    pool = getattr(client, "connection_pool", None)
    run.result["cluster"] = type(client).__name__ == "RedisCluster"
    if pool is not None:
        run.result["socket_timeout"] = pool.connection_kwargs.get("socket_timeout")
        run.result["pool_timeout"] = getattr(pool, "timeout", None)
    run.result["key"] = run.lock_key


probe_chain = [probe]
#: For the ACL test of ``serve``/``trigger``: a schedule whose task touches only aiotasks' own keys.
probe_schedules = [aiotasks.Schedule(probe_chain, cron="0 2 * * *", name="probe", catchup=0)]


@aiotasks.task(recurring=True)
async def tick(run: Run) -> None:
    """A recurring task: never writes a success marker."""
    await log(run, "start")


with_recurring = [logged("a"), tick]
empty: list[Any] = []


@aiotasks.task()
async def which_loop(run: Run) -> None:
    """Notes the module of the event loop it runs on (a counter of its result dict)."""
    run.result["loop"] = type(asyncio.get_running_loop()).__module__


looped = [which_loop]
