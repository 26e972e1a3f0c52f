"""Controls: what the pause check costs a run, and how long pause, resume and trigger take to reach
the serving fleet, with several replicas.

The pause check's cost
    A decorated task with a no-op body run over and over on one redis-server
    (new dates each run; records on, as by default), by 1 and by 32
    coroutines, with the task's paused key passed to the acquire script (one
    more key; the script's ``EXISTS`` of it) and without it (the script then
    skips the check: what a run cost before pausing existed). Both variants
    in the same process, in ``--repeat`` pairs of passes of ``--runs`` runs
    over the same keys (flushed before each pass), the order alternating
    pair by pair; reported: the median of the pairs' ratios (with / without)
    by the wall clock and per CPU second (this process and redis-server, so
    other load on the machine counts less), the ratios' interquartile range
    (the noise), and the µs per run Redis spent in the scripts.

Pause and resume latency
    ``--replicas`` processes. Schedules: each serves a 1-second schedule
    (a ``Scheduler``); per cycle this process calls ``pause_schedule`` and
    waits for the first slot recorded ``paused``, then ``resume_schedule``
    and waits for the next body start. Reported: from the call to the fleet
    acting (by design within one slot: the check rides on the slot's own
    request) and from the slot's fire time to it (the lag beyond the slot).
    Each call comes at a random point of the slot. Tasks: each replica runs
    one task in a loop (an attempt every 10 ms, its own key); per cycle
    ``pause_task`` then ``resume_task``, measured to the moment every
    replica's attempts were skipped ``paused`` (resp. ran again): the next
    attempt anywhere sees it, so this is the attempts' period plus a round trip.

Trigger latency
    ``--replicas`` scheduler processes (spawned, each with its own client)
    serve one daily schedule whose chain is one task; the task records the
    wall time its body starts. This process then triggers ``--triggers`` keys
    one after another (a new date each, so every trigger runs the body) and
    measures, per trigger, the time from the call to the ``taken`` reply
    (``taken``: the push, one replica's pop, its answer and this process's
    read of it) and from the call to the body's start (``body``: that, plus
    the chain's setup and the acquire). Also reported: how the triggers
    spread over the replicas and bodies that ran twice for one key (must be
    0). Baseline, same run: one ``LPUSH`` answered through a ``BRPOP`` and an
    ``RPUSH``/``BLPOP`` by a bare redis-py loop in another process (the round
    trips alone, no aiotasks).

Run: ``python -m benchmarks.controls [--replicas 3] [--triggers 200] [--runs 500] [--repeat 40]
[--cycles 30] [--json] [--smoke]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import multiprocessing
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
from redis.asyncio import Redis
from tests.servers import RedisServer

import aiotasks
from aiotasks import _store
from aiotasks._keys import date_range
from aiotasks._records import acquire_args

NAME = "bench"
STOP = "bench:stop"
#: The looping replicas' events: ``pid:state:time`` on every change of what their attempts met.
EVENTS = "bench:events"
T = TypeVar("T")


async def _replica(url: str) -> None:
    """A Scheduler serving NAME (next slot far away) until the STOP key appears."""

    async def body(run: aiotasks.Run) -> None:
        await run.redis.rpush("bodies", f"{run.date}:{os.getpid()}:{time.time()}")

    task = aiotasks.Task(body, name="bench_body")
    client = Redis.from_url(url)
    try:
        schedule = aiotasks.Schedule(task, cron="0 0 1 1 *", name=NAME, catchup=0)
        async with aiotasks.Scheduler(schedule, redis=client):
            while not await client.exists(STOP):  # noqa: ASYNC110 (the stop comes from another process)
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def _replica_main(url: str) -> None:
    asyncio.run(_replica(url))


async def _echo(url: str) -> None:
    """The baseline's other side: pop a request, answer it, until the STOP key appears."""
    client = Redis.from_url(url)
    try:
        while not await client.exists(STOP):
            popped = await client.brpop(["echo:requests"], 0.2)
            if popped is not None:
                await client.rpush(f"echo:reply:{popped[1].decode()}", "taken")  # type: ignore[union-attr]
    finally:
        await client.aclose()


