"""The door's remaining gaps (issue 19, item 10), each against real redis-servers.

Each test shows what the door does at one of the edges the last mutation run
left uncovered: an op given up before it was ever written, a pool refusal on
Redis Cluster, a loop that ends under the door's feet, and chain entries whose
id is not their task's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from aiotasks import task_boilerplate
from aiotasks._keys import TaskKeys
from aiotasks._store import Store, store_for
from aiotasks._wire import take
from tests.proxy import Proxy
from tests.servers import LocalCluster
from tests.support import eventually, load_scripts
from tests.test_cli import cli, with_redis

DATE = "20261125"
#: Generous bound on waiting for something that must happen at once (guards a hang, times nothing).
HANG = 10.0


async def scripts_run(client: Redis | RedisCluster) -> int:
    """How many EVAL/EVALSHA calls the server (every node of a cluster) has run."""
    stats = await client.info("commandstats")
    if isinstance(client, RedisCluster):  # {node: {...}} merged
        nodes = list(stats.values()) if all(isinstance(v, dict) for v in stats.values()) else [stats]
    else:
        nodes = [stats]
    total = 0
    for node in nodes:
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            found = node.get(name)
            if isinstance(found, dict):
                total += int(found["calls"])
    return total


async def door_waits_for_a_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def waiting() -> bool:
        return any("free connection" in record.getMessage() for record in caplog.records)

    await eventually(waiting, "the door waits for a free connection", within=HANG)


# -- (a) an op abandoned before it was ever written is dropped, not sent ------------------------


async def test_an_acquire_cancelled_while_the_pool_is_full_is_never_sent(
    redis_url: str, redis_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An acquire waiting for a free connection (the client's pool full, never written) whose caller is
    cancelled is dropped when its next try comes (``_put_back``): once the pool frees, nothing is sent,
    no lock is taken and no run record is written (sending it would take the lock and give it back)."""
    pool = ConnectionPool.from_url(redis_url, max_connections=1)
    client = Redis.from_pool(pool)
    taken = await take(pool)
    try:
        before = await scripts_run(redis_client)
        with caplog.at_level(logging.INFO, logger="aiotasks.store"):
            run = asyncio.ensure_future(task_boilerplate("gap_a", DATE, redis=client))
            await door_waits_for_a_connection(caplog)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, HANG)
        assert await store_for(client).drain(HANG)  # the op left the door without a connection
        await pool.release(taken)
        assert await store_for(client).drain(HANG)
    finally:
        await client.aclose()
    assert await scripts_run(redis_client) == before
    assert await redis_client.keys("*gap_a*") == []


# -- (b) a pool refusal on Redis Cluster: not written, so nothing to give back ---------------------


@pytest.fixture
async def one_connection_cluster(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A cluster client allowed one connection per node."""
    client = RedisCluster.from_url(cluster.url, max_connections=1)
    await client.initialize()
    yield client
    await client.aclose()


async def test_a_cluster_acquire_cancelled_while_its_nodes_pool_is_full_is_never_sent(
    cluster: LocalCluster, one_connection_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """On Redis Cluster the client sends the command itself: a refusal by the node's pool marks the
    acquire not written (``written=False``), so a caller cancelled while it waits leaves nothing to
    give back and nothing is sent once the node's connection frees: no lock, no run record."""
    client = one_connection_cluster
    checker = RedisCluster.from_url(cluster.url)
    try:
        before = await scripts_run(checker)
        # A body holding the node's only connection: BLPOP on the task's own hash slot.
        blocked = asyncio.ensure_future(client.blpop(["{gap_b}:wake"], 0))
        with caplog.at_level(logging.INFO, logger="aiotasks.store"):
            run = asyncio.ensure_future(task_boilerplate("gap_b", DATE, redis=client))
            await door_waits_for_a_connection(caplog)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, HANG)
        assert await store_for(client).drain(HANG)
        await checker.rpush("{gap_b}:wake", "go")
        await asyncio.wait_for(blocked, HANG)
        assert await store_for(client).drain(HANG)
        assert await scripts_run(checker) == before
        assert [key async for key in checker.scan_iter(match="*gap_b*")] == []
    finally:
        await checker.aclose()


# -- (d) status and reset look tasks up by entry id: an id that is not its task's name --------------

