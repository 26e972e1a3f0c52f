"""The record readers: ``status`` grid, ``history``, ``metrics`` (issue 13), in real subprocesses.

Runs happen in one process and are read from another (the CLI child), and back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import subprocess
import sys
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

import aiotasks
from aiotasks._records import read_grid, read_runs, record_missed
from aiotasks._store import store_for
from tests.chains import record_chains
from tests.servers import RedisServer
from tests.support import Wire, eventually
from tests.test_cli import ROOT, child_env, cli, with_redis
from tests.test_records import latest, start_holder

TARGET = "tests/chains/record_chains.py:chain"
DATES = ["20261123", "20261124", "20261125"]


async def run_chain_dates(client: Redis, dates: list[str]) -> None:
    for date in dates:
        await aiotasks.run_chain(record_chains.chain, date, redis=client)


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_status_grid_from_another_process(redis_url: str, redis_client: Redis) -> None:
    """Runs made here show in a child's grid: completed, failed (reason), pending; JSON shape of the issue."""
    await run_chain_dates(redis_client, DATES[:2])
    done = cli(*with_redis(redis_url, "status", TARGET, "--from", DATES[0], "--to", DATES[2], "--json"))
    grid = json_of(done)
    assert grid["dates"] == DATES
    assert set(grid["tasks"]) == {"ok", "bad", "odds"}
    states = {task: [grid["tasks"][task][d]["state"] for d in DATES] for task in grid["tasks"]}
    assert states == {
        "ok": ["completed", "completed", "pending"],
        "bad": ["failed", "failed", "pending"],
        "odds": ["completed", "completed", "recurring"],  # its last run; "recurring" where it has none
    }
    failed = grid["tasks"]["bad"][DATES[0]]
    assert failed["reason"] == "error"
    assert "upstream returned 503" in failed["error"]
    assert failed["pid"] > 0
    text = cli(*with_redis(redis_url, "status", TARGET, "--from", DATES[0], "--to", DATES[2])).stdout
    assert "bad: failed (error" in text
    assert "++." in text


async def test_single_date_status_shows_a_recurring_tasks_last_run(
    redis_url: str, redis_client: Redis
) -> None:
    """status --date: a recurring task that ran reads completed with its run, not pending forever."""
    await run_chain_dates(redis_client, [DATES[0]])
    rows = {
        row["task"]: row
        for row in json_of(cli(*with_redis(redis_url, "status", TARGET, "--date", DATES[0], "--json")))[
            "tasks"
        ]
    }
    assert rows["odds"]["state"] == "completed"
    assert rows["odds"]["task_id"]
    assert (rows["bad"]["state"], rows["bad"]["reason"]) == ("failed", "error")


async def test_status_and_history_take_slot_keys(redis_url: str, redis_client: Redis) -> None:
    """A chain run under a schedule's slot key (20261125T0915) reads in status --date SLOT and in
    history under that key; a slot as a grid bound is refused (exit 2): the grid's axis is dates."""
    slot = "20261125T0915"
    await run_chain_dates(redis_client, [slot])
    rows = json_of(cli(*with_redis(redis_url, "status", TARGET, "--date", slot, "--json")))
    assert rows["date"] == slot
    assert {row["task"]: row["state"] for row in rows["tasks"]} == {
        "ok": "completed",
        "bad": "failed",
        "odds": "completed",
    }
    other = json_of(cli(*with_redis(redis_url, "status", TARGET, "--date", "20261125T0930", "--json")))
    assert {row["task"]: row["state"] for row in other["tasks"]}["ok"] == "pending"
    runs = json_of(cli(*with_redis(redis_url, "history", TARGET, "--json")))["runs"]
    assert {(run["task"], run["date"], run["status"]) for run in runs} == {
        ("ok", slot, "success"),
        ("bad", slot, "failed"),
        ("odds", slot, "success"),
    }
    done = cli(*with_redis(redis_url, "status", TARGET, "--from", slot, "--to", "20261126", "--json"))
    assert done.returncode == 2
    assert slot in done.stderr


