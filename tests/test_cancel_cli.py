"""``python -m aiotasks cancel`` against real ``serve`` and ``run`` processes on a real redis-server.

A body sleeping on one process (waiting on an event it never gets) is cancelled from another
process: it stops, its record says cancelled and who asked, its lock is free, another worker can
take the date. Every wait polls a condition (``until``), bounded only to turn a hang into a failure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tests.servers import free_port
from tests.support import until
from tests.test_cli import ROOT, assert_one_error_line, child_env, cli
from tests.test_serve import serve, strings

CHAINS = "tests/chains/cancel_chains.py"
DATE = "20261125"


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client that decodes replies, on the clean session server."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def started(client: redis.Redis, event: str) -> list[str]:
    """The pids that logged ``event`` (``started``, ``cancelled``, ``swallowed``) for DATE."""
    entries = [entry.split(":") for entry in strings(client.lrange("sleeping", 0, -1))]
    return [pid for what, date, pid in entries if (what, date) == (event, DATE)]


def run(url: str, target: str) -> subprocess.Popen[str]:
    """``aiotasks run TARGET --date DATE --json`` as a child process."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "run", target, "--date", DATE, "--json", "--redis-url", url],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def history(url: str, task: str) -> list[dict[str, object]]:
    done = cli("history", f"{CHAINS}:chain", "--task", task, "--json", "--redis-url", url)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert isinstance(runs, list)
    return runs


