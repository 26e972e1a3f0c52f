"""Fleet controls: pause and resume a schedule or a task, clear (re-run) a date.

Every control is a key in Redis under the namespace (see ``_keys``), so every
replica honours it, whichever host set it:

* a schedule's ``paused`` key (:func:`pause_schedule`): each serving
  :class:`~aiotasks.Scheduler` reads it at each slot, in the request the slot
  already makes, and records the slot ``paused`` instead of firing it;
* a task's ``paused`` key (:func:`pause_task`): the acquire script every run
  of the task sends (decorator, ``task_boilerplate``, a chain, ``serve``,
  ``run``) checks it, so a paused task is skipped with reason ``paused``
  everywhere, with no extra round trip; its dependents in a chain are skipped
  with ``dependency_paused``. A run already in progress is not touched;
* a task's success marker (:func:`clear`): removing it makes the next run (or
  ``trigger``) of that date run the task again.

A pause key holds ``host:pid|ms`` (who paused it, and when, ms since the epoch
on that host's clock) and has no TTL: it lasts until resumed, or as long as
Redis keeps its data (a restart without persistence forgets it, and the paused
things run again). Setting it is ``SET NX``, removing it ``DEL``: a control
that is already in effect changes nothing and says so (False).

Bad input (an unsafe name, a bad date, a task not in the chain) raises the
typed errors before anything is written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ._chain import Chain, resolve_chain
from ._clock import current_clock
from ._context import resolve
from ._errors import InvalidChain
from ._keys import (
    check_namespace,
    check_schedule_name,
    check_task_name,
    parse_run_key,
    paused_key,
    schedule_keys,
    task_keys,
)
from ._records import HOST
from ._store import AnyRedis, Store
from ._task import Task

__all__ = [
    "clear",
    "dependents_of",
    "pause_schedule",
    "pause_task",
    "paused_tasks",
    "resume_schedule",
    "resume_task",
]


def _door(redis: AnyRedis | None, namespace: str | None) -> tuple[Store, str | None]:
    """The store and namespace of a control call (as :func:`aiotasks.trigger`'s)."""
    if namespace is not None:
        check_namespace(namespace)
    store, bound, _ = resolve(redis)
    return store, bound if namespace is None else namespace


def _who() -> str:
    """A pause key's value: ``host:pid|ms``, who paused it and when."""
    return f"{HOST}:{os.getpid()}|{round(current_clock().now().timestamp() * 1000)}"


async def pause_schedule(name: str, *, redis: AnyRedis | None = None, namespace: str | None = None) -> bool:
    """Pause the schedule ``name`` on every serving replica.

    While paused no replica fires its slots; each slot that passes is recorded
    ``paused`` once (``history``, ``status``, the grid) and is not caught up
    on resume. A trigger (run now) is still served: it is an explicit ask.

    ::

        changed = await aiotasks.pause_schedule("nightly", redis=client)

    :param name: the schedule's name (``Schedule(..., name=)``; by default its
        task names joined by ``,``). Not checked against any running scheduler:
        a name no replica serves pauses nothing.
    :param redis: the client (as :func:`run_chain`).
    :param namespace: the schedulers' key prefix (default ``AIOTASKS_NAMESPACE``).
    :returns: True if this call paused it, False if it was paused already
        (nothing written).
    :raises InvalidSchedule: ``name`` is not a valid schedule name (nothing written).
    """
    check_schedule_name(name)
    store, namespace = _door(redis, namespace)
    return await store.set_new(schedule_keys(name, namespace=namespace).paused, _who())


async def resume_schedule(name: str, *, redis: AnyRedis | None = None, namespace: str | None = None) -> bool:
    """Lift a schedule's pause: the next slot after this runs (those that passed do not).

    :returns: True if this call resumed it, False if it was not paused.
    :raises InvalidSchedule: ``name`` is not a valid schedule name (nothing written).
    """
    check_schedule_name(name)
    store, namespace = _door(redis, namespace)
    return await store.delete(schedule_keys(name, namespace=namespace).paused)


async def pause_task(task_id: str, *, redis: AnyRedis | None = None, namespace: str | None = None) -> bool:
    """Pause the task ``task_id`` everywhere: every attempt to start it is skipped with reason ``paused``.

    The acquire script of every run checks the pause (no extra request), so it
    holds for the decorator, ``task_boilerplate``, chains, ``serve`` and
    ``run`` on every host. Dependents in a chain are skipped with reason
    ``dependency_paused``. A run already in progress finishes (to stop it, see
    cancel); a date already completed stays completed (its dependents run).

    :param task_id: the task's name, as its locks use it (a chain entry's ``id``
        is its task's name unless the function calls ``task_boilerplate`` with another).
    :returns: True if this call paused it, False if it was paused already (nothing written).
    :raises InvalidTaskName: ``task_id`` is not a valid task name (nothing written).
    """
    check_task_name(task_id)
    store, namespace = _door(redis, namespace)
    return await store.set_new(paused_key(task_id, namespace=namespace, cluster=store.cluster), _who())


async def resume_task(task_id: str, *, redis: AnyRedis | None = None, namespace: str | None = None) -> bool:
    """Lift a task's pause: its next attempt anywhere runs as usual.

    :returns: True if this call resumed it, False if it was not paused.
    :raises InvalidTaskName: ``task_id`` is not a valid task name (nothing written).
    """
    check_task_name(task_id)
    store, namespace = _door(redis, namespace)
    return await store.delete(paused_key(task_id, namespace=namespace, cluster=store.cluster))


async def paused_tasks(
    task_ids: Sequence[str], *, redis: AnyRedis | None = None, namespace: str | None = None
) -> dict[str, str]:
    """Which of ``task_ids`` are paused, and by whom: ``{task_id: "host:pid|ms"}`` (for status views).

    One round trip (``MGET``; on Redis Cluster one ``GET`` per task, sent together).

    :raises InvalidTaskName: a name is not a valid task name.
    """
    names = [check_task_name(task_id) for task_id in task_ids]
    store, namespace = _door(redis, namespace)
    found = await store.get_many([paused_key(n, namespace=namespace, cluster=store.cluster) for n in names])
    return {name: who for name, who in zip(names, found, strict=True) if who is not None}


async def clear(
    chain: Chain | Sequence[Mapping[str, Any] | Task],
    date: str | dt.date,
    *,
    tasks: Sequence[str] | None = None,
    downstream: bool = False,
    redis: AnyRedis | None = None,
    namespace: str | None = None,
) -> list[str]:
    """Remove success markers of ``chain``'s tasks for ``date``, so the next run or trigger repeats them.

    The grid (``status``) then shows those dates ``pending``; ``history`` keeps
    the runs that were cleared. A run in progress is not touched: its success
    writes the marker again.

    ::

        cleared = await aiotasks.clear(chain, "20261124", tasks=["load"], downstream=True, redis=client)

    :param chain: what :func:`run_chain` accepts.
    :param date: the run key: ``YYYYMMDD`` or a slot ``YYYYMMDDTHHMM[SS]``.
    :param tasks: the chain entries' ids to clear (default: every task of the chain).
    :param downstream: also clear every task that depends on them, directly or not.
    :returns: the ids whose marker existed and was removed, in chain order
        (the others had none: never run, failed, or expired).
    :raises InvalidDate, InvalidChain: a bad date, a task not in the chain
        (nothing written).
    """
    found = resolve_chain(chain)
    key = parse_run_key(date)
    chosen = set(found.nodes) if tasks is None else set(_known(found, tasks))
    if downstream:
        chosen = dependents_of(found, chosen)
    store, namespace = _door(redis, namespace)
    nodes = [node for node in found if node.id in chosen]
    keys = [task_keys(n.task_name, key, namespace=namespace, cluster=store.cluster) for n in nodes]
    # Sent together: the door coalesces them into one round trip.
    removed = await asyncio.gather(*(store.clear(k) for k in keys))
    return [node.id for node, gone in zip(nodes, removed, strict=True) if gone]


def _known(chain: Chain, tasks: Sequence[str]) -> list[str]:
    if isinstance(tasks, str):  # a bare name would be read as its letters
        tasks = [tasks]
    for name in tasks:
        if name not in chain.nodes:
            raise InvalidChain(f"no task {name!r} in the chain", name)
    return list(tasks)


def dependents_of(chain: Chain, chosen: set[str]) -> set[str]:
    """``chosen`` and everything that depends on it, directly or not."""
    found = set(chosen)
    for name in chain.order:  # dependencies before their dependents
        if any(dep in found for dep in chain.nodes[name].depends_on):
            found.add(name)
    return found
