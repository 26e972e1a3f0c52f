"""Controls: how long ``aiotasks trigger`` takes to reach the serving fleet, with several replicas.

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

Cancel latency
    The same number of replicas serve a schedule whose task's body waits on
    an event it never gets, with a small ``lock_timeout`` (renewal interval =
    a third of it, swept by ``--lock-timeouts``). Per key this process
    triggers it, waits (a blocking read) until the body runs on some replica,
    waits a random part of the renewal interval (a request comes at any
    point of the holder's cycle), calls :func:`aiotasks.cancel` and reads
    the wall time the body saw its
    cancellation (same host, same clock). The request rides on the holder's
    next renewal, so the expected delay is uniform over one renewal interval
    plus a round trip: p50 about half the interval, p99 about the interval.
    Target: p99 <= the interval + 50 ms. Bodies that did not stop: must be 0.
    ``ended_before``: runs that had already lost their lock when cancelled
    (a replica starved for longer than the lock's TTL: a loaded machine).

Run: ``python -m benchmarks.controls [--replicas 3] [--triggers 200] [--cancels 50] [--json] [--smoke]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import random
import statistics
import time
from collections import Counter
from typing import Any

import redis
from redis.asyncio import Redis
from tests.servers import RedisServer

import aiotasks

NAME = "bench"
STOP = "bench:stop"


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


CANCEL_NAME = "bench_cancel"


async def _sleeping_replica(url: str, lock_timeout: float) -> None:
    """A Scheduler serving CANCEL_NAME, whose body sleeps until cancelled, until the STOP key appears."""

    async def body(run: aiotasks.Run) -> None:
        await run.redis.rpush(f"bench:started:{run.date}", os.getpid())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await run.redis.rpush(f"bench:stopped:{run.date}", time.time())
            raise

    task = aiotasks.Task(body, name="bench_sleeper", lock_timeout=lock_timeout)
    client = Redis.from_url(url)
    try:
        schedule = aiotasks.Schedule(task, cron="0 0 1 1 *", name=CANCEL_NAME, catchup=0)
        async with aiotasks.Scheduler(schedule, redis=client):
            while not await client.exists(STOP):  # noqa: ASYNC110 (the stop comes from another process)
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


def _sleeping_replica_main(url: str, lock_timeout: float) -> None:
    asyncio.run(_sleeping_replica(url, lock_timeout))


async def _cancel_all(
    url: str, replicas: int, cancels: int, interval: float
) -> tuple[list[float], list[str], int, int]:
    """Trigger, wait for the body, cancel, read when it stopped: per key; (delays, pids, not stopped)."""
    client = Redis.from_url(url)
    try:
        await _listening(client, replicas)
        delays: list[float] = []
        pids: list[str] = []
        missing = ended = 0
        pause = random.Random(20)
        first = dt.date(2025, 1, 1)
        for i in range(cancels):
            key = (first + dt.timedelta(days=i)).strftime("%Y%m%d")
            await aiotasks.trigger(CANCEL_NAME, key=key, redis=client)
            started = await client.blpop([f"bench:started:{key}"], 30)
            assert started is not None, f"no replica ran {key}"
            pid = started[1]
            pids.append(pid.decode() if isinstance(pid, bytes) else str(pid))
            # At a random point of the renewal cycle, as an operator's request comes: the body
            # started right after its acquire, which is where the lease's cycle starts.
            await asyncio.sleep(pause.uniform(0, interval))
            asked = time.time()
            if not await aiotasks.cancel("bench_sleeper", key, redis=client):
                ended += 1  # the run had ended already: it lost its lock (a replica starved past its TTL)
                continue
            stopped = await client.blpop([f"bench:stopped:{key}"], 30)
            if stopped is None:
                missing += 1
                continue
            delays.append(float(stopped[1]) - asked)
        return delays, pids, missing, ended
    finally:
        await client.aclose()


def cancel_latency(url: str, replicas: int, cancels: int, lock_timeouts: list[float]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    rows = []
    for lock_timeout in lock_timeouts:
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        processes = [
            context.Process(target=_sleeping_replica_main, args=(url, lock_timeout)) for _ in range(replicas)
        ]
        for process in processes:
            process.start()
        try:
            delays, pids, missing, ended = asyncio.run(_cancel_all(url, replicas, cancels, lock_timeout / 3))
        finally:
            with redis.Redis.from_url(url) as client:
                client.set(STOP, 1)
            for process in processes:
                process.join(30)
        interval_ms = round(lock_timeout / 3 * 1000, 1)
        row = _row(
            f"aiotasks cancel -> body cancelled, {replicas} replicas",
            delays,
            renewal_ms=interval_ms,
            not_stopped=missing,
            ended_before=ended,
            bodies_by_process=sorted(Counter(pids).values(), reverse=True),
        )
        row["target_p99_ms"] = round(interval_ms + 50, 1)
        rows.append(row)
    return rows


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
    parser.add_argument("--cancels", type=int, default=50, help="runs cancelled per lock_timeout")
    parser.add_argument(
        "--lock-timeouts",
        default="0.3,0.9",
        help="the sleeping task's lock_timeouts in seconds, comma-separated (renewal: a third of each)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; the result as one JSON-able document."""
    if args.smoke:
        args.triggers = 5
        args.cancels = 3
        args.lock_timeouts = "0.3"
    timeouts = [float(value) for value in str(args.lock_timeouts).split(",")]
    with RedisServer() as server:
        rows = trigger_latency(server.url, args.replicas, args.triggers)
        cancelled = cancel_latency(server.url, args.replicas, args.cancels, timeouts)
    return {
        "trigger_latency": rows,
        "cancel_latency": cancelled,
        "targets": {
            "duplicates (0)": rows[1]["duplicates"],
            "bodies not stopped (0)": sum(row["not_stopped"] for row in cancelled),
            "cancel p99 within one renewal interval + 50 ms": all(
                row["p99_ms"] <= row["target_p99_ms"] for row in cancelled
            ),
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
            f"Cancel latency ({p['cancels']} runs cancelled per lock_timeout, one after another: "
            "from cancel() to the body's CancelledError, wall clock of one host)",
            table(result.get("cancel_latency", [])),
            "",
            "Targets: " + ", ".join(f"{k}: {v}" for k, v in result["targets"].items()),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
