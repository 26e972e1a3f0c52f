"""The @task decorator: success, skips, failures, renewal, lock loss, retries, timeouts, threads."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import re
import signal
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import (
    InvalidConfig,
    InvalidTaskName,
    Run,
    TaskError,
    finish_task,
    release_lock,
    task_boilerplate,
)
from aiotasks._store import Store
from tests.servers import free_port
from tests.support import Gate, eventually, load_scripts, lock_and_marker_keys

DATE = "20261125"


async def test_success_writes_marker_and_releases(redis_client: Redis) -> None:
    """A body that returns: result success with its counters, marker written, lock released."""

    @aiotasks.task()
    async def counted(run: Run) -> None:
        assert await redis_client.get(run.lock_key) == run.task_id.encode()
        run.result["items"] = 3

    result = await counted(DATE, redis=redis_client)
    assert result["status"] == "success"
    assert result["items"] == 3
    assert result["reason"] is None
    assert await redis_client.get(f"success:counted:{DATE}") == b"completed"
    assert await redis_client.exists(f"lock:counted:{DATE}") == 0
    again = await counted(DATE, redis=redis_client)
    assert (again["status"], again["reason"]) == ("skipped", "already_completed")
    assert "items" not in again


async def test_a_held_task_is_skipped(redis_client: Redis) -> None:
    """While another run holds the lock, a call is skipped with reason lock_held and runs nothing."""
    ran = False

    @aiotasks.task()
    async def held(run: Run) -> None:
        nonlocal ran
        ran = True

    await redis_client.set(f"lock:held:{DATE}", "other", px=10_000)
    result = await held(DATE, redis=redis_client)
    assert (result["status"], result["reason"]) == ("skipped", "lock_held")
    assert ran is False
    assert await redis_client.get(f"lock:held:{DATE}") == b"other"


async def test_failure_raises_task_error_and_writes_nothing(redis_client: Redis) -> None:
    """A raising body: TaskError with .result (failed, error text), lock released, no marker."""

    @aiotasks.task()
    async def broken(run: Run) -> None:
        run.result["processed"] = 1
        raise ValueError("bad row 7")

    with pytest.raises(TaskError) as caught:
        await broken(DATE, redis=redis_client)
    error = caught.value
    assert (error.status, error.message) == ("failed", "Unexpected error: ValueError: bad row 7")
    assert error.result is not None
    assert error.result["status"] == "failed"
    assert error.result["errors"] == ["Unexpected error: ValueError: bad row 7"]
    assert error.result["processed"] == 1
    assert isinstance(error.__cause__, ValueError)
    assert await lock_and_marker_keys(redis_client) == []


async def test_body_task_error_keeps_its_message(redis_client: Redis) -> None:
    """A body raising TaskError (the seed's controlled failure) keeps its message and its own errors."""

    @aiotasks.task()
    async def controlled(run: Run) -> None:
        run.result["errors"].append("item 1 failed")
        raise TaskError("failed", "All items failed: 1 errors")

    with pytest.raises(TaskError) as caught:
        await controlled(DATE, redis=redis_client)
    assert caught.value.message == "All items failed: 1 errors"
    assert caught.value.result is not None
    assert caught.value.result["errors"] == ["item 1 failed", "All items failed: 1 errors"]


async def test_sync_body_runs_in_a_worker_thread(redis_client: Redis) -> None:
    """A plain def body runs in a worker thread, with the lock held."""
    seen: list[int] = []

    @aiotasks.task()
    def blocking(run: Run) -> None:
        seen.append(threading.get_ident())
        run.result["thread"] = True

    result = await blocking(DATE, redis=redis_client)
    assert result["status"] == "success"
    assert seen[0] != threading.get_ident()


async def test_recurring_task_never_writes_a_marker(redis_client: Redis) -> None:
    """A recurring task runs every time it is called and writes no marker."""
    runs = 0

    @aiotasks.task(recurring=True)
    async def odds(run: Run) -> None:
        nonlocal runs
        runs += 1

    for _ in range(3):
        assert (await odds(DATE, redis=redis_client))["status"] == "success"
    assert runs == 3
    assert await lock_and_marker_keys(redis_client) == []


async def test_retries_keep_the_lock_between_attempts(redis_client: Redis, redis_url: str) -> None:
    """Retries run while the lock is held: another worker is told lock_held during every attempt."""
    other = Redis.from_url(redis_url)
    seen_by_other: list[str | None] = []

    @aiotasks.task(retries=2, retry_delay=0.01)
    async def flaky(run: Run) -> None:
        seen_by_other.append((await flaky(DATE, redis=other))["reason"])
        if run.attempt < 3:
            raise RuntimeError(f"attempt {run.attempt}")

    try:
        result = await flaky(DATE, redis=redis_client)
    finally:
        await other.aclose()
    assert result["status"] == "success"
    assert result["attempts"] == 3
    assert result["warnings"] == [
        "attempt 1 failed: Unexpected error: RuntimeError: attempt 1",
        "attempt 2 failed: Unexpected error: RuntimeError: attempt 2",
    ]
    assert seen_by_other == ["lock_held"] * 3


async def test_timeout_fails_with_reason_and_releases(redis_client: Redis) -> None:
    """An attempt longer than timeout is cancelled: failed, reason timeout, lock released, no marker."""
    cancelled = False

    @aiotasks.task(timeout=0.05)
    async def stuck(run: Run) -> None:
        nonlocal cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled = True
            raise

    with pytest.raises(TaskError) as caught:
        await stuck(DATE, redis=redis_client)
    assert caught.value.result is not None
    assert (caught.value.result["status"], caught.value.result["reason"]) == ("failed", "timeout")
    assert cancelled
    assert await lock_and_marker_keys(redis_client) == []


async def test_a_bodys_own_timeout_error_is_not_our_timeout(redis_client: Redis) -> None:
    """A TimeoutError raised by the body itself is an ordinary failure, not reason timeout."""

    @aiotasks.task(timeout=30)
    async def upstream(run: Run) -> None:
        raise TimeoutError("upstream API")

    with pytest.raises(TaskError) as caught:
        await upstream(DATE, redis=redis_client)
    assert caught.value.result is not None
    assert caught.value.result["reason"] is None
    assert caught.value.result["errors"] == ["Unexpected error: TimeoutError: upstream API"]


async def test_renewal_keeps_a_long_body_exclusive(
    redis_client: Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body running well past lock_timeout keeps its lock (renewed, TTL never above lock_timeout)."""
    renewals: asyncio.Queue[bool | str] = asyncio.Queue()
    renew = Store.renew

    async def observed(
        store: Store, lock_key: str, token: str, ttl_ms: int, *cancel: str | None
    ) -> bool | str:
        held = await renew(store, lock_key, token, ttl_ms, *cancel)
        renewals.put_nowait(held)
        return held

    monkeypatch.setattr(Store, "renew", observed)
    finish = asyncio.Event()
    task_ids: list[str] = []

    @aiotasks.task(lock_timeout=0.6)
    async def long(run: Run) -> None:
        task_ids.append(run.task_id)
        await finish.wait()

    runner = asyncio.create_task(long(DATE, redis=redis_client))
    lock = f"lock:long:{DATE}"
    other = Redis.from_url(redis_url)
    try:
        for _ in range(5):  # 5 renewals at TTL/3 each: the body outlived its TTL by far
            assert await asyncio.wait_for(renewals.get(), timeout=20), "a renewal found the lock gone"
            assert await redis_client.get(lock) == task_ids[0].encode()
            assert 0 < await redis_client.pttl(lock) <= 600
            assert (await long(DATE, redis=other))["reason"] == "lock_held"
    finally:
        await other.aclose()
        finish.set()
    assert (await runner)["status"] == "success"


async def test_lock_deleted_by_an_operator_cancels_the_body(redis_client: Redis) -> None:
    """Lock lost (deleted mid-run): the body is cancelled, the run fails lock_lost, no marker is written."""
    body_cancelled = asyncio.Event()

    @aiotasks.task(lock_timeout=0.3)
    async def victim(run: Run) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            body_cancelled.set()
            raise

    runner = asyncio.create_task(victim(DATE, redis=redis_client))

    async def locked() -> bool:
        return bool(await redis_client.exists(f"lock:victim:{DATE}"))

    await eventually(locked, "the body holds its lock")
    await redis_client.delete(f"lock:victim:{DATE}")
    with pytest.raises(TaskError) as caught:
        await runner
    assert body_cancelled.is_set()
    assert caught.value.result is not None
    assert (caught.value.result["status"], caught.value.result["reason"]) == ("failed", "lock_lost")
    assert await lock_and_marker_keys(redis_client) == []


async def test_lock_taken_by_another_run_is_left_to_it(redis_client: Redis) -> None:
    """Lock lost to another holder: lock_lost; its lock is left alone and no marker is written."""

    @aiotasks.task(lock_timeout=0.3)
    async def contested(run: Run) -> None:
        await asyncio.Event().wait()

    runner = asyncio.create_task(contested(DATE, redis=redis_client))
    lock = f"lock:contested:{DATE}"

    async def locked() -> bool:
        return bool(await redis_client.exists(lock))

    await eventually(locked, "the body holds its lock")
    await redis_client.set(lock, "intruder", px=60_000)
    with pytest.raises(TaskError) as caught:
        await runner
    assert caught.value.result is not None
    assert caught.value.result["reason"] == "lock_lost"
    assert await redis_client.get(lock) == b"intruder"
    assert await redis_client.exists(f"success:contested:{DATE}") == 0


async def test_sync_body_sees_stop_requested(redis_client: Redis) -> None:
    """A sync body can't be interrupted; it sees run.stop_requested when the lock is lost and returns."""
    saw_stop = threading.Event()

    @aiotasks.task(lock_timeout=0.3)
    def polling(run: Run) -> None:
        while not run.stop_requested:
            threading.Event().wait(0.01)
        saw_stop.set()

    runner = asyncio.create_task(polling(DATE, redis=redis_client))
    lock = f"lock:polling:{DATE}"

    async def locked() -> bool:
        return bool(await redis_client.exists(lock))

    await eventually(locked, "the body holds its lock")
    await redis_client.delete(lock)
    with pytest.raises(TaskError) as caught:
        await runner
    assert saw_stop.is_set()
    assert caught.value.result is not None
    assert caught.value.result["reason"] == "lock_lost"


RAISED: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(7),
    "KeyboardInterrupt": KeyboardInterrupt,
    "own-CancelledError": asyncio.CancelledError,
}
NAMED = {
    "SystemExit": "Unexpected error: SystemExit: 7",
    "KeyboardInterrupt": "Unexpected error: KeyboardInterrupt",
    "own-CancelledError": "Unexpected error: CancelledError",
}


@pytest.mark.parametrize("kind", ["async", "sync"])
@pytest.mark.parametrize("raised", list(RAISED))
async def test_whatever_a_body_raises_fails_its_run(redis_client: Redis, raised: str, kind: str) -> None:
    """Regression (sys.exit(7) in a body ended the process, a body's own CancelledError passed for a
    cancellation): a base exception from a body (async, or sync in its thread) fails the run like any
    error: TaskError, status failed, the exception named, lock released, no marker."""

    def body(run: Run) -> None:
        run.result["processed"] = 1
        raise RAISED[raised]()

    async def async_body(run: Run) -> None:
        body(run)

    decorated = aiotasks.task("based")(async_body if kind == "async" else body)
    with pytest.raises(TaskError) as caught:
        await decorated(DATE, redis=redis_client)
    result = caught.value.result
    assert result is not None
    assert (result["status"], result["errors"], result["processed"]) == ("failed", [NAMED[raised]], 1)
    assert await lock_and_marker_keys(redis_client) == []


@pytest.mark.parametrize(
    "style",
    ["Task.cancel", "asyncio.timeout", "anyio.CancelScope", "anyio.move_on_after", "anyio task group"],
)
async def test_every_cancellation_tells_a_sync_body_and_ends_the_run(redis_client: Redis, style: str) -> None:
    """Regression (an anyio cancel scope around a sync body never returned; the lock was renewed
    forever): asyncio's and anyio's cancellations alike tell the thread (stop_requested), wait for it,
    end the run, release the lock; the caller sees its own kind of cancellation."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    saw_stop = threading.Event()
    give_up = threading.Event()  # only if the run hangs: lets the thread end after the test failed

    @aiotasks.task()
    def polite(run: Run) -> None:
        loop.call_soon_threadsafe(started.set)
        while not run.stop_requested and not give_up.is_set():
            give_up.wait(0.005)
        if run.stop_requested:
            saw_stop.set()

    call = functools.partial(polite, DATE, redis=redis_client)
    try:
        await asyncio.wait_for(cancel_once_started(style, call, started), timeout=30)
    finally:
        give_up.set()
    assert saw_stop.is_set()
    assert await lock_and_marker_keys(redis_client) == []


async def cancel_once_started(
    style: str, call: Callable[[], Coroutine[Any, Any, object]], started: asyncio.Event
) -> None:
    """Run ``call`` under ``style`` of cancellation, cancel it once ``started`` is set, check the outcome."""
    if style == "anyio task group":
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await started.wait()
            group.cancel_scope.cancel()
        assert group.cancel_scope.cancelled_caught
        return
    if style.startswith("anyio"):
        scope = anyio.CancelScope() if style == "anyio.CancelScope" else anyio.move_on_after(math.inf)

        async def scoped() -> None:
            with scope:
                await call()

        runner = asyncio.ensure_future(scoped())
        await started.wait()
        if style == "anyio.CancelScope":
            scope.cancel()
        else:
            scope.deadline = anyio.current_time()
        await runner
        assert scope.cancelled_caught
        return
    timeouts: list[asyncio.Timeout] = []

    async def timed() -> None:
        async with asyncio.timeout(None) as timeout:
            timeouts.append(timeout)
            await call()

    pending: asyncio.Future[object] = asyncio.ensure_future(timed() if style == "asyncio.timeout" else call())
    await started.wait()
    if timeouts:
        timeouts[0].reschedule(asyncio.get_running_loop().time())
        with pytest.raises(TimeoutError):
            await pending
    else:
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending


HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    import aiotasks
    from redis.asyncio import Redis

    @aiotasks.task(name="victim", lock_timeout=1.0)
    async def victim(run):
        print("holding", flush=True)
        await asyncio.Event().wait()

    async def main():
        await victim("20261125", redis=Redis.from_url(sys.argv[1]))

    asyncio.run(main())
    """
)


