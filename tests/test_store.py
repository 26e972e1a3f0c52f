"""The Redis door under concurrency: coalescing, bounded connections, isolation, order (issue 7)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis import exceptions as rex
from redis.asyncio import Connection, Redis

import aiotasks
from aiotasks import Run, _store, _wire
from aiotasks._keys import TaskKeys
from aiotasks._store import DEFAULT_LANES, Acquired, store_for
from aiotasks._wire import pack
from tests.chains.cli_chains import seed
from tests.support import Gate, Wire, eventually, load_scripts

DATE = "20261125"


@aiotasks.task()
async def noop(run: Run) -> None:
    return None


def tasks(count: int) -> list[aiotasks.Task]:
    return [aiotasks.Task(noop.__wrapped__, name=f"t{index}") for index in range(count)]  # type: ignore[attr-defined]


async def test_300_concurrent_runs_on_one_default_client(
    wire: Wire, redis_url: str, redis_client: Redis
) -> None:
    """300 decorated calls at once on one Redis.from_url client: all succeed, no lock, few connections."""
    client = wire.client(redis_url)
    results = await asyncio.gather(*(task(DATE, redis=client) for task in tasks(300)))
    assert [r["status"] for r in results] == ["success"] * 300
    assert await redis_client.keys("lock:*") == []
    assert len(await redis_client.keys("success:*")) == 300
    assert wire.connections <= DEFAULT_LANES
    assert wire.round_trips < 2 * 300  # coalesced: far fewer round trips than commands


async def test_1000_runs_in_flight_never_exhaust_the_pool(redis_url: str, redis_client: Redis) -> None:
    """1,000 runs in flight on a client whose pool allows 20 connections: no "Too many connections"."""
    client = Redis.from_url(redis_url, max_connections=20)
    try:
        results = await asyncio.gather(*(task(DATE, redis=client) for task in tasks(1000)))
    finally:
        await client.aclose()
    assert {r["status"] for r in results} == {"success"}
    assert await redis_client.keys("lock:*") == []


async def test_lanes_bound_concurrent_sends(redis_client: Redis, gate: Gate) -> None:
    """However many runs are in flight, at most DEFAULT_LANES batches are being sent at once."""
    await asyncio.gather(*(task(DATE, redis=redis_client) for task in tasks(200)))
    assert 1 <= gate.most_in_flight <= DEFAULT_LANES
    assert max(len(batch) for batch in gate.log) > 1


async def test_a_failing_command_does_not_fail_its_batch(redis_client: Redis, gate: Gate) -> None:
    """Error isolation: in one pipeline, acquires on corrupted keys fail, their neighbours still acquire."""
    await load_scripts(redis_client)
    for index in range(0, 40, 8):
        await redis_client.rpush(f"lock:k{index}:{DATE}", "not a lock")  # WRONGTYPE for GET
    store = store_for(redis_client)
    outcomes = await asyncio.gather(
        *(
            store.acquire(
                TaskKeys(f"lock:k{i}:{DATE}", f"success:k{i}:{DATE}"), "tok", 10_000, check_success=True
            )
            for i in range(40)
        ),
        return_exceptions=True,
    )
    assert max(len(batch) for batch in gate.log) >= 10  # they really shared pipelines
    for index, outcome in enumerate(outcomes):
        if index % 8 == 0:
            assert isinstance(outcome, rex.ResponseError)
            assert "WRONGTYPE" in str(outcome)
        else:
            assert outcome == Acquired()


async def test_a_runs_commands_stay_in_order(redis_client: Redis, gate: Gate) -> None:
    """Within one run, the acquire is sent before the finish, whichever lane carries them."""
    await asyncio.gather(*(task(DATE, redis=redis_client) for task in tasks(150)))
    first_seen: dict[str, dict[str, int]] = {}
    for position, (name, args) in enumerate(gate.commands):
        if name in ("acquire", "finish"):
            token = str(args[1 + int(args[0])])  # numkeys, *keys, token, ...
            first_seen.setdefault(token, {}).setdefault(name, position)
    assert len(first_seen) == 150
    assert all(seen["acquire"] < seen["finish"] for seen in first_seen.values())


async def test_a_lone_command_goes_out_alone(wire: Wire, redis_url: str, gate: Gate) -> None:
    """With nothing else in flight, each command is its own round trip, not a pipeline."""
    client = wire.client(redis_url)
    await load_scripts(client)
    before = wire.round_trips
    result = await noop(DATE, redis=client)
    assert result["status"] == "success"
    assert gate.log == [["acquire"], ["finish"]]
    assert wire.round_trips - before == 2


async def test_noscript_inside_a_pipeline_falls_back(redis_client: Redis, gate: Gate) -> None:
    """After SCRIPT FLUSH, a pipeline of EVALSHAs answered NOSCRIPT is resent as EVAL, per command."""
    await redis_client.script_flush()
    results = await asyncio.gather(*(task(DATE, redis=redis_client) for task in tasks(30)))
    assert {r["status"] for r in results} == {"success"}
    assert any(len(batch) > 1 for batch in gate.log)


async def test_seed_tasks_using_conn_directly_in_a_300_wide_chain(redis_url: str) -> None:
    """Seed-style bodies that use the connection themselves work 300-wide on a client aiotasks builds."""
    client = aiotasks.Settings.from_url(redis_url).create_client()

    chain = [{"id": f"s{i}", "func": seed(f"s{i}")} for i in range(300)]
    chain.append({"id": "last", "func": seed("last"), "depends_on": [f"s{i}" for i in range(300)]})
    try:
        results = await aiotasks.run_chain(chain, DATE, redis=client)
        assert {r["status"] for r in results.values()} == {"success"}
        assert await client.get("bodies") == b"301"
        assert await client.keys("lock:*") == []
    finally:
        await client.aclose()


@pytest.mark.parametrize("lanes", [1, 2, 4])
async def test_any_lane_count_keeps_every_guarantee(redis_client: Redis, lanes: int) -> None:
    """With 1, 2 or 4 lanes, 100 concurrent runs all succeed and leave no lock."""
    store = store_for(redis_client)
    store._lanes = lanes
    results = await asyncio.gather(*(task(DATE, redis=redis_client) for task in tasks(100)))
    assert {r["status"] for r in results} == {"success"}
    assert await redis_client.keys("lock:*") == []


async def test_the_door_keeps_a_connection_and_hands_it_back_when_idle(
    wire: Wire, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between runs the door keeps its connection out of the pool; unused for HOLD_IDLE, it goes back."""
    monkeypatch.setattr(_wire, "HOLD_IDLE", 0.05)
    client = wire.client(redis_url)
    pool = client.connection_pool
    for date in ("20261123", "20261124", "20261125"):
        assert (await noop(date, redis=client))["status"] == "success"
        assert len(pool._in_use_connections) == 1  # kept by the door, not taken anew each time
    assert wire.connections == 1

    async def handed_back() -> bool:
        await asyncio.sleep(0.01)
        return not pool._in_use_connections

    await eventually(handed_back, "the idle connection is back in the pool")
    assert (await noop("20261126", redis=client))["status"] == "success"


