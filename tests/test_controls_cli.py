"""``python -m aiotasks pause / resume / clear`` on a real redis-server, with three real ``serve``
replicas where the fleet must act: a paused schedule fires nowhere, a paused task starts nowhere."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import pytest
import redis

from aiotasks._records import HOST
from tests.servers import LocalCluster
from tests.support import until
from tests.test_cli import assert_one_error_line, cli
from tests.test_serve import serve, strings

CHAINS = "tests/chains/pause_chains.py"
TARGET = f"{CHAINS}:schedules"
DATE = "20261124"


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client that decodes replies, on the clean session server."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


class Fleet(list[subprocess.Popen[str]]):
    """Serve replicas, stopped once (SIGTERM) by :meth:`stop`, which returns their stderr."""

    errors: list[str] | None = None

    def stop(self) -> list[str]:
        if self.errors is None:
            for replica in self:
                if replica.poll() is None:
                    replica.send_signal(signal.SIGTERM)
            self.errors = [replica.communicate(timeout=20)[1] for replica in self]
        return self.errors


@pytest.fixture
def replicas(redis_url: str, sync_redis: redis.Redis) -> Iterator[Fleet]:
    """Three ``serve -v`` replicas of TARGET, firing; stopped after (no traceback allowed)."""
    fleet = Fleet(serve(redis_url, TARGET, "--grace", "0.5", "--no-triggers", "-v") for _ in range(3))
    try:
        until(lambda: len(keys_run(sync_redis, "other")) >= 2, "the replicas fire", *fleet)
        yield fleet
    finally:
        errors = fleet.stop()
        assert not any("Traceback" in error for error in errors), errors


def keys_run(client: redis.Redis, task: str) -> list[str]:
    """The run keys ``task``'s body ran for, in order (one entry per body run)."""
    return [entry.split(":")[0] for entry in strings(client.lrange(task, 0, -1))]


def paused_slots(client: redis.Redis, task: str) -> list[str]:
    """The slots recorded ``paused`` for ``task`` (one member per record)."""
    members = strings(client.zrange(f"runs:{task}", 0, -1))
    return sorted(member.rsplit(":", 1)[0] for member in members if member.endswith(":paused"))


def control(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, "--redis-url", url)


@pytest.mark.timeout(120)
def test_pause_schedule_fires_it_nowhere_for_3_slots_and_resume_runs_the_next_once(
    redis_url: str, sync_redis: redis.Redis, replicas: Fleet
) -> None:
    """3 serve replicas, 1 s schedules: `pause --schedule pulse`: no replica runs it for the next 3 slots,
    each recorded 'paused' once per task, while the other schedule keeps running; `resume`: the next
    slot runs, once, and no paused slot is caught up."""
    paused = control("pause", TARGET, "--schedule", "pulse", url=redis_url)
    assert paused.returncode == 0, paused.stderr
    assert (
        paused.stdout.strip()
        == "schedule 'pulse': paused (no replica fires its slots until `aiotasks resume`)"
    )
    others_at_pause = len(keys_run(sync_redis, "other"))
    until(lambda: len(paused_slots(sync_redis, "pulse")) >= 3, "3 slots passed paused", *replicas)
    assert len(keys_run(sync_redis, "other")) > others_at_pause  # the other schedule is not paused
    resumed = control("resume", TARGET, "--schedule", "pulse", url=redis_url)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, "schedule 'pulse': resumed")
    held = paused_slots(sync_redis, "pulse")
    until(
        lambda: any(key > held[-1] for key in keys_run(sync_redis, "pulse")), "a slot runs again", *replicas
    )
    ran = keys_run(sync_redis, "pulse")
    assert len(ran) == len(set(ran)), "a slot ran twice"
    # The first paused slot may have run too: a pause set just as that slot's replicas read it can find
    # one firing and another recording it (docs: controls, "Pause a schedule").
    assert not set(ran) & set(held[1:]), "a paused slot ran (caught up on resume?)"
    for task in ("pulse", "echo"):
        recorded = paused_slots(sync_redis, task)
        assert len(recorded) == len(set(recorded)) >= 3, f"{task}: each paused slot recorded once"
    history = json.loads(cli("history", f"{CHAINS}:nightly", "--json", "--redis-url", redis_url).stdout)
    assert history == {"runs": [], "paused_tasks": {}}


