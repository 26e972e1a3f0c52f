"""What the faces read: status grids, history, one date's runs and the fleet's overview.

The CLI (``status``, ``history``) and the web console (``aiotasks.web``) show
the same records; the reading lives here, below both, so they agree. Every
reader is bounded: one read script per task (``GRID``, ``RUNS``), sent
together in one coalesced batch by the door, plus one command per schedule
(its controls) and per run in progress (its lock's TTL). Nothing here knows
about terminals, HTTP or exit codes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._cancel_run import pending_cancels
from ._chain import Chain, Node
from ._constants import Reason
from ._keys import schedule_keys, task_keys
from ._records import Cell, CellState, RunRecord, decode_record, iso, read_grid, read_runs, record_keys
from ._schedule import Schedule
from ._store import Store

__all__ = [
    "ATTENTION",
    "Overview",
    "newest_first",
    "read_date_runs",
    "read_history",
    "read_overview",
    "read_status",
    "schedule_keys_between",
]

#: Outcomes the overview lists under "needs attention" (``cancelled`` is a reason).
ATTENTION: Final = frozenset({"failed", CellState.ABANDONED.value, CellState.MISSED.value})
#: Runs per task the overview reads (running ones and the last day's are among them).
OVERVIEW_RECENT: Final = 50
#: How far back the overview's "needs attention" looks.
ATTENTION_WINDOW: Final = dt.timedelta(days=1)


def unique_nodes(chains: Iterable[Chain]) -> list[Node]:
    """Every node of ``chains`` once (by id, first seen first)."""
    found: dict[str, Node] = {}
    for chain in chains:
        for node in chain:
            found.setdefault(node.id, node)
    return list(found.values())


async def read_status(
    store: Store, nodes: Sequence[Node], keys: Sequence[str], *, namespace: str | None
) -> dict[str, dict[str, Cell]]:
    """Each node's cell per run key (one GRID script per task), as ``status`` shows them.

    A running cell carries its pending cancel request, if any. A recurring
    task never writes a marker: with no record of a run it reads
    ``recurring``, not ``pending``.
    """
    names = list(dict.fromkeys(node.task_name for node in nodes))
    grid = await read_grid(store, names, keys, namespace=namespace)
    cells = await pending_cancels(store, grid, namespace=namespace)
    return {
        node.id: {
            key: Cell(CellState.RECURRING) if node.recurring and cell.state is CellState.PENDING else cell
            for key, cell in cells[node.task_name].items()
        }
        for node in nodes
    }


def newest_first(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Runs newest first (by start, then task), as ``history`` lists them."""
    return sorted(runs, key=lambda run: (run.started or 0, run.task), reverse=True)


def outcome_of(run: RunRecord) -> str:
    """The outcome a history filter matches: ``cancelled`` when that was the reason, else the status."""
    return Reason.CANCELLED.value if run.reason == Reason.CANCELLED else run.status


async def read_history(
    store: Store,
    nodes: Sequence[Node],
    *,
    namespace: str | None,
    last: int,
    outcomes: Sequence[str] = (),
) -> list[RunRecord]:
    """The ``last`` newest runs of ``nodes`` per task merged newest first, those of ``outcomes`` only
    (all when empty): one RUNS script per task."""
    names = list(dict.fromkeys(node.task_name for node in nodes))
    summaries = await read_runs(store, names, namespace=namespace, last=last)
    runs = (run for summary in summaries.values() for run in summary.runs)
    if outcomes:
        runs = (run for run in runs if outcome_of(run) in outcomes)
    return newest_first(runs)


async def read_date_runs(store: Store, task: str, key: str, *, namespace: str | None) -> list[RunRecord]:
    """Every run recorded for ``task`` and run key ``key``, newest first (a grid cell opened).

    Two commands sent together: the date's runs hash and its lock's holder.
    """
    lock = task_keys(task, key, namespace=namespace, cluster=store.cluster).lock
    found = record_keys(lock)
    if found is None:
        return []
    fields, holder = await store.read_records(found.state, lock)
    runs = []
    for name, start in fields.items():
        if name in ("f", "l") or ":" in name:
            continue
        run = decode_record(task, key, name, start, fields.get(f"{name}:o"), fields.get(f"{name}:c"), holder)
        if run is not None:
            runs.append(run)
    return newest_first(runs)


