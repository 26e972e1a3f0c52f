"""Lock contention: aiotasks' run path against what users would otherwise write, in one run.

Every contender does the same job per *attempt*: run a no-op body for one
(task, date) unless it already ran or is running. Contenders:

``aiotasks``      the ``@aiotasks.task`` decorator (coalesced door), writing run records
``norecords``     the same decorator with ``retention=0``: no run records (issue 13's baseline)
``tuple``         ``task_boilerplate`` + ``finish_task``, the seed-compatible API
``uncoalesced``   aiotasks' two scripts, each awaited directly on the client (no door)
``seed``          a literal async port of the seed: EXISTS, SET NX EX, SET, DEL
``redis_lock``    redis-py's ``redis.asyncio.lock.Lock`` plus EXISTS/SET for the marker
``floor``         two awaited PINGs: the least any two-round-trip design can cost

Contention ``low``: every attempt is on its own key (all are runs). ``high``:
all W workers attempt every key together (one run, W-1 skips per key).

Reported per contender: attempts/s, runs/s, skips/s, p50/p99 latency of the
lock path (the body is a no-op), commands and round trips per run and per skip
*counted on the wire* (a Connection subclass; round trips per attempt fall
below 1 when commands share pipelines), duplicates (a body ran twice:
must be 0 for aiotasks), errors (e.g. "Too many connections" at W=1000 on a
default ``Redis.from_url`` pool), and the throughput ratio to ``seed`` and to
``floor`` measured in the same run. Each configuration runs ``--repeat`` times,
contenders interleaved, and the best attempt rate is kept.

Run: ``python -m benchmarks.lock_contention [--workers 1,8,32,128,1000] [--attempts 3000]
[--processes 4] [--json] [--smoke]``. It starts its own redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import random
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from tests.servers import RedisServer
from tests.support import Wire

import aiotasks
from aiotasks import finish_task, task_boilerplate
from aiotasks._scripts import ACQUIRE, FINISH
from aiotasks._store import store_for

CONTENDERS = ("aiotasks", "norecords", "tuple", "uncoalesced", "seed", "redis_lock", "floor")


@dataclass
class Tally:
    runs: int = 0
    skips: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


Attempt = Callable[[Redis, str, str, Tally], Awaitable[None]]


def body(tally: Tally, key: str) -> None:
    tally.bodies[key] += 1


async def decorated(run: aiotasks.Run) -> None:
    """The decorated contender's body: a no-op (the attempt counts it, as for the others)."""


async def attempt_aiotasks(client: Redis, task: str, date: str, tally: Tally) -> None:
    result = await _DECORATED[task](date, redis=client)
    if result["status"] == "success":
        tally.runs += 1
        body(tally, f"{task}:{date}")
    else:
        tally.skips += 1


async def attempt_norecords(client: Redis, task: str, date: str, tally: Tally) -> None:
    await attempt_aiotasks(client, task, date, tally)


async def attempt_tuple(client: Redis, task: str, date: str, tally: Tally) -> None:
    conn, lock_key, success_key, result, task_id = await task_boilerplate(task, date, redis=client)
    if result["status"] == "skipped":
        tally.skips += 1
        return
    body(tally, f"{task}:{date}")
    await finish_task(conn, lock_key, success_key, task_id)
    tally.runs += 1


async def attempt_uncoalesced(client: Redis, task: str, date: str, tally: Tally) -> None:
    lock, success = f"lock:{task}:{date}", f"success:{task}:{date}"
    token = f"{random.getrandbits(40):010x}"
    reply = await client.evalsha(ACQUIRE.sha, 2, lock, success, token, 300_000, 1)
    if int(reply[0]) != 1:
        tally.skips += 1
        return
    body(tally, f"{task}:{date}")
    await client.evalsha(FINISH.sha, 2, lock, success, token, 86400, "completed")
    tally.runs += 1


