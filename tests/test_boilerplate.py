"""task_boilerplate, release_lock and finish_task: the seed's contract, atomic and token-safe."""

from __future__ import annotations

import re
from typing import Any

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import (
    REDIS_LOCK_TIMEOUT,
    REDIS_SUCCESS_TTL,
    InvalidConfig,
    InvalidDate,
    InvalidTaskName,
    finish_task,
    release_lock,
    task_boilerplate,
)
from aiotasks._context import default_client
from tests.support import Wire, eventually

DATE = "20261125"
SEED_KEYS = ["task", "date", "task_id", "status", "errors", "warnings", "reason"]


async def test_seed_flow_step_by_step(redis_client: Redis) -> None:
    """The seed's flow: lock taken, others skip (lock_held), finish, then all skip (already_completed)."""
    conn, lock_key, success_key, result, task_id = await task_boilerplate(
        "task_example", DATE, redis=redis_client
    )
    assert conn is redis_client
    assert (lock_key, success_key) == ("lock:task_example:20261125", "success:task_example:20261125")
    assert list(result) == SEED_KEYS
    assert result == {
        "task": "task_example",
        "date": DATE,
        "task_id": task_id,
        "status": "pending",
        "errors": [],
        "warnings": [],
        "reason": None,
    }
    assert re.fullmatch(r"[a-z2-7]{8}", task_id)
    assert await redis_client.get(lock_key) == task_id.encode()
    assert REDIS_LOCK_TIMEOUT * 1000 - 5_000 < await redis_client.pttl(lock_key) <= REDIS_LOCK_TIMEOUT * 1000

    *_, second, second_id = await task_boilerplate("task_example", DATE, redis=redis_client)
    assert (second["status"], second["reason"]) == ("skipped", "lock_held")
    assert second_id != task_id
    assert await redis_client.get(lock_key) == task_id.encode()  # the skip wrote nothing

    assert await finish_task(conn, lock_key, success_key, task_id) is True
    assert await redis_client.exists(lock_key) == 0
    assert await redis_client.get(success_key) == b"completed"
    assert REDIS_SUCCESS_TTL - 60 < await redis_client.ttl(success_key) <= REDIS_SUCCESS_TTL

    *_, third, _ = await task_boilerplate("task_example", DATE, redis=redis_client)
    assert (third["status"], third["reason"]) == ("skipped", "already_completed")
    assert await redis_client.exists(lock_key) == 0


async def test_skip_success_check_ignores_marker_but_not_lock(redis_client: Redis) -> None:
    """Recurring tasks (skip_success_check) run despite a marker, and still never overlap."""
    await redis_client.set(f"success:rec:{DATE}", "completed")
    conn, lock_key, _, result, task_id = await task_boilerplate("rec", DATE, True, redis=redis_client)
    assert result["status"] == "pending"
    *_, other, _ = await task_boilerplate("rec", DATE, skip_success_check=True, redis=redis_client)
    assert (other["status"], other["reason"]) == ("skipped", "lock_held")
    assert await release_lock(conn, lock_key, task_id) is True
    assert await redis_client.exists(lock_key) == 0


async def test_release_only_with_the_holders_token(redis_client: Redis) -> None:
    """release_lock deletes the lock only for its own task_id, and says whether it did."""
    conn, lock_key, _, _, task_id = await task_boilerplate("t", DATE, redis=redis_client)
    assert await release_lock(conn, lock_key, "someone") is False
    assert await redis_client.get(lock_key) == task_id.encode()
    assert await release_lock(conn, lock_key, task_id) is True
    assert await release_lock(conn, lock_key, task_id) is False
    assert await redis_client.exists(lock_key) == 0


async def test_expired_holder_cannot_touch_the_next_holders_lock(redis_client: Redis) -> None:
    """Regression (seed's plain DEL): an expired holder can't release or finish over the next holder."""
    conn, lock_key, success_key, _, old_id = await task_boilerplate(
        "t", DATE, redis=redis_client, lock_timeout=0.2
    )

    async def expired() -> bool:
        return await redis_client.exists(lock_key) == 0

    await eventually(expired, "the first lock expired")
    _, _, _, fresh, new_id = await task_boilerplate("t", DATE, redis=redis_client)
    assert fresh["status"] == "pending"
    assert await release_lock(conn, lock_key, old_id) is False
    assert await finish_task(conn, lock_key, success_key, old_id) is False
    assert await redis_client.get(lock_key) == new_id.encode()
    assert await redis_client.exists(success_key) == 0  # the stale finish wrote no marker


async def test_both_decode_modes_work(redis_url: str) -> None:
    """Clients with decode_responses on and off see the same contract."""
    for decode in (False, True):
        client = Redis.from_url(redis_url, decode_responses=decode)
        try:
            conn, lock_key, success_key, result, task_id = await task_boilerplate(
                f"dec{int(decode)}", DATE, redis=client
            )
            assert result["status"] == "pending"
            *_, held, _ = await task_boilerplate(f"dec{int(decode)}", DATE, redis=client)
            assert held["reason"] == "lock_held"
            assert await finish_task(conn, lock_key, success_key, task_id) is True
            *_, done, _ = await task_boilerplate(f"dec{int(decode)}", DATE, redis=client)
            assert done["reason"] == "already_completed"
        finally:
            await client.aclose()