async def test_the_door_keeps_nothing_from_a_small_pool(wire: Wire, redis_url: str) -> None:
    """From a pool smaller than HOLD_MIN_POOL, every connection goes straight back after each batch."""
    client = wire.client(redis_url, max_connections=_wire.HOLD_MIN_POOL - 1)
    assert (await noop(DATE, redis=client))["status"] == "success"
    assert not client.connection_pool._in_use_connections


async def test_a_kept_connection_the_server_closed_is_replaced_at_once(
    wire: Wire, redis_url: str, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closed the door's kept connection (idle timeout, restart): the next run still
    succeeds, on a fresh connection, without spending one of the door's retries."""
    monkeypatch.setattr(_store, "DOOR_ATTEMPTS", 1)
    client = wire.client(redis_url)
    assert (await noop("20261124", redis=client))["status"] == "success"
    connections = store_for(client)._connections
    assert connections is not None
    kept = connections.held[0]._writer
    assert kept is not None
    host, port = kept.get_extra_info("sockname")[:2]
    assert await redis_client.client_kill(f"{host}:{port}")
    assert (await noop("20261125", redis=client))["status"] == "success"
    assert wire.connects == 2


# A command name (redis-py splits a first argument on spaces: "CONFIG GET"), then any arguments.
_commands = st.tuples(
    st.sampled_from(["EVALSHA", "EVAL", "DEL"]),
    st.lists(st.one_of(st.text(max_size=40), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=40))),
).map(lambda command: (command[0], *command[1]))


@given(commands=st.lists(_commands, min_size=1, max_size=5))
def test_the_door_packs_requests_as_redis_py_does(commands: list[tuple[Any, ...]]) -> None:
    """The door's own RESP packer writes the very bytes redis-py's ``pack_commands`` would."""
    assert pack(commands) == b"".join(Connection().pack_commands(commands))