@pytest.mark.timeout(90)
def test_cancel_stops_a_body_on_a_serve_replica_and_a_second_replica_can_take_the_date(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """Two serve replicas; one runs a sleeping body (triggered). cancel --wait from another process:
    the body stops, exit 0, its lock is free, its record says cancelled and who asked, its
    dependent never starts; a trigger then runs the date again on a replica, and cancel (no wait)
    stops that run too."""
    replicas = [serve(redis_url, f"{CHAINS}:schedules", "--grace", "0.5") for _ in range(2)]
    try:
        until(lambda: int(sync_redis.info("clients")["blocked_clients"]) == 2, "both listen", *replicas)
        asked = cli("trigger", f"{CHAINS}:schedules", "--schedule", "nightly", "--key", DATE,
                    "--redis-url", redis_url)  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        until(lambda: len(started(sync_redis, "started")) == 1, "the body sleeps", *replicas)
        done = cli("cancel", f"{CHAINS}:schedules", "--task", "sleeper", "--date", DATE, "--wait", "--json",
                   "--redis-url", redis_url)  # fmt: skip
        assert done.returncode == 0, done.stderr
        document = json.loads(done.stdout)
        assert (document["delivered"], document["stopped"]) == (True, True)
        assert started(sync_redis, "cancelled") == started(sync_redis, "started")
        assert sync_redis.exists(f"lock:sleeper:{DATE}") == 0
        [record] = history(redis_url, "sleeper")
        assert (record["status"], record["reason"]) == ("failed", "cancelled")
        assert record["cancelled_by"] == document["requested_by"]
        assert record["errors"] == [f"cancelled by {document['requested_by']}"]
        assert sync_redis.lrange("after", 0, -1) == []  # its dependent did not start

        again = cli("trigger", f"{CHAINS}:schedules", "--schedule", "nightly", "--key", DATE,
                    "--redis-url", redis_url)  # fmt: skip
        assert again.returncode == 0, again.stderr
        until(lambda: len(started(sync_redis, "started")) == 2, "a replica runs the date again", *replicas)
        stop = cli("cancel", f"{CHAINS}:schedules", "--task", "sleeper", "--date", DATE,
                   "--redis-url", redis_url)  # fmt: skip
        assert stop.returncode == 0, stop.stderr
        assert "requested by" in stop.stdout
        until(lambda: len(started(sync_redis, "cancelled")) == 2, "the second run stops", *replicas)
        assert {pid for pid in started(sync_redis, "started")} <= {str(r.pid) for r in replicas}
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
        errors = [replica.communicate(timeout=20)[1] for replica in replicas]
        assert not any("Traceback" in error for error in errors), errors


@pytest.mark.timeout(90)
def test_cancel_of_a_run_process_fails_the_task_and_blocks_its_dependent(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """`run` exits 1: the cancelled task failed (cancelled, who asked), its dependent was blocked
    naming it; the lock is free."""
    worker = run(redis_url, f"{CHAINS}:chain")
    until(lambda: len(started(sync_redis, "started")) == 1, "the body sleeps", worker)
    done = cli("cancel", f"{CHAINS}:chain", "--task", "sleeper", "--date", DATE, "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1, err
    tasks = json.loads(out)["tasks"]
    assert (tasks["sleeper"]["reason"], tasks["sleeper"]["cancelled_by"].split(":")[0]) == (
        "cancelled",
        done.stdout.split("requested by ")[1].split(":")[0],
    )
    assert (tasks["after"]["status"], tasks["after"]["blocked_by"]) == ("skipped", "sleeper")
    assert sync_redis.exists(f"lock:sleeper:{DATE}") == 0


@pytest.mark.timeout(90)
def test_a_body_that_swallows_the_cancellation_ends_as_lock_lost(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """A body that catches the cancellation and returns: the run is lock_lost, no marker, lock free."""
    worker = run(redis_url, f"{CHAINS}:careless")
    until(lambda: len(started(sync_redis, "started")) == 1, "the body sleeps", worker)
    done = cli("cancel", f"{CHAINS}:careless", "--task", "stubborn", "--date", DATE, "--wait",
               "--redis-url", redis_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1, err
    result = json.loads(out)["tasks"]["stubborn"]
    assert (result["status"], result["reason"]) == ("failed", "lock_lost")
    assert started(sync_redis, "swallowed") == started(sync_redis, "started")
    assert sync_redis.exists(f"lock:stubborn:{DATE}", f"success:stubborn:{DATE}") == 0


@pytest.mark.timeout(90)
def test_a_request_whose_holder_died_expires_with_the_lock(redis_url: str, sync_redis: redis.Redis) -> None:
    """The holder is SIGKILLed: cancel is still delivered to its lock (exit 0), and the request
    expires with that lock."""
    worker = run(redis_url, f"{CHAINS}:chain")
    until(lambda: len(started(sync_redis, "started")) == 1, "the body sleeps", worker)
    worker.kill()
    worker.communicate(timeout=20)
    done = cli("cancel", f"{CHAINS}:chain", "--task", "sleeper", "--date", DATE, "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    assert sync_redis.exists(f"cancel:sleeper:{DATE}") == 1
    until(lambda: sync_redis.exists(f"lock:sleeper:{DATE}", f"cancel:sleeper:{DATE}") == 0, "both expired")


def test_status_shows_a_pending_cancel_request_and_who_asked(redis_url: str, sync_redis: redis.Redis) -> None:
    """A holder that has not renewed yet (here a lock set by hand, which nobody renews): status
    shows the running cell with the pending request and who asked, in text and JSON."""
    sync_redis.set(f"lock:sleeper:{DATE}", "holder", px=60_000)
    done = cli("cancel", f"{CHAINS}:chain", "--task", "sleeper", "--date", DATE, "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    shown = cli("status", f"{CHAINS}:chain", "--date", DATE, "--json", "--redis-url", redis_url)
    [row] = [row for row in json.loads(shown.stdout)["tasks"] if row["task"] == "sleeper"]
    assert (row["state"], row["cancel_requested_by"]) == (
        "running",
        done.stdout.split("requested by ")[1].split(";")[0],
    )
    text = cli("status", f"{CHAINS}:chain", "--date", DATE, "--redis-url", redis_url).stdout
    assert "cancel requested by " in text


def test_wait_that_times_out_exits_1_naming_the_run(redis_url: str, sync_redis: redis.Redis) -> None:
    """--wait --timeout with a holder that never renews (a lock set by hand): one error line naming
    the task and its run, exit 1; the request stays until the lock expires."""
    sync_redis.set(f"lock:sleeper:{DATE}", "holder", px=60_000)
    done = cli("cancel", f"{CHAINS}:chain", "--task", "sleeper", "--date", DATE, "--wait", "--timeout", "0.2",
               "--redis-url", redis_url)  # fmt: skip
    assert_one_error_line(done, 1, "sleeper", "holder", "0.2 s")
    assert sync_redis.exists(f"cancel:sleeper:{DATE}") == 1


def test_cancel_for_a_date_nothing_runs_exits_1_and_writes_nothing(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """No run holds the lock: exit 1, says so, no key written."""
    done = cli("cancel", f"{CHAINS}:chain", "--task", "sleeper", "--date", DATE, "--redis-url", redis_url)
    assert done.returncode == 1, done.stderr
    assert "nothing runs" in done.stdout
    assert sync_redis.dbsize() == 0


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (("--task", "nope", "--date", DATE), "'nope'"),
        (("--task", "a b", "--date", DATE), "'a b'"),
        (("--task", "sleeper", "--date", "2026-11-25"), "'2026-11-25'"),
        (("--task", "sleeper", "--date", DATE, "--timeout", "1"), "--timeout"),
        (("--task", "sleeper", "--date", DATE, "--wait", "--timeout", "0"), "--timeout"),
    ],
)
def test_cancel_refuses_bad_input_before_writing(
    redis_url: str, sync_redis: redis.Redis, extra: tuple[str, ...], named: str
) -> None:
    """A task not in TARGET, an unsafe name, a bad date, a bad --timeout: one error line naming the
    value, exit 2, nothing written (a run holds the lock meanwhile)."""
    sync_redis.set(f"lock:sleeper:{DATE}", "holder", px=60_000)
    done = cli("cancel", f"{CHAINS}:chain", *extra, "--redis-url", redis_url)
    assert_one_error_line(done, 2, named)
    assert sync_redis.keys("*") == [f"lock:sleeper:{DATE}"]


def test_cancel_with_redis_unreachable_exits_3() -> None:
    """A closed local port: one error line, exit 3."""
    done = cli("cancel", f"{CHAINS}:chain", "--task", "sleeper", "--date", DATE,
               "--redis-url", f"redis://127.0.0.1:{free_port()}/0")  # fmt: skip
    assert_one_error_line(done, 3)
