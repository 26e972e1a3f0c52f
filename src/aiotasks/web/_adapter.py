"""The one place the console calls the fleet controls (issue 20's API), so that a change of
their signatures is fixed here alone. Every function is the control itself, keyword style."""

from __future__ import annotations

from collections.abc import Sequence

from aiotasks import _cancel_run, _controls
from aiotasks._chain import Chain
from aiotasks._schedule import Schedule
from aiotasks._store import AnyRedis
from aiotasks._trigger import Triggered, trigger

__all__ = ["cancel", "clear", "pause", "paused_tasks", "resume", "run_now"]


async def pause(kind: str, name: str, *, redis: AnyRedis | None, namespace: str | None) -> bool:
    """Pause a schedule (``kind`` ``"schedule"``) or a task (``"task"``); True if this call paused it."""
    act = _controls.pause_schedule if kind == "schedule" else _controls.pause_task
    return await act(name, redis=redis, namespace=namespace)


async def resume(kind: str, name: str, *, redis: AnyRedis | None, namespace: str | None) -> bool:
    """Resume a schedule or a task; True if this call resumed it."""
    act = _controls.resume_schedule if kind == "schedule" else _controls.resume_task
    return await act(name, redis=redis, namespace=namespace)


async def paused_tasks(
    task_ids: Sequence[str], *, redis: AnyRedis | None, namespace: str | None
) -> dict[str, str]:
    """``{task: "host:pid|ms"}`` of the paused ones."""
    return await _controls.paused_tasks(task_ids, redis=redis, namespace=namespace)


async def clear(
    chain: Chain,
    key: str,
    tasks: Sequence[str],
    *,
    downstream: bool,
    redis: AnyRedis | None,
    namespace: str | None,
) -> list[str]:
    """Remove the success markers of ``tasks`` (and with ``downstream`` their dependents') for ``key``."""
    return await _controls.clear(
        chain, key, tasks=tasks, downstream=downstream, redis=redis, namespace=namespace
    )


async def cancel(task: str, key: str, *, redis: AnyRedis | None, namespace: str | None) -> bool:
    """Ask the holder of ``task``'s lock for ``key`` to cancel its run; False: nothing runs."""
    return await _cancel_run.cancel(task, key, redis=redis, namespace=namespace)


async def run_now(
    schedule: Schedule,
    key: str | None,
    *,
    force: bool,
    expires: float,
    redis: AnyRedis | None,
    namespace: str | None,
) -> Triggered:
    """Ask the serving fleet to run ``schedule`` for ``key`` now; returns once a replica took it.

    :raises TriggerExpired: no replica took it within ``expires`` seconds.
    """
    return await trigger(schedule, key=key, force=force, expires=expires, redis=redis, namespace=namespace)
