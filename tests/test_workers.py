"""Several ``python -m aiotasks run`` workers finish one chain together (issue 8).

Bodies append "start:<task>" and "end:<task>" to one Redis list, a total order;
every check reads that log, never timings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.test_cli import child_env

ROOT = Path(__file__).resolve().parent.parent
CHAINS = "tests/chains/worker_chains.py"
DATE = "20261125"
DEPENDS = {"analyse": ["extract"], "index": ["analyse"], "report": ["index", "odds"]}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as sync:
        yield sync


def start(redis_url: str, target: str, *args: str) -> subprocess.Popen[str]:
    """Start one worker process running ``target`` for DATE."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "run", f"{CHAINS}:{target}", "--date", DATE,
         "--redis-url", redis_url, "--json", *args],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, dict[str, object]]]:
    """Wait (bounded) for a worker; its exit code and its tasks' results."""
    try:
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "Traceback" not in err, err
    return process.returncode, json.loads(out)["tasks"] if out else {}


def entries(client: redis.Redis) -> list[str]:
    """The log, oldest first."""
    return [e.decode() if isinstance(e, bytes) else str(e) for e in client.lrange("log", 0, -1)]


def wait_until(client: redis.Redis, predicate: str, *workers: subprocess.Popen[str]) -> None:
    """Poll the log until it contains ``predicate`` (an entry), failing if a worker died first."""
    deadline = time.monotonic() + 60
    while not any(entry.startswith(predicate) for entry in entries(client)):
        for worker in workers:
            assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, f"{predicate!r} never logged"
        time.sleep(0.02)


def assert_once_and_ordered(log: list[str], tasks: list[str]) -> None:
    """Each body started and ended exactly once, and no dependent started before its dependencies ended."""
    for task in tasks:
        assert log.count(f"start:{task}") == 1, (task, log)
        assert log.count(f"end:{task}") == 1, (task, log)
    for task, deps in DEPENDS.items():
        if task in tasks:
            for dep in deps:
                assert log.index(f"end:{dep}") < log.index(f"start:{task}"), (task, dep, log)


def test_operator_runs_odds_while_two_cron_hosts_run_the_chain(redis_url: str, client: redis.Redis) -> None:
    """Issue 8: odds held by an operator; both cron workers wait for it; report runs once; all exit 0."""
    operator = start(redis_url, "chain", "--only", "odds")
    wait_until(client, "start:odds", operator)
    cron = [start(redis_url, "chain"), start(redis_url, "chain")]
    wait_until(client, "end:index", operator, *cron)
    assert "start:report" not in entries(client)  # report waits for the operator's odds
    client.rpush("gate:odds", "go")
    outcomes = [finish(worker) for worker in (operator, *cron)]
    assert [code for code, _ in outcomes] == [0, 0, 0]
    assert_once_and_ordered(entries(client), ["extract", "analyse", "index", "odds", "report"])
    for _, tasks in outcomes[1:]:
        assert (tasks["odds"]["status"], tasks["odds"]["reason"]) == ("skipped", "already_completed")
    # The worker that ran index started odds with it, found it held, and waited for the operator's run
    # (a worker slow to start may find it completed already, without waiting).
    assert any(tasks["odds"].get("waited_for") for _, tasks in outcomes[1:])
    assert client.keys("lock:*") == []


def test_three_workers_started_together(redis_url: str, client: redis.Redis) -> None:
    """Three workers started at once: each body runs exactly once, in order, all exit 0, no lock left."""
    workers = [start(redis_url, "chain") for _ in range(3)]
    wait_until(client, "start:odds", *workers)
    client.rpush("gate:odds", "go")
    assert [finish(worker)[0] for worker in workers] == [0, 0, 0]
    assert_once_and_ordered(entries(client), ["extract", "analyse", "index", "odds", "report"])
    assert client.keys("lock:*") == []


def test_killed_holder_is_taken_over_after_its_ttl(redis_url: str, client: redis.Redis) -> None:
    """A worker SIGKILLed while holding a task: the others take over after its TTL and finish the chain."""
    first = start(redis_url, "kill_chain")
    wait_until(client, "start:hold:", first)
    others = [start(redis_url, "kill_chain"), start(redis_url, "kill_chain")]
    announced = [entry for entry in entries(client) if entry.startswith("start:hold:")]
    holder_pid = int(announced[0].rsplit(":", 1)[1])
    assert holder_pid == first.pid
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    outcomes = [finish(worker) for worker in others]
    assert [code for code, _ in outcomes] == [0, 0]
    log = entries(client)
    assert log.count("end:hold") == 1
    assert log.count("start:after") == 1
    assert log.index("end:hold") < log.index("start:after")
    assert client.keys("lock:*") == []


def test_a_task_that_always_fails(redis_url: str, client: redis.Redis) -> None:
    """A task failing on every worker: each tries it at most once, all exit 1, none hangs."""
    workers = [start(redis_url, "failing_chain") for _ in range(3)]
    outcomes = [finish(worker) for worker in workers]
    assert [code for code, _ in outcomes] == [1, 1, 1]
    attempts = entries(client).count("start:always_fails")
    assert 1 <= attempts <= 3
    for _, tasks in outcomes:
        assert tasks["always_fails"]["status"] == "failed"
        assert tasks["after"]["reason"] == "dependency_failed"
    assert client.keys("lock:*") == []


def test_recurring_task_held_elsewhere_blocks_dependents(redis_url: str, client: redis.Redis) -> None:
    """A recurring task held elsewhere is skipped (lock_held); its dependents say dependency_lock_held."""
    operator = start(redis_url, "recurring_chain", "--only", "odds")
    wait_until(client, "start:odds", operator)
    code, tasks = finish(start(redis_url, "recurring_chain"))
    client.rpush("gate:odds", "go")
    assert finish(operator)[0] == 0
    assert code == 1
    assert (tasks["odds"]["status"], tasks["odds"]["reason"]) == ("skipped", "lock_held")
    assert (tasks["report"]["reason"], tasks["report"]["blocked_by"]) == ("dependency_lock_held", "odds")
    assert client.keys("lock:*") == []
