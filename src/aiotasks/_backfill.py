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
from collections.abc import Callable, Sequence
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
    runs: Sequence[ChainRun],
    window: int = 1,
    on_done: Callable[[ChainRun, Results], object] | None = None,
) -> list[Results]:
    """Run ``runs`` in order, at most ``window`` at once; their results, in the order given.

    :param runs: prepared runs (share a ``limit`` semaphore among them to bound
        bodies overall), oldest first.
    :param on_done: called with each run and its results as it finishes.
    """
    check_window(window)
    results: list[Results] = [{} for _ in runs]
    lanes = asyncio.Semaphore(window)

    async def one(index: int, run: ChainRun) -> None:
        try:
            results[index] = await run.run()
            if on_done is not None:
                on_done(run, results[index])
        finally:
            lanes.release()

    async with asyncio.TaskGroup() as group:
        for index, run in enumerate(runs):
            await lanes.acquire()
            group.create_task(one(index, run), name=f"aiotasks:backfill:{run.date}")
    return results