async def test_killed_holder_frees_its_key_within_the_ttl(
    redis_client: Redis, redis_url: str, tmp_path: Path
) -> None:
    """A SIGKILLed holder leaves a key that expires within lock_timeout; then another worker runs."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, str(script), redis_url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"holding"
        os.kill(holder.pid, signal.SIGKILL)
    finally:
        if holder.returncode is None:
            holder.kill()
        await holder.wait()
    lock = f"lock:victim:{DATE}"
    assert 0 < await redis_client.pttl(lock) <= 1000  # renewals reset, never extended, the TTL

    @aiotasks.task(name="victim")
    async def successor(run: Run) -> None:
        return None

    async def taken_over() -> bool:
        return bool((await successor(DATE, redis=redis_client))["status"] == "success")

    await eventually(taken_over, "another worker ran the task after the TTL")


def test_decorator_forms_and_bad_options() -> None:
    """@task, @task() and @task("name") all work; bad names and options are refused at decoration."""

    @aiotasks.task
    async def plain(run: Run) -> None:
        return None

    @aiotasks.task("renamed", depends_on=[plain])
    async def other(run: Run) -> None:
        """Docstring kept."""

    assert (plain.name, other.name, other.depends_on) == ("plain", "renamed", ("plain",))
    assert other.__doc__ == "Docstring kept."
    assert other.__name__ == "other"

    async def body(run: Run) -> None:
        return None

    with pytest.raises(InvalidTaskName, match="'bad name'"):
        aiotasks.task("bad name")(body)
    for options in (
        {"lock_timeout": 0},
        {"success_ttl": 0},
        {"retries": -1},
        {"timeout": -5},
        {"retry_delay": 0},
    ):
        with pytest.raises(InvalidConfig):
            aiotasks.task(**options)(body)  # type: ignore[call-overload]


async def test_bad_date_is_refused_before_redis(fake_redis: Redis) -> None:
    """Calling a task with a malformed date raises InvalidDate and writes nothing."""

    @aiotasks.task()
    async def dated(run: Run) -> None:
        return None

    with pytest.raises(aiotasks.InvalidDate, match="'25/11/2026'"):
        await dated("25/11/2026", redis=fake_redis)
    assert await lock_and_marker_keys(fake_redis) == []


async def test_a_sync_body_past_its_timeout_says_it_was_waited_for(redis_client: Redis) -> None:
    """Regression (a 1.5 s sync body with timeout=0.3 reported only "timed out after 0.3s"): the error
    says the thread was waited for, and when it returned."""

    @aiotasks.task(timeout=0.05)
    def slow(run: Run) -> None:
        while not run.stop_requested:
            threading.Event().wait(0.005)

    with pytest.raises(TaskError) as caught:
        await slow(DATE, redis=redis_client)
    assert re.fullmatch(
        r"timed out after 0\.05s \(the thread body returned after \d+\.\ds; it was waited for\)",
        caught.value.message,
    )
    assert caught.value.result is not None
    assert caught.value.result["reason"] == "timeout"
    assert await lock_and_marker_keys(redis_client) == []


async def test_a_retry_after_a_timeout_is_not_told_to_stop(redis_client: Redis) -> None:
    """The stop request of an attempt that timed out is not carried into the retry's body."""
    seen: list[bool] = []

    @aiotasks.task(timeout=0.05, retries=1, retry_delay=0.001)
    def twice(run: Run) -> None:
        seen.append(run.stop_requested)
        while run.attempt == 1 and not run.stop_requested:
            threading.Event().wait(0.005)

    result = await twice(DATE, redis=redis_client)
    assert (result["status"], result["attempts"]) == ("success", 2)
    assert seen == [False, False]


