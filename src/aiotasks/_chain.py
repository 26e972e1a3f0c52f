"""Running a chain of dependent tasks: the seed's ``task_chain``, asynchronously.

A chain is a list whose entries are either the seed's dicts::

    {"id": "task_rag_indexing", "func": task_rag_indexing,
     "depends_on": ["task_contributions_analysis"]}

(``func`` is any ``func(date_string) -> dict``: ``async def``, a plain ``def``
run in a worker thread, or a decorated :class:`Task`) or decorated tasks that
declare ``depends_on`` themselves. Optional dict keys for a plain ``func``:
``recurring``, ``timeout``, ``retries``, ``retry_delay`` (a decorated task
carries those itself).

Dependency semantics
    A task starts the moment all its dependencies are *satisfied*: they
    succeeded in this run, or were skipped as ``already_completed``.
    Independent tasks run concurrently; ``max_concurrency`` bounds how many run
    at once. When a dependency failed, or was itself blocked, its dependents do
    not run: they are ``skipped`` with reason ``dependency_failed`` /
    ``dependency_blocked`` and ``blocked_by`` naming the dependency. A task
    paused fleet-wide (``aiotasks pause --task``) is ``skipped`` with reason
    ``paused``; its dependents with ``dependency_paused`` (``blocked_by``
    naming it), theirs in turn with ``dependency_blocked``.

Another worker running a task (``lock_held``)
    The chain waits for it: it polls the task's lock (at once, then after 50 ms,
    then less often, at most every second and never later than the lock's TTL)
    until the lock is gone, then looks again. The lock is the one the task's
    function really used: ``task_boilerplate`` (or a decorated task) tells the
    chain the name it was given, whatever the entry's ``id`` (which should be
    that name: ``status`` looks tasks up by ``id``). A success marker satisfies the
    dependents (the result says ``already_completed`` with ``waited_for``, the
    other run's ``task_id``, and ``wait_seconds``); a free lock without a
    marker means the other worker failed or died, so this worker tries the task
    itself (and may wait again if yet another worker holds it). The pauses
    between polls keep growing across those retries, so no wait polls Redis
    without pausing. A lock is only held while its holder renews it, so a dead
    holder frees it within its ``lock_timeout``; ``wait_timeout`` additionally
    caps the total wait per task (reason ``wait_timeout``). A function that
    says ``lock_held`` without having started its run through aiotasks, while
    no lock of its ``id`` is held, fails: there is nothing to wait for.
    Recurring tasks keep the seed's semantics under a date key:
    one held elsewhere is skipped (``lock_held``) and its dependents in this
    run are blocked (``dependency_lock_held``). Under a slot key a decorated
    recurring task runs once per slot (it checks and writes its marker), so
    it is waited for like any other task.

A holder that dies (taken over)
    Waiting is also what redoes the work of a worker that was SIGKILLed,
    OOM-killed or lost with its host mid-body: its lock is no longer renewed,
    expires within its ``lock_timeout``, and the next poll finds it free with
    no marker, so a waiting worker runs the task (through the lock as always:
    never two bodies at once) and then its dependents. The dead run's record
    reads ``abandoned``, the new one follows it. Every worker that saw
    ``lock_held`` watches, so whichever polls first after the expiry takes
    over and the others find it held again (or done).

Failures are contained
    A task that raises (``TaskError`` or anything else: ``SystemExit``,
    ``KeyboardInterrupt`` and a ``CancelledError`` of its own too) is recorded
    as ``failed`` with the error text, in the result dict its
    ``task_boilerplate`` made when it made one (its ``task_id`` and counters
    kept); it never takes other tasks down.
    Only a real cancellation (of the chain, by a signal or a cancelled parent)
    cancels running bodies; every lock they held is released before the
    cancellation propagates.

Connections
    Seed-style functions (which use the client the chain lends them) run
    within the client's body slots, as decorated bodies do (see
    :mod:`aiotasks._task`): never more at once than its pool can serve.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import graphlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from . import _metrics
from ._boilerplate import new_result, settle_open_run
from ._cancel import shielded
from ._constants import Reason, Status
from ._context import Binding, NodeReport, current, reporting_to, resolve
from ._errors import InvalidChain, InvalidConfig, InvalidInput, RedisUnavailable, TaskError
from ._keys import TaskKeys, check_namespace, check_task_name, is_slot_key, parse_run_key, task_keys
from ._records import TRIGGERED_BY
from ._store import AnyRedis, Store
from ._task import (
    Task,
    backoff,
    check_attempt_options,
    describe_error,
    is_cancellation,
    run_in_thread,
    timeout_message,
)

__all__ = ["Chain", "ChainRun", "Node", "Progress", "State", "run_chain"]

logger = logging.getLogger("aiotasks.chain")

_DICT_KEYS: Final = frozenset({"id", "func", "depends_on", "recurring", "timeout", "retries", "retry_delay"})
_POLL_FIRST: Final = 0.05
_POLL_MAX: Final = 1.0
#: The shortest pause between two polls, even when the holder's lock is about to expire.
_POLL_MIN: Final = 0.01


class State(StrEnum):
    """Where a task of a running chain is; the last three are final."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCESS = "success"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Node:
    """One validated entry of a chain."""

    id: str
    func: Callable[..., Any]
    depends_on: tuple[str, ...]
    #: The name its keys use: the decorated task's name, else the id (which a
    #: seed-style function is expected to pass to ``task_boilerplate``; if it
    #: passes another, a run learns it, see :class:`~aiotasks._context.NodeReport`).
    task_name: str
    recurring: bool = False
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 1.0

    @property
    def is_task(self) -> bool:
        return isinstance(self.func, Task)