def _echo_main(url: str) -> None:
    asyncio.run(_echo(url))


def _row(contender: str, latencies: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "contender": contender,
        **extra,
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def _listening(client: Redis, count: int) -> None:
    while int((await client.info("clients"))["blocked_clients"]) < count:  # noqa: ASYNC110 (Redis's state)
        await asyncio.sleep(0.05)


async def _trigger_all(url: str, replicas: int, triggers: int) -> tuple[list[float], dict[str, float]]:
    client = Redis.from_url(url)
    try:
        await _listening(client, replicas)
        taken: list[float] = []
        called: dict[str, float] = {}
        first = dt.date(2025, 1, 1)
        for i in range(triggers):
            key = (first + dt.timedelta(days=i)).strftime("%Y%m%d")
            called[key] = time.time()
            started = time.perf_counter()
            await aiotasks.trigger(NAME, key=key, redis=client)
            taken.append(time.perf_counter() - started)
        return taken, called
    finally:
        await client.aclose()


async def _baseline(url: str, count: int) -> list[float]:
    client = Redis.from_url(url)
    try:
        await _listening(client, 1)
        latencies = []
        for i in range(count):
            started = time.perf_counter()
            await client.lpush("echo:requests", str(i))
            await client.blpop([f"echo:reply:{i}"], 10)
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        await client.aclose()


def trigger_latency(url: str, replicas: int, triggers: int) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    processes = [context.Process(target=_replica_main, args=(url,)) for _ in range(replicas)]
    for process in processes:
        process.start()
    try:
        taken, called = asyncio.run(_trigger_all(url, replicas, triggers))
        with redis.Redis.from_url(url, decode_responses=True) as client:
            deadline = time.monotonic() + 60
            while client.llen("bodies") < triggers and time.monotonic() < deadline:
                time.sleep(0.05)
            bodies = [str(entry).split(":") for entry in client.lrange("bodies", 0, -1)]
    finally:
        with redis.Redis.from_url(url) as client:
            client.set(STOP, 1)
        for process in processes:
            process.join(30)
    per_key = Counter(key for key, _, _ in bodies)
    by_process = sorted(Counter(pid for _, pid, _ in bodies).values(), reverse=True)
    rows = [
        _row(f"aiotasks trigger -> taken, {replicas} replicas", taken),
        _row(
            f"aiotasks trigger -> body start, {replicas} replicas",
            [float(at) - called[key] for key, _, at in bodies],
            duplicates=sum(count - 1 for count in per_key.values()),
            bodies_by_process=by_process,
        ),
    ]
    with redis.Redis.from_url(url) as client:
        client.delete(STOP)
    echo = context.Process(target=_echo_main, args=(url,))
    echo.start()
    try:
        rows.append(
            _row("baseline: LPUSH, BRPOP + RPUSH, BLPOP (redis-py)", asyncio.run(_baseline(url, triggers)))
        )
    finally:
        with redis.Redis.from_url(url) as client:
            client.set(STOP, 1)
        echo.join(30)
    return rows


# -- the pause check's cost -----------------------------------------------------------------------


def _without_pause_key(*args: Any) -> tuple[Any, ...]:
    """The ACQUIRE script's arguments without the task's paused key (an odd count of keys says it
    is there): the script then skips the check."""
    packed = acquire_args(*args)
    keys = packed[0]
    if keys % 2 == 0:
        return packed
    return (keys - 1, *packed[1:keys], *packed[keys + 1 :])


def _with_pause_key(*args: Any) -> tuple[Any, ...]:
    """The arguments as they are (through the same one extra call as ``_without_pause_key``)."""
    return acquire_args(*args)


async def _noop(run: aiotasks.Run) -> None:
    pass


async def _server_cpu(client: Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _pass(client: Redis, dates: list[str], workers: int) -> tuple[float, float, float]:
    """Runs per second of the no-op task over ``dates``, ``workers`` coroutines at a time, by the
    wall clock and by the CPU time this process and redis-server spent on them; and the µs per run
    Redis spent in the scripts (``INFO commandstats``: the acquire and the finish)."""
    await client.flushall()
    await client.config_resetstat()
    task = aiotasks.Task(_noop, name="bench_run")
    queue = iter(dates)

    async def worker() -> None:
        for date in queue:
            result = await task(date, redis=client)
            assert result["status"] == "success", result

    server = await _server_cpu(client)
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    server = await _server_cpu(client) - server
    scripts = (await client.info("commandstats"))["cmdstat_evalsha"]["usec"]
    return len(dates) / wall, len(dates) / (cpu + server), scripts / len(dates)


async def _check_cost(url: str, runs: int, workers: int, repeat: int) -> dict[str, Any]:
    """``repeat`` pairs of passes, one with the check and one without, in alternating order; each pair's
    ratio (with / without), and their median: the drift and the bursts of a shared machine hit both
    passes of a pair alike, or one pair among many."""
    client = Redis.from_url(url)
    dates = list(date_range("19000101", "29991231")[:runs])
    rates: dict[str, list[tuple[float, float, float]]] = {"with": [], "without": []}
    door = vars(_store)  # the door packs the acquire's arguments with this module's acquire_args
    try:
        await _pass(client, dates[: min(runs, 200)], workers)  # warm up: scripts loaded, connections made
        for pair in range(repeat):
            for label in ("with", "without") if pair % 2 == 0 else ("without", "with"):
                door["acquire_args"] = _with_pause_key if label == "with" else _without_pause_key
                try:
                    rates[label].append(await _pass(client, dates, workers))
                finally:
                    door["acquire_args"] = acquire_args
    finally:
        await client.aclose()

    def ratios(index: int) -> list[float]:
        return sorted(a[index] / b[index] for a, b in zip(rates["with"], rates["without"], strict=True))

    def median(label: str, index: int) -> float:
        return statistics.median(rate[index] for rate in rates[label])

    wall, cpu = ratios(0), ratios(1)
    return {
        "workers": workers,
        "runs": runs,
        "pairs": repeat,
        "with_runs_s": round(median("with", 0)),
        "without_runs_s": round(median("without", 0)),
        "wall_ratio": round(statistics.median(wall), 3),
        "with_runs_cpu_s": round(median("with", 1)),
        "without_runs_cpu_s": round(median("without", 1)),
        "cpu_ratio": round(statistics.median(cpu), 3),
        "cpu_ratio_iqr": f"{cpu[len(cpu) // 4]:.3f}-{cpu[(3 * len(cpu)) // 4]:.3f}",
        "with_script_us": round(median("with", 2), 2),
        "without_script_us": round(median("without", 2), 2),
        "target": ">= 0.98",
    }


# -- pause and resume latency ---------------------------------------------------------------------


async def _ticker(url: str) -> None:
    """A Scheduler serving a 1-second schedule until the STOP key appears."""

    async def tick(run: aiotasks.Run) -> None:
        await run.redis.rpush("ticks", f"{run.date}:{os.getpid()}:{time.time()}")

    task = aiotasks.Task(tick, name="bench_tick", recurring=True, success_ttl=600)
    client = Redis.from_url(url)
    try:
        schedule = aiotasks.Schedule(task, every="1s", name="bench_tick", catchup=0)
        async with aiotasks.Scheduler(schedule, redis=client, triggers=False):
            while not await client.exists(STOP):  # noqa: ASYNC110 (the stop comes from another process)
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def _ticker_main(url: str) -> None:
    asyncio.run(_ticker(url))


async def _looper(url: str, index: int) -> None:
    """Runs one task every 10 ms on its own key; notes each change of outcome (ran / paused)."""
    task = aiotasks.Task(_noop, name="bench_looped", recurring=True)
    client = Redis.from_url(url)
    date = f"2030010{index + 1}"
    state = ""
    try:
        while not await client.exists(STOP):
            result = await task(date, redis=client)
            now = "paused" if result.get("reason") == "paused" else "ran"
            if now != state:
                state = now
                await client.rpush(EVENTS, f"{os.getpid()}:{now}:{time.time()}")
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


def _looper_main(url: str, index: int) -> None:
    asyncio.run(_looper(url, index))


def _slot_time(key: str) -> float:
    """A UTC slot key's fire time, seconds since the epoch."""
    return dt.datetime.strptime(key, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC).timestamp()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _first_paused_slot(client: Redis, since: float) -> tuple[str, float] | None:
    """The earliest slot recorded paused after ``since`` (its key, when it was recorded), if any."""
    members = await client.zrangebyscore("runs:bench_tick", since * 1000, "+inf", withscores=True)
    pairs = [(_text(item[0]), float(item[1])) for item in members]
    paused = [
        (member.rsplit(":", 1)[0], score / 1000) for member, score in pairs if member.endswith(":paused")
    ]
    return min(paused) if paused else None


async def _first_tick(client: Redis, since: float) -> tuple[str, float] | None:
    """The earliest body start after ``since`` among the latest few (its slot key, when)."""
    entries = [_text(entry).split(":") for entry in await client.lrange("ticks", -5, -1)]
    later = [(key, float(at)) for key, _, at in entries if float(at) > since]
    return min(later) if later else None


async def _every_replica(client: Redis, replicas: int, state: str, since: float) -> float | None:
    """When the last replica's attempts switched to ``state`` after ``since`` (None until all did)."""
    latest: dict[str, tuple[str, float]] = {}
    for entry in await client.lrange(EVENTS, 0, -1):
        pid, now, at = _text(entry).split(":")
        latest[pid] = (now, float(at))
    if len(latest) < replicas or any(now != state or at < since for now, at in latest.values()):
        return None
    return max(at for _, at in latest.values())


async def _until(check: Callable[[], Awaitable[T | None]], what: str, within: float = 30.0) -> T:
    deadline = time.monotonic() + within
    while (found := await check()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)
    return found


async def _schedule_cycles(url: str, cycles: int) -> dict[str, list[float]]:
    client = Redis.from_url(url)
    found: dict[str, list[float]] = {name: [] for name in ("pause", "pause_lag", "resume", "resume_lag")}
    try:
        await _until(lambda: _first_tick(client, 0), "the replicas fire")
        for _ in range(cycles):
            # At a random point of the slot (the fleet acts at the next slot boundary).
            await asyncio.sleep(random.random())
            paused_at = time.time()
            await aiotasks.pause_schedule("bench_tick", redis=client)
            key, at = await _until(
                functools.partial(_first_paused_slot, client, paused_at), "a slot recorded paused"
            )
            found["pause"].append(at - paused_at)
            found["pause_lag"].append(at - _slot_time(key))
            await asyncio.sleep(random.random())
            resumed_at = time.time()
            await aiotasks.resume_schedule("bench_tick", redis=client)
            key, at = await _until(functools.partial(_first_tick, client, resumed_at), "a slot ran again")
            found["resume"].append(at - resumed_at)
            found["resume_lag"].append(at - _slot_time(key))
        ticks = [_text(entry).split(":")[0] for entry in await client.lrange("ticks", 0, -1)]
        found["duplicates"] = [float(len(ticks) - len(set(ticks)))]
    finally:
        await client.aclose()
    return found


async def _task_cycles(url: str, replicas: int, cycles: int) -> dict[str, list[float]]:
    client = Redis.from_url(url)
    found: dict[str, list[float]] = {"pause": [], "resume": []}
    try:
        await _until(lambda: _every_replica(client, replicas, "ran", 0), "every replica runs")
        for _ in range(cycles):
            paused_at = time.time()
            await aiotasks.pause_task("bench_looped", redis=client)
            at = await _until(
                functools.partial(_every_replica, client, replicas, "paused", paused_at), "all paused"
            )
            found["pause"].append(at - paused_at)
            resumed_at = time.time()
            await aiotasks.resume_task("bench_looped", redis=client)
            at = await _until(
                functools.partial(_every_replica, client, replicas, "ran", resumed_at), "all run"
            )
            found["resume"].append(at - resumed_at)
    finally:
        await client.aclose()
    return found


def _spawn(target: Callable[..., None], *args: Any) -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    process = context.Process(target=target, args=args)
    process.start()
    return process


#: What each latency row measures, by (kind, sample name).
_MEASURES = {
    ("schedule", "pause"): "pause_schedule -> first slot recorded paused",
    ("schedule", "pause_lag"): "pause_schedule: slot's fire time -> recorded paused",
    ("schedule", "resume"): "resume_schedule -> next body start",
    ("schedule", "resume_lag"): "resume_schedule: slot's fire time -> body start",
    ("task", "pause"): "pause_task -> every replica's attempts skipped",
    ("task", "resume"): "resume_task -> every replica's attempts run",
}


def pause_latency(url: str, replicas: int, cycles: int) -> list[dict[str, Any]]:
    rows = []
    for kind in ("schedule", "task"):
        with redis.Redis.from_url(url) as client:
            client.flushall()
        if kind == "schedule":
            processes = [_spawn(_ticker_main, url) for _ in range(replicas)]
        else:
            processes = [_spawn(_looper_main, url, index) for index in range(replicas)]
        try:
            if kind == "schedule":
                found = asyncio.run(_schedule_cycles(url, cycles))
            else:
                found = asyncio.run(_task_cycles(url, replicas, cycles))
        finally:
            with redis.Redis.from_url(url) as client:
                client.set(STOP, 1)
            for process in processes:
                process.join(30)
        duplicates = found.pop("duplicates", [0.0])[0]
        for name, latencies in found.items():
            extra = {"duplicates": int(duplicates)} if (kind, name) == ("schedule", "resume") else {}
            rows.append(_row(f"{_MEASURES[kind, name]}, {replicas} replicas", latencies, **extra))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    headers = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[str("" if row.get(h) is None else row.get(h, "")) for h in headers] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3, help="scheduler processes serving the schedule")
    parser.add_argument("--triggers", type=int, default=200, help="triggers sent, one after another")
    parser.add_argument("--runs", type=int, default=500, help="runs per pass of the pause check's cost")
    parser.add_argument("--repeat", type=int, default=40, help="pairs of passes of the pause check's cost")
    parser.add_argument("--cycles", type=int, default=30, help="pause/resume cycles per latency row")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; the result as one JSON-able document."""
    if args.smoke:
        args.triggers, args.runs, args.repeat, args.cycles = 5, 50, 1, 2
    with RedisServer() as server:
        rows = trigger_latency(server.url, args.replicas, args.triggers)
        cost = [asyncio.run(_check_cost(server.url, args.runs, w, args.repeat)) for w in (1, 32)]
        pauses = pause_latency(server.url, args.replicas, args.cycles)
    return {
        "trigger_latency": rows,
        "pause_check": cost,
        "pause_latency": pauses,
        "targets": {
            "duplicates (0)": rows[1]["duplicates"],
            "pause check ratio, CPU per run (>= 0.98)": min(row["cpu_ratio"] for row in cost),
            "slots run twice around pauses (0)": sum(row.get("duplicates", 0) for row in pauses),
        },
        "parameters": {k: v for k, v in vars(args).items() if k != "json"},
    }


def render(result: dict[str, Any]) -> str:
    p = result["parameters"]
    return "\n".join(
        [
            f"Trigger latency ({p['triggers']} triggers, one after another; replicas are processes)",
            table(result["trigger_latency"]),
            "",
            f"The pause check's cost: runs/s of a no-op task with the check and without it, by the wall "
            f"clock and per CPU second (this process + redis-server); same process, alternating passes, "
            f"median over {p['repeat']} pairs of passes",
            table(result["pause_check"]),
            "",
            f"Pause and resume latency ({p['cycles']} cycles each; a 1 s schedule, or a task "
            "attempted every 10 ms by each replica)",
            table(result["pause_latency"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