async def test_a_body_is_cancelled_when_its_lock_cannot_be_renewed_in_time(redis_client: Redis) -> None:
    """The lease's deadline: while Redis holds every renewal unanswered (CLIENT PAUSE WRITE) past
    lock_timeout, the body is cancelled and the run fails with lock_lost, without a marker."""
    holding = asyncio.Event()
    cancelled = asyncio.Event()

    @aiotasks.task(lock_timeout=1)
    async def stalled(run: Run) -> None:
        holding.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    runner = asyncio.ensure_future(stalled(DATE, redis=redis_client))
    await asyncio.wait_for(holding.wait(), timeout=20)
    await redis_client.client_pause(120_000, all=False)  # scripts are writes: renewals wait unanswered
    try:
        await asyncio.wait_for(cancelled.wait(), timeout=60)
    finally:
        await redis_client.client_unpause()
    with pytest.raises(TaskError) as caught:
        await runner
    assert caught.value.result is not None
    assert (caught.value.result["status"], caught.value.result["reason"]) == ("failed", "lock_lost")
    assert await lock_and_marker_keys(redis_client) == []


@pytest.mark.parametrize("recurring", [False, True], ids=["once", "recurring"])
async def test_a_finish_that_finds_the_lock_gone_fails_the_run(redis_client: Redis, recurring: bool) -> None:
    """The finish's (or recurring release's) verdict counts: a lock deleted before the body returns
    (no renewal came due) fails the run with lock_lost, writes no marker, and blocks its dependents."""

    @aiotasks.task(recurring=recurring)
    async def vanishing(run: Run) -> None:
        await run.redis.delete(run.lock_key)

    @aiotasks.task(depends_on=[vanishing])
    async def after(run: Run) -> None:
        return None

    with pytest.raises(TaskError) as caught:
        await vanishing(DATE, redis=redis_client)
    assert caught.value.result is not None
    assert (caught.value.result["status"], caught.value.result["reason"]) == ("failed", "lock_lost")
    results = await aiotasks.run_chain([vanishing, after], DATE, redis=redis_client)
    assert (results["vanishing"]["status"], results["vanishing"]["reason"]) == ("failed", "lock_lost")
    assert (results["after"]["reason"], results["after"]["blocked_by"]) == ("dependency_failed", "vanishing")
    assert await lock_and_marker_keys(redis_client) == []


