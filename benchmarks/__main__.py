"""Run every benchmark and write ``benchmarks/RESULTS.md`` (and ``RESULTS.json``) from what they print.

``python -m benchmarks``          the full sweep, by hand (several minutes)
``python -m benchmarks --smoke``  tiny sizes, writes nothing unless ``--output`` is given

RESULTS.md is generated: the machine, the command, and each benchmark's
table exactly as printed. Do not edit it by hand; run this again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.utils import HIREDIS_AVAILABLE
from tests.servers import redis_server_binary

from benchmarks import chain_overhead, controls, cpu, lock_contention, records, scheduling, versus, web

HERE = Path(__file__).parent

Collect = Callable[[argparse.Namespace], dict[str, Any]]
Render = Callable[[dict[str, Any]], str]

# (title, module, arguments): what "all of it" means.
SUITE: list[tuple[str, Any, list[str]]] = [
    ("Lock contention, coroutines in one process", lock_contention, []),
    (
        "Lock contention, 4 OS processes",
        lock_contention,
        ["--processes", "4", "--workers", "1,32", "--contenders", "aiotasks,seed,redis_lock,floor"],
    ),
    # Issue 12: "no worse than today's", today being the revision before hardening and records.
    # More and longer passes than the default: one pass per side at a time, the drift between
    # passes is what the best of 7 x 6000 attempts smooths out.
    (
        "Lock contention against 20ffb54, interleaved in this run",
        versus,
        ["20ffb54", "--repeat", "7", "--attempts", "6000"],
    ),
    # Issue 22: what a run costs the worker and Redis, per run, beside the floor and the seed.
    ("CPU per run: worker and Redis", cpu, []),
    ("Chain overhead and makespan", chain_overhead, []),
    ("Run records: memory and the date grid", records, []),
    ("Scheduling: fire latency, idle cost, windowed backfill", scheduling, []),
    ("Controls: the pause check's cost; trigger, pause and resume latency across replicas", controls, []),
    ("Web console: page latency and the Redis cost of an open page", web, []),
]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{memory_kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "unknown"
    try:
        server: str | None = redis_server_binary()  # the one the benchmarks start
    except RuntimeError:
        server = None
    version = (
        subprocess.run([server, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if server
        else "not found"
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis-py": redis.__version__,
        "reply parser": "hiredis" if HIREDIS_AVAILABLE else "redis-py's pure-Python parser",
        "redis-server": version,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    parser.add_argument("--output", type=Path, help="where to write the Markdown report")
    args = parser.parse_args(argv)
    output = args.output if args.output or args.smoke else HERE / "RESULTS.md"
    command = "python -m benchmarks" + (" --smoke" if args.smoke else "")
    started = dt.datetime.now(dt.UTC)
    sections: list[str] = []
    results: dict[str, Any] = {"machine": machine(), "command": command, "benchmarks": []}
    for title, module, extra in SUITE:
        options = module.parser().parse_args([*extra, *(["--smoke"] if args.smoke else [])])
        result = module.collect(options)
        text = module.render(result)
        print(f"== {title}\n{text}\n", flush=True)
        line = f"python -m benchmarks.{module.__name__.rsplit('.', 1)[1]} {' '.join(extra)}".rstrip()
        sections.append(f"## {title}\n\n`{line}`\n\n```\n{text}\n```\n")
        results["benchmarks"].append({"title": title, "command": line, "result": result})
    if output is None:
        return 0
    facts = "\n".join(f"- {key}: {value}" for key, value in results["machine"].items())
    minutes = (dt.datetime.now(dt.UTC) - started).total_seconds() / 60
    output.write_text(
        "# Benchmark results\n\n"
        "Generated by `python -m benchmarks` (do not edit by hand; run it again). "
        "Ratios compare contenders measured in the same run on the same machine.\n\n"
        f"Command: `{command}`, run {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} minutes.\n\n"
        f"Machine:\n{facts}\n\n" + "\n".join(sections)
    )
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output} and {output.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
