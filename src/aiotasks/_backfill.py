"""Windowed backfill: many dates (or slots) of one chain, a bounded number in flight.

One engine serves ``python -m aiotasks run --from/--to --window N`` and a
scheduler's catch-up. Runs start oldest first; at most ``window`` are in
flight at once, and the next starts as soon as any finishes (a sliding
window, not batches, so one slow date does not hold up the other N-1 lanes).
Inside each run the chain's dependency order is kept as always. A
``max_concurrency`` semaphore shared by every run bounds task bodies across
the whole backfill. ``window=1`` is the date-by-date order of before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ._chain import ChainRun
from ._errors import InvalidConfig

__all__ = ["check_window", "run_window"]

Results = dict[str, dict[str, Any]]


def check_window(window: object) -> int:
    """Validate a window: a whole number >= 1."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidConfig(f"window must be a positive whole number, not {window!r}", window)
    return window


async def run_window(
    runs: Iterable[ChainRun],
    window: int = 1,
    on_done: Callable[[ChainRun, Results], object] | None = None,
) -> list[Results]:
    """Run ``runs`` in order, at most ``window`` at once; their results, in the order given.

    :param runs: runs oldest first (share a ``limit`` semaphore among them to
        bound bodies overall). Taken one at a time, only when a lane is free,
        so a lazy iterable of a long range costs nothing up front.
    :param on_done: called with each run and its results as it finishes.
    """
    check_window(window)
    results: list[Results] = []
    lanes = asyncio.Semaphore(window)

    async def one(index: int, run: ChainRun) -> None:
        try:
            results[index] = await run.run()
            if on_done is not None:
                on_done(run, results[index])
        finally:
            lanes.release()

    iterator = iter(runs)
    async with asyncio.TaskGroup() as group:
        while True:
            await lanes.acquire()
            run = next(iterator, None)
            if run is None:
                break
            results.append({})
            group.create_task(one(len(results) - 1, run), name=f"aiotasks:backfill:{run.date}")
    return results
