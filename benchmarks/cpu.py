"""What one run costs on each side: the worker's CPU and Redis's, per run, beside throughput.

Every contender does one *run* per attempt (each on its own key: no skips) in
W coroutines sharing one client, and is measured in the same process, on the
same redis-server, interleaved with the others:

``aiotasks``    the ``@aiotasks.task`` decorator with a no-op body, writing run records
``norecords``   the same with ``retention=0``: no records
``seed``        a literal async port of the seed: EXISTS, SET NX EX, SET, DEL
``floor``       two awaited PINGs through redis-py: the least any two-request run can cost

Columns: ``runs_s`` runs per second; ``cpu_us`` the worker process's CPU per
run (``time.process_time()`` around the loop, so it counts every thread of the
process and nothing of the server's); ``redis_us`` the server's CPU per run
(``INFO commandstats``: the ``usec`` of the requests the contender sends --
the scripts' ``EVALSHA`` for aiotasks, which includes the commands the script
runs -- after ``CONFIG RESETSTAT`` on the benchmark's own server);
``requests`` requests per run, from the same counts; ``writes`` the
client's writes per run as the server read them (``total_reads_processed``):
below ``requests`` when runs share a pipeline, and the fewer, the less each
run costs both sides in system calls. ``x_floor`` is the rate
over the floor's, ``x_norecords`` aiotasks' over ``norecords``'. Each figure
is the median of ``--repeat`` interleaved passes (contenders in random order).

On a machine shared with other work the rates move with the load; ``cpu_us``
moves much less and is the figure to compare while working. The issue-22
targets are read off the table at the end.

``python -m benchmarks.cpu``                      the table (1, 32 and 1000 coroutines; about a minute)
``python -m benchmarks.cpu --workers 32 --repeat 9``  one concurrency, more passes
``python -m benchmarks.cpu --profile 32``         also cProfile aiotasks' run path at 32 coroutines
``python -m benchmarks.cpu --loop uvloop``        the same on uvloop (when installed)

When ``redis-benchmark`` is on the PATH, the run ends with what it measures
for the same two scripts, pipelined (``-P 32``, 50 connections), on the same
server: each script's requests per second, sent with the arguments aiotasks
sends (its dates ``__rand_int__``: every acquire takes a fresh lock and
starts a fresh record), and the runs per second the two make together (one
of each per run). Each ``__rand_int__`` is drawn on its own, so a finish never
finds the lock its acquire took: it takes the script's cheaper lock-lost path,
and the rate is an upper bound on what the server could do for real runs.
Issue 22 asks aiotasks at 1,000 coroutines for half of it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import io
import json
import pstats
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from tests.servers import RedisServer

import aiotasks
from aiotasks._keys import task_keys
from aiotasks._records import Outcome, acquire_args, finish_args, retention_ms
from aiotasks._scripts import ACQUIRE, FINISH, RELEASE
from aiotasks._store import store_for
from benchmarks.lock_contention import Tally, attempt_floor, attempt_seed, dates, decorated

CONTENDERS = ("aiotasks", "norecords", "seed", "floor")
#: The requests each contender sends (what INFO commandstats is read for): a script's own
#: commands are counted too, under their names, and must not be added twice.
REQUESTS = {
    "aiotasks": ("evalsha", "eval"),
    "norecords": ("evalsha", "eval"),
    "seed": ("exists", "set", "del"),
    "floor": ("ping",),
}

Attempt = Callable[[Redis, str, str, Tally], Awaitable[None]]


async def _decorated(task: aiotasks.Task, client: Redis, date: str, tally: Tally) -> None:
    result = await task(date, redis=client)
    if result["status"] == "success":
        tally.runs += 1
    else:
        tally.skips += 1


def _attempt(contender: str, task: str) -> Attempt:
    if contender in ("aiotasks", "norecords"):
        decorated_task = aiotasks.Task(
            decorated, name=task, retention=0 if contender == "norecords" else None
        )
        return lambda client, _task, date, tally: _decorated(decorated_task, client, date, tally)
    return attempt_seed if contender == "seed" else attempt_floor


async def _server_usec(admin: Redis, contender: str) -> tuple[int, int, int, dict[str, int]]:
    """Calls and usec of ``contender``'s requests since the last ``CONFIG RESETSTAT``, the reads
    the server made (each a write of the client's: one request, or a batch of them), and the usec
    of every command (a script's own commands under their names)."""
    reads = int((await admin.info("stats"))["total_reads_processed"])
    stats = await admin.info("commandstats")
    calls = usec = 0
    for name in REQUESTS[contender]:
        found = stats.get(f"cmdstat_{name}")
        if found:
            calls += int(found["calls"])
            usec += int(found["usec"])
    every = {
        name.removeprefix("cmdstat_"): int(found["usec"])
        for name, found in stats.items()
        if not name.startswith(("cmdstat_config", "cmdstat_info"))
    }
    return calls, usec, reads, every


async def measure(
    url: str, contender: str, workers: int, runs: int, task: str, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    """One timed pass of one contender: ``runs`` runs on fresh keys by ``workers`` coroutines."""
    # A pool with a connection per coroutine (redis-py's default holds 100): the floor and the seed
    # need one per request in flight; aiotasks uses its two lanes whatever the pool.
    client = Redis.from_url(url, max_connections=max(100, workers))
    admin = Redis.from_url(url)
    tally = Tally()
    attempt = _attempt(contender, task)
    try:
        for script in (ACQUIRE, FINISH, RELEASE):
            await client.script_load(script.source)
        # Warm: the door, the connections the pass will use, the task's cached keys.
        store_for(client)
        warm = dates(min(workers, 64), 40_000)  # in 2109, apart from the timed keys
        await asyncio.gather(*(attempt(client, task, date, Tally()) for date in warm))
        keys = dates(runs, 0)
        shares = [keys[w::workers] for w in range(workers)]

        async def worker(share: list[str]) -> None:
            for date in share:
                await attempt(client, task, date, tally)

        await admin.config_resetstat()
        if profile is not None:
            profile.enable()
        cpu, began = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(share) for share in shares))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        if profile is not None:
            profile.disable()
        calls, usec, reads, every = await _server_usec(admin, contender)
    finally:
        await client.aclose()
        await admin.aclose()
    done = tally.runs or 1
    return {
        "runs": tally.runs,
        "skips": tally.skips,
        "runs_s": tally.runs / elapsed,
        "cpu_us": cpu / done * 1e6,
        "redis_us": usec / done,
        "requests": calls / done,
        "writes": reads / done,
        "by_command": {name: round(spent / done, 2) for name, spent in sorted(every.items())},
    }


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    import uvloop  # optional: only when asked for

    return uvloop.new_event_loop


def run_pass(args: argparse.Namespace, url: str, contender: str, workers: int, task: str) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        return runner.run(measure(url, contender, workers, args.runs, task))


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    contenders = args.contenders.split(",")
    rows: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    counter = 0
    with RedisServer() as server:
        for workers in [int(w) for w in args.workers.split(",")]:
            passes: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
            for contender in contenders:  # untimed: a fresh process's first passes run slow
                counter += 1
                run_pass(args, server.url, contender, workers, f"w{counter}")
            for _ in range(args.repeat):
                for contender in random.sample(contenders, len(contenders)):
                    counter += 1
                    passes[contender].append(run_pass(args, server.url, contender, workers, f"c{counter}"))
            floor = statistics.median(p["runs_s"] for p in passes["floor"]) if "floor" in passes else None
            norecords = (
                statistics.median(p["runs_s"] for p in passes["norecords"]) if "norecords" in passes else None
            )
            for contender in contenders:
                got = passes[contender]
                row: dict[str, Any] = {"workers": workers, "contender": contender}
                for column, digits in DIGITS.items():
                    row[column] = round(statistics.median(p[column] for p in got), digits)
                row["cpu_us_min"] = round(min(p["cpu_us"] for p in got), 1)
                row["x_floor"] = round(row["runs_s"] / floor, 2) if floor else None
                row["x_norecords"] = (
                    round(row["runs_s"] / norecords, 2) if norecords and contender == "aiotasks" else None
                )
                row["skips"] = sum(p["skips"] for p in got)  # fresh keys: must stay 0
                if contender in ("aiotasks", "norecords"):
                    # Where the server's time goes: each command's usec per run, medians of the passes.
                    names = sorted({name for p in got for name in p["by_command"]})
                    row["redis_by_command"] = {
                        name: round(statistics.median(p["by_command"].get(name, 0.0) for p in got), 2)
                        for name in names
                    }
                rows.append(row)
        for workers in [int(w) for w in args.profile.split(",")] if args.profile else []:
            profiles[str(workers)] = profile(args, server.url, workers)
        # Last: its millions of keys would slow the passes above.
        pipelined = redis_benchmark(server.port, 20_000 if args.smoke else 400_000)
    return {
        "rows": rows,
        "targets": targets(rows, pipelined),
        "profiles": profiles,
        "redis_benchmark": pipelined,
    }


#: The placeholder redis-benchmark replaces with a random 12-digit number (``-r``), each on its own.
RANDOM = "__rand_int__"


def script_requests() -> dict[str, list[str]]:
    """The ACQUIRE and FINISH requests of a run with records, as aiotasks sends them, with
    redis-benchmark's placeholder where the date goes."""
    date = "20990101"
    keys = task_keys("rbench", date, namespace=None, cluster=False)
    retention = retention_ms()
    outcome = Outcome(retention_ms=retention, status="success", ended=4_000_000_000_000, fresh=True)
    found = {
        "acquire": ["EVALSHA", ACQUIRE.sha, *acquire_args(keys, "abcdefgh", 300_000, True, retention)],
        "finish": ["EVALSHA", FINISH.sha, *finish_args(keys, "abcdefgh", 86_400, "completed", outcome)],
    }

    def text(arg: object) -> str:
        return (arg.decode() if isinstance(arg, bytes) else str(arg)).replace(date, RANDOM)

    return {name: [text(arg) for arg in request] for name, request in found.items()}


def redis_benchmark(port: int, requests: int) -> dict[str, Any] | None:
    """redis-benchmark's requests/s for each of the two scripts, pipelined, and the runs/s the two
    make together; None without redis-benchmark."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    found: dict[str, Any] = {"pipeline": 32, "connections": 50, "requests": requests}
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-r", "1000000000", "--csv"]
    command += ["-c", str(found["connections"]), "-P", str(found["pipeline"])]
    with SyncRedis(host="127.0.0.1", port=port) as admin:
        admin.config_resetstat()
        for name, request in script_requests().items():
            done = subprocess.run([*command, *request], capture_output=True, text=True, check=True)
            # --csv: a header row, then one row per test: "test","rps",...
            rows = list(csv.reader(done.stdout.strip().splitlines()))
            found[f"{name}_per_s"] = round(float(rows[-1][1]))
        # redis-benchmark counts an error reply as an answer: a script that failed would look fast.
        calls = admin.info("commandstats")["cmdstat_evalsha"]
    if calls["calls"] != 2 * requests or calls["failed_calls"] or calls["rejected_calls"]:
        raise RuntimeError(f"redis-benchmark's scripts did not all run: {calls}")
    found["runs_s"] = round(1 / (1 / found["acquire_per_s"] + 1 / found["finish_per_s"]))
    return found


def profile(args: argparse.Namespace, url: str, workers: int) -> str:
    """cProfile of aiotasks' run path (records on): the functions with the most own time."""
    found = cProfile.Profile()
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        runner.run(measure(url, "aiotasks", workers, args.runs, "pw", None))
        runner.run(measure(url, "aiotasks", workers, args.runs, "pp", found))
    out = io.StringIO()
    stats = pstats.Stats(found, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


def targets(rows: list[dict[str, Any]], pipelined: dict[str, Any] | None = None) -> dict[str, Any]:
    """Issue 22's targets, read off the rows (and redis-benchmark's runs/s, when it ran)."""

    def get(workers: int, contender: str, column: str) -> Any:
        return next(
            (r[column] for r in rows if r["workers"] == workers and r["contender"] == contender), None
        )

    return {
        "cpu_us_w32 (<= 30)": get(32, "aiotasks", "cpu_us"),
        "cpu_us_w1 (<= 40)": get(1, "aiotasks", "cpu_us"),
        "redis_us_records (<= 17)": get(32, "aiotasks", "redis_us"),
        "redis_us_norecords (no worse than ~13)": get(32, "norecords", "redis_us"),
        "x_floor_w32 (>= 2.5)": get(32, "aiotasks", "x_floor"),
        "x_floor_w1 (>= 0.9)": get(1, "aiotasks", "x_floor"),
        "records_x_norecords_w1 (>= 0.9)": get(1, "aiotasks", "x_norecords"),
        "records_x_norecords_w32 (>= 0.9)": get(32, "aiotasks", "x_norecords"),
        "requests_per_run (2)": get(32, "aiotasks", "requests"),
        "x_redis_benchmark_w1000 (>= 0.5)": (
            round(get(1000, "aiotasks", "runs_s") / pipelined["runs_s"], 2)
            if pipelined and get(1000, "aiotasks", "runs_s")
            else None
        ),
    }


#: The measured columns, with the digits they are rounded to.
DIGITS = {"runs_s": 0, "cpu_us": 1, "redis_us": 1, "requests": 2, "writes": 3}

COLUMNS = [
    "workers", "contender", "runs_s", "cpu_us", "cpu_us_min", "redis_us", "requests", "writes", "x_floor",
    "x_norecords", "skips",
]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], column: str) -> str:
        return "" if row.get(column) is None else str(row[column])

    widths = {c: max(len(c), *(len(cell(r, c)) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.rjust(widths[c]) for c in COLUMNS)]
    previous = None
    for row in rows:
        if previous is not None and row["workers"] != previous:
            lines.append("")
        previous = row["workers"]
        lines.append("  ".join(cell(row, c).rjust(widths[c]) for c in COLUMNS))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )  # fmt: skip
    parser.add_argument("--workers", default="1,32,1000", help="coroutines on one client, comma-separated")
    parser.add_argument("--runs", type=int, default=4000, help="runs per pass (each on a fresh key)")
    parser.add_argument(
        "--repeat", type=int, default=5, help="interleaved passes; each figure is their median"
    )
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the event loop")
    parser.add_argument(
        "--profile", default="", metavar="W", help="also cProfile aiotasks at these coroutine counts"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.workers, args.runs, args.repeat = "1,32", 64, 1
    result = sweep(args)
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    return result


def render(result: dict[str, Any]) -> str:
    loop = result["parameters"]["loop"]
    title = f"CPU per run, worker and Redis ({loop} loop; median of {result['parameters']['repeat']} passes)"
    text = (
        f"{title}\n{table(result['rows'])}\n\nTargets (issue 22): {json.dumps(result['targets'], indent=2)}"
    )
    for row in result["rows"]:
        if row.get("redis_by_command"):
            spent = ", ".join(f"{name} {usec}" for name, usec in row["redis_by_command"].items())
            text += f"\n\nRedis usec per run by command, {row['contender']} at {row['workers']}: {spent}"
    pipelined = result.get("redis_benchmark")
    if pipelined:
        text += (
            f"\n\nredis-benchmark, the two scripts pipelined (-P {pipelined['pipeline']}, "
            f"{pipelined['connections']} connections, {pipelined['requests']} each): "
            f"ACQUIRE {pipelined['acquire_per_s']}/s, FINISH {pipelined['finish_per_s']}/s "
            f"(its lock-lost path), together {pipelined['runs_s']} runs/s"
        )
    for workers, found in result["profiles"].items():
        text += f"\n\nProfile, aiotasks at {workers} coroutines:\n{found}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