ALIAS_CHAIN = """
from aiotasks import finish_task, task_boilerplate


async def nightly(date_string=None):
    conn, lock_key, success_key, result, task_id = await task_boilerplate("nightly_report", date_string)
    if result["status"] == "skipped":
        return result
    result["status"] = "success"
    await finish_task(conn, lock_key, success_key, task_id)
    return result


chain = [{"id": "nightly", "func": nightly}]
"""


def test_status_and_reset_of_an_entry_whose_id_is_not_its_task_name_read_the_ids_keys(
    tmp_path: Path, redis_url: str
) -> None:
    """Known limit, documented (README, status): an entry "nightly" whose seed-style function runs task
    "nightly_report" locks and marks nightly_report's keys (the run learns the name), but status and
    reset, which run nothing, look the entry up by its id: status says pending, reset finds no marker
    and removes nothing; the run's warning (-v) says to name the entry after its task."""
    target = tmp_path / "alias_chain.py"
    target.write_text(ALIAS_CHAIN)
    done = cli(*with_redis(redis_url, "run", f"{target}:chain", "--date", DATE, "-v"))
    assert done.returncode == 0, done.stderr
    assert "name the entry 'nightly_report'" in done.stderr
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(f"success:nightly_report:{DATE}")
        status = cli(*with_redis(redis_url, "status", f"{target}:chain", "--date", DATE, "--json"))
        assert status.returncode == 0, status.stderr
        assert [(row["task"], row["state"]) for row in json.loads(status.stdout)["tasks"]] == [
            ("nightly", "pending")
        ]
        reset = cli(*with_redis(redis_url, "reset", f"{target}:chain", "--date", DATE, "--yes"))
        assert reset.returncode == 0, reset.stderr
        assert reset.stdout.strip() == f"{DATE}: no success markers to remove"
        assert client.exists(f"success:nightly_report:{DATE}")


# -- (c) the loop ends while a door task reads a reply -----------------------------------------------

KEYS = TaskKeys(f"lock:gap_c:{DATE}", f"success:gap_c:{DATE}")


def acquire_then_end_the_loop(url: str, steps: dict[str, threading.Event]) -> tuple[Store, list[Any]]:
    """In a loop of its own: connect (``connected``); once ``armed``, an acquire, cancelled once ``go``
    says its reply is held (a door task then reads it); then the loop ends at once. The door, and
    what the loop reported to its exception handler."""
    reported: list[Any] = []

    async def main() -> Store:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        client = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=None)
        await client.ping()
        steps["connected"].set()
        assert await asyncio.to_thread(steps["armed"].wait, HANG)
        store = store_for(client)
        caller = asyncio.ensure_future(store.acquire(KEYS, "tok", 60_000, check_success=True))
        assert await asyncio.to_thread(steps["go"].wait, HANG)
        caller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        assert store._senders  # the door's reader of the held reply
        return store  # asyncio.run now cancels the reader: the loop is shutting down

    return asyncio.run(main()), reported


async def test_a_door_task_cancelled_at_loop_shutdown_closes_its_commands_and_the_ttl_bounds_the_lock(
    proxy: Proxy, redis_client: Redis
) -> None:
    """Documented limit: the loop ending while a door task still reads an acquire's reply (its caller
    cancelled) cancels that task; the door closes the command (nothing left in flight, nothing spawned
    during shutdown, nothing reported). The script had run, so the lock stays, for its TTL only."""
    await load_scripts(redis_client)
    steps = {name: threading.Event() for name in ("connected", "armed", "go")}
    ended = asyncio.ensure_future(asyncio.to_thread(acquire_then_end_the_loop, proxy.url, steps))
    try:
        assert await asyncio.to_thread(steps["connected"].wait, HANG)
        proxy.hold_replies()
        steps["armed"].set()
        await asyncio.wait_for(proxy.reply_held.wait(), HANG)
        steps["go"].set()
        store, reported = await asyncio.wait_for(ended, HANG)
    finally:
        for step in steps.values():
            step.set()
        proxy.release_replies()
    assert store._in_flight == 0
    assert not store._senders
    assert reported == []
    assert await redis_client.get(KEYS.lock) == b"tok"
    assert 0 < await redis_client.pttl(KEYS.lock) <= 60_000
