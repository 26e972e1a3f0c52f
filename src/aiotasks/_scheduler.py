"""A scheduler that runs in every replica of a service: once per slot, by construction.

Every replica computes the same slots from the same :class:`Schedule` and
runs each through :func:`run_chain` under the slot's key. The existing lock
and success marker then make "once per slot" hold across replicas: the first
replica to acquire a task's lock runs it, the others see ``lock_held`` (and
wait, for a dependency) or ``already_completed`` (a late replica). Recurring
tasks run under a slot key check and write the marker too (see
:func:`aiotasks.task`), so a replica whose clock runs late never repeats a
slot. The marker's TTL is the task's ``success_ttl`` (default a day): it must
outlive the replicas' clock skew plus the catch-up reach, which a day does;
for a task firing every second that is 86,400 small keys -- lower its
``success_ttl`` (minutes are plenty) if that matters.

Idle means idle: between slots the scheduler sleeps until the next fire time
(re-reading the wall clock at least every minute); it sends nothing to Redis.

Embed it in a service::

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with aiotasks.Scheduler(schedules, redis=client) as scheduler:
            app.state.scheduler = scheduler
            yield

or run it: ``await scheduler.serve()`` (``python -m aiotasks serve`` does).
Stopping (leaving the ``async with``, :meth:`Scheduler.stop`, or SIGTERM under
the CLI) stops firing, lets running chains finish within ``grace`` seconds,
then cancels them: a cancelled task releases its lock before it ends.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

from . import _metrics
from ._backfill import Results, check_window, run_window
from ._chain import ChainRun, check_run_options, prepare_run
from ._clock import Clock, current_clock
from ._constants import Status
from ._context import resolve
from ._errors import InvalidSchedule
from ._records import record_missed, retention_ms
from ._schedule import Schedule, Slot
from ._store import AnyRedis
from ._task import Task

__all__ = ["Scheduler", "SchedulerState"]

logger = logging.getLogger("aiotasks.scheduler")

#: ``on_missed(schedule, slot)``: a slot that will not run (see :meth:`Schedule.due`).
MissedHook = Callable[[Schedule, Slot], object]


class SchedulerState(StrEnum):
    """A scheduler's life: it runs once."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class _Track:
    """What one schedule is doing, for :meth:`Scheduler.status`."""

    schedule: Schedule
    next: Slot | None = None
    last: Slot | None = None
    last_outcome: str | None = None
    running: set[str] = field(default_factory=set)
    runs: int = 0
    missed: int = 0


