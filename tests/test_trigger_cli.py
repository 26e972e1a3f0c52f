"""``python -m aiotasks trigger`` with real ``serve`` replicas on a real redis-server: once, --force,
expiry, --here, a SIGKILLed replica, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from tests.support import until
from tests.test_cli import ROOT, assert_one_error_line, child_env, cli
from tests.test_serve import SCHEDULES, serve, strings

CONTROLS = "tests/chains/control_chains.py"
TARGET = f"{CONTROLS}:schedules"


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client that decodes replies, on the clean session server."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
def replicas(redis_url: str, sync_redis: redis.Redis) -> Iterator[list[subprocess.Popen[str]]]:
    """Two ``serve`` replicas of TARGET, each listening for triggers; stopped with SIGTERM after."""
    started = [serve(redis_url, TARGET, "--grace", "0.5") for _ in range(2)]
    try:
        until(lambda: int(sync_redis.info("clients")["blocked_clients"]) == 2, "both listen", *started)
        yield started
    finally:
        for replica in started:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
        errors = [replica.communicate(timeout=20)[1] for replica in started]
        assert not any("Traceback" in error for error in errors), errors


def daily(client: redis.Redis) -> list[list[str]]:
    return [entry.split(":") for entry in strings(client.lrange("daily", 0, -1))]


@pytest.mark.timeout(90)
def test_trigger_runs_once_across_replicas_and_force_runs_it_again_once(
    redis_url: str, sync_redis: redis.Redis, replicas: list[subprocess.Popen[str]]
) -> None:
    """trigger --wait: one of two replicas runs the chain, exit 0; again: nothing runs; --force: once more."""
    done = cli(
        "trigger", TARGET, "--schedule", "nightly", "--key", "20261124", "--wait", "--redis-url", redis_url
    )
    assert done.returncode == 0, done.stderr
    taken_line, summary = done.stdout.splitlines()[:2]
    pids = {str(replica.pid) for replica in replicas}
    assert "taken by" in taken_line
    assert taken_line.rsplit(":", 1)[1] in pids
    assert summary.startswith("20261124: 2 tasks: 2 succeeded")
    assert [entry[:2] for entry in daily(sync_redis)] == [["extract", "20261124"], ["load", "20261124"]]
    again = cli(
        "trigger", TARGET, "--schedule", "nightly", "--key", "20261124", "--wait", "--redis-url", redis_url
    )
    assert again.returncode == 0, again.stderr
    assert "2 already done" in again.stdout
    forced = cli(
        "trigger", TARGET, "--schedule", "nightly", "--key", "20261124", "--force", "--wait", "--json",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    document = json.loads(forced.stdout)
    assert document["taken_by"].rsplit(":", 1)[1] in pids
    assert {task["status"] for task in document["tasks"].values()} == {"success"}
    assert len(daily(sync_redis)) == 4
    records = json.loads(cli("history", f"{CONTROLS}:extract", "--json", "--redis-url", redis_url).stdout)
    assert len(records["runs"]) == 2  # the first run and the forced one; the second ran nothing
    assert all(run["triggered_by"].split(":")[0] for run in records["runs"])
    text = cli("history", f"{CONTROLS}:extract", "--redis-url", redis_url).stdout
    assert text.count("triggered by ") == 2


def test_trigger_with_no_replica_expires_exit_1_and_leaves_nothing(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """No replica serves the schedule: one error line saying so, exit 1, no request left behind."""
    done = cli("trigger", TARGET, "--schedule", "nightly", "--expires", "0.5", "--redis-url", redis_url)
    assert_one_error_line(done, 1, "no replica serves schedule 'nightly': the request expired after 0.5 s")
    assert sync_redis.dbsize() == 0


def test_trigger_here_runs_the_chain_in_the_calling_process(redis_url: str, sync_redis: redis.Redis) -> None:
    """--here runs the chain as run does: exit 0, its records say this process triggered it."""
    done = cli(
        "trigger", TARGET, "--schedule", "nightly", "--key", "20261120", "--here", "--redis-url", redis_url
    )
    assert done.returncode == 0, done.stderr
    assert [entry[:2] for entry in daily(sync_redis)] == [["extract", "20261120"], ["load", "20261120"]]
    (pid,) = {entry[2] for entry in daily(sync_redis)}
    records = json.loads(cli("history", f"{CONTROLS}:extract", "--json", "--redis-url", redis_url).stdout)
    assert [run["triggered_by"].rsplit(":", 1)[1] for run in records["runs"]] == [pid]


@pytest.mark.parametrize(
    ("extra", "code", "named"),
    [
        (("--schedule", "nope"), 2, "'nope'"),
        (("--schedule", "nightly", "--key", "20261124T0200"), 2, "'20261124T0200'"),
        (("--schedule", "nightly", "--key", "2026"), 2, "'2026'"),
        (("--schedule", "nightly", "--expires", "0"), 2, "0"),
    ],
)
def test_trigger_refuses_bad_input_before_writing(
    redis_url: str, sync_redis: redis.Redis, extra: tuple[str, ...], code: int, named: str
) -> None:
    """An unknown schedule, a key of the wrong kind, a bad expiry: one error line, exit 2, nothing written."""
    done = cli("trigger", TARGET, *extra, "--redis-url", redis_url)
    assert_one_error_line(done, code, named)
    assert sync_redis.dbsize() == 0


def test_serve_refuses_two_schedules_with_one_name(redis_url: str, sync_redis: redis.Redis) -> None:
    """Two schedules of one target named alike (default names): exit 2 naming it, nothing written."""
    done = cli("serve", f"{CONTROLS}:twins", "--redis-url", redis_url)
    assert_one_error_line(done, 2, "'extract'")
    assert sync_redis.dbsize() == 0


@pytest.mark.timeout(90)
def test_a_replica_killed_while_it_runs_a_trigger_leaves_nothing_locked_and_nothing_twice(
    redis_url: str, sync_redis: redis.Redis, replicas: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL of the replica running a triggered chain: what is lost is that run (no record outcome, the
    requester's --wait gets no answer); its lock frees within lock_timeout, nothing ran twice, and a new
    trigger is taken by the survivor and runs the key."""
    done = cli("trigger", TARGET, "--schedule", "hanging", "--key", "20261124", "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    until(lambda: sync_redis.llen("hung") == 1, "the hanging body started", *replicas)
    [(_, holder_pid)] = [entry.split(":") for entry in strings(sync_redis.lrange("hung", 0, -1))]
    holder = next(replica for replica in replicas if replica.pid == int(holder_pid))
    assert sync_redis.exists("lock:hang:20261124") == 1
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=20)
    until(lambda: sync_redis.exists("lock:hang:20261124") == 0, "the dead holder's lock expired")
    assert sync_redis.llen("hung") == 1  # nobody ran it again on their own
    survivor = next(replica for replica in replicas if replica is not holder)
    until(lambda: int(sync_redis.info("clients")["blocked_clients"]) == 1, "the survivor listens", survivor)
    again = cli("trigger", TARGET, "--schedule", "hanging", "--key", "20261124", "--redis-url", redis_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(f":{survivor.pid}")
    until(lambda: sync_redis.llen("hung") == 2, "the survivor runs it", survivor)


@pytest.mark.timeout(90)
def test_a_requester_killed_while_it_waits_leaves_its_request_to_be_run_once(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """A trigger SIGKILLed while no replica serves yet: its request stays (it was asked for, and has not
    expired), and the replica that starts runs it once; nothing else is left behind."""
    requester = subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "trigger", TARGET, "--schedule", "nightly", "--key", "20261101",
         "--expires", "60", "--redis-url", redis_url],
        cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    triggers = "schedule:{aiotasks}:nightly:triggers"
    until(lambda: sync_redis.llen(triggers) == 1, "the request is pushed", requester)
    requester.send_signal(signal.SIGKILL)
    requester.communicate(timeout=20)
    replica = serve(redis_url, TARGET, "--grace", "0.5")
    try:
        until(lambda: len(daily(sync_redis)) == 2, "the replica ran the request", replica)
        until(lambda: sync_redis.exists(triggers) == 0, "the request is gone", replica)
    finally:
        replica.send_signal(signal.SIGTERM)
        _, errors = replica.communicate(timeout=20)
    assert [entry[:2] for entry in daily(sync_redis)] == [["extract", "20261101"], ["load", "20261101"]]
    assert "Traceback" not in errors


def test_serve_no_triggers_leaves_requests_to_expire(redis_url: str, sync_redis: redis.Redis) -> None:
    """serve --no-triggers does not listen: a trigger for its schedule expires (exit 1), nothing runs."""
    replica = serve(redis_url, TARGET, "--no-triggers", "--grace", "0.5")
    try:
        done = cli("trigger", TARGET, "--schedule", "nightly", "--expires", "1", "--redis-url", redis_url)
        assert_one_error_line(done, 1, "no replica serves schedule 'nightly'")
    finally:
        replica.send_signal(signal.SIGTERM)
        replica.communicate(timeout=20)
    assert daily(sync_redis) == []


@pytest.mark.timeout(90)
def test_three_serve_replicas_honour_a_pause_record_each_slot_once_and_resume_with_the_next(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """3 serve processes, a 1 s schedule: paused, no replica runs a slot for 3 slots, each recorded
    'paused' once; resumed, the following slots run once each and no paused slot is caught up."""
    replicas = [serve(redis_url, f"{SCHEDULES}:schedules", "--grace", "0.5") for _ in range(3)]

    def slots_run() -> list[str]:
        return [entry.split(":")[0] for entry in strings(sync_redis.lrange("ticks", 0, -1))]

    def paused() -> list[str]:
        members = strings(sync_redis.zrange("runs:tick", 0, -1))
        return sorted(member.rsplit(":", 1)[0] for member in members if member.endswith(":paused"))

    try:
        until(lambda: len(slots_run()) >= 2, "the replicas fire", *replicas)
        sync_redis.set("schedule:{aiotasks}:tick:paused", "tester:1|0")
        until(lambda: len(paused()) >= 3, "3 slots passed paused", *replicas)
        sync_redis.delete("schedule:{aiotasks}:tick:paused")
        held = paused()
        until(lambda: max(slots_run()) > held[-1] and len([s for s in slots_run() if s > held[-1]]) >= 2,
              "slots run again", *replicas)  # fmt: skip
    finally:
        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
        errors = [replica.communicate(timeout=20)[1] for replica in replicas]
    assert not any("Traceback" in error for error in errors), errors
    ran = slots_run()
    assert len(ran) == len(set(ran)), "a slot ran twice"
    # The first paused slot may also have run: a pause set just as that slot's replicas read it can
    # find one firing and another recording it paused (README: Pausing a schedule).
    assert not set(ran) & set(paused()[1:]), "a paused slot ran (caught up on resume?)"
    assert len(set(paused())) == len(paused())
