"""A scheduler that runs in every replica of a service: once per slot, by construction.

Every replica computes the same slots from the same :class:`Schedule` and
runs each through :func:`run_chain` under the slot's key. The existing lock
and success marker then make "once per slot" hold across replicas: the first
replica to acquire a task's lock runs it, the others see ``lock_held`` and
watch it, as a chain waits for another worker's task (see
:mod:`aiotasks._chain`), or see ``already_completed`` (a late replica).
Recurring tasks run under a slot key check and write the marker too (see
:func:`aiotasks.task`), so a replica whose clock runs late never repeats a
slot.

A holder that dies mid-body (SIGKILL, OOM, a lost node) is taken over: its
lock is no longer renewed and expires within its ``lock_timeout``; the
replicas watching it (at most one status request a second each, never past
the lock's TTL) then find it free without a marker, and the first to poll
runs the task and its dependents (the others find it held again, and watch
on). A catch-up that meets a dead lock does the same. A watch lasts as long
as the holder's lock: the run it watches, plus at most one ``lock_timeout``
if it died; ``wait_timeout`` caps it, and stopping the scheduler ends it at
once (the task is then ``skipped``, ``lock_held``: a replica that goes away
does not hold its stop for a run it only watches). A later slot does not end
it: the dead slot's work is still owed. A recurring task under a *date* key
(a daily schedule) is not taken over: it writes no marker, so a free lock
can't tell a dead holder from a finished one.

The marker's TTL is the task's ``success_ttl`` (default a day): it must
outlive the replicas' clock skew plus the catch-up reach, which a day does;
for a task firing every second that is 86,400 small keys -- lower its
``success_ttl`` (minutes are plenty) if that matters.

Idle means idle: between slots the scheduler sleeps until the next fire time
(re-reading the wall clock at least every minute); the drivers send nothing
to Redis. What idle costs is the trigger listener (``triggers=True``, the
default): one blocking ``BRPOP`` over every schedule's ``triggers`` list, on
one connection of its own, repeated every ``TRIGGER_BLOCK`` (1) second, one
per replica; ``triggers=False`` turns it off, and idle costs nothing again.

Pausing (``aiotasks pause --schedule``): at each slot, and before a
catch-up, one read of the schedule's controls (its ``paused`` key and how
many triggers wait: one script, one round trip per slot per replica) comes
before the fire. It can't ride on the slot's acquires: those touch the tasks'
hash slots on Redis Cluster, the controls the namespace's own. While paused
no replica fires; each passing slot is recorded ``paused`` once across
replicas (as a ``missed`` one is) and is not caught up on resume: resuming
means the next slot runs. A scheduler that starts after a resume skips, in
its catch-up, the slots recorded ``paused``. If the read fails (Redis down),
the slot fires as before: its runs then report Redis themselves.

Run now (``aiotasks trigger``, :func:`aiotasks.trigger`): the listener pops a
request (exactly one replica gets each), answers ``taken``, runs the chain
for the request's key under the usual locks (``force`` ignores markers), its
records saying ``triggered by host:pid``, then answers with the outcome. A
request is taken even while the schedule is paused: it is an explicit ask.
Stopping lets the listener's current read end (within ``TRIGGER_BLOCK``), so
a request is never popped by a replica that is going away.

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
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Final

from . import _metrics
from ._backfill import Results, check_window, run_window
from ._cancel import shielded
from ._chain import ChainRun, check_run_options, prepare_run
from ._clock import Clock, current_clock
from ._constants import Reason, Status
from ._context import resolve
from ._errors import InvalidInput, InvalidSchedule
from ._keys import schedule_keys
from ._records import HOST, CellState, read_grid, record_missed, retention_ms
from ._schedule import Schedule, Slot
from ._store import AnyRedis, Store
from ._task import Task
from ._trigger import TriggerRequest, answer, claim, trigger_key

__all__ = ["Scheduler", "SchedulerState"]

logger = logging.getLogger("aiotasks.scheduler")

#: Seconds one blocking read of the trigger listener waits before it reads again.
TRIGGER_BLOCK: Final = 1.0
#: Longest pause after the listener's read failed (Redis down), doubling from TRIGGER_BLOCK.
_LISTEN_BACKOFF_MAX: Final = 30.0

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
    #: Who paused the schedule (``host:pid|ms``), as the last check read it; None: not paused.
    paused: str | None = None
    #: Trigger requests waiting in its list, as the last check read them.
    pending_triggers: int = 0
    #: Slots not fired because the schedule was paused, and triggers this replica took.
    paused_slots: int = 0
    triggered: int = 0
    #: Tasks of the chain paused fleet-wide (``pause --task``), as its last run here found them.
    paused_tasks: list[str] = field(default_factory=list)

    def ran(self, results: Results) -> str:
        """Note a finished run of the chain; its one-word outcome."""
        self.runs += 1
        self.paused_tasks = [
            name for name, result in results.items() if result.get("reason") == Reason.PAUSED
        ]
        return _outcome(results)


class Scheduler:
    """Fires schedules' chains at their slots; safe to run in any number of replicas.

    :param schedules: the :class:`Schedule` objects (or one).
    :param redis: the client; else ``AIOTASKS_REDIS_URL``'s (see :func:`run_chain`).
    :param namespace: key prefix (default ``AIOTASKS_NAMESPACE``).
    :param max_concurrency: how many task bodies may run at once, across every
        slot and catch-up of this scheduler (default: no limit).
    :param window: how many slots of one catch-up run at once (oldest first).
    :param grace: seconds running chains get to finish when stopping.
    :param wait_timeout: as for :func:`run_chain`: the longest a replica watches
        another's run of a task (default: as long as its lock lives; ``0``: never,
        and so never takes a dead holder's slot over).
    :param clock: the time source (tests pass a :class:`~aiotasks._clock.FakeClock`).
    :param on_missed: called with each slot that will not run because the
        scheduler woke too late for it (beyond ``catchup``); it is also logged,
        counted (``aiotasks_runs_total{outcome="missed"}``) and recorded: each
        task of the slot that no host ran gets a ``missed`` run record, once
        across replicas, which ``history`` and ``status`` show.
    :param triggers: listen for ``aiotasks trigger`` requests (one blocking read
        per ``TRIGGER_BLOCK`` second, see the module's docstring).
    :raises InvalidSchedule, InvalidConfig: before anything starts (two
        schedules with one name, too).
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
        triggers: bool = True,
    ) -> None:
        found = [schedules] if isinstance(schedules, Schedule) else _schedules(schedules)
        if not found:
            raise InvalidSchedule("no schedules to run", schedules)
        _check_unique_names(found)
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
        self._triggers = bool(triggers)
        self._state = SchedulerState.NEW
        self._limit: asyncio.Semaphore | None = None
        self._stop: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        #: Set once serving: ``async with`` returns then, so its body sees ``running``.
        self._running = asyncio.Event()

    @property
    def state(self) -> SchedulerState:
        """Where the scheduler is in its life: new, running, stopping or stopped."""
        return self._state

    @property
    def schedules(self) -> list[Schedule]:
        """The schedules it fires, in the order given."""
        return [track.schedule for track in self._tracks]

    def status(self) -> dict[str, Any]:
        """A JSON-able view for a health endpoint: the state and each schedule's next fire time.

        ``triggers``: whether it serves ``aiotasks trigger`` requests. Per schedule,
        ``paused`` (who paused it, ``host:pid|ms``, or None) and ``pending_triggers``
        are as the last check read them (at its last slot); ``paused_slots`` and
        ``triggered`` count what this replica skipped and took; ``paused_tasks``
        are the chain's tasks its last run here found paused (``pause --task``).
        """
        return {
            "state": self._state.value,
            "triggers": self._triggers,
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
                    "paused": track.paused,
                    "paused_slots": track.paused_slots,
                    "pending_triggers": track.pending_triggers,
                    "triggered": track.triggered,
                    "paused_tasks": list(track.paused_tasks),
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
        # Known before the state says running, so a health check never reads "running" without
        # the next fire times (a daily driver reads Redis for its catch-up before it sets its own).
        now = clock.now()
        for track in self._tracks:
            track.next = track.schedule.next_slot(now)
        self._state = SchedulerState.RUNNING
        self._running.set()
        logger.info(
            "scheduler started: %s", "; ".join(f"{t.schedule.name} ({t.schedule.rule})" for t in self._tracks)
        )
        try:
            async with asyncio.TaskGroup() as group:
                drivers = [group.create_task(self._drive(track, clock, group)) for track in self._tracks]
                listener = group.create_task(self._listen(clock, group)) if self._triggers else None
                await self._stop.wait()
                self._state = SchedulerState.STOPPING
                for driver in drivers:
                    driver.cancel()
                if listener is not None:
                    await self._stop_listening(listener)
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
        """Start serving in a task; return once it runs (:meth:`status` then shows each next fire)."""
        self._task = asyncio.create_task(self.serve(), name="aiotasks:scheduler")
        running = asyncio.ensure_future(self._running.wait())
        try:
            await asyncio.wait({self._task, running}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while starting: leave nothing serving behind
            self._task.cancel()
            raise
        finally:
            running.cancel()
        if self._task.done():  # it could not start (this Scheduler ran before): say why
            self._task.result()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _drive(self, track: _Track, clock: Clock, group: asyncio.TaskGroup) -> None:
        """One schedule's loop: catch up, then sleep until each slot and fire it.

        Each turn fires the slots in ``(last, now]`` and sleeps until one after
        ``now``: it sleeps for real unless it woke late, and then the next turn
        does. A slot not after ``last`` (:meth:`Schedule.slots` promises none)
        would be due again at once, turn after turn, without a real sleep: the
        event loop would freeze under a pile of chains. It is logged and skipped.
        """
        schedule = track.schedule
        last = clock.now()
        catchup = schedule.catchup_slots(last)
        if catchup:
            logger.info("%s: catching up %d slot(s) from %s", schedule.name, len(catchup), catchup[0].key)
            await self._fire_unless_paused(track, catchup, group, last, catchup=True)
        while True:
            track.next = next(_after(schedule, schedule.slots(last), last))
            await clock.sleep_until(track.next.at)
            now = clock.now()
            due, missed = (list(_after(schedule, slots, last)) for slots in schedule.due(last, now))
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
                await self._fire_unless_paused(track, due, group, now)
            if missed:
                await self._record_missed(schedule, missed, now)

    def _door(self) -> tuple[Store, str | None]:
        """The store and namespace the scheduler's own requests use (as its chains')."""
        store, namespace, _ = resolve(self._redis)
        return store, namespace if self._namespace is None else self._namespace

    async def _fire_unless_paused(
        self,
        track: _Track,
        slots: list[Slot],
        group: asyncio.TaskGroup,
        now: dt.datetime,
        *,
        catchup: bool = False,
    ) -> None:
        """Read the schedule's controls (one request), then fire ``slots``, or record them paused.

        A catch-up also leaves out the slots recorded ``paused`` (they passed while
        paused: resuming does not run them).
        """
        schedule = track.schedule
        try:
            store, namespace = self._door()
            keys = schedule_keys(str(schedule.name), namespace=namespace)
            track.paused, track.pending_triggers = await store.read_schedule(keys)
            if catchup and track.paused is None:
                slots = await self._not_paused(store, namespace, schedule, slots)
        except Exception as exc:
            logger.warning("%s: could not read the schedule's controls (%s): firing", schedule.name, exc)
            track.paused = None
        if track.paused is None:
            if slots:
                self._fire(track, slots, group)
            return
        track.paused_slots += len(slots)
        who, _, _ = track.paused.partition("|")
        logger.info("%s: paused by %s: not firing %s", schedule.name, who, ", ".join(s.key for s in slots))
        note = f"slot not fired: schedule {schedule.name} paused by {who}"
        await self._record_missed(schedule, slots, now, status=CellState.PAUSED, note=note)

    async def _not_paused(
        self, store: Store, namespace: str | None, schedule: Schedule, slots: list[Slot]
    ) -> list[Slot]:
        """``slots`` without those a task of the chain has a ``paused`` record for (one GRID per task)."""
        tasks = [node.task_name for node in schedule.chain]
        grid = await read_grid(store, tasks, [slot.key for slot in slots], namespace=namespace)
        paused = {
            key for cells in grid.values() for key, cell in cells.items() if cell.state is CellState.PAUSED
        }
        if paused:
            logger.info("%s: not catching up %s: recorded paused", schedule.name, ", ".join(sorted(paused)))
        return [slot for slot in slots if slot.key not in paused]

    async def _listen(self, clock: Clock, group: asyncio.TaskGroup) -> None:
        """Pop trigger requests of every schedule with one blocking read at a time, until stopping."""
        assert self._stop is not None
        store, namespace = self._door()
        tracks = {schedule_keys(str(t.schedule.name), namespace=namespace).triggers: t for t in self._tracks}
        watcher = store.watcher()
        pause = TRIGGER_BLOCK
        try:
            while not self._stop.is_set():
                try:
                    popped = await watcher.pop(list(tracks), TRIGGER_BLOCK)
                except Exception as exc:
                    logger.warning("trigger listener: %s; reading again in %.0fs", exc, pause)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), pause)
                    pause = min(pause * 2, _LISTEN_BACKOFF_MAX)
                    continue
                pause = TRIGGER_BLOCK
                if popped is not None:
                    triggers, entry = popped
                    task = group.create_task(
                        self._serve_trigger(tracks[triggers], triggers, entry, clock, store),
                        name=f"aiotasks:trigger:{tracks[triggers].schedule.name}",
                    )
                    self._runs.add(task)
                    task.add_done_callback(self._runs.discard)
        finally:
            await shielded(watcher.close())

    async def _stop_listening(self, listener: asyncio.Task[None]) -> None:
        """Let the listener's read in flight end (a request it pops is run), then cancel it if need be."""
        _, late = await asyncio.wait({listener}, timeout=TRIGGER_BLOCK + 1.0)
        if late:
            listener.cancel()
            logger.warning("stopping: the trigger listener's read did not end; a request it popped is lost")

    async def _serve_trigger(
        self, track: _Track, triggers: str, entry: str, clock: Clock, store: Store
    ) -> None:
        """:meth:`_run_trigger`, whose failure is logged: it must not take the scheduler down."""
        try:
            await self._run_trigger(track, triggers, entry, clock, store)
        except Exception:
            logger.exception("%s: serving a trigger request failed", track.schedule.name)

    async def _run_trigger(
        self, track: _Track, triggers: str, entry: str, clock: Clock, store: Store
    ) -> None:
        """Answer a popped request, run its chain, answer with the outcome."""
        schedule = track.schedule
        try:
            request = TriggerRequest.from_json(entry)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: dropping a malformed trigger request (%s): %.200r", schedule.name, exc, entry)
            return
        now = clock.now()
        late = now.timestamp() * 1000 - request.expires_at
        if late > 0:
            logger.warning(
                "%s: dropping trigger %s from %s: it expired %.1fs ago",
                schedule.name,
                request.id,
                request.by,
                late / 1000,
            )
            await answer(store, triggers, request.id, state="expired", by=_me())
            return
        try:
            key = trigger_key(schedule, request.key, now)
        except InvalidInput as exc:
            logger.warning("%s: refusing trigger %s from %s: %s", schedule.name, request.id, request.by, exc)
            await answer(store, triggers, request.id, state="rejected", by=_me(), error=str(exc))
            return
        now_ms = round(now.timestamp() * 1000)
        if not await claim(store, triggers, request, now_ms, state="taken", by=_me(), key=key):
            logger.warning(
                "%s: dropping trigger %s: it was pushed twice, and run once", schedule.name, request.id
            )
            return
        logger.info(
            "%s %s: triggered by %s%s", schedule.name, key, request.by, " (force)" if request.force else ""
        )
        track.triggered += 1
        for node in schedule.chain:
            _metrics.observe_skip(node.task_name, "triggered")
        run = prepare_run(
            schedule.chain,
            key,
            redis=self._redis,
            namespace=self._namespace,
            force=request.force,
            wait_timeout=self._wait_timeout,
            limit=self._limit,
            triggered_by=request.by,
            stop=self._stop,
        )
        track.running.add(key)
        results: Results = {}
        try:
            results = await run.run()
            outcome = track.ran(results)
        except Exception:
            logger.exception("%s %s: the triggered run failed to run", schedule.name, key)
            outcome = "error"
            track.runs += 1
        finally:
            track.running.discard(key)
        track.last_outcome = outcome
        logger.info("%s %s (triggered): %s", schedule.name, key, outcome)
        await answer(
            store, triggers, request.id, state="done", by=_me(), key=key, outcome=outcome, results=results
        )

    async def _record_missed(
        self,
        schedule: Schedule,
        slots: list[Slot],
        now: dt.datetime,
        *,
        status: CellState = CellState.MISSED,
        note: str | None = None,
    ) -> None:
        """Leave a ``missed`` (or ``paused``) record for each task of each slot no host ran (history,
        status, grid), and count it.

        Sent after the due slot is fired, so it never delays it; a Redis error is logged only.
        """
        try:
            store, namespace = self._door()
            retention = {
                node.task_name: retention_ms(node.func.retention if isinstance(node.func, Task) else None)
                for node in schedule.chain
            }
            if note is None:
                note = f"slot missed: the scheduler woke at {_iso(now)}, past its catch-up"
            for slot in slots:
                for task in retention:
                    _metrics.observe_skip(task, status.value)
                await record_missed(store, retention, slot.key, namespace=namespace, note=note, status=status)
        except Exception as exc:
            logger.warning("%s: could not record %s slots (%s)", schedule.name, status.value, exc)

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
                stop=self._stop,
            )
            for slot in slots
        ]
        by_key = {slot.key: slot for slot in slots}
        track.running.update(by_key)

        def done(run: ChainRun, results: Results) -> None:
            track.running.discard(run.date)
            track.last, track.last_outcome = by_key[run.date], track.ran(results)
            logger.info("%s %s: %s", schedule.name, run.date, track.last_outcome)

        try:
            await run_window(runs, self._window, done)
        except Exception:
            logger.exception("%s: slots %s failed to run", schedule.name, ", ".join(by_key))
            track.last_outcome = "error"
        finally:
            track.running.difference_update(by_key)


