"""The web console: page and JSON latency on a big fleet, and what one open page costs Redis.

Latency
    T tasks in 5 daily schedules, each task with one successful run per date
    for R/T dates (R runs of history in all), every 10th date's run of every
    7th task a failure. Each page and its JSON twin is requested N times
    in-process through httpx's ASGI transport (no network: the time is the
    server's, Redis round trips included): the grid over the last D dates
    (T x D cells), the overview, history (first page, and filtered by
    outcome), one cell's runs. The baseline, timed the same way in the same
    run: what ``status --from --to`` reads for that grid (``read_grid``, one
    GRID script per task), without building or sending any page.

Redis cost
    A browser keeps a page open: it fetches the page's live part every
    ``refresh`` seconds. For ``--minute`` seconds this does the same, counting
    on the wire what the console's client sends (commands, round trips) and
    reading the calls the server ran (``INFO commandstats``, those inside the
    read scripts included; this benchmark's own two INFO calls taken out).

Run: ``python -m benchmarks.web [--tasks 50] [--runs 10000] [--days 90] [--repeat 20]
[--minute 60] [--refresh 5] [--json] [--smoke]``. It starts its own redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

import httpx
from redis.asyncio import Redis
from tests.servers import RedisServer
from tests.support import Wire

import aiotasks
import aiotasks.web
from aiotasks._records import read_grid
from aiotasks._store import store_for

SCHEDULES = 5


def dates(count: int) -> list[str]:
    start = dt.date(2025, 1, 1)
    return [(start + dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(count)]


def fleet(tasks: int) -> list[aiotasks.Schedule]:
    """``tasks`` independent tasks in 5 daily schedules (the overview's, the grid's sections)."""

    async def body(run: aiotasks.Run) -> None:
        run.result["rows"] = 1234
        if run.date.endswith("0") and run.task_name.endswith(("0", "7")):
            raise RuntimeError(f"<b>upstream</b> refused {run.date}")

    made = [aiotasks.Task(body, name=f"task_{i:03d}", retention="400d") for i in range(tasks)]
    size = max(len(made) // SCHEDULES, 1)
    groups = [made[i : i + size] for i in range(0, len(made), size)]
    return [
        aiotasks.Schedule(group, cron="0 2 * * *", name=f"nightly_{n}", catchup=0)
        for n, group in enumerate(groups)
    ]


async def fill(client: Redis, schedules: list[aiotasks.Schedule], days: int) -> None:
    for date in dates(days):
        await asyncio.gather(
            *(aiotasks.run_chain(schedule.chain, date, redis=client) for schedule in schedules)
        )


async def latency(client: Redis, schedules: list[aiotasks.Schedule], args: argparse.Namespace) -> list[Any]:
    days = dates(args.runs // args.tasks)
    first, last = days[-args.days], days[-1]
    app = aiotasks.web.console(schedules, redis=client)
    pages = [
        ("grid", f"/grid?from={first}&to={last}"),
        ("overview", "/"),
        ("history", "/history"),
        ("history, failed only", "/history?outcome=failed"),
        ("one cell's runs", f"/runs?task=task_000&key={last}"),
    ]
    rows: list[dict[str, Any]] = []
    store = store_for(client)
    names = [node.task_name for schedule in schedules for node in schedule.chain]
    await read_grid(store, names, days[-args.days :], namespace=None)
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        await read_grid(store, names, days[-args.days :], namespace=None)
        timings.append(time.perf_counter() - started)
    baseline = {
        "p50_ms": round(statistics.median(timings) * 1000, 1),
        "best_ms": round(min(timings) * 1000, 1),
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        for name, path in pages:
            row: dict[str, Any] = {"page": name}
            for kind, url in (("html", path), ("json", "/api" + path if path != "/" else "/api/overview")):
                answer = await http.get(url)  # warm: scripts loaded, connections open
                assert answer.status_code == 200, (url, answer.text[:300])
                timings = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    answer = await http.get(url)
                    timings.append(time.perf_counter() - started)
                row[f"{kind}_p50_ms"] = round(statistics.median(timings) * 1000, 1)
                row[f"{kind}_best_ms"] = round(min(timings) * 1000, 1)
                row[f"{kind}_kib"] = round(len(answer.content) / 1024, 1)
            rows.append(row)
    grid_row = rows[0]
    grid_row["status_read_p50_ms"], grid_row["status_read_best_ms"] = baseline["p50_ms"], baseline["best_ms"]
    return rows


async def calls(client: Redis) -> int:
    """Calls the server ran so far, those inside scripts included."""
    return sum(int(entry["calls"]) for entry in (await client.info("commandstats")).values())


async def open_page(
    url: str, schedules: list[aiotasks.Schedule], args: argparse.Namespace, path: str
) -> dict[str, Any]:
    wire = Wire()
    client = wire.client(url)
    app = aiotasks.web.console(schedules, redis=client, refresh=args.refresh)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        await http.get(path)  # the page itself; then only its refreshes
        before = await calls(client)
        wire.reset()
        started = time.monotonic()
        refreshes = 0
        while time.monotonic() - started < args.minute:
            await asyncio.sleep(args.refresh)
            await http.get(path, headers={"x-aiotasks-fragment": "1"})
            refreshes += 1
        elapsed = time.monotonic() - started
        sent, trips = wire.commands, wire.round_trips
        ran = await calls(client) - before - 2  # this benchmark's two INFO commandstats
    await client.aclose()
    return {
        "page": path.split("?")[0] or "/",
        "seconds": round(elapsed, 1),
        "refreshes": refreshes,
        "commands_per_refresh": round(sent / max(refreshes, 1), 1),
        "round_trips_per_refresh": round(trips / max(refreshes, 1), 1),
        "commands_per_s": round(sent / elapsed, 2),
        "calls_in_scripts_too_per_s": round(ran / elapsed, 1),
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    client = Redis.from_url(url)
    try:
        await client.flushall()
        schedules = fleet(args.tasks)
        started = time.perf_counter()
        await fill(client, schedules, args.runs // args.tasks)
        filled = time.perf_counter() - started
        days = dates(args.runs // args.tasks)
        grid_path = f"/grid?from={days[-args.days]}&to={days[-1]}"
        return {
            "fill_s": round(filled, 1),
            "pages": await latency(client, schedules, args),
            "open": [await open_page(url, schedules, args, path) for path in ("/", grid_path)],
        }
    finally:
        await client.aclose()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10_000, help="runs of history in all")
    parser.add_argument("--days", type=int, default=90, help="dates the grid shows")
    parser.add_argument("--repeat", type=int, default=20, help="requests timed per page")
    parser.add_argument("--minute", type=float, default=60.0, help="seconds a page is kept open")
    parser.add_argument("--refresh", type=float, default=5.0, help="the page's refresh interval (s)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI: checks it runs, not speed")
    return parser


def collect(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        args.tasks, args.runs, args.days, args.repeat, args.minute, args.refresh = 5, 20, 3, 2, 1.0, 0.5
    with RedisServer() as server:
        result = asyncio.run(measure(server.url, args))
    result["parameters"] = {k: v for k, v in vars(args).items() if k != "json"}
    return result


def render(result: dict[str, Any]) -> str:
    p = result["parameters"]
    lines = [
        f"{p['tasks']} tasks in {SCHEDULES} schedules, {p['runs']} runs of history "
        f"({p['runs'] // p['tasks']} dates each, filled in {result['fill_s']} s); "
        f"grid over {p['days']} dates; "
        f"{p['repeat']} requests per page, in-process (server time)",
        f"  {'page':<22} {'HTML p50':>9} {'best':>7} {'size':>9}   {'JSON p50':>9} {'best':>7} {'size':>9}",
    ]
    grid_row = result["pages"][0]
    lines.insert(
        1,
        f"  baseline, what `status --from --to` reads for that grid: "
        f"p50 {grid_row['status_read_p50_ms']} ms, "
        f"best {grid_row['status_read_best_ms']} ms",
    )
    for row in result["pages"]:
        lines.append(
            f"  {row['page']:<22} {row['html_p50_ms']:>7} ms {row['html_best_ms']:>4} ms "
            f"{row['html_kib']:>6} KiB   {row['json_p50_ms']:>7} ms {row['json_best_ms']:>4} ms "
            f"{row['json_kib']:>6} KiB"
        )
    lines.append(f"One open page, refreshed every {p['refresh']:g} s:")
    for row in result["open"]:
        lines.append(
            f"  {row['page']:<8} {row['refreshes']} refreshes in {row['seconds']} s: "
            f"{row['commands_per_refresh']} commands in {row['round_trips_per_refresh']} round trips "
            f"per refresh = {row['commands_per_s']} commands/s "
            f"({row['calls_in_scripts_too_per_s']} calls/s counting those inside the read scripts)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = collect(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
