"""An example chain shaped like the seed's scheduler.

* ``task_contributions_analysis`` is written the seed's way, with
  ``task_boilerplate`` and its try/except/finally, made async;
* ``task_rag_indexing`` depends on it and uses the ``@aiotasks.task`` decorator,
  which does all of that for you (plus lock renewal and cancellation safety);
* ``task_odds`` is a recurring task (no success marker) with a plain ``def``
  body, which runs in a worker thread.

Run it with ``python -m aiotasks run examples/seed_chain.py:chain``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiotasks
from aiotasks import TaskError, finish_task, release_lock, task_boilerplate

logger = logging.getLogger("examples.seed_chain")

CONTRIBUTIONS = ["improve docs", "fix typo", "", "add tests", "refactor lock"]


async def task_contributions_analysis(date_string: str | None = None) -> dict[str, Any]:
    """Analyse the day's contributions (seed style: the boilerplate by hand)."""
    conn, lock_key, success_key, result, task_id = await task_boilerplate(
        "task_contributions_analysis", date_string
    )
    if result["status"] == "skipped":
        return result

    result["contributions_processed"] = 0
    result["contributions_validated"] = 0
    result["contributions_flagged"] = 0
    try:
        for contribution in CONTRIBUTIONS:
            await asyncio.sleep(0.01)  # stands for real I/O
            result["contributions_processed"] += 1
            if contribution:
                result["contributions_validated"] += 1
            else:
                result["contributions_flagged"] += 1
                result["warnings"].append("empty contribution flagged")

        if result["errors"] and result["contributions_validated"] == 0:
            result["status"] = "failed"
            raise TaskError("failed", f"All items failed: {len(result['errors'])} errors")

        result["status"] = "success"
        await finish_task(conn, lock_key, success_key, task_id)  # marker + release, atomically
        return result
    except TaskError:
        raise
    except Exception as exc:
        logger.exception("unexpected error")
        result["status"] = "failed"
        if not result["errors"]:
            result["errors"].append(f"Unexpected error: {exc}")
        raise TaskError("failed", f"Unexpected error: {exc}", result) from exc
    finally:
        await release_lock(conn, lock_key, task_id)  # token-checked: a no-op after finish_task


@aiotasks.task(depends_on=["task_contributions_analysis"])
async def task_rag_indexing(run: aiotasks.Run) -> None:
    """Index what the analysis validated (decorator style)."""
    run.result["documents_indexed"] = 0
    for _ in range(3):
        await asyncio.sleep(0.01)
        run.result["documents_indexed"] += 1


@aiotasks.task(recurring=True, lock_timeout=60)
def task_odds(run: aiotasks.Run) -> None:
    """Refresh odds; recurring, so it may run many times a day (never twice at once)."""
    run.result["odds_refreshed"] = 3


chain: list[Any] = [
    {"id": "task_contributions_analysis", "func": task_contributions_analysis, "depends_on": []},
    {"id": "task_rag_indexing", "func": task_rag_indexing, "depends_on": ["task_contributions_analysis"]},
    {"id": "task_odds", "func": task_odds, "depends_on": []},
]