async def test_the_cleanup_release_survives_a_second_cancellation(redis_client: Redis, gate: Gate) -> None:
    """A run cancelled mid-body releases its lock even when cancelled again while that release is
    on its way: the cleanup release is shielded."""
    await load_scripts(redis_client)
    started = asyncio.Event()

    @aiotasks.task()
    async def twice_cancelled(run: Run) -> None:
        started.set()
        await asyncio.Event().wait()

    gate.before = {"release"}
    runner = asyncio.ensure_future(twice_cancelled(DATE, redis=redis_client))
    await asyncio.wait_for(started.wait(), timeout=20)
    runner.cancel()
    await asyncio.wait_for(gate.reached.wait(), timeout=20)
    runner.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    gate.open()
    with pytest.raises(asyncio.CancelledError):
        await runner

    async def released() -> bool:
        return await redis_client.exists(f"lock:twice_cancelled:{DATE}") == 0

    await eventually(released, "the cancelled run's lock is released")
    assert await lock_and_marker_keys(redis_client) == []


@pytest.mark.parametrize("api", ["decorated", "seed-style chain"])
async def test_500_bodies_using_the_client_never_run_out_of_connections(redis_url: str, api: str) -> None:
    """Regression (README's 1,000 runs in flight without "Too many connections": 401 of 500 bodies
    using run.redis failed with MaxConnectionsError): on a default Redis.from_url client (a pool of
    100 that raises when empty), 500 concurrent bodies that use the client all succeed."""
    client = Redis.from_url(redis_url)
    try:
        if api == "decorated":

            async def body(run: Run) -> None:
                await run.redis.incr("bodies")

            runs = [aiotasks.Task(body, name=f"t{i}")(DATE, redis=client) for i in range(500)]
            results = await asyncio.gather(*runs, return_exceptions=True)
        else:
            chain = [{"id": f"t{i}", "func": seed_using_conn(f"t{i}")} for i in range(500)]
            results = list((await aiotasks.run_chain(chain, DATE, redis=client)).values())
        assert [r for r in results if not isinstance(r, dict) or r["status"] != "success"] == []
        assert await client.get("bodies") == b"500"
        assert await client.keys("lock:*") == []
    finally:
        await client.aclose()