async def attempt_seed(client: Redis, task: str, date: str, tally: Tally) -> None:
    lock, success = f"lock:{task}:{date}", f"success:{task}:{date}"
    if await client.exists(success):
        tally.skips += 1
        return
    if not await client.set(lock, "token", ex=300, nx=True):
        tally.skips += 1
        return
    try:
        body(tally, f"{task}:{date}")
        await client.set(success, "completed", ex=86400)
        tally.runs += 1
    finally:
        await client.delete(lock)


async def attempt_redis_lock(client: Redis, task: str, date: str, tally: Tally) -> None:
    success = f"success:{task}:{date}"
    if await client.exists(success):
        tally.skips += 1
        return
    lock = Lock(client, f"lock:{task}:{date}", timeout=300, blocking=False)
    if not await lock.acquire():
        tally.skips += 1
        return
    try:
        body(tally, f"{task}:{date}")
        await client.set(success, "completed", ex=86400)
        tally.runs += 1
    finally:
        await lock.release()


async def attempt_floor(client: Redis, task: str, date: str, tally: Tally) -> None:
    await client.ping()
    await client.ping()
    tally.runs += 1


ATTEMPTS: dict[str, Attempt] = {
    "aiotasks": attempt_aiotasks,
    "norecords": attempt_norecords,
    "tuple": attempt_tuple,
    "uncoalesced": attempt_uncoalesced,
    "seed": attempt_seed,
    "redis_lock": attempt_redis_lock,
    "floor": attempt_floor,
}
_DECORATED: dict[str, aiotasks.Task] = {}