async def test_history_of_a_run_in_another_process(redis_url: str, redis_client: Redis) -> None:
    """A chain run by a child process shows in history read here and there, newest first."""
    assert cli(*with_redis(redis_url, "run", TARGET, "--date", DATES[0])).returncode == 1  # bad fails
    document = json_of(cli(*with_redis(redis_url, "history", TARGET, "--json")))
    runs = document["runs"]
    assert {run["task"] for run in runs} == {"ok", "bad", "odds"}
    assert set(runs[0]) >= {"task", "date", "task_id", "status", "reason", "host", "pid", "started",
                            "ended", "duration", "attempts", "errors"}  # fmt: skip
    assert [run["started"] for run in runs] == sorted((run["started"] for run in runs), reverse=True)
    bad = next(run for run in runs if run["task"] == "bad")
    assert (bad["status"], bad["reason"], bad["attempts"]) == ("failed", "error", 1)
    assert bad["errors"] == ["Unexpected error: RuntimeError: upstream returned 503"]
    assert dt.datetime.fromisoformat(bad["started"]).tzinfo == dt.UTC
    ok = next(run for run in runs if run["task"] == "ok")
    assert ok["counters"] == {"rows": 7}
    only = json_of(cli(*with_redis(redis_url, "history", TARGET, "--task", "ok", "--last", "1", "--json")))
    assert [run["task"] for run in only["runs"]] == ["ok"]
    text = cli(*with_redis(redis_url, "history", TARGET)).stdout
    assert "failed/error" in text
    assert "upstream returned 503" in text


def test_history_refuses_a_bad_last_and_an_unknown_task(redis_url: str) -> None:
    """--last 0 and --task ghost are usage errors (exit 2), one line."""
    for args in (("--last", "0"), ("--task", "ghost")):
        done = cli(*with_redis(redis_url, "history", TARGET, *args))
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("aiotasks: error: ")


def samples(text: str) -> dict[tuple[str, str], float]:
    """Every sample of an exposition, parsed by prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, sample.labels["task"])] = sample.value
    return found


async def test_metrics_exposition_parses(redis_url: str, redis_client: Redis) -> None:
    """metrics prints an exposition prometheus_client parses: last success/failure, duration, running."""
    await run_chain_dates(redis_client, [DATES[0]])
    done = cli(*with_redis(redis_url, "metrics", TARGET))
    assert done.returncode == 0, done.stderr
    found = samples(done.stdout)
    now = dt.datetime.now(dt.UTC).timestamp()
    assert abs(found[("aiotasks_last_success_timestamp_seconds", "ok")] - now) < 600
    assert ("aiotasks_last_success_timestamp_seconds", "bad") not in found
    assert abs(found[("aiotasks_last_failure_timestamp_seconds", "bad")] - now) < 600
    assert found[("aiotasks_last_run_duration_seconds", "odds")] >= 0
    assert {found[("aiotasks_task_running", t)] for t in ("ok", "bad", "odds")} == {0}


async def test_metrics_counts_a_running_task(redis_client: Redis) -> None:
    """aiotasks_task_running is 1 while a run holds its lock, 0 after."""
    from aiotasks._metrics import exposition
    from aiotasks._records import read_runs

    started, release = asyncio.Event(), asyncio.Event()

    @aiotasks.task(name="ok")
    async def holding(run: aiotasks.Run) -> None:
        started.set()
        await release.wait()

    running = asyncio.create_task(holding(DATES[0], redis=redis_client))
    await started.wait()
    summaries = await read_runs(store_for(redis_client), ["ok"], namespace=None, last=10)
    assert samples(exposition(summaries.values()))[("aiotasks_task_running", "ok")] == 1
    release.set()
    await running
    summaries = await read_runs(store_for(redis_client), ["ok"], namespace=None, last=10)
    assert samples(exposition(summaries.values()))[("aiotasks_task_running", "ok")] == 0


def outcomes(text: str) -> dict[tuple[str, str], float]:
    """The ``aiotasks_task_last_end_timestamp_seconds`` samples of an exposition, by (task, outcome)."""
    return {
        (sample.labels["task"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "aiotasks_task_last_end_timestamp_seconds"
    }


async def test_metrics_show_a_sigkilled_run_as_abandoned(redis_url: str, redis_client: Redis) -> None:
    """Regression: after a SIGKILLed run, metrics showed only aiotasks_task_running 0 (no series to alert
    on). A worker process killed mid-body: last_end{outcome="abandoned"} appears, at the run's start."""
    await run_chain_dates(redis_client, [DATES[0]])
    process, seen = await start_holder(redis_url, "ok", "hang")
    try:
        before = outcomes(cli(*with_redis(redis_url, "metrics", TARGET)).stdout)
        assert ("ok", "success") in before
        assert ("ok", "abandoned") not in before  # running, not abandoned, while its lock lives
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def abandoned() -> bool:
        return (await latest(redis_client, "ok")).status == "abandoned"

    await eventually(abandoned, "the killed worker's lock expired")
    started = (await latest(redis_client, "ok")).started
    assert started is not None
    assert (await latest(redis_client, "ok")).task_id == seen["task_id"]
    done = cli(*with_redis(redis_url, "metrics", TARGET))
    assert done.returncode == 0, done.stderr
    after = outcomes(done.stdout)
    assert after[("ok", "abandoned")] == started / 1000
    assert after[("ok", "success")] == before[("ok", "success")]
    assert ("bad", "failed") in after
    assert {outcome for task, outcome in after if task == "bad"} == {"failed"}
    assert samples(done.stdout)[("aiotasks_task_running", "ok")] == 0