@pytest.mark.timeout(120)
def test_pause_task_skips_it_on_every_replica_blocks_its_dependent_and_other_tasks_keep_running(
    redis_url: str, sync_redis: redis.Redis, replicas: Fleet
) -> None:
    """`pause --task pulse`: no replica runs pulse (every replica's chain skips it 'paused' and blocks
    echo 'dependency_paused: pulse'), `other` keeps running; `run` of the daily chain with extract
    paused exits 0 saying so; `resume --task` lets pulse run again, once per slot."""
    assert control("pause", TARGET, "--task", "pulse", url=redis_url).returncode == 0
    pulses = len(keys_run(sync_redis, "pulse"))
    others = len(keys_run(sync_redis, "other"))
    until(lambda: len(keys_run(sync_redis, "other")) >= others + 3, "3 more slots of other ran", *replicas)
    # A slot fired before the pause landed may still run: at most the one in flight.
    assert len(keys_run(sync_redis, "pulse")) <= pulses + 1
    stalled = len(keys_run(sync_redis, "pulse"))
    until(lambda: len(keys_run(sync_redis, "other")) >= others + 5, "2 more slots of other ran", *replicas)
    assert len(keys_run(sync_redis, "pulse")) == stalled, "a paused task ran"
    assert control("pause", TARGET, "--task", "extract", url=redis_url).returncode == 0
    done = cli("run", f"{CHAINS}:nightly", "--date", DATE, "--json", "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert {name: (t["status"], t["reason"]) for name, t in document["tasks"].items()} == {
        "extract": ("skipped", "paused"),
        "load": ("skipped", "dependency_paused"),
    }
    assert (document["summary"]["paused"], document["exit_code"]) == (2, 0)
    resumed = control("resume", TARGET, "--task", "pulse", url=redis_url)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, "task 'pulse': resumed")
    until(lambda: len(keys_run(sync_redis, "pulse")) >= stalled + 2, "pulse runs again", *replicas)
    ran = keys_run(sync_redis, "pulse")
    assert len(ran) == len(set(ran)), "a slot ran twice"
    for error in replicas.stop():  # every replica met the pause: its chains blocked echo for it
        assert "not run, dependency pulse: dependency_paused" in error, error[-2000:]


def test_controls_are_idempotent_and_say_so(redis_url: str, sync_redis: redis.Redis) -> None:
    """Pausing a paused schedule or task says who paused it and since when, changes nothing, exits 0;
    resuming what is not paused says so, exits 0."""
    for flag, name in (("--schedule", "nightly"), ("--task", "load")):
        what = flag.removeprefix("--")
        assert control("pause", TARGET, flag, name, url=redis_url).returncode == 0
        (key,) = sync_redis.keys("*paused*")
        value = sync_redis.get(key)
        again = control("pause", TARGET, flag, name, url=redis_url)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith(f"{what} {name!r}: already paused by ")
        assert again.stdout.rstrip().endswith("Z; nothing changed")
        assert sync_redis.get(key) == value
        assert control("resume", TARGET, flag, name, url=redis_url).returncode == 0
        twice = control("resume", TARGET, flag, name, url=redis_url)
        assert (twice.returncode, twice.stdout.strip()) == (
            0,
            f"{what} {name!r}: not paused; nothing changed",
        )
    assert sync_redis.dbsize() == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("pause", TARGET, "--schedule", "nope"), ["no schedule named 'nope'", "'pulse'"]),
        (("resume", TARGET, "--schedule", "bad name"), ["'bad name'"]),
        (("pause", TARGET, "--task", "nope"), ["no task 'nope'", "'extract'"]),
        (("pause", f"{CHAINS}:nightly", "--task", "pulse"), ["no task 'pulse'"]),  # not in TARGET
        (("pause", f"{CHAINS}:nightly", "--schedule", "nightly"), ["holds no Schedule"]),
        (("pause", TARGET), ["one of the arguments --schedule --task is required"]),
        (("pause", TARGET, "--schedule", "pulse", "--task", "pulse"), ["not allowed with"]),
        (("clear", f"{CHAINS}:nightly", "--date", "2026", "--yes"), ["'2026'"]),
        (("clear", f"{CHAINS}:nightly", "--date", DATE, "--task", "nope", "--yes"), ["no task 'nope'"]),
        (("clear", f"{CHAINS}:nightly", "--date", DATE), ["--yes"]),
    ],
    ids=lambda value: "-".join(value[-3:]) if isinstance(value, tuple) else None,
)
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(
    redis_url: str, sync_redis: redis.Redis, args: tuple[str, ...], named: list[str]
) -> None:
    """An unknown schedule or task, one not in TARGET, a bad name or date: a typed error naming it, one
    line, exit 2, and nothing written to Redis."""
    assert_one_error_line(control(*args, url=redis_url), 2, *named)
    assert sync_redis.dbsize() == 0