def _after(schedule: Schedule, slots: Iterable[Slot], last: dt.datetime) -> Iterator[Slot]:
    """``slots`` without those not after ``last``, each logged (see :meth:`Scheduler._drive`)."""
    for slot in slots:
        if slot.at > last:
            yield slot
        else:
            logger.warning(
                "%s: skipping slot %s at %s: it is not after %s, where the scheduler already was",
                schedule.name,
                slot.key,
                _iso(slot.at),
                _iso(last),
            )


def _schedules(value: object) -> list[Schedule]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidSchedule(f"expected a Schedule or a list of them, not {value!r}", value)
    found = list(value)
    for item in found:
        if not isinstance(item, Schedule):
            raise InvalidSchedule(f"expected a Schedule, not {item!r}", item)
    return found


def _check_unique_names(schedules: list[Schedule]) -> None:
    """Two schedules with one name would share their controls (pause, trigger): refuse them."""
    seen: set[str | None] = set()
    for schedule in schedules:
        if schedule.name in seen:
            raise InvalidSchedule(
                f"two schedules are named {schedule.name!r}: give each its own name= "
                "(their pause and trigger controls go by name)",
                schedule.name,
            )
        seen.add(schedule.name)


def _outcome(results: Results) -> str:
    """One word for a slot's chain: failed if any task failed, else success (done here or elsewhere)."""
    statuses = {result.get("status") for result in results.values()}
    if Status.FAILED in statuses:
        return "failed"
    if statuses <= {Status.SKIPPED}:
        return "skipped"
    return "success"


def _me() -> str:
    return f"{HOST}:{os.getpid()}"


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