class Scheduler:
    """Fires schedules' chains at their slots; safe to run in any number of replicas.

    :param schedules: the :class:`Schedule` objects (or one).
    :param redis: the client; else ``AIOTASKS_REDIS_URL``'s (see :func:`run_chain`).
    :param namespace: key prefix (default ``AIOTASKS_NAMESPACE``).
    :param max_concurrency: how many task bodies may run at once, across every
        slot and catch-up of this scheduler (default: no limit).
    :param window: how many slots of one catch-up run at once (oldest first).
    :param grace: seconds running chains get to finish when stopping.
    :param wait_timeout: as for :func:`run_chain`.
    :param clock: the time source (tests pass a :class:`~aiotasks._clock.FakeClock`).
    :param on_missed: called with each slot that will not run because the
        scheduler woke too late for it (beyond ``catchup``); it is also logged,
        counted (``aiotasks_runs_total{outcome="missed"}``) and recorded: each
        task of the slot that no host ran gets a ``missed`` run record, once
        across replicas, which ``history`` and ``status`` show.
    :raises InvalidSchedule, InvalidConfig: before anything starts.
    """

    def __init__(
        self,
        schedules: Schedule | Iterable[Schedule],
        *,
        redis: AnyRedis | None = None,
        namespace: str | None = None,
        max_concurrency: int | None = None,
        window: int = 1,
        grace: float = 30.0,
        wait_timeout: float | None = None,
        clock: Clock | None = None,
        on_missed: MissedHook | None = None,
    ) -> None:
        found = [schedules] if isinstance(schedules, Schedule) else _schedules(schedules)
        if not found:
            raise InvalidSchedule("no schedules to run", schedules)
        check_run_options(max_concurrency, wait_timeout)
        self._window = check_window(window)
        if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
            raise InvalidSchedule(f"grace must be a number of seconds >= 0, not {grace!r}", grace)
        self._tracks = [_Track(schedule) for schedule in found]
        self._redis = redis
        self._namespace = namespace
        self._max_concurrency = max_concurrency
        self._grace = float(grace)
        self._wait_timeout = wait_timeout
        self._clock = clock
        self._on_missed = on_missed
        self._state = SchedulerState.NEW
        self._limit: asyncio.Semaphore | None = None
        self._stop: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> SchedulerState:
        """Where the scheduler is in its life: new, running, stopping or stopped."""
        return self._state

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules it fires, in the order given."""
        return [track.schedule for track in self._tracks]

    def status(self) -> dict[str, Any]:
        """A JSON-able view for a health endpoint: the state and each schedule's next fire time."""
        return {
            "state": self._state.value,
            "schedules": [
                {
                    "name": track.schedule.name,
                    "rule": track.schedule.rule,
                    "next_fire": _iso(track.next.at) if track.next else None,
                    "next_key": track.next.key if track.next else None,
                    "last_fire": _iso(track.last.at) if track.last else None,
                    "last_key": track.last.key if track.last else None,
                    "last_outcome": track.last_outcome,
                    "running": sorted(track.running),
                    "runs": track.runs,
                    "missed": track.missed,
                }
                for track in self._tracks
            ],
        }

    async def serve(self) -> None:
        """Fire every schedule until :meth:`stop` (or cancellation); runs once per Scheduler."""
        if self._state is not SchedulerState.NEW:
            raise RuntimeError(f"this Scheduler is {self._state.value}; a Scheduler runs once")
        clock = self._clock or current_clock()
        self._stop = self._stop or asyncio.Event()
        self._stopped = asyncio.Event()
        self._limit = asyncio.Semaphore(self._max_concurrency) if self._max_concurrency else None
        self._state = SchedulerState.RUNNING
        logger.info(
            "scheduler started: %s", "; ".join(f"{t.schedule.name} ({t.schedule.rule})" for t in self._tracks)
        )
        try:
            async with asyncio.TaskGroup() as group:
                drivers = [group.create_task(self._drive(track, clock, group)) for track in self._tracks]
                await self._stop.wait()
                self._state = SchedulerState.STOPPING
                for driver in drivers:
                    driver.cancel()
                if self._runs:
                    logger.info("stopping: %d run(s) get %.1fs to finish", len(self._runs), self._grace)
                    _, late = await asyncio.wait(set(self._runs), timeout=self._grace)
                    for run in late:
                        run.cancel()
                    if late:
                        logger.warning("stopping: cancelled %d run(s) after the grace period", len(late))
        finally:
            for track in self._tracks:
                track.next = None
            self._state = SchedulerState.STOPPED
            self._stopped.set()
            logger.info("scheduler stopped")

    def request_stop(self) -> None:
        """Ask the scheduler to stop (safe from a signal handler); :meth:`serve` then returns."""
        if self._stop is None:
            self._stop = asyncio.Event()
        self._stop.set()

    async def stop(self) -> None:
        """Stop firing, let running chains finish within ``grace``, cancel the rest; wait for it."""
        self.request_stop()
        if self._task is not None:
            await self._task
        elif self._stopped is not None:
            await self._stopped.wait()

    async def __aenter__(self) -> Scheduler:
        self._task = asyncio.create_task(self.serve(), name="aiotasks:scheduler")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _drive(self, track: _Track, clock: Clock, group: asyncio.TaskGroup) -> None:
        """One schedule's loop: catch up, then sleep until each slot and fire it."""
        schedule = track.schedule
        last = clock.now()
        catchup = schedule.catchup_slots(last)
        if catchup:
            logger.info("%s: catching up %d slot(s) from %s", schedule.name, len(catchup), catchup[0].key)
            self._fire(track, catchup, group)
        while True:
            track.next = schedule.next_slot(last)
            await clock.sleep_until(track.next.at)
            now = clock.now()
            due, missed = schedule.due(last, now)
            last = now
            for slot in missed:
                track.missed += 1
                logger.warning("%s: slot %s missed (woke at %s)", schedule.name, slot.key, _iso(now))
                if self._on_missed is not None:
                    try:
                        self._on_missed(schedule, slot)
                    except Exception:
                        logger.exception("%s: on_missed hook failed", schedule.name)
            if due:
                self._fire(track, due, group)
            if missed:
                await self._record_missed(schedule, missed, now)

    async def _record_missed(self, schedule: Schedule, slots: list[Slot], now: dt.datetime) -> None:
        """Leave a ``missed`` record for each task of each slot no host ran (history, status, grid).

        Sent after the due slot is fired, so it never delays it; a Redis error is logged only.
        """
        try:
            store, namespace, _ = resolve(self._redis)
            if self._namespace is not None:
                namespace = self._namespace
            retention = {
                node.task_name: retention_ms(node.func.retention if isinstance(node.func, Task) else None)
                for node in schedule.chain
            }
            note = f"slot missed: the scheduler woke at {_iso(now)}, past its catch-up"
            for slot in slots:
                for task in retention:
                    _metrics.observe_skip(task, "missed")
                await record_missed(store, retention, slot.key, namespace=namespace, note=note)
        except Exception as exc:
            logger.warning("%s: could not record missed slots (%s)", schedule.name, exc)

    def _fire(self, track: _Track, slots: list[Slot], group: asyncio.TaskGroup) -> None:
        task = group.create_task(self._run_slots(track, slots), name=f"aiotasks:slot:{slots[-1].key}")
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run_slots(self, track: _Track, slots: list[Slot]) -> None:
        schedule = track.schedule
        runs = [
            prepare_run(
                schedule.chain,
                slot.key,
                redis=self._redis,
                namespace=self._namespace,
                wait_timeout=self._wait_timeout,
                limit=self._limit,
            )
            for slot in slots
        ]
        by_key = {slot.key: slot for slot in slots}
        track.running.update(by_key)

        def done(run: ChainRun, results: Results) -> None:
            track.running.discard(run.date)
            track.runs += 1
            track.last, track.last_outcome = by_key[run.date], _outcome(results)
            logger.info("%s %s: %s", schedule.name, run.date, track.last_outcome)

        try:
            await run_window(runs, self._window, done)
        except Exception:
            logger.exception("%s: slots %s failed to run", schedule.name, ", ".join(by_key))
            track.last_outcome = "error"
        finally:
            track.running.difference_update(by_key)


def _schedules(value: object) -> list[Schedule]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSchedule(f"expected a Schedule or a list of them, not {value!r}", value)
    found = list(value)
    for item in found:
        if not isinstance(item, Schedule):
            raise InvalidSchedule(f"expected a Schedule, not {item!r}", item)
    return found


def _outcome(results: Results) -> str:
    """One word for a slot's chain: failed if any task failed, else success (done here or elsewhere)."""
    statuses = {result.get("status") for result in results.values()}
    if Status.FAILED in statuses:
        return "failed"
    if statuses <= {Status.SKIPPED}:
        return "skipped"
    return "success"


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
