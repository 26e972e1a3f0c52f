"""Chains for the run-record CLI tests (``status`` grid, ``history``, ``metrics``)."""

from __future__ import annotations

import aiotasks
from aiotasks import Run


@aiotasks.task()
async def ok(run: Run) -> None:
    run.result["rows"] = 7


@aiotasks.task()
async def bad(run: Run) -> None:
    raise RuntimeError("upstream returned 503")


@aiotasks.task(recurring=True)
async def odds(run: Run) -> None:
    pass


chain = [ok, bad, odds]


def wide(count: int) -> list[aiotasks.Task]:
    """``count`` independent tasks ``w0``, ``w1``, ..."""

    async def body(run: Run) -> None:
        pass

    return [aiotasks.Task(body, name=f"w{i}") for i in range(count)]


fifty = wide(50)
