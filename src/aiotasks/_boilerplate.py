"""The seed's ``_task_boilerplate``, async, atomic and token-safe.

Differences from the seed, all invisible to code written against it:

* the marker check and the lock are one script (one round trip), so a worker
  can no longer pass the check while another finishes in between;
* :func:`release_lock` compares the token before deleting, so a run whose lock
  expired can't delete the next holder's lock; :func:`finish_task` writes the
  marker and releases in one step;
* a run costs two round trips (acquire, finish) and a skip one, instead of four;
* cancellation during the acquire leaves no lock behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from . import _metrics
from ._constants import REDIS_LOCK_TIMEOUT, REDIS_SUCCESS_TTL, Reason, Status
from ._context import report_run, resolve, store_of
from ._errors import InvalidConfig, RedisUnavailable
from ._hooks import report
from ._keys import TaskKeys, check_task_name, parse_run_key, task_keys
from ._records import Outcome, retention_ms
from ._store import Acquired, AnyRedis, Store, skip_reason

__all__ = [
    "check_success_ttl",
    "finish_task",
    "new_result",
    "new_task_id",
    "release_lock",
    "task_boilerplate",
    "ttl_ms",
]

logger = logging.getLogger("aiotasks.boilerplate")


#: Every pair of base32 characters (RFC 4648's alphabet, lower case), by its 10-bit value.
_PAIRS: Final = [
    a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"
]


#: ``Status.PENDING.value``, read once: an enum member's ``.value`` is two Python calls.
_PENDING: Final = Status.PENDING.value


def new_task_id() -> str:
    """Eight random characters (40 bits, base32) identifying one run; also the lock's value.

    From ``random`` (seeded from the OS, and again in a forked child) rather
    than ``os.urandom``: a token only has to differ from other runs' tokens,
    and this costs a run a quarter as much.
    """
    bits = random.getrandbits(40)
    return _PAIRS[bits >> 30] + _PAIRS[bits >> 20 & 1023] + _PAIRS[bits >> 10 & 1023] + _PAIRS[bits & 1023]


def new_result(task_name: str, date: str, task_id: str | None) -> dict[str, Any]:
    """The seed's result dict, status ``pending`` (``task_id`` is None for a task that never ran)."""
    return {
        "task": task_name,
        "date": date,
        "task_id": task_id,
        "status": _PENDING,
        "errors": [],
        "warnings": [],
        "reason": None,
    }


