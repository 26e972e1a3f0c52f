"""Cancel a running run from any host (``aiotasks cancel``).

A request is one key next to the run's lock, under the same hash tag
(``_keys.cancel_key``)::

    cancel:{task}:DATE    'host:pid|ms|token'    TTL: the lock's TTL left

written by one script (``CANCEL``) only if the lock is held: no lock, nothing
written, and :func:`cancel` says nothing runs. ``token`` is the holder's (its
run's ``task_id``), so the request only ever reaches the run it was written
for: if that run ends first and another takes the date, the new holder ignores
it, and the key expires with the lock it was written for.

The holder, wherever it runs, learns of the request from the renewal it sends
every ``lock_timeout / 3`` anyway (the ``RENEW`` script reads the key and
answers with the requester): no polling, no extra round trip, and so the run
stops within one renewal interval (plus the body's own time to stop). It
stops renewing, cancels its body as for a lost lock (an ``async`` body at its
next ``await``; a sync body sees :attr:`aiotasks.Run.stop_requested`), records
the run ``failed``, reason ``cancelled``, error ``cancelled by host:pid``
(``cancelled_by`` in its result dict and record), and releases the lock. In a
chain its dependents do not start (``dependency_failed``, ``blocked_by`` the
cancelled task). A body that ignores the cancellation (swallows it and
returns, or runs on) ends as a lost lock: renewals stopped, so the lock frees
within one ``lock_timeout``, and the run is recorded ``lock_lost``, never a
success.

Only runs that renew their lock can be cancelled: decorated tasks
(:func:`aiotasks.task`, every run of ``run``, ``serve`` and a chain of them).
A seed-style body using ``task_boilerplate`` never renews; a request for it
just expires with its lock.

What is lost when a process dies: a requester that dies after writing leaves
its request to be delivered (it was asked for); a holder that dies leaves a
request that expires with its lock (at most the lock's TTL), and the next run
of the date, another token, never sees it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from typing import Final

from ._constants import REDIS_LOCK_TIMEOUT
from ._context import resolve
from ._errors import CancelTimeout, InvalidConfig
from ._keys import cancel_key, check_namespace, check_task_name, parse_run_key, task_keys
from ._records import HOST
from ._store import AnyRedis

__all__ = ["cancel"]

#: First pause (s) between two reads of the lock while ``wait`` waits; doubled up to ``_POLL_MAX``.
_POLL_MIN: Final = 0.02
_POLL_MAX: Final = 0.5


def _me() -> str:
    return f"{HOST}:{os.getpid()}"


async def cancel(
    task_id: str,
    date: str | dt.date,
    *,
    redis: AnyRedis | None = None,
    namespace: str | None = None,
    wait: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109  (bounds the wait only, not the request: CONTROLS.md)
) -> bool:
    """Ask whoever runs ``task_id`` for ``date``, on any host, to cancel that run.

    ::

        if await aiotasks.cancel("task_sync_users", "20261125", redis=client, wait=True):
            print("stopped; the lock is free")

    The holder cancels its body within one renewal interval (``lock_timeout /
    3``) and records the run ``failed``, reason ``cancelled``, with who asked
    (``host:pid`` of this process); see the module's docstring for a body that
    ignores it. Asking twice is harmless: the first request stands.

    :param task_id: the task's name (what its lock key is built from).
    :param date: the run's key: ``YYYYMMDD`` or a slot ``YYYYMMDDTHHMM[SS]``.
    :param redis: the client (as :func:`run_chain`).
    :param namespace: the key prefix (default ``AIOTASKS_NAMESPACE``).
    :param wait: also wait until that run has stopped and released its lock
        (or the lock expired); the lock may be free, or taken by another run.
    :param timeout: with ``wait``, the most seconds to wait (None: until it stops).
    :returns: True if a run held the lock and the request was delivered (with
        ``wait``: and that run has stopped); False if nothing runs for
        ``(task_id, date)``: nothing is written.
    :raises InvalidTaskName, InvalidDate, InvalidConfig: bad input, before anything is written.
    :raises CancelTimeout: with ``wait``, the run still holds its lock after ``timeout``.
    :raises RedisUnavailable: Redis failed.
    """
    name = check_task_name(task_id)
    key = parse_run_key(date)
    if namespace is not None:
        check_namespace(namespace)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidConfig(f"timeout must be a number of seconds above 0, not {timeout!r}", timeout)
    store, bound, _ = resolve(redis)
    keys = task_keys(name, key, namespace=bound if namespace is None else namespace, cluster=store.cluster)
    request = cancel_key(keys.lock)
    assert request is not None  # task_keys builds lock keys of the one shape
    code, holder, _, _ = await store.cancel(keys.lock, request, _me(), REDIS_LOCK_TIMEOUT * 1000)
    if code == 0:
        return False
    if wait:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _POLL_MIN
        while (await store.status(keys)).holder == holder:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise CancelTimeout(
                    f"{name} {key}: run {holder} still holds its lock after {timeout:g} s", name, key
                )
            # The requester's own wait, not the holder's: the run learns of the request from its renewal.
            await asyncio.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, _POLL_MAX)
    return True
