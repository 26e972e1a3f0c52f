"""Chain overhead and makespan: aiotasks' runner against a level-by-level baseline, in one run.

Overhead
    Chains of no-op tasks (plain ``async def`` functions, so only scheduling is
    measured) of 100, 1,000 and 10,000 tasks, shaped wide (no dependencies),
    deep (a line) and random (each task depends on up to three earlier ones).
    Reported: microseconds per task (wall time / tasks) and peak traced memory
    (tracemalloc) per task, for ``run_chain`` on the in-process store and for a
    minimal ``graphlib`` + ``asyncio.gather`` runner that runs one level at a time.
    A row with decorated tasks (a real acquire and finish per task on the
    in-process store) shows the full per-task cost as well.

Makespan
    Random DAGs of sleeping tasks: makespan divided by the critical path (the
    longest chain of sleeps), for ``run_chain`` (eager: a task starts when its
    own dependencies are done) and for the level-by-level baseline.

Run: ``python -m benchmarks.chain_overhead [--sizes 100,1000,10000] [--json] [--smoke]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import graphlib
import json
import random
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiotasks
from aiotasks._config import in_process_client

DATE = "20261125"
Func = Callable[[str | None], Awaitable[dict[str, Any]]]


def shape(kind: str, size: int, rng: random.Random) -> list[list[int]]:
    """Dependencies per task (by index) for a wide, deep or random DAG."""
    if kind == "wide":
        return [[] for _ in range(size)]
    if kind == "deep":
        return [[index - 1] if index else [] for index in range(size)]
    return [rng.sample(range(index), min(index, rng.randint(0, 3))) for index in range(size)]


async def noop(date_string: str | None = None) -> dict[str, Any]:
    return {"status": "success"}


def chain_of(deps: list[list[int]], funcs: list[Any]) -> list[dict[str, Any]]:
    return [
        {"id": f"t{index}", "func": funcs[index], "depends_on": [f"t{d}" for d in dep]}
        for index, dep in enumerate(deps)
    ]


async def level_by_level(chain: list[dict[str, Any]], date: str) -> dict[str, dict[str, Any]]:
    """The obvious baseline: topological levels, each level gathered, then the next."""
    sorter = graphlib.TopologicalSorter({entry["id"]: entry["depends_on"] for entry in chain})
    funcs = {entry["id"]: entry["func"] for entry in chain}
    results: dict[str, dict[str, Any]] = {}
    sorter.prepare()
    while sorter.is_active():
        ready = sorter.get_ready()
        outcomes = await asyncio.gather(*(funcs[name](date) for name in ready))
        for name, outcome in zip(ready, outcomes, strict=True):
            results[name] = outcome
            sorter.done(name)
    return results


async def run_aiotasks(chain: list[dict[str, Any]], date: str) -> dict[str, dict[str, Any]]:
    client = in_process_client()
    try:
        return await aiotasks.run_chain(chain, date, redis=client)
    finally:
        await client.aclose()


Runner = Callable[[list[dict[str, Any]], str], Coroutine[Any, Any, dict[str, dict[str, Any]]]]


def measure(runner: Runner, chain: list[dict[str, Any]]) -> dict[str, float]:
    """Wall time and peak traced memory of one run (memory in a second, traced run)."""
    gc.collect()
    started = time.perf_counter()
    results = asyncio.run(runner(chain, DATE))
    elapsed = time.perf_counter() - started
    assert all(r["status"] == "success" for r in results.values()), "a no-op task did not succeed"
    gc.collect()
    tracemalloc.start()
    asyncio.run(runner(chain, DATE))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"us_per_task": elapsed / len(chain) * 1e6, "bytes_per_task": peak / len(chain)}


def overhead(sizes: list[int], repeat: int, seed: int) -> list[dict[str, Any]]:
    rows = []
    rng = random.Random(seed)
    for size in sizes:
        for kind in ("wide", "deep", "random"):
            deps = shape(kind, size, rng)
            chain = chain_of(deps, [noop] * size)
            best: dict[str, dict[str, float]] = {}
            for _ in range(repeat):
                for name, runner in (("aiotasks", run_aiotasks), ("baseline", level_by_level)):
                    got = measure(runner, chain)
                    if name not in best or got["us_per_task"] < best[name]["us_per_task"]:
                        best[name] = got
            rows.append(
                {
                    "tasks": size,
                    "shape": kind,
                    "aiotasks_us_per_task": round(best["aiotasks"]["us_per_task"], 1),
                    "baseline_us_per_task": round(best["baseline"]["us_per_task"], 1),
                    "aiotasks_bytes_per_task": round(best["aiotasks"]["bytes_per_task"]),
                    "baseline_bytes_per_task": round(best["baseline"]["bytes_per_task"]),
                }
            )
    return rows


def decorated_row(size: int) -> dict[str, Any]:
    """Full cost per task with locks: decorated no-op tasks, acquire + finish on the in-process store."""

    async def body(run: aiotasks.Run) -> None:
        return None

    tasks = [aiotasks.Task(body, name=f"d{index}") for index in range(size)]
    started = time.perf_counter()
    results = asyncio.run(run_aiotasks([{"id": t.name, "func": t} for t in tasks], DATE))
    elapsed = time.perf_counter() - started
    assert all(r["status"] == "success" for r in results.values())
    return {
        "tasks": size,
        "shape": "wide, decorated (locks)",
        "aiotasks_us_per_task": round(elapsed / size * 1e6, 1),
    }


def critical_path(deps: list[list[int]], durations: list[float]) -> float:
    finish: list[float] = []
    for index, dep in enumerate(deps):
        finish.append(durations[index] + max((finish[d] for d in dep), default=0.0))
    return max(finish)


def makespan(size: int, trials: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for trial in range(trials):
        deps = shape("random", size, rng)
        durations = [rng.uniform(0.01, 0.05) for _ in range(size)]

        def sleeper(seconds: float) -> Func:
            async def func(date_string: str | None = None) -> dict[str, Any]:
                await asyncio.sleep(seconds)
                return {"status": "success"}

            return func

        chain = chain_of(deps, [sleeper(d) for d in durations])
        path = critical_path(deps, durations)
        row: dict[str, Any] = {"trial": trial, "tasks": size, "critical_path_s": round(path, 3)}
        for name, runner in (("aiotasks", run_aiotasks), ("baseline", level_by_level)):
            started = time.perf_counter()
            asyncio.run(runner(chain, DATE))
            row[f"{name}_ratio"] = round((time.perf_counter() - started) / path, 3)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    headers = list(dict.fromkeys(key for row in rows for key in row))
    widths = {h: max(len(h), *(len(str(row.get(h, ""))) for row in rows)) for h in headers}
    lines = ["  ".join(h.rjust(widths[h]) for h in headers)]
    lines += ["  ".join(str(row.get(h, "")).rjust(widths[h]) for h in headers) for row in rows]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="chain sizes for the overhead sweep")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and shape (best is kept)")
    parser.add_argument("--makespan-tasks", type=int, default=100)
    parser.add_argument("--makespan-trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole benchmark; the result as one JSON-able document."""
    if args.smoke:
        args.sizes, args.repeat, args.makespan_tasks, args.makespan_trials = "20", 1, 10, 1
    sizes = [int(s) for s in args.sizes.split(",")]
    # Warm-up: imports, caches.
    measure(run_aiotasks, chain_of(shape("wide", 50, random.Random(0)), [noop] * 50))
    result: dict[str, Any] = {
        "overhead": overhead(sizes, args.repeat, args.seed),
        "decorated": [decorated_row(max(sizes))],
        "makespan": makespan(args.makespan_tasks, args.makespan_trials, args.seed),
    }
    largest = [r for r in result["overhead"] if r["tasks"] == max(sizes)]
    result["targets"] = {
        "overhead_us_per_task_at_largest (<= 100)": max(r["aiotasks_us_per_task"] for r in largest),
        "worst_makespan_ratio (<= 1.05)": max(r["aiotasks_ratio"] for r in result["makespan"]),
        "worst_baseline_makespan_ratio": max(r["baseline_ratio"] for r in result["makespan"]),
    }
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    return result


def render(result: dict[str, Any]) -> str:
    repeat = result["parameters"]["repeat"]
    return "\n".join(
        [
            f"Chain overhead (no-op tasks; best of {repeat} runs)",
            table(result["overhead"]),
            table(result["decorated"]),
            "\nMakespan / critical path (random DAGs of sleeping tasks)",
            table(result["makespan"]),
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