def seed_using_conn(name: str) -> Callable[[str | None], Awaitable[dict[str, Any]]]:
    """A seed-style task whose body uses the connection task_boilerplate returns."""

    async def func(date_string: str | None = None) -> dict[str, Any]:
        conn, lock_key, success_key, result, task_id = await task_boilerplate(name, date_string)
        if result["status"] == "skipped":
            return result
        try:
            await conn.incr("bodies")
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
            return result
        finally:
            await release_lock(conn, lock_key, task_id)

    return func


def test_without_an_asyncio_loop_the_error_says_asyncio_is_required() -> None:
    """Regression (under anyio's trio backend: a raw RuntimeError): each entry point, stepped by hand
    as a non-asyncio loop would, raises InvalidConfig saying asyncio is required, before any I/O."""
    client = Redis(host="127.0.0.1", port=free_port())  # never connected

    @aiotasks.task()
    async def deco(run: Run) -> None:
        return None

    calls: list[Coroutine[Any, Any, object]] = [
        task_boilerplate("t", DATE, redis=client),
        deco(DATE, redis=client),
        aiotasks.run_chain([deco], DATE, redis=client),
        release_lock(client, f"lock:t:{DATE}", "token"),
        finish_task(client, f"lock:t:{DATE}", f"success:t:{DATE}", "token"),
    ]
    for call in calls:
        with pytest.raises(InvalidConfig, match="requires asyncio"):
            call.send(None)
