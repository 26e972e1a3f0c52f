"""In-process Prometheus metrics (the ``metrics`` extra) and their absence (issue 13)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

import aiotasks
from aiotasks import Run, TaskError
from tests.test_cli import ROOT, child_env

DATE = "20261125"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_runs_and_skips_are_counted(redis_client: Redis) -> None:
    """aiotasks_runs_total counts success, failure reasons and skips; durations and in-progress follow."""

    @aiotasks.task(name="m_ok")
    async def ok(run: Run) -> None:
        assert value("aiotasks_runs_in_progress", task="m_ok") == 1

    @aiotasks.task(name="m_bad", timeout=0.01)
    async def bad(run: Run) -> None:
        await asyncio.Event().wait()

    before = {
        outcome: value("aiotasks_runs_total", task=task, outcome=outcome)
        for task, outcome in (("m_ok", "success"), ("m_ok", "already_completed"), ("m_bad", "timeout"))
    }
    durations = value("aiotasks_run_duration_seconds_count", task="m_ok")
    await ok(DATE, redis=redis_client)
    await ok(DATE, redis=redis_client)
    with pytest.raises(TaskError):
        await bad(DATE, redis=redis_client)
    assert value("aiotasks_runs_total", task="m_ok", outcome="success") == before["success"] + 1
    assert value("aiotasks_runs_total", task="m_ok", outcome="already_completed") == (
        before["already_completed"] + 1
    )
    assert value("aiotasks_runs_total", task="m_bad", outcome="timeout") == before["timeout"] + 1
    assert value("aiotasks_run_duration_seconds_count", task="m_ok") == durations + 1
    assert value("aiotasks_runs_in_progress", task="m_ok") == 0


async def test_durations_are_observed_without_records(redis_client: Redis) -> None:
    """Regression (with retention=0 aiotasks_run_duration_seconds was never fed: it took the record's
    server times): runs without records observe their duration and count like the others."""

    @aiotasks.task(name="m_norecords", retention=0)
    async def plain(run: Run) -> None:
        pass

    durations = value("aiotasks_run_duration_seconds_count", task="m_norecords")
    runs = value("aiotasks_runs_total", task="m_norecords", outcome="success")
    await plain(DATE, redis=redis_client)
    assert value("aiotasks_run_duration_seconds_count", task="m_norecords") == durations + 1
    assert value("aiotasks_runs_total", task="m_norecords", outcome="success") == runs + 1
    assert await redis_client.exists(f"run:m_norecords:{DATE}") == 0


async def test_a_chain_wait_is_observed(redis_client: Redis) -> None:
    """aiotasks_lock_wait_seconds observes a chain's wait for another worker's lock."""

    @aiotasks.task(name="m_wait")
    async def waited(run: Run) -> None:
        pass

    before = value("aiotasks_lock_wait_seconds_count", task="m_wait")
    await redis_client.set(f"lock:m_wait:{DATE}", "someone", px=100)  # a worker that died
    results = await aiotasks.run_chain([waited], DATE, redis=redis_client)
    assert results["m_wait"]["status"] == "success"
    assert value("aiotasks_lock_wait_seconds_count", task="m_wait") == before + 1


def test_without_prometheus_client_nothing_is_imported() -> None:
    """Without prometheus_client a run works and the metrics import nothing."""
    program = """
import asyncio, sys
sys.modules["prometheus_client"] = None  # as if not installed
import aiotasks, fakeredis
from aiotasks import _metrics

@aiotasks.task()
async def t(run):
    pass

async def main():
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    print((await t("20261125", redis=client))["status"], _metrics._instruments())

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["success", "None"]