class Chain:
    """A validated chain: no duplicate ids, no unknown dependencies, no cycles.

    :param entries: the seed's list of dicts and/or decorated tasks, at least one.
    :raises InvalidChain: naming the culprit, before anything runs.
    """

    def __init__(self, entries: Iterable[Mapping[str, Any] | Task]) -> None:
        if isinstance(entries, Mapping | str | bytes) or not isinstance(entries, Iterable):
            raise InvalidChain(
                f"a chain is a list of task dicts or decorated tasks, not {type(entries).__name__}",
                entries,
            )
        nodes: dict[str, Node] = {}
        for position, entry in enumerate(entries):
            node = _node(entry, position)
            if node.id in nodes:
                raise InvalidChain(f"duplicate task id {node.id!r} in the chain", node.id)
            nodes[node.id] = node
        if not nodes:
            raise InvalidChain("the chain has no tasks", entries)
        for node in nodes.values():
            for dep in node.depends_on:
                if dep not in nodes:
                    raise InvalidChain(f"task {node.id!r} depends on unknown task {dep!r}", dep)
                if dep == node.id:
                    raise InvalidChain(f"task {node.id!r} depends on itself", node.id)
        sorter = graphlib.TopologicalSorter({node.id: node.depends_on for node in nodes.values()})
        try:
            self.order: tuple[str, ...] = tuple(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = list(reversed(exc.args[1]))
            raise InvalidChain(f"dependency cycle: {' -> '.join(cycle)}", cycle) from None
        self.nodes = nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def select(self, only: Iterable[str]) -> Chain:
        """The sub-chain of the tasks in ``only`` and everything they need.

        :raises InvalidChain: when a name in ``only`` is not in the chain.
        """
        wanted: set[str] = set()
        stack = []
        for name in only:
            if name not in self.nodes:
                raise InvalidChain(f"no task {name!r} in the chain", name)
            stack.append(name)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.nodes[name].depends_on)
        return Chain([self._entry(node) for node in self.nodes.values() if node.id in wanted])

    @classmethod
    def merged(cls, chains: Iterable[Chain]) -> Chain:
        """One chain of every task of ``chains`` (several schedules' chains, for status views); a task
        in more than one is kept once (its first)."""
        nodes: dict[str, Node] = {}
        for chain in chains:
            for node in chain:
                nodes.setdefault(node.id, node)
        return cls([cls._entry(node) for node in nodes.values()])

    @staticmethod
    def _entry(node: Node) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": node.id,
            "func": node.func,
            "depends_on": list(node.depends_on),
        }
        if not node.is_task:
            entry.update(
                recurring=node.recurring,
                timeout=node.timeout,
                retries=node.retries,
                retry_delay=node.retry_delay,
            )
        return entry

    def levels(self) -> list[list[str]]:
        """Tasks grouped by depth (each after every dependency), for display."""
        depth: dict[str, int] = {}
        for name in self.order:
            depth[name] = 1 + max((depth[dep] for dep in self.nodes[name].depends_on), default=-1)
        grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for name in self.nodes:
            grouped[depth[name]].append(name)
        return grouped


