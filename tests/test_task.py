"""The @task decorator: success, skips, failures, renewal, lock loss, retries, timeouts, threads."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import InvalidConfig, InvalidTaskName, Run, TaskError
from tests.support import eventually, lock_and_marker_keys

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


async def test_renewal_keeps_a_long_body_exclusive(redis_client: Redis, redis_url: str) -> None:
    """A body running well past lock_timeout keeps its lock (renewed, TTL never above lock_timeout)."""
    finish = asyncio.Event()

    @aiotasks.task(lock_timeout=0.6)
    async def long(run: Run) -> None:
        await finish.wait()

    runner = asyncio.create_task(long(DATE, redis=redis_client))
    lock = f"lock:long:{DATE}"

    async def locked() -> bool:
        return bool(await redis_client.exists(lock))

    await eventually(locked, "the long body holds its lock")
    other = Redis.from_url(redis_url)
    renewals, previous, highest = 0, 600, 0
    try:
        while renewals < 5:  # 5 renewals at TTL/3 each: the body outlived its TTL by far
            pttl = await redis_client.pttl(lock)
            assert pttl > 0, "the lock expired while the body ran"
            highest = max(highest, pttl)
            if pttl > previous:
                renewals += 1
                result = await long(DATE, redis=other)
                assert result["reason"] == "lock_held"
            previous = pttl
            await asyncio.sleep(0.02)
    finally:
        await other.aclose()
        finish.set()
    assert (await runner)["status"] == "success"
    assert highest <= 600


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


async def test_keyboard_interrupt_in_body_releases_the_lock(redis_client: Redis) -> None:
    """A BaseException from the body (KeyboardInterrupt) propagates after the lock is released."""

    @aiotasks.task()
    async def interrupted(run: Run) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await interrupted(DATE, redis=redis_client)
    assert await lock_and_marker_keys(redis_client) == []


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
