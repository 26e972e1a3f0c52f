"""``python -m aiotasks serve`` in real processes on a real redis-server: replicas, SIGTERM, bad input."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from tests.servers import free_port
from tests.support import until
from tests.test_cli import ROOT, assert_one_error_line, child_env, cli

SCHEDULES = "tests/chains/sched_chains.py"


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client that decodes replies, on the clean session server."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


def strings(values: object) -> list[str]:
    assert isinstance(values, list)
    return [str(value) for value in values]


def serve(url: str, target: str = f"{SCHEDULES}:schedules", *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "serve", target, "--redis-url", url, *extra],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ticks(client: redis.Redis) -> list[list[str]]:
    return [entry.split(":") for entry in strings(client.lrange("ticks", 0, -1))]


def slots_after(client: redis.Redis, key: str) -> set[str]:
    return {slot for slot, *_ in ticks(client) if slot > key}


@pytest.mark.timeout(60)
def test_three_replicas_run_every_slot_once_and_survive_a_sigterm(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """3 serve processes, a 1 s recurring task: every slot once, no gaps; SIGTERM mid-run frees its lock."""
    replicas = [serve(redis_url, f"{SCHEDULES}:schedules", "--grace", "0.5") for _ in range(3)]
    try:
        until(lambda: len({slot for slot, *_ in ticks(sync_redis)}) >= 3, "3 slots ran")
        sync_redis.set("hold", 1)
        until(lambda: any(state == "held" for *_, state in ticks(sync_redis)), "a run is held mid-body")
        [(held_slot, held_pid, held_id)] = [
            (s, p, t) for s, p, t, state in ticks(sync_redis) if state == "held"
        ]
        holder = next(r for r in replicas if r.pid == int(held_pid))
        assert sync_redis.get(f"lock:tick:{held_slot}") == held_id  # it holds the lock right now
        holder.send_signal(signal.SIGTERM)
        _, holder_err = holder.communicate(timeout=20)
        assert holder.returncode == 143, holder_err
        assert sync_redis.get(f"lock:tick:{held_slot}") is None  # released on cancel, not left for 300 s
        until(lambda: len(slots_after(sync_redis, held_slot)) >= 3, "the other replicas kept firing")
        others = {pid for slot, pid, *_ in ticks(sync_redis) if slot > held_slot}
        assert str(holder.pid) not in others
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
        errors = [replica.communicate(timeout=20)[1] for replica in replicas]
    assert [replica.returncode for replica in replicas] == [143, 143, 143], errors
    assert not any("Traceback" in error for error in errors), errors
    slots = [slot for slot, *_ in ticks(sync_redis)]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    seconds = sorted(time.mktime(time.strptime(slot, "%Y%m%dT%H%M%S")) for slot in slots)
    assert seconds == [seconds[0] + i for i in range(len(seconds))], "a slot in the middle was skipped"
    daily = strings(sync_redis.lrange("daily", 0, -1))
    assert len(daily) == 2, daily  # the daily chain caught up once across the three
    assert [entry.split(":")[0] for entry in daily] == ["extract", "load"]


@pytest.mark.parametrize(
    ("target", "extra", "named"),
    [
        (f"{SCHEDULES}:bad_cron", (), "'61 * * * *'"),
        (f"{SCHEDULES}:bad_zone", (), "'Mars/Olympus'"),
        (f"{SCHEDULES}:too_fast", (), "under 1 second"),
        (f"{SCHEDULES}:not_a_schedule", (), "holds no Schedule"),
        (f"{SCHEDULES}:schedules", ("--grace", "-1"), "-1"),
        (f"{SCHEDULES}:schedules", ("--window", "0"), "0"),
    ],
)
def test_serve_refuses_bad_input_before_anything_starts(
    redis_url: str, sync_redis: redis.Redis, target: str, extra: tuple[str, ...], named: str
) -> None:
    """Bad schedules, targets and options: one error line, exit 2, nothing written to Redis."""
    done = cli("serve", target, "--redis-url", redis_url, *extra)
    assert_one_error_line(done, 2, named)
    assert sync_redis.dbsize() == 0


def test_serve_with_unreachable_redis_exits_3() -> None:
    """A closed port: one error line, exit 3, before any slot fires."""
    done = cli("serve", f"{SCHEDULES}:schedules", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert_one_error_line(done, 3)
