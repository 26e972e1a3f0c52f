"""Screenshots of the web console for the docs, from real runs: ``python -m benchmarks.screenshots``.

Starts its own redis-server, runs a small fleet for the last two weeks (real
runs through ``run_chain``: successes, a few failures, a worker SIGKILLed
mid-run, a run still going, a sub-daily schedule's slots), serves it with
``aiotasks web`` and photographs the overview, the grid and one failed run's
page in Debian's chromium (Playwright drives it; nothing is downloaded) into
``docs/assets/``. Needs the [test] extra and chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from redis.asyncio import Redis
from tests.servers import RedisServer

import aiotasks

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "docs" / "assets"
TOKEN = "screenshot-token"
#: Dates (days before today) on which a task fails, to show red cells.
FAILS = {"load_ledger": {3, 9}, "send_report": {5}}


async def body(run: aiotasks.Run) -> None:
    run.result["rows"] = 1000 + len(run.date) * 7
    days_ago = (dt.date.today() - dt.date(int(run.date[:4]), int(run.date[4:6]), int(run.date[6:8]))).days
    if days_ago in FAILS.get(run.task_name, ()):
        raise RuntimeError(f"upstream answered 503 for {run.date}: <html>Service Unavailable</html>")


async def hang(run: aiotasks.Run) -> None:
    await asyncio.Event().wait()


ingest_orders = aiotasks.Task(body, name="ingest_orders")
ingest_payments = aiotasks.Task(body, name="ingest_payments")
load_ledger = aiotasks.Task(body, name="load_ledger", depends_on=["ingest_orders", "ingest_payments"])
send_report = aiotasks.Task(body, name="send_report", depends_on=["load_ledger"])
rebuild_index = aiotasks.Task(hang, name="rebuild_index", lock_timeout=30)
refresh_cache = aiotasks.Task(body, name="refresh_cache", recurring=True)

SCHEDULES = [
    aiotasks.Schedule(
        [ingest_orders, ingest_payments, load_ledger, send_report], cron="0 2 * * *", name="nightly"
    ),
    aiotasks.Schedule(rebuild_index, cron="30 3 * * *", name="search-index"),
    aiotasks.Schedule(refresh_cache, every="2h", name="cache"),
]


async def fill(url: str) -> asyncio.Task[object]:
    """Two weeks of nightly runs, today's index rebuild running, a day of cache slots."""
    client = Redis.from_url(url)
    today = dt.date.today()
    for days_ago in range(13, -1, -1):
        await aiotasks.run_chain(SCHEDULES[0].chain, today - dt.timedelta(days=days_ago), redis=client)
    for days_ago in range(13, 1, -1):
        await client.set(f"success:rebuild_index:{(today - dt.timedelta(days=days_ago)):%Y%m%d}", "completed")
    now = dt.datetime.now(dt.UTC)
    for slot in SCHEDULES[2].slots_between(now - dt.timedelta(hours=20), now):
        await aiotasks.run_chain(SCHEDULES[2].chain, slot.key, redis=client)
    return asyncio.create_task(aiotasks.run_chain(SCHEDULES[1].chain, today, redis=client))


def abandon(url: str, task: str, date: str) -> None:
    """A worker that dies (SIGKILL) in the middle of ``task``'s run: its record stays abandoned."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.holder", url, task, date, "hang"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    with worker:
        assert worker.stdout is not None
        json.loads(worker.stdout.readline())
        worker.kill()


@contextlib.contextmanager
def console(url: str) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOTASKS_")}
    env.update(AIOTASKS_REDIS_URL=url, AIOTASKS_WEB_TOKEN=TOKEN)
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotasks", "web", "benchmarks/screenshots.py:SCHEDULES", "--port", "0"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", process.stderr.readline())
        assert found, "aiotasks web did not start"
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def photograph(base: str, chromium: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    made = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{base}/login")
        page.fill("input[name=token]", TOKEN)
        page.locator("form.login button").click()
        page.wait_for_url(base + "/")
        failed = (dt.date.today() - dt.timedelta(days=3)).strftime("%Y%m%d")
        for name, path in (
            ("web-overview.png", "/"),
            ("web-grid.png", "/grid"),
            ("web-run.png", f"/runs?task=load_ledger&key={failed}"),
        ):
            page.goto(base + path)
            target = out / name
            page.screenshot(path=str(target), full_page=True)
            made.append(target)
        browser.close()
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="where the PNGs go (docs/assets)")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("no chromium: apt-get install chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with RedisServer() as server:
        loop = asyncio.new_event_loop()
        running = loop.run_until_complete(fill(server.url))
        abandon(server.url, "rebuild_index", (dt.date.today() - dt.timedelta(days=1)).strftime("%Y%m%d"))
        loop.run_until_complete(asyncio.sleep(2))  # the killed worker's lock (1 s) expires
        # The index rebuild keeps running (its lock renewed by this loop) while the pages are taken.
        with console(server.url) as base:
            for path in photograph_in_loop(loop, base, chromium, args.out):
                print(path.relative_to(ROOT))
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            loop.run_until_complete(running)
        loop.close()
    return 0


def photograph_in_loop(loop: asyncio.AbstractEventLoop, base: str, chromium: str, out: Path) -> list[Path]:
    """Take the pictures in a thread while ``loop`` keeps the running run's lock renewed."""
    return loop.run_until_complete(asyncio.to_thread(photograph, base, chromium, out))


if __name__ == "__main__":
    raise SystemExit(main())
