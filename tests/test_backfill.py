"""Windowed backfill: N dates in flight, oldest first, each date's order kept, bodies bounded overall."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
import redis
from redis.asyncio import Redis

from aiotasks import InvalidInput, Run, Task
from aiotasks._backfill import run_window
from aiotasks._chain import Chain, prepare_run
from aiotasks._keys import date_range
from tests.test_cli import CHAINS, cli

DATES = list(date_range("20260101", "20260108"))


class Probe:
    """Counts what runs at once: dates with a body running, and bodies."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.dates: Counter[str] = Counter()
        self.max_dates = 0
        self.bodies = 0
        self.max_bodies = 0

    def chain(self) -> Chain:
        def step(name: str, deps: tuple[str, ...]) -> Task:
            async def body(run: Run) -> None:
                self.events.append(f"start:{name}:{run.date}")
                self.dates[run.date] += 1
                self.bodies += 1
                self.max_dates = max(self.max_dates, len(+self.dates))
                self.max_bodies = max(self.max_bodies, self.bodies)
                await asyncio.sleep(0.005)  # work, so that runs overlap
                self.bodies -= 1
                self.dates[run.date] -= 1
                self.events.append(f"end:{name}:{run.date}")

            return Task(body, name=name, depends_on=deps)

        return Chain([step("a", ()), step("b", ("a",)), step("c", ("a",)), step("d", ("b", "c"))])


@pytest.mark.parametrize(("window", "max_concurrency"), [(1, None), (3, None), (8, 2)])
async def test_window_bounds_dates_in_flight_and_keeps_each_dates_order(
    redis_client: Redis, window: int, max_concurrency: int | None
) -> None:
    """At most `window` dates at once, started oldest first; per date a -> (b, c) -> d; bodies bounded."""
    probe = Probe()
    chain = probe.chain()
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    runs = [
        prepare_run(chain, date, redis=redis_client, max_concurrency=max_concurrency, limit=limit)
        for date in DATES
    ]
    results = await run_window(runs, window)
    assert [{r["status"] for r in result.values()} for result in results] == [{"success"}] * len(DATES)
    assert [result["a"]["date"] for result in results] == DATES
    assert probe.max_dates <= window
    if window > 1 and max_concurrency is None:
        assert probe.max_dates > 1  # a window of N really runs dates side by side
    if max_concurrency is not None:
        assert probe.max_bodies <= max_concurrency
    first_starts = [e.split(":")[2] for e in probe.events if e.startswith("start:a:")]
    # Oldest first, a sliding window: a date starts only after every date `window` places older did.
    # (Dates started together may begin their bodies in any order: their acquires can travel on
    # different connections, whose replies race.)
    assert sorted(first_starts) == DATES
    for older, newer in zip(DATES, DATES[window:], strict=False):
        assert first_starts.index(older) < first_starts.index(newer), (older, newer, first_starts)
    for date in DATES:
        order = [e.split(":")[1] for e in probe.events if e.endswith(date) and e.startswith("start")]
        ends = [e.split(":")[1] for e in probe.events if e.endswith(date) and e.startswith("end")]
        assert order[0] == "a"
        assert order[-1] == "d"
        assert probe.events.index(f"end:a:{date}") < probe.events.index(f"start:b:{date}")
        assert probe.events.index(f"end:b:{date}") < probe.events.index(f"start:d:{date}")
        assert sorted(ends) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("window", [0, -1, 1.5, True, "2"])
async def test_bad_window_is_refused(window: object) -> None:
    """A window is a whole number >= 1; anything else is refused, naming it."""
    with pytest.raises(InvalidInput, match="window"):
        await run_window([], window)  # type: ignore[arg-type]


def test_cli_window_runs_every_date_once(redis_url: str) -> None:
    """`run --from/--to --window 3` (a real subprocess): exit 0, each date's tasks ran once, in date order."""
    done = cli(
        "run", f"{CHAINS}:chain", "--from", DATES[0], "--to", DATES[-1], "--window", "3", "--json",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert [run["date"] for run in runs] == DATES
    assert all(run["summary"]["success"] == 3 for run in runs), runs
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        log = Counter(client.lrange("log", 0, -1))
        markers = {key.split(":", 2)[2] for key in client.keys("success:a:*")}
    assert log == {f"{event}:{name}": len(DATES) for event in ("start", "end") for name in "abc"}
    assert markers == set(DATES)