def test_clear_downstream_removes_the_dependents_markers_and_reset_is_its_old_name(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """clear --task extract --downstream removes extract's and load's markers (so the next run repeats
    both); `reset` still works, as clear without --downstream, and says it is now clear."""
    assert cli("run", f"{CHAINS}:nightly", "--date", DATE, "--redis-url", redis_url).returncode == 0
    done = control("clear", f"{CHAINS}:nightly", "--date", DATE, "--task", "extract", "--downstream", "--yes",
                   url=redis_url)  # fmt: skip
    assert (done.returncode, done.stdout.strip()) == (
        0,
        f"{DATE}: removed the success markers of extract, load",
    )
    assert sync_redis.keys("success:*") == []
    assert cli("run", f"{CHAINS}:nightly", "--date", DATE, "--redis-url", redis_url).returncode == 0
    assert keys_run(sync_redis, "load") == [DATE, DATE]
    old = control("reset", f"{CHAINS}:nightly", "--date", DATE, "--task", "extract", "--yes", url=redis_url)
    assert (old.returncode, old.stdout.strip()) == (0, f"{DATE}: removed the success markers of extract")
    assert "`reset` is now `clear`" in old.stderr
    assert sync_redis.keys("success:*") == [f"success:load:{DATE}"]


def test_pause_task_on_redis_cluster(cluster: LocalCluster) -> None:
    """On Redis Cluster (--cluster) `pause --task` writes the task's hash-tagged key, which the acquire
    script reads in the task's slot: `run` skips the task 'paused'; `resume` lets it run."""
    url = cluster.nodes[0].url
    assert cli("pause", TARGET, "--task", "extract", "--cluster", "--redis-url", url).returncode == 0
    done = cli("run", f"{CHAINS}:nightly", "--date", DATE, "--json", "--cluster", "--redis-url", url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tasks"]["extract"]["reason"] == "paused"
    assert cli("resume", TARGET, "--task", "extract", "--cluster", "--redis-url", url).returncode == 0
    again = cli("run", f"{CHAINS}:nightly", "--date", DATE, "--json", "--cluster", "--redis-url", url)
    assert json.loads(again.stdout)["summary"]["success"] == 2


def test_status_history_and_metrics_show_paused_schedules_tasks_and_pending_triggers(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    """status (one date, and the grid) and history of a target of schedules list each schedule's
    pause and pending triggers and the paused tasks, in text and JSON; `metrics` has
    aiotasks_task_paused 1 for a paused task, 0 for the others."""
    assert cli("run", f"{CHAINS}:nightly", "--date", DATE, "--redis-url", redis_url).returncode == 0
    assert control("pause", TARGET, "--schedule", "pulse", url=redis_url).returncode == 0
    assert control("pause", TARGET, "--task", "load", url=redis_url).returncode == 0
    sync_redis.lpush("schedule:{aiotasks}:other:triggers", "{}")  # a trigger no replica took yet
    text = control("status", TARGET, "--date", DATE, url=redis_url).stdout
    controls = text[text.index("controls:") :].splitlines()
    assert [line.split(" since ")[0] for line in controls] == [
        "controls:",
        f"  schedule 'pulse': paused by {HOST}:{pid(sync_redis, 'schedule:{aiotasks}:pulse:paused')}",
        "  schedule 'other': not paused; 1 trigger pending",
        "  schedule 'nightly': not paused",
        f"  task 'load': paused by {HOST}:{pid(sync_redis, 'paused:load')}",
    ]
    document = json.loads(control("status", TARGET, "--date", DATE, "--json", url=redis_url).stdout)
    assert list(document["paused_tasks"]) == ["load"]
    assert document["schedules"]["pulse"]["paused"]["by"].startswith(f"{HOST}:")
    assert document["schedules"]["other"] == {"paused": None, "pending_triggers": 1}
    grid = control("status", f"{CHAINS}:nightly", "--from", "20261123", "--to", DATE, url=redis_url).stdout
    assert grid.splitlines()[-2:][0] == "controls:"
    assert grid.splitlines()[-1].startswith("  task 'load': paused by ")
    history = json.loads(control("history", TARGET, "--json", url=redis_url).stdout)
    assert (len(history["runs"]), list(history["paused_tasks"])) == (2, ["load"])
    assert "schedule 'pulse': paused by " in control("history", TARGET, url=redis_url).stdout
    metrics = control("metrics", f"{CHAINS}:nightly", url=redis_url).stdout.splitlines()
    assert [line for line in metrics if line.startswith("aiotasks_task_paused{")] == [
        'aiotasks_task_paused{task="extract"} 0',
        'aiotasks_task_paused{task="load"} 1',
    ]


def pid(client: redis.Redis, key: str) -> str:
    """The pid part of a pause key's ``host:pid|ms``."""
    return str(client.get(key)).split("|")[0].rsplit(":", 1)[1]