async def test_metrics_show_a_missed_slot(redis_url: str, redis_client: Redis) -> None:
    """A slot no host ran (a scheduler's 'missed' record): last_end{outcome="missed"} is when it was
    recorded, for the task it was missed for only."""
    slot = "20261125T0200"
    store = store_for(redis_client)
    written = await record_missed(store, {"ok": 86_400_000}, slot, namespace=None, note="slot missed")
    assert written == 1
    (missed,) = (await read_runs(store, ["ok"], namespace=None, last=5))["ok"].runs
    assert missed.status == "missed"
    assert missed.ended is not None
    found = outcomes(cli(*with_redis(redis_url, "metrics", TARGET)).stdout)
    assert found == {("ok", "missed"): missed.ended / 1000}


async def test_metrics_serve_answers_scrapes(redis_url: str, redis_client: Redis) -> None:
    """metrics --serve 0 serves the exposition on 127.0.0.1 until SIGTERM (exit 143)."""
    await run_chain_dates(redis_client, [DATES[0]])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiotasks", "metrics", TARGET, "--serve", "0", "--redis-url", redis_url,
        cwd=ROOT, env=child_env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        assert "http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        response = (await asyncio.wait_for(reader.read(), 60)).decode()
        writer.close()
        head, _, body = response.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 200")
        assert "text/plain; version=0.0.4" in head
        assert ("aiotasks_last_success_timestamp_seconds", "ok") in samples(body)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 143


async def test_the_grid_costs_a_bounded_number_of_round_trips(wire: Wire, redis_url: str) -> None:
    """90 dates x 50 tasks: one GRID script per task, sent in a few pipelined round trips, not per cell."""
    client = wire.client(redis_url)
    await aiotasks.run_chain(record_chains.fifty, "20261001", redis=client)
    dates = [(dt.date(2026, 8, 1) + dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(90)]
    names = [task.name for task in record_chains.fifty]
    await store_for(client).ping()
    await read_grid(store_for(client), names[:1], dates[:1], namespace=None)  # script loaded
    wire.reset()
    grid = await read_grid(store_for(client), names, dates, namespace=None)
    assert wire.commands == 50
    assert wire.round_trips <= 3
    assert sum(cell.state == "completed" for cells in grid.values() for cell in cells.values()) == 50


async def test_no_password_in_grid_history_or_exposition() -> None:
    """With a password in the URL, status, history and metrics output never contain it."""
    secret = "pw-Gr1d-s3cret"
    with RedisServer(password=secret) as server:
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        client = Redis.from_url(url)
        try:
            await run_chain_dates(client, [DATES[0]])
        finally:
            await client.aclose()
        outputs = []
        for args in (("status", TARGET, "--from", DATES[0], "--to", DATES[1], "--json"),
                     ("status", TARGET), ("history", TARGET, "--json"), ("history", TARGET),
                     ("metrics", TARGET)):  # fmt: skip
            done = cli(*with_redis(url, *args))
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout + done.stderr)
    assert not [out for out in outputs if secret in out]
