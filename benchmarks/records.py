"""Run records: what they cost in Redis memory, and how fast the date grid reads back.

Memory
    T tasks x D dates of real decorated runs (one per (task, date), retention
    long enough to keep them all), then ``MEMORY USAGE`` of one key of each
    kind and ``INFO memory``'s ``used_memory`` before and after: the bytes one
    run costs, all keys included, and the total for the size asked.

Grid
    ``status --from --to`` reads every (task, date) cell with one GRID script
    per task, all sent together. Times N reads of D dates x T tasks and counts
    round trips and commands on the wire.

Run: ``python -m benchmarks.records [--tasks 300] [--days 365] [--grid-tasks 50]
[--grid-days 90] [--json] [--smoke]``. It starts its own redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

from redis.asyncio import Redis
from tests.servers import RedisServer
from tests.support import Wire

import aiotasks
from aiotasks._records import read_grid
from aiotasks._store import store_for


def dates(count: int) -> list[str]:
    start = dt.date(2025, 1, 1)
    return [(start + dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(count)]


async def _noop(run: aiotasks.Run) -> None:
    run.result["rows"] = 1234  # a typical counter


async def fill(client: Redis, tasks: int, days: int, retention: str, prefix: str = "task") -> None:
    """One successful run per (task, date), ``tasks`` x ``days`` in all."""
    decorated = [aiotasks.Task(_noop, name=f"{prefix}_{i:03d}", retention=retention) for i in range(tasks)]
    for date in dates(days):
        await asyncio.gather(*(task(date, redis=client) for task in decorated))


async def memory(url: str, tasks: int, days: int) -> dict[str, Any]:
    client = Redis.from_url(url)
    try:
        await client.flushall()
        await fill(client, 1, 1, "1d", "warm")  # scripts loaded, connections open: not counted below
        before = int((await client.info("memory"))["used_memory"])
        started = time.perf_counter()
        await fill(client, tasks, days, f"{days + 30}d")
        filled = time.perf_counter() - started
        after = int((await client.info("memory"))["used_memory"])
        first, last = "task_000", dates(days)[0]
        sizes = {
            "runs hash run:T:D (one run)": await client.memory_usage(f"run:{first}:{last}"),
            "marker success:T:D": await client.memory_usage(f"success:{first}:{last}"),
            f"index runs:T ({days} entries)": await client.memory_usage(f"runs:{first}"),
        }
        runs = tasks * days
        markers = sizes["marker success:T:D"] or 0
        per_run = (after - before) / runs
        return {
            "tasks": tasks,
            "days": days,
            "runs": runs,
            "fill_s": round(filled, 1),
            "memory_usage_bytes": sizes,
            "used_memory_delta_bytes": after - before,
            "bytes_per_run_all_keys": round(per_run),
            "bytes_per_run_without_marker": round(per_run - markers),
            "total_mib": round((after - before) / 2**20, 1),
        }
    finally:
        await client.aclose()


async def grid(url: str, tasks: int, days: int, repeat: int) -> dict[str, Any]:
    wire = Wire()
    client = wire.client(url)
    try:
        await client.flushall()
        await fill(client, tasks, days, "30d")
        names = [f"task_{i:03d}" for i in range(tasks)]
        store = store_for(client)
        await read_grid(store, names[:1], dates(1), namespace=None)  # script loaded, connection open
        timings = []
        wire.reset()
        for _ in range(repeat):
            started = time.perf_counter()
            cells = await read_grid(store, names, dates(days), namespace=None)
            timings.append(time.perf_counter() - started)
        assert sum(len(by_date) for by_date in cells.values()) == tasks * days
        return {
            "tasks": tasks,
            "days": days,
            "cells": tasks * days,
            "reads": repeat,
            "p50_ms": round(statistics.median(timings) * 1000, 2),
            "best_ms": round(min(timings) * 1000, 2),
            "round_trips_per_read": round(wire.round_trips / repeat, 2),
            "commands_per_read": round(wire.commands / repeat, 2),
        }
    finally:
        await client.aclose()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks for the memory figure")
    parser.add_argument("--days", type=int, default=365, help="dates per task for the memory figure")
    parser.add_argument("--grid-tasks", type=int, default=50)
    parser.add_argument("--grid-days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=20, help="grid reads timed")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.tasks, args.days, args.grid_tasks, args.grid_days, args.repeat = 3, 4, 3, 5, 2
    with RedisServer() as server:
        result = {
            "memory": asyncio.run(memory(server.url, args.tasks, args.days)),
            "grid": asyncio.run(grid(server.url, args.grid_tasks, args.grid_days, args.repeat)),
        }
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    return result


def render(result: dict[str, Any]) -> str:
    mem, grid_read = result["memory"], result["grid"]
    sizes = "\n".join(f"  {name:<32} {size} B" for name, size in mem["memory_usage_bytes"].items())
    return (
        f"Memory: {mem['tasks']} tasks x {mem['days']} days = {mem['runs']} runs, one record each\n"
        f"MEMORY USAGE of one key of each kind:\n{sizes}\n"
        f"used_memory grew by {mem['used_memory_delta_bytes']} B = {mem['total_mib']} MiB: "
        f"{mem['bytes_per_run_all_keys']} B per run with its marker, "
        f"{mem['bytes_per_run_without_marker']} B without\n\n"
        f"Grid: {grid_read['tasks']} tasks x {grid_read['days']} dates = {grid_read['cells']} cells, "
        f"{grid_read['reads']} reads: p50 {grid_read['p50_ms']} ms, best {grid_read['best_ms']} ms, "
        f"{grid_read['round_trips_per_read']} round trips and "
        f"{grid_read['commands_per_read']} commands per read"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
