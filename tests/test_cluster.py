"""Redis Cluster: a local 3-master cluster; every script touches one slot; batches split by node."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster

import aiotasks
from aiotasks import Run, finish_task, release_lock, task_boilerplate
from tests.servers import LocalCluster
from tests.support import Gate
from tests.test_cli import ROOT, child_env

DATE = "20261125"


def evalsha_calls(cluster: LocalCluster) -> list[int]:
    """How many EVALSHA/EVAL each master has executed so far."""
    calls = []
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as sync:
            stats: dict[str, Any] = sync.info("commandstats")
            calls.append(sum(stats.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval")))
    return calls


async def test_seed_flow_with_hash_tagged_keys(cluster_client: RedisCluster) -> None:
    """On a cluster the lock and marker share a hash tag, and the seed's flow holds."""
    conn, lock_key, success_key, result, task_id = await task_boilerplate("t", DATE, redis=cluster_client)
    assert (lock_key, success_key) == (f"lock:{{t}}:{DATE}", f"success:{{t}}:{DATE}")
    assert cluster_client.keyslot(lock_key) == cluster_client.keyslot(success_key)
    assert result["status"] == "pending"
    *_, held, _ = await task_boilerplate("t", DATE, redis=cluster_client)
    assert held["reason"] == "lock_held"
    assert await release_lock(conn, lock_key, "not-mine") is False
    assert await finish_task(conn, lock_key, success_key, task_id) is True
    *_, done, _ = await task_boilerplate("t", DATE, redis=cluster_client)
    assert done["reason"] == "already_completed"


async def test_decorated_tasks_spread_over_every_master(
    cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    """300 concurrent decorated runs over keys in every master all succeed; each master ran scripts."""
    before = evalsha_calls(cluster)

    async def body(run: Run) -> None:
        run.result["slot"] = cluster_client.keyslot(run.lock_key)

    tasks = [aiotasks.Task(body, name=f"t{index}") for index in range(300)]
    results = await asyncio.gather(*(task(DATE, redis=cluster_client) for task in tasks))
    assert {r["status"] for r in results} == {"success"}
    after = evalsha_calls(cluster)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert await cluster_client.keys("lock:*", target_nodes=RedisCluster.ALL_NODES) == []


async def test_batches_are_split_by_node(cluster_client: RedisCluster, gate: Gate) -> None:
    """Coalesced batches mix slots of several nodes; redis-py's cluster pipeline routes each command."""
    tasks = [aiotasks.Task(_noop, name=f"b{index}") for index in range(60)]
    results = await asyncio.gather(*(task(DATE, redis=cluster_client) for task in tasks))
    assert {r["status"] for r in results} == {"success"}
    assert max(len(batch) for batch in gate.log) > 1


async def _noop(run: Run) -> None:
    return None


async def test_scripts_reload_on_every_node(cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    """After SCRIPT FLUSH on every master, runs still succeed (EVAL fallback per command, per node)."""
    await aiotasks.Task(_noop, name="warm")(DATE, redis=cluster_client)
    for node in cluster.nodes:
        with redis.Redis.from_url(node.url) as sync:
            sync.script_flush()
    tasks = [aiotasks.Task(_noop, name=f"r{index}") for index in range(30)]
    results = await asyncio.gather(*(task(DATE, redis=cluster_client) for task in tasks))
    assert {r["status"] for r in results} == {"success"}


async def test_run_chain_on_a_cluster(cluster_client: RedisCluster) -> None:
    """run_chain works on a cluster client, seed-style tasks included (they get the cluster client)."""

    async def seed(date_string: str | None = None) -> dict[str, Any]:
        conn, lock_key, success_key, result, task_id = await task_boilerplate("seed", date_string)
        assert isinstance(conn, RedisCluster)
        try:
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
            return result
        finally:
            await release_lock(conn, lock_key, task_id)

    chain: list[Any] = [{"id": "seed", "func": seed}, aiotasks.Task(_noop, name="after", depends_on=["seed"])]
    results = await aiotasks.run_chain(chain, DATE, redis=cluster_client)
    assert {r["status"] for r in results.values()} == {"success"}
    assert await cluster_client.exists(f"success:{{after}}:{DATE}") == 1


def test_cli_runs_a_chain_on_a_cluster(cluster: LocalCluster) -> None:
    """python -m aiotasks run --cluster uses hash-tagged keys and exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "aiotasks", "run", "examples/seed_chain.py:chain", "--date", DATE,
         "--redis-url", cluster.url, "--cluster", "--json"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["success"] == 3
    with redis.RedisCluster.from_url(cluster.url) as sync:
        # GET, not EXISTS: redis-py 6.0-6.2's sync cluster splits EXISTS through a pipeline that
        # warns about its own deprecated argument (and warnings are errors here).
        assert sync.get(f"success:{{task_rag_indexing}}:{DATE}") is not None
