"""Soak: processes racing with random failures and cancellations everywhere leave a consistent Redis.

The default run is short (CI); set ``AIOTASKS_SOAK_RUNS`` (runs per process, e.g. 20000) and
``AIOTASKS_SOAK_PROCESSES`` for a long one by hand.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("AIOTASKS_SOAK_RUNS", "400"))
PROCESSES = int(os.environ.get("AIOTASKS_SOAK_PROCESSES", "3"))
KEYS = 100


@pytest.mark.slow
@pytest.mark.timeout(max(120, RUNS // 10))
async def test_soak_with_failures_and_cancellations_everywhere(redis_client: Redis, redis_url: str) -> None:
    """No overlap, no body after its marker, no leaked lock; each marker is the last body's success;
    every call ends in exactly one outcome, and every reported success is its key's marker."""
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.workers.soak",
            redis_url,
            str(RUNS),
            str(KEYS),
            str(seed),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for seed in range(PROCESSES)
    ]
    await redis_client.rpush("go", *range(PROCESSES))
    outputs = [(await worker.communicate())[0].decode() for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * PROCESSES, outputs
    reports = [json.loads(output) for output in outputs]
    calls = (RUNS // 8) * 8  # each worker: 8 coroutines of RUNS // 8 calls
    assert [sum(report["outcomes"].values()) for report in reports] == [calls] * PROCESSES, reports
    totals = {kind: sum(report["outcomes"][kind] for report in reports) for kind in reports[0]["outcomes"]}
    # Every path was exercised: runs succeeded, skipped, failed in their bodies, and were cancelled.
    assert all(totals.values()), totals

    assert await redis_client.get("violations:overlap") is None
    assert await redis_client.get("violations:after_marker") is None
    assert await redis_client.keys("lock:*") == []
    assert await redis_client.keys("running:*") == []
    markers = await redis_client.keys("success:*")
    last_started: dict[str, str] = {}
    for marker in markers:
        key = (marker.decode() if isinstance(marker, bytes) else marker).removeprefix("success:")
        started = await redis_client.lrange(f"started:{key}", 0, -1)
        completed = await redis_client.lrange(f"completed:{key}", 0, -1)
        # No body starts once the marker exists, so the marker is the last started body's, which completed.
        assert started
        assert started[-1] in completed
        last = started[-1]
        last_started[key] = last.decode() if isinstance(last, bytes) else last
    # A success is reported once per key, by the run whose body wrote the marker. (There can be
    # more markers than reported successes: a timeout may land after the finish took effect.)
    successes = [(key, task_id) for report in reports for key, task_id in report["successes"]]
    assert len(successes) == totals["success"]
    assert len({key for key, _ in successes}) == len(successes), "a key was reported done twice"
    assert all(last_started.get(key) == task_id for key, task_id in successes), (successes, last_started)
