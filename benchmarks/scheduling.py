"""Scheduling: fire latency across replicas, idle cost between slots, windowed backfill makespan.

Fire latency
    A recurring task on ``every="1s"``, fired by ``aiotasks.Scheduler`` in 3
    replicas (3 OS processes, spawned, each with its own client) and in 1, on
    a redis-server this benchmark starts. The body records the wall time it
    started; latency is that minus the slot's instant (slot time -> body
    start: the wake-up, the chain's setup and the acquire round trip).
    Baseline, same run: a bare ``asyncio`` loop that sleeps to each whole
    second and calls the body (no Redis, no lock): what the event loop and
    the OS timer cost by themselves. Also reported: slots run and bodies run
    twice for one slot (must be 0).

Idle CPU
    A child process runs a Scheduler whose next slot is far away for
    ``--idle-seconds``; reported: its CPU time (``time.process_time``) over
    that idle stretch and the commands Redis processed meanwhile
    (``INFO stats``), against a plain ``asyncio.sleep`` loop (the baseline)
    and a loop that polls Redis once a second (what "idle" costs when a
    scheduler polls). The Scheduler is measured without its trigger listener
    (``triggers=False``: nothing is sent) and with it (the default: one
    blocking ``BRPOP`` a second, what ``aiotasks trigger`` costs idle).

Backfill makespan
    365 dates of a 10-task chain of sleeping tasks (levels 1-4-1-3-1, so the
    critical path is 5 sleeps) through the windowed engine (``run --from/--to
    --window N``) for N = 1, 8, 32, against the date-by-date baseline (a loop
    of ``run_chain`` calls). Beside each: the target, ``1.1 x ceil(365/N) x
    the critical path``; the makespan over ``ceil(365/N) x`` the critical path
    (``x_ideal``) and over ``ceil(365/N) x`` one date's measured makespan
    (``x_one_date``: what the window itself adds, apart from the per-level cost
    of round trips and timers); and this process's CPU time. Each task sleeps
    50 ms by default: every dependency edge costs about a millisecond (the
    finish and the dependent's acquire round trips, and epoll rounding each
    timer up to the next millisecond), which is 2% of a 50 ms task but 10-20%
    of a 10 ms one (``--sleep-ms 10`` shows it: 1.2-1.3 x ideal at N = 8, 32).

Run: ``python -m benchmarks.scheduling [--seconds 10] [--replicas 3,1] [--idle-seconds 3] [--days 365]
[--windows 1,8,32] [--sleep-ms 50] [--json] [--smoke]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import multiprocessing
import os
import statistics
import time
from collections import Counter
from typing import Any

import redis
from redis.asyncio import Redis
from tests.servers import RedisServer

import aiotasks
from aiotasks._backfill import run_window
from aiotasks._chain import Chain, prepare_run
from aiotasks._keys import date_range

SLOT_FORMAT = "%Y%m%dT%H%M%S"
#: Levels of the backfill chain: 10 tasks, each level depending on every task of the one before.
LEVELS = (1, 4, 1, 3, 1)


# -- fire latency ----------------------------------------------------------------------------------------


def _slot_instant(key: str) -> float:
    return dt.datetime.strptime(key, SLOT_FORMAT).replace(tzinfo=dt.UTC).timestamp()


async def _replica(url: str, name: str, seconds: float) -> None:
    """One replica: a Scheduler firing ``name`` every second for ``seconds``."""

    async def body(run: aiotasks.Run) -> None:
        latency = time.time() - _slot_instant(run.date)
        await run.redis.rpush(f"fired:{name}", f"{run.date}:{os.getpid()}:{latency}")

    task = aiotasks.Task(body, name=name, recurring=True, success_ttl=600)
    client = Redis.from_url(url)
    try:
        async with aiotasks.Scheduler(aiotasks.Schedule(task, every="1s"), redis=client):
            await asyncio.sleep(seconds)
    finally:
        await client.aclose()


def _replica_main(url: str, name: str, seconds: float) -> None:
    asyncio.run(_replica(url, name, seconds))


async def _floor(seconds: float) -> list[float]:
    """The baseline: sleep to each whole second on the wall clock, then 'start the body'."""
    latencies = []
    end = time.time() + seconds
    while (now := time.time()) < end:
        slot = math.floor(now) + 1
        while (left := slot - time.time()) > 0:  # noqa: ASYNC110 (a timer, not a flag)
            await asyncio.sleep(left)
        latencies.append(time.time() - slot)
    return latencies


def _latency_row(contender: str, latencies: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None
    return {
        "contender": contender,
        **extra,
        "slots": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
    }


def _processes() -> Any:
    """Child processes forked from a server that has imported this module once (no import per child)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def fire_latency(url: str, seconds: float, replica_counts: list[int]) -> list[dict[str, Any]]:
    context = _processes()
    rows = []
    for replicas in replica_counts:
        name = f"fire{replicas}"
        processes = [
            context.Process(target=_replica_main, args=(url, name, seconds)) for _ in range(replicas)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(seconds + 60)
            assert process.exitcode == 0, f"a replica exited {process.exitcode}"
        with redis.Redis.from_url(url, decode_responses=True) as client:
            entries = [str(entry).split(":") for entry in client.lrange(f"fired:{name}", 0, -1)]
        per_slot = Counter(slot for slot, _, _ in entries)
        rows.append(
            _latency_row(
                f"aiotasks, {replicas} replica{'s' if replicas > 1 else ''}",
                [float(latency) for _, _, latency in entries],
                processes=replicas,
                duplicates=sum(count - 1 for count in per_slot.values()),
                bodies_by_process=sorted(Counter(pid for _, pid, _ in entries).values(), reverse=True),
            )
        )
    floor = asyncio.run(_floor(seconds))
    rows.append(_latency_row("baseline: asyncio sleep to the second", floor, processes=1))
    return rows


# -- idle CPU --------------------------------------------------------------------------------------------


async def _idle(url: str, contender: str, seconds: float) -> dict[str, float]:
    client = Redis.from_url(url)
    server = Redis.from_url(url)  # asks INFO; its own commands are subtracted

    async def noop(run: aiotasks.Run) -> None:
        return None

    async def sleeper() -> None:
        while True:  # noqa: ASYNC110 (the baseline: a timer that fires once a minute)
            await asyncio.sleep(60)

    async def poller() -> None:
        while True:
            await client.get("poll")
            await asyncio.sleep(1)

    try:
        if contender in ("scheduler", "listener"):
            # Next slot: midnight on 1 January, at least a few hours away (no catch-up).
            schedule = aiotasks.Schedule(aiotasks.Task(noop, name="idle"), cron="0 0 1 1 *", catchup=0)
            listens = contender == "listener"
            async with aiotasks.Scheduler(schedule, redis=client, triggers=listens) as scheduler:
                await asyncio.sleep(0.2)  # started and asleep until its slot
                assert scheduler.state == "running"
                return await _measure_idle(server, seconds)
        loop = asyncio.create_task(sleeper() if contender == "sleep" else poller())
        await asyncio.sleep(0.2)
        try:
            return await _measure_idle(server, seconds)
        finally:
            loop.cancel()
    finally:
        await client.aclose()
        await server.aclose()


async def _measure_idle(server: Redis, seconds: float) -> dict[str, float]:
    """CPU time and commands Redis processed over ``seconds`` of this process idling."""
    before = int((await server.info("stats"))["total_commands_processed"])
    cpu = time.process_time()
    wall = time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = int((await server.info("stats"))["total_commands_processed"])
    # The first INFO is counted in `after` (a command is counted once it has run), the second not.
    return {"cpu_s": cpu, "wall_s": wall, "commands": after - before - 1}


def _idle_main(url: str, contender: str, seconds: float, queue: Any) -> None:
    queue.put(asyncio.run(_idle(url, contender, seconds)))


def idle_cpu(url: str, seconds: float) -> list[dict[str, Any]]:
    context = _processes()
    rows = []
    for contender, label in (
        ("scheduler", "aiotasks Scheduler, next slot far away, triggers=False"),
        ("listener", "the same, trigger listener on (default)"),
        ("sleep", "baseline: asyncio.sleep loop"),
        ("poll", "a loop polling Redis every second"),
    ):
        queue = context.Queue()
        process = context.Process(target=_idle_main, args=(url, contender, seconds, queue))
        process.start()
        result = queue.get(timeout=seconds + 60)
        process.join(30)
        assert process.exitcode == 0, f"the idle child exited {process.exitcode}"
        rows.append(
            {
                "contender": label,
                "idle_s": round(result["wall_s"], 2),
                "cpu_ms": round(result["cpu_s"] * 1000, 2),
                "cpu_pct": round(result["cpu_s"] / result["wall_s"] * 100, 4),
                "redis_cmds": result["commands"],
            }
        )
    return rows


# -- backfill makespan -----------------------------------------------------------------------------------


def backfill_chain(sleep: float) -> Chain:
    """10 tasks in levels 1-4-1-3-1; every task of a level needs every task of the one before."""
    tasks = []
    previous: tuple[str, ...] = ()
    for level, width in enumerate(LEVELS):
        names = tuple(f"l{level}t{index}" for index in range(width))

        async def body(run: aiotasks.Run) -> None:
            await asyncio.sleep(sleep)

        tasks += [aiotasks.Task(body, name=name, depends_on=previous) for name in names]
        previous = names
    return Chain(tasks)


async def _backfill(url: str, chain: Chain, dates: list[str], window: int | None) -> tuple[float, float]:
    """Makespan and CPU time of the dates; ``window=None`` is the baseline, a loop of run_chain calls.

    The client is the one ``run --window`` builds (``Settings.create_client``: a pool that waits
    for a free connection), not a default ``Redis.from_url``, whose pool of 100 lets at most 98
    bodies run at once (the decorator keeps bodies within what a failing pool serves): window 32
    of this chain would run up to 128.
    """
    client = aiotasks.Settings.from_url(url).create_client()
    try:
        await client.ping()  # connected before the clock starts
        cpu = time.process_time()
        started = time.perf_counter()
        if window is None:
            for date in dates:
                results = await aiotasks.run_chain(chain, date, redis=client)
                assert all(r["status"] == "success" for r in results.values())
        else:
            outcomes = await run_window((prepare_run(chain, date, redis=client) for date in dates), window)
            assert all(r["status"] == "success" for results in outcomes for r in results.values())
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await client.aclose()


def backfill(url: str, days: int, windows: list[int], sleep: float) -> tuple[list[dict[str, Any]], float]:
    """Rows per contender, and the makespan of one date alone."""
    chain = backfill_chain(sleep)
    path = len(LEVELS) * sleep
    first = dt.date(2025, 1, 1)
    dates = list(
        date_range(first.strftime("%Y%m%d"), (first + dt.timedelta(days=days - 1)).strftime("%Y%m%d"))
    )
    rows = []
    baseline = None
    with redis.Redis.from_url(url) as client:
        # One date alone, the best of 5: the critical path plus what each level really costs
        # (the finish and the dependents' acquire round trips, the event loop's timer granularity).
        one_date = min(asyncio.run(_backfill(url, chain, [f"2024010{day}"], 1))[0] for day in range(1, 6))
        for window in [None, *windows]:
            client.flushall()  # our own server: each contender starts with no markers
            makespan, cpu = asyncio.run(_backfill(url, chain, dates, window))
            batches = math.ceil(days / (window or 1))
            baseline = baseline or makespan
            rows.append(
                {
                    "contender": "baseline: date by date" if window is None else f"window {window}",
                    "dates": days,
                    "tasks": len(chain.nodes) * days,
                    "makespan_s": round(makespan, 2),
                    "target_s": round(1.1 * batches * path, 2),
                    "x_ideal": round(makespan / (batches * path), 3),
                    "x_one_date": round(makespan / (batches * one_date), 3),
                    "x_baseline": round(makespan / baseline, 3),
                    "cpu_s": round(cpu, 2),
                }
            )
    return rows, one_date


# -- the command -----------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]]) -> str:
    headers = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[str("" if row.get(h) is None else row.get(h, "")) for h in headers] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="how long the replicas fire (fire latency)")
    parser.add_argument("--replicas", default="3,1", help="scheduler processes per fire-latency run")
    parser.add_argument("--idle-seconds", type=float, default=3, help="idle stretch measured (idle CPU)")
    parser.add_argument("--days", type=int, default=365, help="dates in the backfill")
    parser.add_argument("--windows", default="1,8,32", help="backfill windows, comma-separated")
    parser.add_argument("--sleep-ms", type=float, default=50, help="each backfill task's sleep (ms)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark; the result as one JSON-able document."""
    if args.smoke:
        args.seconds, args.replicas, args.idle_seconds = 1.05, "3", 0.1
        args.days, args.windows, args.sleep_ms = 12, "1,4", 2
    windows = [int(w) for w in args.windows.split(",")]
    replicas = [int(r) for r in args.replicas.split(",")]
    sleep = args.sleep_ms / 1000
    with RedisServer() as server:
        result: dict[str, Any] = {
            "fire_latency": fire_latency(server.url, args.seconds, replicas),
            "idle": idle_cpu(server.url, args.idle_seconds),
        }
        result["backfill"], one_date = backfill(server.url, args.days, windows, sleep)
    ours = [row for row in result["fire_latency"] if row["contender"].startswith("aiotasks")]
    result["targets"] = {
        "duplicates (0)": sum(row["duplicates"] for row in ours),
        "idle_redis_cmds_of_the_scheduler (0)": result["idle"][0]["redis_cmds"],
        "backfill_within_target": {
            row["contender"]: row["makespan_s"] <= row["target_s"]
            for row in result["backfill"]
            if row["contender"].startswith("window")
        },
    }
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    result["critical_path_s"] = round(len(LEVELS) * sleep, 4)
    result["one_date_s"] = round(one_date, 4)
    return result


def render(result: dict[str, Any]) -> str:
    p = result["parameters"]
    return "\n".join(
        [
            f"Fire latency, slot to body start (every 1 s for {p['seconds']:g} s; replicas are processes)",
            table(result["fire_latency"]),
            f"\nIdle CPU between slots ({p['idle_seconds']:g} s idle, in a child process)",
            table(result["idle"]),
            f"\nBackfill makespan ({p['days']} dates x 10 tasks of {p['sleep_ms']:g} ms, critical path "
            f"{result['critical_path_s'] * 1000:g} ms, one date alone {result['one_date_s'] * 1000:.1f} ms)",
            "target: 1.1 x ceil(dates/N) x critical path; x_ideal: makespan / (ceil(dates/N) x critical "
            "path); x_one_date: makespan / (ceil(dates/N) x one date alone)",
            table(result["backfill"]),
            "\nTargets: " + json.dumps(result["targets"], indent=2),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