def _node(entry: object, position: int) -> Node:
    if isinstance(entry, Task):
        return Node(entry.name, entry, entry.depends_on, entry.name, entry.recurring)
    if not isinstance(entry, Mapping):
        raise InvalidChain(
            f"chain entry #{position} must be a dict or a decorated task, not {entry!r}", entry
        )
    unknown = set(entry) - _DICT_KEYS
    if unknown:
        raise InvalidChain(
            f"chain entry #{position} has unknown keys {sorted(unknown)}; allowed: {sorted(_DICT_KEYS)}",
            sorted(unknown),
        )
    func = entry.get("func")
    if not callable(func):
        raise InvalidChain(
            f"chain entry #{position} ({entry.get('id')!r}): func {func!r} is not callable", func
        )
    raw_id = entry.get("id", func.name if isinstance(func, Task) else None)
    try:
        node_id = check_task_name(raw_id)
    except InvalidInput as exc:
        raise InvalidChain(f"chain entry #{position}: {exc}", raw_id) from None
    # The dict's depends_on wins; a decorated task's own applies when the dict has none.
    deps = entry["depends_on"] if "depends_on" in entry else getattr(func, "depends_on", ())
    if isinstance(deps, str) or not isinstance(deps, Iterable):
        raise InvalidChain(f"task {node_id!r}: depends_on must be a list of task ids, not {deps!r}", deps)
    depends_on = tuple(dep.name if isinstance(dep, Task) else dep for dep in deps)
    for dep in depends_on:
        if not isinstance(dep, str):
            raise InvalidChain(f"task {node_id!r}: dependency {dep!r} is not a task id", dep)
    if isinstance(func, Task):
        extra = set(entry) & {"recurring", "timeout", "retries", "retry_delay"}
        if extra:
            raise InvalidChain(
                f"task {node_id!r}: set {sorted(extra)} on the @task decorator, not in the chain entry",
                sorted(extra),
            )
        return Node(node_id, func, depends_on, func.name, func.recurring)
    try:
        timeout, retries, retry_delay = check_attempt_options(
            entry.get("timeout"), entry.get("retries", 0), entry.get("retry_delay", 1.0)
        )
    except InvalidInput as exc:
        raise InvalidChain(f"task {node_id!r}: {exc}", node_id) from None
    recurring = entry.get("recurring", False)
    if not isinstance(recurring, bool):
        raise InvalidChain(f"task {node_id!r}: recurring must be true or false, not {recurring!r}", recurring)
    return Node(node_id, func, depends_on, node_id, recurring, timeout, retries, retry_delay)


@dataclass(slots=True)
class Progress:
    """A task's live state within one chain run (read by the CLI's live view)."""

    state: State = State.PENDING
    started: float | None = None
    finished: float | None = None
    #: While ``waiting``: the other run's task_id and its lock's TTL left (ms).
    holder: str | None = None
    holder_ttl_ms: int | None = None
    result: dict[str, Any] | None = None

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else (now if now is not None else time.monotonic())
        return end - self.started