def dates(count: int, offset: int) -> list[str]:
    start = dt.date(2000, 1, 1) + dt.timedelta(days=offset)
    return [(start + dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(count)]


async def measure(
    url: str, contender: str, workers: int, attempts: int, contention: str, task: str
) -> dict[str, Any]:
    """One timed run of one contender; keys are fresh (a new task name per call)."""
    wire = Wire()
    client = wire.client(url)
    tally = Tally()
    attempt = ATTEMPTS[contender]
    if contender in ("aiotasks", "norecords"):
        _DECORATED[task] = aiotasks.Task(
            decorated, name=task, retention=0 if contender == "norecords" else None
        )
    try:
        await client.script_load(ACQUIRE.source)
        await client.script_load(FINISH.source)
        await client.ping()
        store_for(client)  # the door exists before the clock starts
        if contention == "low":
            keys = dates(attempts, 0)
            shares = [keys[w::workers] for w in range(workers)]
        else:
            keys = dates(max(1, attempts // workers), 0)
            shares = [keys for _ in range(workers)]

        async def worker(share: list[str]) -> None:
            for date in share:
                started = time.perf_counter()
                try:
                    await attempt(client, task, date, tally)
                except Exception as exc:  # "Too many connections" and the like: counted, not fatal
                    tally.errors[type(exc).__name__] += 1
                tally.latencies.append(time.perf_counter() - started)

        wire.reset()
        began = time.perf_counter()
        await asyncio.gather(*(worker(share) for share in shares))
        elapsed = time.perf_counter() - began
    finally:
        await client.aclose()
    done = tally.runs + tally.skips
    latencies = sorted(tally.latencies)
    return {
        "elapsed": elapsed,
        "attempts": done,
        "runs": tally.runs,
        "skips": tally.skips,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors),
        "duplicates": sum(count - 1 for count in tally.bodies.values() if count > 1),
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else 0.0,
        "commands": wire.commands,
        "round_trips": wire.round_trips,
    }


def _process_main(
    url: str, contender: str, workers: int, attempts: int, contention: str, task: str
) -> dict[str, Any]:
    return asyncio.run(measure(url, contender, workers, attempts, contention, task))


def measure_processes(
    url: str, contender: str, processes: int, workers: int, attempts: int, contention: str, task: str
) -> dict[str, Any]:
    """The same measurement in P OS processes at once (each with W coroutines), merged."""
    context = multiprocessing.get_context("spawn")
    per_process = attempts // processes if contention == "low" else attempts
    with context.Pool(processes) as pool:
        jobs = []
        for index in range(processes):
            # Low contention: each process its own keys (another task name); high: all on the same keys.
            name = f"{task}p{index}" if contention == "low" else task
            jobs.append(
                pool.apply_async(_process_main, (url, contender, workers, per_process, contention, name))
            )
        parts = [job.get(timeout=600) for job in jobs]
    merged: dict[str, Any] = {"elapsed": max(p["elapsed"] for p in parts)}
    for key in ("attempts", "runs", "skips", "errors", "commands", "round_trips", "duplicates"):
        merged[key] = sum(p[key] for p in parts)
    merged["error_kinds"] = dict(sum((Counter(p["error_kinds"]) for p in parts), Counter()))
    merged["p50_ms"] = max(p["p50_ms"] for p in parts)
    merged["p99_ms"] = max(p["p99_ms"] for p in parts)
    if contention == "high" and contender != "floor":
        # Across processes, a key's body must have run once in all: runs over all processes = keys.
        merged["duplicates"] = max(0, merged["runs"] - max(1, attempts // workers))
    return merged


def summarize(raw: dict[str, Any], contender: str, contention: str) -> dict[str, Any]:
    elapsed = raw["elapsed"] or 1e-9
    row = {
        "attempts_s": round(raw["attempts"] / elapsed),
        "runs_s": round(raw["runs"] / elapsed),
        "skips_s": round(raw["skips"] / elapsed),
        "p50_ms": round(raw["p50_ms"], 3),
        "p99_ms": round(raw["p99_ms"], 3),
        "duplicates": raw["duplicates"],
        "errors": raw["errors"],
    }
    if raw["attempts"]:
        row["rtts_attempt"] = round(raw["round_trips"] / raw["attempts"], 2)
    if contention == "low" and raw["runs"]:
        row["cmds_run"] = round(raw["commands"] / raw["runs"], 2)
    if contention == "high" and raw["skips"] and contender != "floor":
        # Skips cost what the runs did not: (total - runs x the contender's commands per run) / skips.
        per_run = 4 if contender in ("seed", "redis_lock") else 2
        row["cmds_skip"] = round((raw["commands"] - raw["runs"] * per_run) / raw["skips"], 2)
    if raw["error_kinds"]:
        row["error_kinds"] = raw["error_kinds"]
    return row


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    workers = [int(w) for w in args.workers.split(",")]
    contenders = args.contenders.split(",")
    rows: list[dict[str, Any]] = []
    with RedisServer() as server:
        counter = 0
        for contention in args.contention.split(","):
            for w in workers:
                best: dict[str, dict[str, Any]] = {}
                # An untimed pass first: the first measurements in a fresh process
                # (and on a fresh server) run up to 2x slower, whoever goes first.
                for contender in contenders:
                    counter += 1
                    asyncio.run(
                        measure(
                            server.url, contender, w, max(w, args.attempts // 4), contention, f"w{counter}"
                        )
                    )
                for _ in range(args.repeat):
                    for contender in random.sample(contenders, len(contenders)):
                        counter += 1
                        task = f"b{counter}"
                        if args.processes > 1:
                            raw = measure_processes(
                                server.url, contender, args.processes, w, args.attempts, contention, task
                            )
                        else:
                            raw = asyncio.run(
                                measure(server.url, contender, w, args.attempts, contention, task)
                            )
                        row = summarize(raw, contender, contention)
                        kept = best.get(contender)
                        if kept is None or row["attempts_s"] > kept["attempts_s"]:
                            if (
                                kept is not None
                            ):  # the worst duplicates and errors seen are kept, not the best
                                row["duplicates"] = max(row["duplicates"], kept["duplicates"])
                                row["errors"] = max(row["errors"], kept["errors"])
                            best[contender] = row
                        else:
                            kept["duplicates"] = max(row["duplicates"], kept["duplicates"])
                            kept["errors"] = max(row["errors"], kept["errors"])
                seed = best.get("seed", {}).get("attempts_s")
                floor = best.get("floor", {}).get("attempts_s")
                for contender in contenders:
                    row = {"contention": contention, "workers": w, "processes": args.processes,
                           "contender": contender, **best[contender]}  # fmt: skip
                    row["x_seed"] = round(row["attempts_s"] / seed, 2) if seed else None
                    row["x_floor"] = round(row["attempts_s"] / floor, 2) if floor else None
                    rows.append(row)
    return {"rows": rows, "targets": targets(rows)}


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issues' targets, read off the rows (low contention, single process)."""

    def ratio(contender: str, workers: int, column: str) -> float | None:
        for row in rows:
            if (row["contention"], row["workers"], row["contender"]) == ("low", workers, contender):
                value = row.get(column)
                return float(value) if value is not None else None
        return None

    def versus(workers: int, other: str) -> float | None:
        ours = [r for r in rows if r["contention"] == "low" and r["workers"] == workers]
        mine = next((r["attempts_s"] for r in ours if r["contender"] == "aiotasks"), None)
        theirs = next((r["attempts_s"] for r in ours if r["contender"] == other), None)
        return round(mine / theirs, 2) if mine and theirs else None

    return {
        "run_path_x_seed_w1 (>= 1.6)": ratio("aiotasks", 1, "x_seed"),
        "run_path_x_seed_w32 (>= 1.8)": ratio("aiotasks", 32, "x_seed"),
        "run_path_x_floor_w1 (>= 0.8, i.e. within 1.25x)": ratio("aiotasks", 1, "x_floor"),
        "run_path_x_floor_w32 (>= 0.8)": ratio("aiotasks", 32, "x_floor"),
        "coalesced_x_uncoalesced_w1 (>= 0.95: a lone command adds no latency)": versus(1, "uncoalesced"),
        "coalesced_x_uncoalesced_w32 (~2, issue 7)": versus(32, "uncoalesced"),
        "records_x_norecords_w1 (>= 0.95, issue 13)": versus(1, "norecords"),
        "records_x_norecords_w32 (>= 0.95, issue 13)": versus(32, "norecords"),
        "aiotasks_duplicates (0)": sum(
            r["duplicates"] for r in rows if r["contender"] in ("aiotasks", "norecords", "tuple")
        ),
        "aiotasks_errors (0)": sum(
            r["errors"] for r in rows if r["contender"] in ("aiotasks", "norecords", "tuple")
        ),
    }


COLUMNS = [
    "contention", "workers", "contender", "attempts_s", "runs_s", "skips_s", "p50_ms", "p99_ms",
    "cmds_run", "cmds_skip", "rtts_attempt", "duplicates", "errors", "x_seed", "x_floor",
]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.rjust(widths[c]) for c in COLUMNS)]
    previous = None
    for row in rows:
        if previous is not None and (row["contention"], row["workers"]) != previous:
            lines.append("")
        previous = (row["contention"], row["workers"])
        lines.append(
            "  ".join(str("" if row.get(c) is None else row.get(c, "")).rjust(widths[c]) for c in COLUMNS)
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", default="1,8,32,128,1000", help="coroutines per process, comma-separated"
    )
    parser.add_argument("--attempts", type=int, default=3000, help="attempts per contender and configuration")
    parser.add_argument("--contention", default="low,high", help="low (a key per attempt), high (W per key)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument(
        "--processes", type=int, default=1, help="OS processes, each with --workers coroutines"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repeats; the best rate is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole sweep; the result as one JSON-able document."""
    if args.smoke:
        args.workers, args.attempts, args.repeat = "1,8", 40, 1
    result = sweep(args)
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    return result


def render(result: dict[str, Any]) -> str:
    processes = result["parameters"]["processes"]
    title = f"Lock contention ({processes} process{'es' if processes > 1 else ''}; best of repeats)"
    return f"{title}\n{table(result['rows'])}\n\nTargets: {json.dumps(result['targets'], indent=2)}"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
