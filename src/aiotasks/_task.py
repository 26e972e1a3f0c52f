"""The high-level task API: ``@task`` makes a body safe to run from many workers.

A decorated body runs at most once per (task, date) across every process that
shares the Redis, never twice at the same time, and only its success writes
the marker. The decorator does what the seed's try/except/finally did by hand,
plus what it could not:

* the lock is renewed every ``lock_timeout / 3`` seconds while the body runs.
  Renewal resets the TTL to ``lock_timeout`` (never adds to it), so the key of
  a worker that dies frees within ``lock_timeout``;
* if a renewal finds the lock gone or taken, or can't reach Redis before the
  lock's TTL would have run out, the lock is *lost*: the body is cancelled (an
  ``async`` body at its next ``await``; a sync body sees
  :attr:`Run.stop_requested` and is waited for), the result is ``failed`` with
  reason ``lock_lost``, and no marker is written. Cancelling is the safe
  choice: another worker may already be running the same task;
* a run can be cancelled from any host (``aiotasks cancel``, :func:`aiotasks.cancel`):
  the request rides on the next renewal's reply, and the body is cancelled as
  for a lost lock; the run is ``failed`` with reason ``cancelled``, who asked
  in :attr:`Run.cancelled_by`, its record and its error, and the lock is
  released. Renewals stop at once, so a body that ignores the cancellation
  (swallows it and returns, or runs on past the lock's TTL) ends as a lost
  lock (``lock_lost``), never as a success;
* whatever the body raises fails the run (``SystemExit``, ``KeyboardInterrupt``
  and a ``CancelledError`` the body raises itself included): status
  ``failed``, the exception named in ``errors``. Only a real cancellation of
  the run (``Task.cancel()``, a timeout or cancel scope around the call, a
  cancelled chain) cancels it, and it releases the lock, in the cancelled
  coroutine, before it propagates; a run cancelled after its body returned
  still records its success;
* optional ``timeout`` per attempt and ``retries`` with exponential backoff and
  jitter. Retries happen while the lock is held, so other workers wait rather
  than race the retry;
* bodies that share a client never ask its pool for more connections than it
  can serve: on a client whose pool raises "Too many connections" when it runs
  out, at most ``max_connections`` minus the door's own connections bodies run
  at once (one connection each); the others wait for a slot, lock held and
  renewed. A pool that waits for a free connection by itself
  (``BlockingConnectionPool``, the CLI's) is left to do so.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import inspect
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Protocol, TypeAlias, TypeVar, overload

import anyio.to_thread

from . import _metrics
from ._boilerplate import check_success_ttl, new_result, new_task_id, ttl_ms
from ._cancel import shielded
from ._constants import REDIS_LOCK_TIMEOUT, REDIS_SUCCESS_TTL, SUCCESS_MARKER, Reason, Status
from ._context import report_run, resolve
from ._errors import InvalidConfig, RedisUnavailable, TaskError
from ._hooks import has_hooks, observe_result, report
from ._keys import TaskKeys, cancel_key, check_task_name, is_slot_key, parse_run_key, task_keys
from ._records import CANCELLED_BY, Outcome, RunForms, retention_ms
from ._store import Acquired, AnyRedis, Store, skip_reason

__all__ = [
    "AsyncBody",
    "Run",
    "SyncBody",
    "Task",
    "backoff",
    "check_attempt_options",
    "describe_error",
    "is_cancellation",
    "run_in_thread",
    "task",
    "timeout_message",
]

logger = logging.getLogger("aiotasks.task")

#: The kinds of run a task keeps request formats for (a few namespaces, dates and slots).
_MAX_FORMS: Final = 64
#: The longest pause between two retries, whatever the backoff says.
MAX_RETRY_DELAY: Final = 60.0
# The result dict's values a run writes every time, read once (an enum member's ``.value``
# costs a descriptor call).
_SUCCESS: Final = Status.SUCCESS.value
_SKIPPED: Final = Status.SKIPPED.value

T = TypeVar("T")


class Run:
    """What a task body receives: the run's identity, its result dict and its client.

    :ivar task_name: the task's name.
    :ivar date: the date being processed, ``YYYYMMDD``.
    :ivar task_id: this run's id, also the lock's value.
    :ivar result: the result dict; add your own counters to it, as in the seed.
    :ivar redis: the client the run uses, for the body's own commands.
    :ivar lock_key: the lock's key.
    :ivar success_key: the success marker's key.
    :ivar attempt: 1 for the first attempt, 2 for the first retry, ...
    :ivar fence: the fencing token: larger than that of every earlier run of
        this (task, date), on any host. Pass it to a store the body writes to
        so that it rejects writes of a run whose lock expired meanwhile
        (``UPDATE ... WHERE fence < :fence``); 0 when records are off.
    """

    __slots__ = (
        "_cancelled_by",
        "_lock_lost",
        "_stop",
        "attempt",
        "date",
        "fence",
        "lock_key",
        "redis",
        "result",
        "success_key",
        "task_id",
        "task_name",
    )

    def __init__(
        self,
        task_name: str,
        date: str,
        task_id: str,
        result: dict[str, Any],
        redis: AnyRedis,
        keys: TaskKeys,
    ) -> None:
        self.task_name = task_name
        self.date = date
        self.task_id = task_id
        self.result = result
        self.redis = redis
        self.lock_key = keys.lock
        self.success_key = keys.success
        self.attempt = 1
        self.fence = 0
        self._lock_lost = False
        self._stop = False
        self._cancelled_by: str | None = None

    @property
    def lock_lost(self) -> bool:
        """True once the lock was found gone or taken: the run can no longer succeed."""
        return self._lock_lost

    @property
    def cancelled_by(self) -> str | None:
        """``host:pid`` of who asked to cancel this run (``aiotasks cancel``), else None."""
        return self._cancelled_by

    @property
    def stop_requested(self) -> bool:
        """True once the run is cancelled (also from another host), timed out or lost its lock.

        An ``async`` body is cancelled anyway; a sync body (in a worker thread,
        which can't be interrupted) should check this between units of work and
        return early. The run is failed whatever the body returns.
        """
        return self._stop

    def _request_stop(self) -> None:
        self._stop = True

    def __repr__(self) -> str:
        return f"<Run {self.task_name} {self.date} task_id={self.task_id} attempt={self.attempt}>"


class AsyncBody(Protocol):
    """``async def body(run: Run) -> object``; the return value is ignored."""

    def __call__(self, run: Run, /) -> Awaitable[object]: ...


class SyncBody(Protocol):
    """``def body(run: Run) -> object``, run in a worker thread; the return value is ignored."""

    def __call__(self, run: Run, /) -> object: ...


Body: TypeAlias = AsyncBody | SyncBody


class _Lease:
    """Keeps a held lock alive while a body runs, and notices when it is lost.

    No task exists between renewals: a timer creates one when a renewal is
    due, so a run shorter than ``lock_timeout / 3`` costs nothing here.
    Nearly every run ends long before its first renewal is due, so a timer of
    its own (pushed on the loop's heap, then cancelled) would cost the run more
    than the rest of its lease: the first renewals of the runs of one client
    due within ``lock_timeout / 3 * _EARLY`` of each other share one loop
    timer, which fires at the start of that stretch (early is safe: a renewal
    resets the TTL to ``lock_timeout``, never adds to it). The lease itself is
    that timer's entry.

    Each renewal also reads the run's cancel-request key (same script, same
    round trip): a request found there stops the lease and cancels the body as
    a lost lock does, with :attr:`Run.cancelled_by` set so the run tells the two apart.
    """

    __slots__ = (
        "_deadline",
        "_on_lost",
        "_renewal",
        "_run",
        "_slot",
        "_stopped",
        "_store",
        "_timer",
        "_ttl_ms",
        "_valid_until",
    )

    def __init__(
        self, store: Store, run: Run, ttl: int, on_lost: Callable[[], object], *, since: float
    ) -> None:
        self._store = store
        self._run = run
        self._ttl_ms = ttl
        self._on_lost = on_lost
        loop = store.loop
        interval = ttl / 3000
        # The lock is surely valid for its TTL from when the acquire was sent (Redis may have run
        # it at once), not from its reply.
        self._valid_until = valid_until = since + ttl / 1000
        now = store.clock()
        width = interval * _EARLY
        key = (width, math.floor((now + interval) / width))
        slot = store.renewals.get(key)
        if slot is None:
            slot = store.renewals[key] = set()
            loop.call_at(key[1] * width, _renew_slot, store.renewals, key)
        slot.add(self)
        #: The shared first-renewal timer's set this lease is in, until it fires or the lease stops.
        self._slot: set[_Lease] | None = slot
        self._timer: asyncio.TimerHandle | None = None
        # Until the first renewal is due the lock is certainly valid, so no deadline timer yet,
        # unless the acquire's reply took so long that the lock may run out before then.
        self._deadline: asyncio.TimerHandle | None = (
            loop.call_at(valid_until, self._expired) if now + interval >= valid_until else None
        )
        self._renewal: asyncio.Task[None] | None = None
        self._stopped = False

    def _due(self) -> None:
        self._timer = self._slot = None
        loop = self._store.loop
        if self._deadline is None:
            self._deadline = loop.call_at(self._valid_until, self._expired)
        self._renewal = loop.create_task(self._renew())

    def _expired(self) -> None:
        self._lose("could not renew the lock before its TTL ran out")

    async def _renew(self) -> None:
        loop = self._store.loop
        interval = self._ttl_ms / 3000
        sent = loop.time()
        try:
            # The cancel key is derived here, not per run: a run shorter than one interval never needs it.
            held = await self._store.renew(
                self._run.lock_key, self._run.task_id, self._ttl_ms, cancel_key(self._run.lock_key)
            )
        except Exception as exc:  # RedisUnavailable, or anything unexpected: try again
            if not self._stopped:
                logger.warning("%s: lock renewal failed, retrying: %s", self._run, exc)
                self._timer = loop.call_later(min(1.0, interval), self._due)
            return
        if self._stopped:
            return
        if not held:
            self._lose("the lock expired or was taken by another run")
            return
        self._valid_until = sent + self._ttl_ms / 1000
        if isinstance(held, str):
            self._cancel(held)
            return
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = loop.call_at(self._valid_until, self._expired)
        self._timer = loop.call_later(interval, self._due)

    @property
    def valid_until(self) -> float:
        """Until when (loop time) the lock is surely ours, as the last renewal said."""
        return self._valid_until

    def _cancel(self, request: str) -> None:
        """Someone asked to cancel the run: stop renewing (a body that ignores it loses the lock
        within one TTL), and cancel the body as for a lost lock."""
        if self._stopped or self._run._lock_lost:
            return
        by = request.rpartition("|")[0] or request  # 'host:pid|ms': the ms are the record's to say
        logger.warning("%s: cancelled by %s; cancelling the body", self._run, by)
        self._run._cancelled_by = by
        self._run.result[CANCELLED_BY] = by
        self._run._stop = True
        self.stop()
        self._on_lost()

    def _lose(self, why: str) -> None:
        if self._stopped or self._run._lock_lost:
            return
        logger.error("%s: lock lost (%s); cancelling the body", self._run, why)
        self._run._lock_lost = True
        self._run._stop = True
        self.stop()
        self._on_lost()

    def stop(self) -> None:
        self._stopped = True
        if self._slot is not None:
            self._slot.discard(self)
            self._slot = None
        if self._timer is not None:
            self._timer.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        if self._renewal is not None and self._renewal is not asyncio.current_task():
            self._renewal.cancel()


#: A run's first renewal is due ``lock_timeout / 3`` after its start, or up to this share of
#: that earlier: the runs of one client due within the same share wait on one loop timer.
_EARLY: Final = 1 / 16


def _renew_slot(renewals: dict[tuple[float, int], set[_Lease]], key: tuple[float, int]) -> None:
    for lease in list(renewals.pop(key)):
        lease._due()


class Task:
    """A task body made safe to run from many workers; see :func:`task`.

    Calling it runs it: ``await my_task(date_string=None, *, redis=None)``
    returns the result dict (``success``, or ``skipped`` with its reason) and
    raises :class:`TaskError` (its ``.result`` has status ``failed``) when the
    run fails. A decorated task has the seed's task signature, so it drops
    straight into a seed-style chain.
    """

    # Copied from the body by functools.update_wrapper.
    __name__: str
    __qualname__: str

    def __init__(
        self,
        body: Body,
        *,
        name: str | None = None,
        recurring: bool = False,
        lock_timeout: float = REDIS_LOCK_TIMEOUT,
        success_ttl: int = REDIS_SUCCESS_TTL,
        depends_on: Iterable[str] = (),
        timeout: float | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        retention: float | str | None = None,
    ) -> None:
        if not callable(body):
            raise InvalidConfig(f"a task body must be callable, not {body!r}", body)
        self.name = check_task_name(name if name is not None else getattr(body, "__name__", None))
        self.recurring = bool(recurring)
        self.lock_timeout = lock_timeout
        self._lock_ms = ttl_ms(lock_timeout, REDIS_LOCK_TIMEOUT)
        self.success_ttl = check_success_ttl(success_ttl)
        if isinstance(depends_on, str):
            depends_on = (depends_on,)
        self.depends_on: tuple[str, ...] = tuple(
            dep.name if isinstance(dep, Task) else check_task_name(dep) for dep in depends_on
        )
        self.timeout, self.retries, self.retry_delay = check_attempt_options(timeout, retries, retry_delay)
        if retention is not None:
            retention_ms(retention)
        self.retention = retention
        self._body = body
        self._is_async = inspect.iscoroutinefunction(body) or inspect.iscoroutinefunction(
            getattr(body, "__call__", None)  # noqa: B004  (an object with an async __call__)
        )
        functools.update_wrapper(self, body)
        #: Per kind of run (namespace, Cluster, key's length in bytes, marker checked, retention): its forms.
        self._forms: dict[tuple[str | None, bool, int, bool, int], RunForms] = {}

    def __repr__(self) -> str:
        return f"<Task {self.name}{' (recurring)' if self.recurring else ''}>"

    def _new_forms(self, shape: tuple[str | None, bool, int, bool, int], date: str) -> RunForms:
        """The keys and request formats of the runs of one ``shape`` (see :meth:`__call__`)."""
        namespace, cluster, _, check, keep = shape
        keys = task_keys(self.name, date, namespace=namespace, cluster=cluster)
        forms = RunForms(keys, date, self._lock_ms, check, keep, self.success_ttl, SUCCESS_MARKER)
        if len(self._forms) >= _MAX_FORMS:
            self._forms.clear()
        self._forms[shape] = forms
        return forms

    async def __call__(
        self, date_string: str | dt.date | None = None, *, redis: AnyRedis | None = None
    ) -> dict[str, Any]:
        """Run the task for ``date_string`` (``YYYYMMDD``, default today).

        :returns: the result dict: ``success``, or ``skipped`` with reason
            ``already_completed``, ``lock_held`` or ``paused`` (``aiotasks pause --task``).
        :raises TaskError: the run failed; ``.result`` has status ``failed``,
            the error text in ``errors`` and, where it applies, a reason
            (``timeout``, ``lock_lost``, ``redis_unavailable``). The lock is
            released and no marker is written.
        :raises InvalidDate: before anything is sent.
        """
        date = parse_run_key(date_string)
        # A slot key names one run: a recurring task runs once per slot (marker
        # checked and written), so replicas that fire a slot late don't repeat it.
        once = not self.recurring or is_slot_key(date)
        store, namespace, force = resolve(redis)
        keep = retention_ms(self.retention)
        check = once and not force
        task_id = new_task_id()
        forms: RunForms | None = None
        if store.packs:
            # The keys and requests come from formats made once per kind of run.
            day, token = date.encode(), task_id.encode()
            shape = (namespace, store.cluster, len(day), check, keep)
            forms = self._forms.get(shape) or self._new_forms(shape, date)
            keys = TaskKeys(forms.lock + date, forms.success + date)
            packed = forms.acquire(day, token, keep)
        else:
            keys = task_keys(self.name, date, namespace=namespace, cluster=store.cluster)
            packed = None
        result = new_result(self.name, date, task_id)
        report_run(self.name, keys, task_id, result)
        sent = store.clock()
        try:
            outcome = await store.acquire(
                keys, task_id, self._lock_ms, check_success=check, retention_ms=keep, packed=packed
            )
        except RedisUnavailable as exc:
            _fail(result, str(exc), Reason.REDIS_UNAVAILABLE)
            raise TaskError(Status.FAILED.value, str(exc), result) from exc
        if not isinstance(outcome, Acquired):
            result["status"] = _SKIPPED
            result["reason"] = skip_reason(outcome).value
            logger.debug("%s %s: skipped (%s)", self.name, date, result["reason"])
            _metrics.observe_skip(self.name, result["reason"])
            return result
        run = Run(self.name, date, task_id, result, store.client, keys)
        run.fence = outcome.fence
        _metrics.observe_start(self.name)
        began = outcome.started  # on the server's clock, 0 without a record
        # Without a record or a hook nobody reads the outcome: don't build it (the metrics
        # need only its label).
        tracked = keep > 0 or has_hooks()
        started = time.monotonic()
        ending: Outcome | None = None
        try:
            error = await self._attempts(store, run, sent)
            if error is None:
                if tracked:
                    ending = Outcome.succeeded(result, keep, began, time.monotonic() - started)
                error = await self._finish(
                    store,
                    run,
                    keys,
                    once,
                    ending,
                    None if forms is None else forms.finish(day, token, ending),
                )
                if error is not None and tracked:  # the lock was lost: the record says so too
                    ending = Outcome.of(result, keep)
            else:
                if tracked:
                    ending = Outcome.of(result, keep, started=began, seconds=time.monotonic() - started)
                await _release_quietly(store, run, ending)
        except BaseException:
            # Cancelled (or interrupted): give the lock back before propagating, without
            # waiting on Redis's answer (the door reads it; a stalled Redis can't hold us).
            run._request_stop()
            if tracked:
                ending = Outcome.of(result, keep, started=began, seconds=time.monotonic() - started)
            await shielded(store.give_back(run.lock_key, run.task_id, ending))
            if ending is not None:
                await report(run, ending, began, time.monotonic() - started, background=True)
            else:
                observe_result(self.name, result, time.monotonic() - started)
            raise
        elapsed = time.monotonic() - started
        if error is None and not has_hooks():  # what report() would count, without its coroutine
            _metrics.observe_run(self.name, _SUCCESS, elapsed)
        elif ending is not None:
            await report(run, ending, began, elapsed)
        else:
            observe_result(self.name, result, elapsed)
        if error is not None:
            logger.warning("%s %s: failed after %.3fs: %s", self.name, date, elapsed, result["errors"][-1])
            raise TaskError(Status.FAILED.value, result["errors"][-1], result) from error
        logger.info("%s %s: success in %.3fs", self.name, date, elapsed)
        return result

    async def _attempts(self, store: Store, run: Run, sent: float) -> BaseException | None:
        """Run the body until it succeeds or retries run out; None on success."""
        # When the lock is lost the lease cancels this task, and the cancellation is told
        # apart from anyone else's as asyncio.timeout() does it (which would cost a timer
        # object per run): by the task's count of cancel requests.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        lease = _Lease(store, run, self._lock_ms, task.cancel, since=sent)
        try:
            attempt = 0
            while True:
                attempt += 1
                run.attempt = attempt
                slot = store.bodies.enter()
                if slot is None:
                    slot = await store.bodies.wait()
                try:
                    error = await self._attempt(run)
                finally:
                    store.bodies.leave(slot)
                if error is None or attempt > self.retries or run._cancelled_by is not None:
                    break
                delay = backoff(self.retry_delay, attempt)
                logger.info("%s: attempt %d failed, retrying in %.2fs", run, attempt, delay)
                _reset_for_retry(run, attempt, delay)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not (run._lock_lost or run._cancelled_by) or task.uncancel() > cancelling:
                raise  # a cancellation of the run itself
            if run._cancelled_by is not None:
                return _cancelled(run, lease.valid_until, stopped=True)
            message = "lock lost while the task ran: it expired or was taken"
            _fail(run.result, message, Reason.LOCK_LOST)
            return TimeoutError(message)
        finally:
            lease.stop()
        if run._lock_lost or run._cancelled_by is not None:
            # The body swallowed the lease's cancellation and returned: withdraw its request (the
            # finish then finds the lock gone; a cancelled run is failed here, whatever it returned).
            task.uncancel()
            if run._cancelled_by is not None:
                return _cancelled(run, lease.valid_until, stopped=False)
        return error

    async def _attempt(self, run: Run) -> BaseException | None:
        """Run the body once; None on success, else the error (already in the result).

        Whatever the body raises fails the attempt; only a real cancellation
        of the run propagates.
        """
        limit = None if self.timeout is None else asyncio.timeout(self.timeout)
        started = time.monotonic()
        try:
            if limit is None:
                if self._is_async:  # _run_body's, written out: a coroutine less per run
                    await self._body(run)  # type: ignore[misc]
                else:
                    await self._run_body(run)
            else:
                async with limit:
                    await self._run_body(run)
        except TaskError as exc:
            _fail(run.result, exc.message)
            return exc
        except TimeoutError as exc:
            if limit is not None and limit.expired():
                waited = None if self._is_async else time.monotonic() - started
                _fail(run.result, timeout_message(self.timeout, waited, "body"), Reason.TIMEOUT)
            else:  # the body's own TimeoutError
                _fail(run.result, describe_error(exc))
            return exc
        except RedisUnavailable as exc:
            _fail(run.result, str(exc), Reason.REDIS_UNAVAILABLE)
            return exc
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            _fail(run.result, describe_error(exc))
            return exc
        return None

    async def _run_body(self, run: Run) -> None:
        if self._is_async:
            await self._body(run)  # type: ignore[misc]
        else:
            await run_in_thread(self._body, run, on_cancel=run._request_stop)

    async def _finish(
        self,
        store: Store,
        run: Run,
        keys: TaskKeys,
        once: bool,
        success: Outcome | None,
        packed: bytes | None,
    ) -> BaseException | None:
        """Record success (marker and release in one step, or release only for a recurring date run).

        :param packed: the FINISH request, packed (see ``_records.RunForms``), or None.
        """
        try:
            if not once:
                held = await store.release(keys.lock, run.task_id, success)
            else:
                held = await store.finish(keys, run.task_id, self.success_ttl, success, packed=packed)
        except RedisUnavailable as exc:
            _fail(run.result, f"could not record the run's end: {exc}", Reason.REDIS_UNAVAILABLE)
            return exc
        if not held:
            message = "lock lost before the run could be recorded: it expired or was taken"
            _fail(run.result, message, Reason.LOCK_LOST)
            return TaskError(Status.FAILED.value, message)
        run.result["status"] = _SUCCESS
        return None


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a real cancellation of the running task.

    A ``CancelledError`` is real when someone asked to cancel the task:
    ``Task.cancel()``, which ``asyncio.timeout``, task groups and anyio's
    cancel scopes all use, counts the requests (``Task.cancelling()``). One
    raised while no request is pending was raised by the code itself, and is
    an error like any other. (Code that swallowed an earlier cancellation
    without ``uncancel()`` leaves a request pending: then it counts as real.)
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def timeout_message(timeout: float | None, waited: float | None, what: str) -> str:
    """The error text of an attempt that ran past its ``timeout``.

    :param waited: for a sync ``what`` (which a worker thread runs and nothing
        can interrupt): how long the attempt took until the thread returned.
    """
    if waited is None:
        return f"timed out after {timeout}s"
    return f"timed out after {timeout}s (the thread {what} returned after {waited:.1f}s; it was waited for)"


def _outcome(func: Callable[..., T], *args: Any) -> tuple[bool, T | BaseException]:
    try:
        return True, func(*args)
    except BaseException as exc:  # SystemExit too: the caller decides, in its own task
        return False, exc


async def run_in_thread(
    func: Callable[..., T], *args: Any, on_cancel: Callable[[], object] | None = None
) -> T:
    """``func(*args)`` in a worker thread, in a copy of the caller's context; waited for through cancellation.

    A thread can't be interrupted: a cancellation of the caller calls
    ``on_cancel`` (to ask ``func`` to stop), waits until ``func`` returns,
    then goes through. Whatever ``func`` raises is raised here, in the caller:
    a ``SystemExit`` or ``KeyboardInterrupt`` handed through a future instead
    would escape from that future's task into the event loop and stop it.
    """
    call = functools.partial(contextvars.copy_context().run, _outcome, func, *args)
    returned, value = await shielded(anyio.to_thread.run_sync(call), on_cancel=on_cancel)
    if not returned:
        assert isinstance(value, BaseException)
        try:
            raise value
        finally:
            del value  # no reference cycle through the traceback
    return value  # type: ignore[return-value]


def check_attempt_options(
    timeout: object, retries: object, retry_delay: object
) -> tuple[float | None, int, float]:
    """Validate ``timeout`` (None or seconds > 0), ``retries`` (>= 0) and ``retry_delay`` (> 0)."""
    if timeout is not None:
        ttl_ms(timeout, 0, "timeout")  # type: ignore[arg-type]
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidConfig(f"retries must be a whole number >= 0, not {retries!r}", retries)
    ttl_ms(retry_delay, 1, "retry_delay")  # type: ignore[arg-type]
    return timeout, retries, retry_delay  # type: ignore[return-value]


def describe_error(exc: BaseException) -> str:
    """The seed's error text for an unexpected exception."""
    return (
        f"Unexpected error: {type(exc).__name__}: {exc}"
        if str(exc)
        else f"Unexpected error: {type(exc).__name__}"
    )


def _fail(result: dict[str, Any], message: str, reason: Reason | None = None) -> None:
    result["status"] = Status.FAILED.value
    if reason is not None:
        result["reason"] = reason.value
    if message not in result["errors"]:
        result["errors"].append(message)


def backoff(base: float, attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [base, base * 2**(attempt-1)], capped."""
    ceiling = min(MAX_RETRY_DELAY, base * 2 ** (attempt - 1))
    return random.uniform(min(base, ceiling), ceiling)


def _cancelled(run: Run, valid_until: float, *, stopped: bool) -> TaskError:
    """Fail a run someone cancelled (``aiotasks cancel``): ``cancelled`` if its body stopped while
    the lock was surely still ours, else ``lock_lost``, as a body that ignores a lost lock ends.

    :param stopped: the body ended by the cancellation (not by returning after swallowing it).
    """
    by = run._cancelled_by
    if stopped and asyncio.get_running_loop().time() < valid_until:
        message = f"cancelled by {by}"
        _fail(run.result, message, Reason.CANCELLED)
    else:
        # Renewals stopped with the request: the lock may be another run's by now.
        message = f"cancelled by {by}, but the body did not stop in time (it ignored the cancellation)"
        _fail(run.result, message, Reason.LOCK_LOST)
    return TaskError(Status.FAILED.value, message)


def _reset_for_retry(run: Run, attempt: int, delay: float) -> None:
    """Start the next attempt with a fresh result dict; keep the failures as warnings."""
    previous = run.result
    fresh = new_result(run.task_name, run.date, run.task_id)
    fresh["warnings"] = [
        *previous["warnings"],
        *(f"attempt {attempt} failed: {error}" for error in previous["errors"]),
    ]
    fresh["attempts"] = attempt + 1
    previous.clear()
    previous.update(fresh)
    run._stop = False  # the failed attempt's timeout asked its (thread) body to stop, not the next one


async def _release_quietly(store: Store, run: Run, outcome: Outcome | None) -> None:
    if run.lock_lost:  # Redis may be what failed: don't wait on its answer (the door reads it)
        await store.give_back(run.lock_key, run.task_id, outcome)
        return
    try:
        await store.release(run.lock_key, run.task_id, outcome)
    except RedisUnavailable as exc:
        logger.warning("%s: could not release the lock (%s); it expires within its TTL", run, exc)


@overload
def task(name: Body, /) -> Task: ...


@overload
def task(
    name: str | None = None,
    *,
    recurring: bool = False,
    lock_timeout: float = REDIS_LOCK_TIMEOUT,
    success_ttl: int = REDIS_SUCCESS_TTL,
    depends_on: Iterable[str | Task] = (),
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    retention: float | str | None = None,
) -> Callable[[Body], Task]: ...


def task(
    name: str | Body | None = None,
    *,
    recurring: bool = False,
    lock_timeout: float = REDIS_LOCK_TIMEOUT,
    success_ttl: int = REDIS_SUCCESS_TTL,
    depends_on: Iterable[str | Task] = (),
    timeout: float | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    retention: float | str | None = None,
) -> Task | Callable[[Body], Task]:
    """Make ``body`` a task that runs at most once per date, never twice at once.

    ::

        @aiotasks.task(lock_timeout=600)
        async def task_contributions_analysis(run: aiotasks.Run) -> None:
            run.result["items_processed"] = 0
            for item in await load_items(run.date):
                await process(item)
                run.result["items_processed"] += 1

        result = await task_contributions_analysis("20261125")

    The body is ``async def body(run)`` or a plain ``def body(run)`` (run in a
    worker thread). It fails the run by raising (``TaskError`` or anything
    else); it may also append to ``run.result["errors"]`` / ``["warnings"]``
    without failing.

    :param name: the task's name (and key component); the function's name by default.
    :param recurring: run again whenever called for a date (the lock still
        prevents overlap), never write the success marker. Called with a
        schedule's slot key (``YYYYMMDDTHHMM``) it runs once per slot instead:
        the marker is checked and written, so every replica agrees.
    :param lock_timeout: the lock's TTL in seconds; renewed every third of it.
    :param success_ttl: the marker's TTL in seconds.
    :param depends_on: names (or tasks) this task needs, for :func:`run_chain`.
    :param timeout: seconds an attempt may take; then it fails with reason ``timeout``.
    :param retries: how many times a failed attempt is retried (lock held throughout).
    :param retry_delay: the first retry's delay in seconds; doubles each retry,
        with jitter, capped at 60 s.
    :param retention: how long the runs' records are kept: seconds or
        ``"30d"``-style; default ``AIOTASKS_RETENTION``, else 30 days; 0 keeps none.
    """
    options: dict[str, Any] = {
        "recurring": recurring,
        "lock_timeout": lock_timeout,
        "success_ttl": success_ttl,
        "depends_on": depends_on,
        "timeout": timeout,
        "retries": retries,
        "retry_delay": retry_delay,
        "retention": retention,
    }
    if callable(name):
        return Task(name, **options)

    def decorate(body: Body) -> Task:
        return Task(body, name=name, **options)

    return decorate