def schedule_keys_between(schedule: Schedule | None, first: dt.date, last: dt.date, most: int) -> list[str]:
    """The run keys of ``schedule`` from day ``first`` to day ``last`` (its zone), oldest first.

    A daily schedule (and a chain with none: ``None``) keys each run by its
    logical date: the dates themselves. A
    sub-daily one by its slots: the newest ``most`` of those days' slots that
    fired by now (a grid of every second of a day would be no use to anyone).
    """
    if schedule is None or schedule.daily:
        return [(first + dt.timedelta(days=n)).strftime("%Y%m%d") for n in range((last - first).days + 1)]
    start = dt.datetime.combine(first, dt.time(), schedule.zone) - dt.timedelta(microseconds=1)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), schedule.zone)
    now = dt.datetime.now(dt.UTC)
    until = min(end - dt.timedelta(microseconds=1), now)
    # Walk back from the end: the newest slots are the ones wanted.
    keys: list[str] = []
    step = (schedule.interval or dt.timedelta(minutes=1)) * most
    upper = until
    while len(keys) < most and upper > start:
        lower = max(upper - step, start)
        keys = [slot.key for slot in schedule.slots_between(lower, upper)] + keys
        upper = lower
    return keys[-most:]


@dataclass(frozen=True, slots=True)
class Overview:
    """The fleet at a glance: its schedules, the runs in progress, what needs attention."""

    now: dt.datetime
    schedules: list[dict[str, Any]]
    running: list[dict[str, Any]]
    attention: list[RunRecord]

    def to_json(self) -> dict[str, Any]:
        """The overview's JSON document (the web console's ``/api/overview``)."""
        return {
            "now": iso(int(self.now.timestamp() * 1000)),
            "schedules": self.schedules,
            "running": self.running,
            "attention": [run.to_json() for run in self.attention],
        }


def _iso(at: dt.datetime | None) -> str | None:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if at else None


def _slot_outcome(chain: Chain, runs: Mapping[str, list[RunRecord]], key: str) -> str:
    """One slot's outcome across its chain: the worst of its tasks' latest runs for ``key``."""
    latest = []
    for node in chain:
        found = [run for run in runs.get(node.task_name, ()) if run.date == key]
        if found:
            latest.append(found[0])  # runs are newest first
    if not latest:
        return "not run"
    states = {outcome_of(run) for run in latest}
    for state in ("running", "failed", Reason.CANCELLED.value, "abandoned", "paused", "missed"):
        if state in states:
            return state
    return "success" if len(latest) == len(chain) else "partial"


async def read_overview(
    store: Store,
    schedules: Sequence[Schedule],
    nodes: Sequence[Node],
    *,
    namespace: str | None,
    now: dt.datetime,
    recent: int = OVERVIEW_RECENT,
) -> Overview:
    """Read the overview: each task's ``recent`` newest runs (one RUNS script per task), each
    schedule's controls (one command each) and the lock TTL of each run in progress."""
    names = list(dict.fromkeys(node.task_name for node in nodes))
    summaries, controls = await asyncio.gather(
        read_runs(store, names, namespace=namespace, last=recent),
        asyncio.gather(
            *(store.read_schedule(schedule_keys(str(s.name), namespace=namespace)) for s in schedules)
        ),
    )
    runs = {task: summary.runs for task, summary in summaries.items()}
    active = newest_first(run for task_runs in runs.values() for run in task_runs if run.status == "running")
    states = await asyncio.gather(
        *(
            store.status(task_keys(run.task, run.date, namespace=namespace, cluster=store.cluster))
            for run in active
        )
    )
    running = [
        {**run.to_json(), "ttl_s": round(max(state.ttl_ms, 0) / 1000, 1)}
        for run, state in zip(active, states, strict=True)
    ]
    since = int((now - ATTENTION_WINDOW).timestamp() * 1000)
    attention = newest_first(
        run
        for task_runs in runs.values()
        for run in task_runs
        if (run.started or 0) >= since and (run.status in ATTENTION or run.reason == Reason.CANCELLED)
    )
    listed = []
    for schedule, (paused, pending) in zip(schedules, controls, strict=True):
        last, upcoming = schedule.last_slot(now), schedule.next_slot(now)
        listed.append(
            {
                "name": schedule.name,
                "rule": schedule.rule,
                "tz": schedule.tz,
                "tasks": [node.id for node in schedule.chain],
                "next_fire": _iso(upcoming.at),
                "next_key": upcoming.key,
                "last_fire": _iso(last.at) if last else None,
                "last_key": last.key if last else None,
                "last_outcome": _slot_outcome(schedule.chain, runs, last.key) if last else None,
                "paused": paused,
                "pending_triggers": pending,
            }
        )
    return Overview(now, listed, running, attention)