def check_success_ttl(seconds: object) -> int:
    """Validate a success-marker TTL: a positive whole number of seconds."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise InvalidConfig(
            f"success_ttl must be a positive whole number of seconds, not {seconds!r}", seconds
        )
    return seconds


def ttl_ms(seconds: float | None, default: float, name: str = "lock_timeout") -> int:
    """Validate a TTL in seconds and convert it to whole milliseconds."""
    value = default if seconds is None else seconds
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidConfig(f"{name} must be a positive number of seconds, not {value!r}", value)
    return max(1, round(value * 1000))


async def task_boilerplate(
    task_name: str,
    date_string: str | dt.date | None = None,
    skip_success_check: bool = False,
    *,
    redis: AnyRedis | None = None,
    lock_timeout: float | None = None,
    retention: float | str | None = None,
) -> tuple[AnyRedis, str, str, dict[str, Any], str]:
    """Start a run the seed's way: check the marker and take the lock.

    Returns ``(conn, lock_key, success_key, result, task_id)``. When
    ``result["status"]`` is ``"skipped"`` (reason ``already_completed`` or
    ``lock_held``) nothing is held and the caller returns ``result``. Otherwise
    the lock is held with ``task_id`` as its value for ``lock_timeout`` seconds
    (default 300), and the caller must end the run with :func:`finish_task`
    (success) or :func:`release_lock` (failure, or a recurring task)::

        conn, lock_key, success_key, result, task_id = await task_boilerplate("task_x", date)
        if result["status"] == "skipped":
            return result
        try:
            ...  # the work
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
            return result
        finally:
            await release_lock(conn, lock_key, task_id)  # no-op once finished

    This is the low-level step: it starts no background work, so a body longer
    than ``lock_timeout`` loses its lock. The :func:`aiotasks.task` decorator
    renews the lock and does all of the above for you.

    :param task_name: the task's name, from ``[A-Za-z0-9_.-]``.
    :param date_string: ``YYYYMMDD`` (or a ``datetime.date``), or a schedule's
        slot ``YYYYMMDDTHHMM[SS]``; today when omitted.
    :param skip_success_check: for recurring tasks: ignore the marker, still respect the lock.
    :param redis: any ``redis.asyncio`` client; else the enclosing chain's, else the default.
    :param lock_timeout: the lock's TTL in seconds (``REDIS_LOCK_TIMEOUT`` = 300).
    :param retention: how long the run's record is kept (see :func:`aiotasks.task`).

    The run leaves a record like a decorated task's: :func:`finish_task` and
    :func:`release_lock` write its outcome from ``result`` as it is when they
    are called (a ``release_lock`` after ``result["status"] = "success"`` is a
    recurring task's success; one while it is ``pending`` was interrupted).
    The result dict keeps exactly the seed's keys; the fencing token is
    :attr:`aiotasks.Run.fence`, for decorated tasks.

    Inside a chain, the chain learns the name, keys, ``task_id`` and result
    dict used here (see :class:`~aiotasks._context.NodeReport`), whatever the
    chain entry's ``id``.

    :raises InvalidInput: ``InvalidTaskName``, ``InvalidDate`` or ``InvalidConfig``, before
        anything is sent (``InvalidConfig`` also when no asyncio event loop runs: trio).
    :raises RedisUnavailable: Redis could not be reached; nothing is left locked
        (or, if Redis vanished mid-acquire, the lock expires within ``lock_timeout``).
    """
    name = check_task_name(task_name)
    date = parse_run_key(date_string)
    lock_ms = ttl_ms(lock_timeout, REDIS_LOCK_TIMEOUT)
    keep = retention_ms(retention)
    store, namespace, force = resolve(redis)
    keys = task_keys(name, date, namespace=namespace, cluster=store.cluster)
    task_id = new_task_id()
    result = new_result(name, date, task_id)
    report_run(name, keys, task_id, result)
    outcome = await store.acquire(
        keys, task_id, lock_ms, check_success=not (skip_success_check or force), retention_ms=keep
    )
    if not isinstance(outcome, Acquired):
        result["status"] = Status.SKIPPED.value
        reason = skip_reason(outcome)
        result["reason"] = reason.value
        _metrics.observe_skip(name, reason.value)
    else:
        _open(
            task_id,
            _OpenRun(
                name, date, task_id, result, keep, outcome.fence, outcome.started, time.monotonic(),
                store, keys.lock,
            ),
        )  # fmt: skip
        _metrics.observe_start(name)
    return store.client, keys.lock, keys.success, result, task_id


#: Most seed-style runs remembered between their acquire and their end (a run
#: that never calls finish_task or release_lock is forgotten, oldest first).
MAX_OPEN_RUNS: Final = 10_000


@dataclass(frozen=True, slots=True)
class _OpenRun:
    """A seed-style run between task_boilerplate and its finish/release: what its record needs."""

    task_name: str
    date: str
    task_id: str
    result: dict[str, Any]
    retention_ms: int
    fence: int
    started: int
    clock: float
    store: Store
    lock_key: str

    def outcome(self, result: dict[str, Any] | None = None, *, status: Status | None = None) -> Outcome:
        """The outcome ``result`` (default: the run's own dict) describes, ending now."""
        seconds = time.monotonic() - self.clock
        return Outcome.of(
            self.result if result is None else result,
            self.retention_ms,
            status=status,
            started=self.started,
            seconds=seconds,
        )


_open_runs: OrderedDict[str, _OpenRun] = OrderedDict()


def _open(task_id: str, run: _OpenRun) -> None:
    _open_runs[task_id] = run
    while len(_open_runs) > MAX_OPEN_RUNS:
        _open_runs.popitem(last=False)


async def _ended(task_id: str, outcome: Outcome | None) -> None:
    run = _open_runs.pop(task_id, None)
    if run is not None and outcome is not None:
        await report(run, outcome, run.started, time.monotonic() - run.clock)


async def settle_open_run(task_id: str, result: dict[str, Any]) -> None:
    """Record the outcome of a seed-style run that ended without :func:`finish_task` or :func:`release_lock`.

    The seed's own pattern writes its marker and deletes its lock by hand
    (``l.set(success_key, ...)``, ``l.delete(lock_key)``), so the library
    never hears how the run ended. The chain calls this once the function has
    returned (or raised: ``result`` is then the failed result the chain
    reports): if the run ``task_id`` is still open, one RELEASE writes its
    outcome from ``result`` (and gives back its lock, should the function have
    left it held); otherwise nothing is sent. Never raises for Redis trouble:
    the record then reads ``abandoned`` once the lock is gone.
    """
    run = _open_runs.get(task_id)
    if run is None:
        return
    outcome = run.outcome(result)
    try:
        await run.store.release(run.lock_key, task_id, outcome)
    except RedisUnavailable as exc:
        logger.warning("%s %s: could not record the run's outcome (%s)", run.task_name, run.date, exc)
    await _ended(task_id, outcome)


async def release_lock(conn: AnyRedis, lock_key: str, task_id: str) -> bool:
    """Delete ``lock_key`` only while it still holds ``task_id``.

    The run's record (see :func:`task_boilerplate`) gets its outcome from
    the result dict, unless :func:`finish_task` already wrote it.

    :returns: True if it did; False if the lock had expired or belongs to
        another run (then nothing is deleted).
    """
    run = _open_runs.get(task_id)
    outcome = run.outcome() if run is not None else None
    released = await store_of(conn).release(lock_key, task_id, outcome)
    await _ended(task_id, outcome)
    return released


async def finish_task(
    conn: AnyRedis,
    lock_key: str,
    success_key: str,
    task_id: str,
    success_ttl: int = REDIS_SUCCESS_TTL,
) -> bool:
    """Write the success marker and release the lock, in one atomic step.

    The seed's ``l.set(success_key, "completed", ex=REDIS_SUCCESS_TTL)`` plus
    ``l.delete(lock_key)``, made token-safe: if the lock is no longer this
    run's, nothing is written.

    :returns: True if the marker is recorded; False if the lock was lost first.
    """
    keys = TaskKeys(lock_key, success_key)
    run = _open_runs.get(task_id)
    outcome = run.outcome(status=Status.SUCCESS) if run is not None else None
    finished = await store_of(conn).finish(keys, task_id, check_success_ttl(success_ttl), outcome)
    if outcome is not None and not finished:
        outcome = Outcome(outcome.retention_ms, Status.FAILED.value, Reason.LOCK_LOST.value, outcome.attempts)
    await _ended(task_id, outcome)
    return finished
