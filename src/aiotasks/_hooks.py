"""Run hooks: callbacks that receive each finished run's record.

For everything the library does not do itself: pinging a dead-man's switch
(Healthchecks.io, Sentry Crons), alerting, tracing::

    async def ping(record: aiotasks.RunRecord) -> None:
        if record.task == "report" and record.status == "success":
            async with httpx.AsyncClient() as http:
                await http.get("https://hc-ping.com/<uuid>")

    aiotasks.add_run_hook(ping)

A hook runs after the run's lock is released or its marker written, so it
never holds a lock and never changes a run's outcome: an exception is logged
and swallowed, and each call is bounded by ``HOOK_TIMEOUT`` seconds (then
logged and abandoned; a sync hook runs in a worker thread, which is left to
finish on its own). The run's call returns once its hooks returned or timed
out. When the run itself is cancelled, its hooks run in the background.

Each record also feeds the in-process Prometheus metrics when
``prometheus_client`` is installed (``_metrics``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import anyio.to_thread

from . import _metrics
from ._errors import InvalidConfig
from ._records import Outcome, RunRecord, ending_of, outcome_label

__all__ = [
    "HOOK_TIMEOUT",
    "RunHook",
    "add_run_hook",
    "has_hooks",
    "observe_result",
    "remove_run_hook",
    "report",
]

logger = logging.getLogger("aiotasks.hooks")

#: Seconds a hook may take before it is abandoned (logged).
HOOK_TIMEOUT: Final = 5.0

RunHook: TypeAlias = Callable[[RunRecord], Awaitable[object] | object]

_hooks: list[RunHook] = []
_background: set[asyncio.Task[None]] = set()


def add_run_hook(hook: RunHook) -> None:
    """Call ``hook(record)`` (sync or async) with the :class:`RunRecord` of each finished run.

    Finished means success or failed (any reason), in this process; skips
    have no record. A hook added twice is called twice.
    """
    if not callable(hook):
        raise InvalidConfig(f"a run hook must be callable, not {hook!r}", hook)
    _hooks.append(hook)


def remove_run_hook(hook: RunHook) -> None:
    """Stop calling ``hook``; a hook that was not added is ignored."""
    if hook in _hooks:
        _hooks.remove(hook)


async def _call(hook: RunHook, record: RunRecord) -> None:
    try:
        async with asyncio.timeout(HOOK_TIMEOUT):
            if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
                getattr(hook, "__call__", None)  # noqa: B004
            ):
                await hook(record)  # type: ignore[misc]
            else:
                await anyio.to_thread.run_sync(hook, record, abandon_on_cancel=True)
    except TimeoutError:
        logger.warning("run hook %r took longer than %.0fs for %s %s: abandoned", hook, HOOK_TIMEOUT,
                       record.task, record.date)  # fmt: skip
    except Exception:
        logger.exception("run hook %r failed for %s %s", hook, record.task, record.date)


def has_hooks() -> bool:
    """Whether a hook reads finished runs' records in this process."""
    return bool(_hooks)


def observe_result(task: str, result: Mapping[str, Any], seconds: float) -> None:
    """Feed a finished run that built no :class:`Outcome` (no record, no hook) to the metrics,
    with the label its outcome would have."""
    _metrics.observe_run(task, outcome_label(*ending_of(result)), seconds)


async def report(
    run: Any, outcome: Outcome, started: int, seconds: float, *, background: bool = False
) -> None:
    """Feed a finished run to the metrics and, as its :class:`RunRecord`, to every hook; never raises.

    :param run: the run's ``task_name``, ``date``, ``task_id`` and ``fence``.
    :param started: its start on the server's clock (ms; 0 without a record).
    :param seconds: its time on this host's monotonic clock.
    :param background: don't wait for the hooks (the run is being cancelled).
    """
    _metrics.observe_run(run.task_name, outcome.label, seconds)
    if not _hooks:
        return
    record = outcome.record(run, started, seconds)
    calls = [_call(hook, record) for hook in list(_hooks)]
    if background:
        task = asyncio.get_running_loop().create_task(_gather(calls))
        _background.add(task)
        task.add_done_callback(_background.discard)
        return
    await _gather(calls)


async def _gather(calls: Sequence[Awaitable[None]]) -> None:
    await asyncio.gather(*calls)