async def test_default_client_comes_from_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no client and no chain, AIOTASKS_REDIS_URL (and AIOTASKS_NAMESPACE) decide."""
    monkeypatch.setenv("AIOTASKS_REDIS_URL", redis_url)
    monkeypatch.setenv("AIOTASKS_NAMESPACE", "envns")
    client = default_client()
    try:
        conn, lock_key, success_key, _, task_id = await task_boilerplate("t", DATE)
        assert conn is client
        assert lock_key == f"envns:lock:t:{DATE}"
        assert await finish_task(conn, lock_key, success_key, task_id) is True
        assert await client.get(f"envns:success:t:{DATE}") == b"completed"
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("call", "error", "named"),
    [
        ({"task_name": "bad name"}, InvalidTaskName, "'bad name'"),
        ({"task_name": ""}, InvalidTaskName, "''"),
        ({"task_name": "a:b"}, InvalidTaskName, "'a:b'"),
        ({"task_name": "t", "date_string": "2026-11-25"}, InvalidDate, "'2026-11-25'"),
        ({"task_name": "t", "date_string": "20260231"}, InvalidDate, "'20260231'"),
        ({"task_name": "t", "lock_timeout": 0}, InvalidConfig, "0"),
        ({"task_name": "t", "lock_timeout": float("nan")}, InvalidConfig, "nan"),
    ],
    ids=["space", "empty", "colon", "dashed-date", "feb-31", "zero-ttl", "nan-ttl"],
)
async def test_bad_input_is_refused_before_any_command(
    wire: Wire, redis_url: str, call: dict[str, Any], error: type[Exception], named: str
) -> None:
    """Bad names, dates and TTLs raise a ValueError naming the value, and nothing reaches Redis."""
    client = wire.client(redis_url)
    with pytest.raises(error, match=re.escape(named)) as caught:
        await task_boilerplate(**call, redis=client)
    assert isinstance(caught.value, ValueError)
    assert wire.connections == 0
    assert wire.round_trips == 0


async def test_a_run_costs_two_round_trips_and_a_skip_one(wire: Wire, redis_url: str) -> None:
    """On the wire: acquire + finish = 2 round trips; a skip = 1 (seed: 4 and 2)."""
    client = wire.client(redis_url)
    conn, lock_key, success_key, _, task_id = await task_boilerplate("warm", DATE, redis=client)
    await finish_task(conn, lock_key, success_key, task_id)  # scripts loaded, connection open

    before = wire.round_trips, wire.commands
    conn, lock_key, success_key, result, task_id = await task_boilerplate("t", DATE, redis=client)
    await finish_task(conn, lock_key, success_key, task_id)
    assert result["status"] == "pending"
    assert (wire.round_trips - before[0], wire.commands - before[1]) == (2, 2)

    before = wire.round_trips, wire.commands
    *_, skipped, _ = await task_boilerplate("t", DATE, redis=client)
    assert skipped["reason"] == "already_completed"
    assert (wire.round_trips - before[0], wire.commands - before[1]) == (1, 1)


async def test_scripts_reload_after_script_flush(wire: Wire, redis_url: str, redis_client: Redis) -> None:
    """After SCRIPT FLUSH (restart, failover) the EVALSHA falls back to EVAL once, then is cheap again."""
    client = wire.client(redis_url)
    conn, lock_key, success_key, _, task_id = await task_boilerplate("a", DATE, redis=client)
    await finish_task(conn, lock_key, success_key, task_id)
    await redis_client.script_flush()

    before = wire.round_trips
    conn, lock_key, success_key, result, task_id = await task_boilerplate("b", DATE, redis=client)
    assert result["status"] == "pending"
    assert wire.round_trips - before == 2  # NOSCRIPT, then EVAL
    before = wire.round_trips
    assert await finish_task(conn, lock_key, success_key, task_id) is True
    assert wire.round_trips - before == 2  # finish's own script was flushed too
    before = wire.round_trips
    *_, skipped, _ = await task_boilerplate("b", DATE, redis=client)
    assert skipped["reason"] == "already_completed"
    assert wire.round_trips - before == 1


async def test_finish_task_validates_its_ttl(redis_client: Redis) -> None:
    """finish_task refuses a success_ttl that is not a positive whole number of seconds."""
    conn, lock_key, success_key, _, task_id = await task_boilerplate("t", DATE, redis=redis_client)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidConfig):
            await finish_task(conn, lock_key, success_key, task_id, success_ttl=bad)  # type: ignore[arg-type]
    assert await redis_client.get(lock_key) == task_id.encode()


async def test_unreachable_redis_is_a_clear_error() -> None:
    """An unreachable Redis raises RedisUnavailable naming host:port, and nothing is left to clean."""
    from tests.servers import free_port

    port = free_port()
    client = aiotasks.Settings.from_url(f"redis://:hunter2@127.0.0.1:{port}/6", retries=0).create_client()
    try:
        with pytest.raises(aiotasks.RedisUnavailable) as caught:
            await task_boilerplate("t", DATE, redis=client)
    finally:
        await client.aclose()
    assert f"127.0.0.1:{port}/6" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)