@dataclass
class ChainRun:
    """One execution of a chain for one date. Use :func:`run_chain` unless you need progress."""

    chain: Chain
    date: str
    store: Store
    namespace: str | None = None
    force: bool = False
    max_concurrency: int | None = None
    wait_timeout: float | None = None
    #: A semaphore shared with other runs (a windowed backfill), used instead of
    #: one of this run's own: ``max_concurrency`` then bounds bodies across all of them.
    limit: asyncio.Semaphore | None = None
    #: ``host:pid`` of who asked for this run (``aiotasks trigger``): each task's
    #: result dict, and so its record, says so.
    triggered_by: str | None = None
    #: Once set (a scheduler is stopping), waits for other workers end at once:
    #: the task is ``skipped`` (``lock_held``), as if it had not waited.
    stop: asyncio.Event | None = None
    progress: dict[str, Progress] = field(init=False)

    def __post_init__(self) -> None:
        self.progress = {name: Progress() for name in self.chain.nodes}
        self._limit = self.limit
        if self._limit is None and self.max_concurrency:
            self._limit = asyncio.Semaphore(self.max_concurrency)
        self._waiting_on = {name: len(node.depends_on) for name, node in self.chain.nodes.items()}
        self._dependents: dict[str, list[str]] = {name: [] for name in self.chain.nodes}
        for node in self.chain:
            for dep in node.depends_on:
                self._dependents[dep].append(node.id)
        #: Per task: the latest run its function started, as it reported it.
        self._learned: dict[str, NodeReport] = {}

    async def run(self) -> dict[str, dict[str, Any]]:
        """Run every task; map each task id to its result dict, in chain order."""
        token = current.set(Binding(self.store.client, self.namespace, self.force))
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for node in self.chain:
                    if not node.depends_on:
                        self._start(node)
        finally:
            current.reset(token)
        return {name: self.progress[name].result or {} for name in self.chain.nodes}

    def _start(self, node: Node) -> None:
        self._group.create_task(self._run_node(node), name=f"aiotasks:{node.id}")

    async def _run_node(self, node: Node) -> None:
        progress = self.progress[node.id]
        progress.started = time.monotonic()
        result = await self._attempt(node)
        wait: _Wait | None = None
        while _held_elsewhere(result) and self._once(node):
            wait = wait or _Wait(time.monotonic(), _POLL_FIRST)
            outcome = await self._wait_for_holder(node, progress, wait)
            if outcome is None:  # the lock is free and there is no marker: try it ourselves
                result = await self._attempt(node)
                continue
            result = outcome  # final, even a lock_held one (stopped waiting)
            break
        if wait is not None:
            result["wait_seconds"] = round(time.monotonic() - wait.started, 3)
            _metrics.observe_wait(node.task_name, result["wait_seconds"])
        self._settle(node, result)

    def _once(self, node: Node) -> bool:
        """Whether the task runs once for this run's key, so that a holder elsewhere is waited for.

        As the task itself decides (see :class:`~aiotasks.Task`): every task but
        a recurring one under a date key. A seed-style recurring function's
        marker is its own business: it keeps the seed's ``lock_held``.
        """
        return not node.recurring or (node.is_task and is_slot_key(self.date))

    async def _attempt(self, node: Node) -> dict[str, Any]:
        progress = self.progress[node.id]
        if self._limit is None:
            progress.state = State.RUNNING
            return await self._call(node)
        async with self._limit:
            progress.state = State.RUNNING
            return await self._call(node)

    async def _call(self, node: Node) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            result = await self._call_once(node)
            # A decorated task retries by itself (node.retries is 0 for it).
            if result["status"] != Status.FAILED or attempt > node.retries:
                if attempt > 1:
                    result["attempts"] = attempt
                return result
            await asyncio.sleep(backoff(node.retry_delay, attempt))

    async def _call_once(self, node: Node) -> dict[str, Any]:
        """Call the task's function once: its result dict, or a failed one whatever it raised.

        Only a real cancellation of the chain propagates. A seed-style run the
        function started but never ended through the library (it wrote its
        marker and deleted its lock by hand, as the seed does) gets its record's
        outcome from the chain: what the function returned, or the failure.
        """
        report = NodeReport(extra={TRIGGERED_BY: self.triggered_by} if self.triggered_by else None)
        try:
            result = await self._invoke(node, report)
        except BaseException:
            if report.task_id is not None and report.result is not None:
                await shielded(settle_open_run(report.task_id, report.result))
            raise
        if report.task_id is not None:
            await settle_open_run(report.task_id, result)
        return result

    async def _invoke(self, node: Node, report: NodeReport) -> dict[str, Any]:
        limit = asyncio.timeout(node.timeout)
        is_async = node.is_task or inspect.iscoroutinefunction(node.func)
        started = time.monotonic()
        try:
            with reporting_to(report):
                async with limit:
                    if node.is_task:  # it takes its own body slot, around its body only
                        returned = await node.func(self.date)
                    else:
                        async with self.store.bodies.hold():
                            if is_async:
                                returned = await node.func(self.date)
                            else:
                                returned = await run_in_thread(node.func, self.date)
        except TaskError as exc:
            if isinstance(exc.result, dict):  # a decorated task's: complete already
                exc.result["status"] = Status.FAILED.value
                return exc.result
            return self._failed(node, exc.message, report=report)
        except TimeoutError as exc:
            if limit.expired():
                waited = None if is_async else time.monotonic() - started
                message = timeout_message(node.timeout, waited, "function")
                return self._failed(node, message, reason=Reason.TIMEOUT, report=report)
            return self._failed(node, describe_error(exc), exc, report=report)
        except BaseException as exc:
            if is_cancellation(exc):
                raise
            return self._failed(node, describe_error(exc), exc, report=report)
        finally:
            self._learn(node, report)
        if not isinstance(returned, dict):
            message = f"task returned {type(returned).__name__}, not a result dict"
            return self._failed(node, message, report=report)
        if returned.get("status") not in (Status.SUCCESS, Status.SKIPPED, Status.FAILED):
            return self._failed(
                node,
                f"task returned status {returned.get('status')!r}: expected success, skipped or failed",
                report=report,
            )
        return returned

    def _learn(self, node: Node, report: NodeReport) -> None:
        if report.task_name is None:
            return
        if report.task_name != node.task_name and node.id not in self._learned:
            logger.warning(
                "chain entry %r runs task %r (the name its function gives task_boilerplate): "
                "waiting uses that name, but status looks tasks up by id: name the entry %r",
                node.id,
                report.task_name,
                report.task_name,
            )
        self._learned[node.id] = report

    def _task_name(self, node: Node) -> str:
        learned = self._learned.get(node.id)
        return learned.task_name if learned is not None and learned.task_name else node.task_name

    def _keys(self, node: Node) -> TaskKeys:
        learned = self._learned.get(node.id)
        if learned is not None and learned.keys is not None:
            return learned.keys
        return task_keys(node.task_name, self.date, namespace=self.namespace, cluster=self.store.cluster)

    def _failed(
        self,
        node: Node,
        message: str,
        exc: BaseException | None = None,
        *,
        reason: Reason | None = None,
        report: NodeReport | None = None,
    ) -> dict[str, Any]:
        """A failed result: the dict of the run the function started, if any, else a new one."""
        if report is not None and report.result is not None:
            result = report.result
        else:
            result = new_result(self._task_name(node), self.date, None)
        result["status"] = Status.FAILED.value
        if message not in result["errors"]:
            result["errors"].append(message)
        if reason is None and isinstance(exc, RedisUnavailable):
            reason = Reason.REDIS_UNAVAILABLE
        if reason is not None:
            result["reason"] = reason.value
        return result

    def _skipped(self, node: Node, reason: Reason, waited_for: str | None) -> dict[str, Any]:
        result = new_result(self._task_name(node), self.date, None)
        result["status"] = Status.SKIPPED.value
        result["reason"] = reason.value
        result["waited_for"] = waited_for
        return result

    async def _wait_for_holder(self, node: Node, progress: Progress, wait: _Wait) -> dict[str, Any] | None:
        """Wait until the other worker's lock is gone.

        :returns: the final result when the wait settles the task (completed
            elsewhere, or waited too long), or None when the lock is free and
            there is no marker, so this worker should try the task itself.
        """
        keys = self._keys(node)
        while True:
            if wait.polls:  # every poll of a wait but its first follows a pause, retries included
                await self._pause_unless_stopped(wait.pause(self.wait_timeout, time.monotonic()))
            if self.stop is not None and self.stop.is_set():
                result = self._skipped(node, Reason.LOCK_HELD, wait.holder)
                held = f" ({wait.holder})" if wait.holder else ""
                result["errors"].append(f"stopped waiting for another worker's run{held}: stopping")
                return result
            wait.polls += 1
            try:
                state = await self.store.status(keys)
            except RedisUnavailable as exc:
                return self._failed(node, str(exc), exc)
            if state.completed and not self.force:
                return self._skipped(node, Reason.ALREADY_COMPLETED, wait.holder)
            if state.holder is None:
                wait.ttl_ms = None
                if wait.holder is None and node.id not in self._learned and not node.is_task:
                    return self._failed(
                        node,
                        f"its function returned lock_held, but it started no run through "
                        f"task_boilerplate and no worker holds {keys.lock!r}: nothing to wait for",
                    )
                return None
            wait.holder, wait.ttl_ms = state.holder, state.ttl_ms
            progress.state, progress.holder, progress.holder_ttl_ms = (
                State.WAITING,
                state.holder,
                state.ttl_ms,
            )
            waited = time.monotonic() - wait.started
            if self.wait_timeout is not None and waited >= self.wait_timeout:
                result = self._skipped(node, Reason.WAIT_TIMEOUT, state.holder)
                result["errors"].append(
                    f"another worker ({state.holder}) still held the task after {waited:.1f}s"
                )
                return result

    async def _pause_unless_stopped(self, seconds: float) -> None:
        """:func:`_pause`, cut short when :attr:`stop` is set."""
        if self.stop is None:
            await _pause(seconds)
            return
        pause = asyncio.ensure_future(_pause(seconds))
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({pause, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pause.cancel()
            stopped.cancel()

    def _settle(self, node: Node, result: dict[str, Any]) -> None:
        progress = self.progress[node.id]
        progress.result = result
        progress.finished = time.monotonic()
        progress.holder = progress.holder_ttl_ms = None
        progress.state = State(result.get("status", State.FAILED))
        if _satisfies(result):
            for dependent in self._dependents[node.id]:
                self._waiting_on[dependent] -= 1
                if self._waiting_on[dependent] == 0 and self.progress[dependent].result is None:
                    self._start(self.chain.nodes[dependent])
            return
        if result.get("status") == Status.FAILED:
            reason = Reason.DEPENDENCY_FAILED
        elif result.get("reason") == Reason.LOCK_HELD:
            reason = Reason.DEPENDENCY_LOCK_HELD
        elif result.get("reason") == Reason.PAUSED:
            reason = Reason.DEPENDENCY_PAUSED
        else:
            reason = Reason.DEPENDENCY_BLOCKED
        for dependent in self._dependents[node.id]:
            self._block(dependent, node.id, reason)

    def _block(self, name: str, blocked_by: str, reason: Reason) -> None:
        progress = self.progress[name]
        if progress.result is not None:
            return  # already blocked through another dependency
        node = self.chain.nodes[name]
        result = new_result(node.task_name, self.date, None)
        result["status"] = Status.SKIPPED.value
        result["reason"] = reason.value
        result["blocked_by"] = blocked_by
        progress.result = result
        progress.state = State.SKIPPED
        logger.info("%s %s: not run, dependency %s: %s", name, self.date, blocked_by, reason.value)
        for dependent in self._dependents[name]:
            self._block(dependent, name, Reason.DEPENDENCY_BLOCKED)


@dataclass(slots=True)
class _Wait:
    """One task's wait for other workers' runs of it, across every retry it makes meanwhile."""

    started: float
    interval: float
    polls: int = 0
    #: The other run's task_id, at the last poll that found one.
    holder: str | None = None
    #: That run's lock TTL in ms at the last poll (None: the lock was free).
    ttl_ms: int | None = None

    def pause(self, wait_timeout: float | None, now: float) -> float:
        """The next pause: the growing interval, never past the lock's TTL nor the wait's end."""
        pause = self.interval
        self.interval = min(self.interval * 1.5, _POLL_MAX)
        if self.ttl_ms is not None and self.ttl_ms >= 0:  # -1: a lock without TTL
            pause = min(pause, max(self.ttl_ms / 1000, _POLL_MIN))
        if wait_timeout is not None:
            pause = min(pause, max(wait_timeout - (now - self.started), _POLL_MIN))
        return pause


async def _pause(seconds: float) -> None:
    """Every pause of a wait for another worker (tests replace it to step through a wait)."""
    await asyncio.sleep(seconds)


def _satisfies(result: Mapping[str, Any]) -> bool:
    status = result.get("status")
    return status == Status.SUCCESS or (
        status == Status.SKIPPED and result.get("reason") == Reason.ALREADY_COMPLETED
    )


def _held_elsewhere(result: Mapping[str, Any]) -> bool:
    return result.get("status") == Status.SKIPPED and result.get("reason") == Reason.LOCK_HELD


def resolve_chain(task_chain: Chain | Sequence[Mapping[str, Any] | Task]) -> Chain:
    """Accept an already validated :class:`Chain` or validate a list."""
    return task_chain if isinstance(task_chain, Chain) else Chain(task_chain)


async def run_chain(
    task_chain: Chain | Sequence[Mapping[str, Any] | Task],
    date_string: str | dt.date | None = None,
    *,
    redis: AnyRedis | None = None,
    max_concurrency: int | None = None,
    namespace: str | None = None,
    force: bool = False,
    wait_timeout: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Run a chain for one date; map each task id to its result dict.

    ::

        results = await aiotasks.run_chain(
            [
                {"id": "task_contributions_analysis", "func": task_contributions_analysis},
                {"id": "task_rag_indexing", "func": task_rag_indexing,
                 "depends_on": ["task_contributions_analysis"]},
            ],
            "20261125",
            redis=client,
        )

    Tasks inside the run that call :func:`task_boilerplate` (or a decorated
    task) without a client use ``redis``, ``namespace`` and ``force``.

    :param task_chain: the seed's list of dicts and/or decorated tasks.
    :param date_string: ``YYYYMMDD`` (default today), validated first.
    :param redis: the client; else the enclosing binding's, else the default
        (``AIOTASKS_REDIS_URL``, else ``redis://localhost:6379/6``).
    :param max_concurrency: how many tasks may run at once (default: no limit).
    :param namespace: key prefix (default ``AIOTASKS_NAMESPACE``, else none).
    :param force: ignore success markers for this run: completed tasks run again.
    :param wait_timeout: the longest total wait, per task, for another worker's
        run of it (default: as long as that worker keeps its lock alive).
    :raises InvalidChain, InvalidDate, InvalidConfig: before anything runs or is written.
    """
    chain = resolve_chain(task_chain)
    run = prepare_run(
        chain,
        date_string,
        redis=redis,
        max_concurrency=max_concurrency,
        namespace=namespace,
        force=force,
        wait_timeout=wait_timeout,
    )
    return await run.run()


def check_run_options(max_concurrency: object, wait_timeout: object) -> None:
    """Validate ``max_concurrency`` (None or >= 1) and ``wait_timeout`` (None or seconds >= 0)."""
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
    ):
        raise InvalidConfig(
            f"max_concurrency must be a positive integer, not {max_concurrency!r}", max_concurrency
        )
    if wait_timeout is not None and (
        isinstance(wait_timeout, bool) or not isinstance(wait_timeout, int | float) or not wait_timeout >= 0
    ):
        raise InvalidConfig(
            f"wait_timeout must be a number of seconds >= 0, not {wait_timeout!r}", wait_timeout
        )


def prepare_run(
    chain: Chain,
    date_string: str | dt.date | None = None,
    *,
    redis: AnyRedis | None = None,
    max_concurrency: int | None = None,
    namespace: str | None = None,
    force: bool = False,
    wait_timeout: float | None = None,
    limit: asyncio.Semaphore | None = None,
    triggered_by: str | None = None,
    stop: asyncio.Event | None = None,
) -> ChainRun:
    """Validate a run's options and build its :class:`ChainRun` (nothing is sent yet).

    :param limit: a semaphore shared with other runs instead of one per run.
    :param triggered_by: ``host:pid`` of who asked for the run (``aiotasks trigger``).
    :param stop: once set, waits for other workers' runs end at once (a stopping scheduler).
    """
    date = parse_run_key(date_string)
    check_run_options(max_concurrency, wait_timeout)
    if namespace is not None:
        check_namespace(namespace)
    store, bound_namespace, _ = resolve(redis)  # the client and namespace a task call would use
    return ChainRun(
        chain,
        date,
        store,
        namespace=bound_namespace if namespace is None else namespace,
        force=force,
        max_concurrency=max_concurrency,
        wait_timeout=wait_timeout,
        limit=limit,
        triggered_by=triggered_by,
        stop=stop,
    )
