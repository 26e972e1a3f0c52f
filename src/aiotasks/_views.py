"""What the CLI shows: summaries, the live view, plans and status tables.

Pure formatting: these functions take results and return strings, so they are
tested without a terminal. Only ``_cli`` writes to streams.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

from ._boilerplate import new_result
from ._chain import Chain, ChainRun, Progress, State
from ._constants import Reason, Status
from ._records import Cell, CellState, RunRecord, iso

__all__ = [
    "cell_mark",
    "cell_rows",
    "control_line",
    "controls_json",
    "controls_lines",
    "exit_code",
    "grid_json",
    "grid_text",
    "history_text",
    "interrupted_results",
    "live_frame",
    "paused_by",
    "plan_dot",
    "plan_mermaid",
    "plan_text",
    "status_cells_text",
    "summarize",
    "summary_line",
    "task_lines",
    "to_json",
]

#: Exit codes of ``python -m aiotasks`` (documented in docs/reference/exit-codes.md).
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REDIS: Final = 3
EXIT_SIGINT: Final = 130
EXIT_SIGTERM: Final = 143

_OK_SKIPS: Final = frozenset({Reason.ALREADY_COMPLETED, Reason.LOCK_HELD})
_MARKS: Final = {
    State.PENDING: " ",
    State.RUNNING: ">",
    State.WAITING: "~",
    State.SUCCESS: "+",
    State.SKIPPED: "-",
    State.FAILED: "!",
}


def _category(result: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]) -> str:
    status, reason = result.get("status"), result.get("reason")
    if status == Status.SUCCESS:
        return "success"
    if status == Status.SKIPPED and reason == Reason.ALREADY_COMPLETED:
        return "completed"
    if status == Status.SKIPPED and reason == Reason.LOCK_HELD:
        return "held"
    if status == Status.FAILED:
        return "failed"
    if _held_by_a_pause(result, results):
        return "paused"
    return "blocked"


def _held_by_a_pause(result: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether a skipped task is paused, or blocked only because a task it needs is."""
    for _ in range(len(results) + 1):  # follows blocked_by up to the task that did not succeed
        reason = result.get("reason")
        if reason in (Reason.PAUSED, Reason.DEPENDENCY_PAUSED):
            return True
        if reason != Reason.DEPENDENCY_BLOCKED or result.get("blocked_by") not in results:
            return False
        result = results[result["blocked_by"]]
    return False


def summarize(results: Mapping[str, Mapping[str, Any]], elapsed: float) -> dict[str, Any]:
    """Counts per outcome, the elapsed time and the exit code of one chain run.

    ``completed`` counts tasks skipped because their marker exists; ``held``
    recurring tasks another worker was running (not an error in itself);
    ``paused`` tasks paused fleet-wide (``aiotasks pause --task``) and those
    not run because a task they need is (not an error: the operator asked);
    ``blocked`` tasks not run because a dependency did not succeed, or whose
    wait for another worker timed out.
    """
    counts = Counter(_category(result, results) for result in results.values())
    names = ("success", "completed", "held", "failed", "blocked", "paused")
    summary: dict[str, Any] = {
        "total": len(results),
        **{name: counts.get(name, 0) for name in names},
        "elapsed_s": round(elapsed, 3),
    }
    summary["exit_code"] = exit_code([summary], results.values())
    return summary


def exit_code(summaries: list[dict[str, Any]], results: Any = ()) -> int:
    """0 when nothing failed or was blocked; 3 when a failure was Redis being unavailable; else 1."""
    if any(result.get("reason") == Reason.REDIS_UNAVAILABLE for result in results):
        return EXIT_REDIS
    if any(summary.get("exit_code") == EXIT_REDIS for summary in summaries):
        return EXIT_REDIS
    if any(summary["failed"] or summary["blocked"] for summary in summaries):
        return EXIT_FAILED
    return EXIT_OK


def _detail(result: Mapping[str, Any]) -> str:
    reason = result.get("reason")
    parts = [str(result.get("status"))]
    if reason:
        parts.append(f"({reason}{': ' + str(result['blocked_by']) if result.get('blocked_by') else ''})")
    if result.get("waited_for"):
        parts.append(f"after waiting {result.get('wait_seconds', 0):.1f}s for {result['waited_for']}")
    if result.get("errors"):
        parts.append(f"- {result['errors'][-1]}")
    return " ".join(parts)


def interrupted_results(run: ChainRun) -> dict[str, dict[str, Any]]:
    """The results of a run cut short by a signal: each finished task's own, the rest
    ``cancelled`` (status ``failed`` if it had started, its lock released; else ``skipped``)."""
    results = {}
    for name, progress in run.progress.items():
        if progress.result is not None:
            results[name] = progress.result
            continue
        result = new_result(run.chain.nodes[name].task_name, run.date, None)
        started = progress.state is not State.PENDING
        result["status"] = (Status.FAILED if started else Status.SKIPPED).value
        result["reason"] = Reason.CANCELLED.value
        results[name] = result
    return results


def task_lines(run: ChainRun) -> list[str]:
    """One line per task of a finished run: mark, id, outcome, time."""
    width = max((len(name) for name in run.progress), default=0)
    lines = []
    for name, progress in run.progress.items():
        elapsed = progress.elapsed()
        shown = f"{elapsed:7.2f}s" if elapsed is not None else " " * 8
        result = progress.result or {}
        lines.append(f"  {_MARKS[progress.state]} {name:<{width}}  {shown}  {_detail(result)}")
    return lines


def result_lines(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per task from result dicts alone (a run another process made: ``trigger --wait``)."""
    width = max((len(name) for name in results), default=0)
    states: dict[Any, State] = {
        Status.SUCCESS: State.SUCCESS,
        Status.SKIPPED: State.SKIPPED,
        Status.FAILED: State.FAILED,
    }
    return [
        f"  {_MARKS[states.get(result.get('status'), State.PENDING)]} {name:<{width}}  {_detail(result)}"
        for name, result in results.items()
    ]


#: How each count of a summary reads in a sentence (``completed`` alone read as another success).
_SAID: Final = {
    "success": "succeeded",
    "completed": "already done",
    "held": "held elsewhere",
    "failed": "failed",
    "blocked": "blocked",
}


def summary_line(date: str, summary: Mapping[str, Any]) -> str:
    """``20261125: 3 tasks: 2 succeeded, 1 already done, 0 held elsewhere, 0 failed, 0 blocked in 0.18s``
    (and ``, 2 paused`` when some are)."""
    said = {**_SAID, "paused": "paused"} if summary.get("paused") else _SAID
    counts = ", ".join(f"{summary[name]} {word}" for name, word in said.items())
    return f"{date}: {summary['total']} tasks: {counts} in {summary['elapsed_s']:.2f}s"


def _live_line(name: str, progress: Progress, width: int, now: float) -> str:
    elapsed = progress.elapsed(now)
    shown = f"{elapsed:7.1f}s" if elapsed is not None else " " * 8
    if progress.state is State.WAITING:
        ttl = (progress.holder_ttl_ms or 0) / 1000
        what = f"waiting (held by {progress.holder}, TTL {ttl:.0f}s)"
    elif progress.result is not None:
        what = _detail(progress.result)
    else:
        what = progress.state.value
    return f"  {_MARKS[progress.state]} {name:<{width}}  {shown}  {what}"


def live_frame(run: ChainRun, rows: int, now: float | None = None) -> list[str]:
    """The live view's lines for a terminal of ``rows`` rows.

    Every task when they fit; else the counts and the tasks running or
    waiting (the ones an operator watches).
    """
    now = time.monotonic() if now is None else now
    counts = Counter(progress.state for progress in run.progress.values())
    header = f"{run.date}: " + ", ".join(f"{counts.get(state, 0)} {state.value}" for state in State)
    width = max((len(name) for name in run.progress), default=0)
    items = list(run.progress.items())
    if len(items) + 1 > rows:
        active = [(n, p) for n, p in items if p.state in (State.RUNNING, State.WAITING)]
        items = active[: max(rows - 2, 0)]
        width = max((len(name) for name, _ in items), default=0)
        hidden = len(active) - len(items)
        extra = [f"  ... and {hidden} more running or waiting"] if hidden > 0 else []
        return [header, *(_live_line(n, p, width, now) for n, p in items), *extra]
    return [header, *(_live_line(n, p, width, now) for n, p in items)]


def plan_text(chain: Chain) -> str:
    """Tasks in dependency order, one step per line, each with what it waits for."""
    lines = []
    for step, names in enumerate(chain.levels(), start=1):
        for name in names:
            node = chain.nodes[name]
            after = f"  after {', '.join(node.depends_on)}" if node.depends_on else ""
            flags = "  (recurring)" if node.recurring else ""
            lines.append(f"{step:>3}. {name}{after}{flags}")
    return "\n".join(lines)


def plan_mermaid(chain: Chain) -> str:
    """The chain as a Mermaid flowchart.

    Nodes get generated ids (``n0``, ``n1``, ...) and the task ids as quoted
    labels: ids derived from names would merge ``a.b``, ``a_b`` and ``a-b``,
    and a task named ``end`` (a Mermaid keyword) would break the chart.
    """
    ids = {name: f"n{number}" for number, name in enumerate(chain.order)}
    lines = ["flowchart TD"]
    for name in chain.order:
        label = name.replace('"', "#quot;")
        lines.append(f'    {ids[name]}["{label}"]')
        lines.extend(f"    {ids[dep]} --> {ids[name]}" for dep in chain.nodes[name].depends_on)
    return "\n".join(lines)


def plan_dot(chain: Chain) -> str:
    """The chain as a Graphviz digraph."""
    lines = ["digraph chain {", "    rankdir=LR;"]
    for name in chain.order:
        lines.append(f'    "{name}";')
        lines.extend(f'    "{dep}" -> "{name}";' for dep in chain.nodes[name].depends_on)
    lines.append("}")
    return "\n".join(lines)


def to_json(document: Any) -> str:
    """One JSON document, keys in a stable order."""
    return json.dumps(document, indent=2, default=str)


# -- run records: status cells, the date grid, history ---------------------------------------------

_CELL_MARKS: Final = {
    CellState.COMPLETED: ("+", "32"),
    CellState.FAILED: ("!", "31"),
    CellState.RUNNING: (">", "36"),
    CellState.ABANDONED: ("?", "33"),
    CellState.PENDING: (".", "2"),
    CellState.RECURRING: ("~", "2"),
    CellState.MISSED: ("x", "33"),
    CellState.PAUSED: ("=", "35"),
}


def cell_mark(state: CellState | str) -> str:
    """The one character ``status`` draws for a cell's state (``+`` completed, ``!`` failed, ...)."""
    return _CELL_MARKS[CellState(state)][0]


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def cell_rows(cells: Mapping[str, Cell]) -> list[dict[str, Any]]:
    """One date's cells as ``status --json`` rows: ``{"task", "state", ...}``."""
    return [{"task": name, **cell.to_json()} for name, cell in cells.items()]


def _cell_detail(cell: Cell) -> str:
    run = cell.run
    parts = []
    if cell.state is CellState.RUNNING:
        parts.append(f"holder {cell.holder}, TTL {(cell.ttl_ms or 0) / 1000:.0f}s left")
        if cell.cancel_requested_by:
            parts.append(f"cancel requested by {cell.cancel_requested_by}")
    elif cell.reason:
        parts.append(cell.reason)
    if run is not None:
        if run.host:
            parts.append(f"{run.host}:{run.pid}")
        moment = run.ended if run.ended is not None else run.started
        if moment is not None:
            parts.append(f"{'ended' if run.ended is not None else 'started'} {iso(moment)}")
        if cell.state is not CellState.COMPLETED and run.error:
            parts.append(run.error.splitlines()[0][:120])
        if run.triggered_by:
            parts.append(f"triggered by {run.triggered_by}")
    return f" ({'; '.join(parts)})" if parts else ""


def status_cells_text(date: str, cells: Mapping[str, Cell], *, color: bool = False) -> str:
    """One date: each task's state, with its holder, reason, host:pid and time when known."""
    width = max((len(name) for name in cells), default=0)
    lines = [f"{date}:"]
    for name, cell in cells.items():
        state = _paint(f"{cell.state.value:<9}", _CELL_MARKS[cell.state][1], color)
        lines.append(f"  {name:<{width}}  {state}{_cell_detail(cell)}".rstrip())
    return "\n".join(lines)


def grid_json(dates: list[str], grid: Mapping[str, Mapping[str, Cell]]) -> dict[str, Any]:
    """``{"dates": [...], "tasks": {task: {date: {"state": ..., ...}}}}``."""
    return {
        "dates": dates,
        "tasks": {
            name: {date: cell.to_json() for date, cell in cells.items()} for name, cells in grid.items()
        },
    }


_ATTENTION: Final = frozenset(
    {CellState.FAILED, CellState.RUNNING, CellState.ABANDONED, CellState.MISSED, CellState.PAUSED}
)


def grid_text(dates: list[str], grid: Mapping[str, Mapping[str, Cell]], *, color: bool = False) -> str:
    """Tasks x dates, one character per cell, then every cell that needs a look.

    ``+`` completed, ``!`` failed, ``>`` running, ``?`` abandoned, ``.`` pending,
    ``~`` recurring (no run recorded), ``x`` missed by a scheduler, ``=`` not
    fired, its schedule paused; a column per
    date, its day of month above every 7th column.
    """
    width = max((len(name) for name in grid), default=0)
    ticks = "".join(date[6:8][0] if i % 7 == 0 else " " for i, date in enumerate(dates))
    days = "".join(date[6:8][1] if i % 7 == 0 else " " for i, date in enumerate(dates))
    lines = [
        f"{dates[0]} .. {dates[-1]}  (+ completed  ! failed  > running  ? abandoned  . pending"
        "  ~ recurring  x missed  = paused)",
        f"  {'':<{width}}  {ticks}",
        f"  {'':<{width}}  {days}",
    ]
    attention = []
    for name, cells in grid.items():
        row = "".join(_paint(*_CELL_MARKS[cells[d].state], color) for d in dates)
        lines.append(f"  {name:<{width}}  {row}")
        for date in dates:
            cell = cells[date]
            if cell.state in _ATTENTION:
                attention.append(f"  {date} {name}: {cell.state.value}{_cell_detail(cell)}")
    counts = Counter(cell.state for cells in grid.values() for cell in cells.values())
    rare = (CellState.RECURRING, CellState.MISSED, CellState.PAUSED)
    shown = [state for state in CellState if state not in rare or counts.get(state)]
    lines.append("  " + ", ".join(f"{counts.get(state, 0)} {state.value}" for state in shown))
    return "\n".join([*lines, *attention])


def history_text(runs: list[RunRecord]) -> str:
    """Runs newest first: date, task, outcome/reason, host:pid, start, duration, attempts, first error.

    Each column is as wide as its widest entry on the page: task names, run keys (a date or a
    slot), outcomes and hosts differ in length.
    """
    if not runs:
        return "no runs recorded"
    rows = []
    for run in runs:
        outcome = run.status + (f"/{run.reason}" if run.reason else "")
        duration = f"{run.duration:9.3f}s" if run.duration is not None else " " * 10
        error = f"  {run.error.splitlines()[0][:120]}" if run.error else ""
        attempts = f"x{run.attempts}" if run.attempts else "  "
        by = f"  triggered by {run.triggered_by}" if run.triggered_by else ""
        rest = f"{iso(run.started) or '-':<24}  {duration} {attempts}{error}{by}"
        rows.append((run.date, run.task, outcome, f"{run.host}:{run.pid}", rest))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "\n".join(
        "  ".join(field.ljust(width) for field, width in zip(row[:4], widths, strict=True))
        + f"  {row[4]}".rstrip()
        for row in rows
    )


def paused_by(value: str) -> str:
    """A pause key's ``host:pid|ms`` as ``host:pid since 2026-11-24T02:00:00Z``."""
    who, _, ms = value.partition("|")
    since = iso(int(ms)) if ms.isdigit() and int(ms) > 0 else None
    return f"{who} since {since}" if since else who


def control_line(what: str, name: str, *, pausing: bool, changed: bool, by: str | None = None) -> str:
    """What ``pause`` / ``resume`` did: ``schedule 'nightly': paused``, or that nothing changed, and why."""
    head = f"{what} {name!r}:"
    if changed and pausing:
        where = "no replica fires its slots" if what == "schedule" else "it starts nowhere"
        return f"{head} paused ({where} until `aiotasks resume`)"
    if changed:
        return f"{head} resumed"
    if pausing:
        who = f" by {paused_by(by)}" if by else ""
        return f"{head} already paused{who}; nothing changed"
    return f"{head} not paused; nothing changed"


def _pause_json(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    who, _, ms = value.partition("|")
    return {"by": who, "since": iso(int(ms)) if ms.isdigit() and int(ms) > 0 else None}


def controls_json(
    paused: Mapping[str, str], schedules: Mapping[str, tuple[str | None, int]] | None = None
) -> dict[str, Any]:
    """The controls in effect, for ``--json`` documents: ``{"paused_tasks": {id: {"by", "since"}}}``,
    and with schedules ``"schedules": {name: {"paused": {"by", "since"} or null, "pending_triggers"}}``."""
    document: dict[str, Any] = {"paused_tasks": {name: _pause_json(who) for name, who in paused.items()}}
    if schedules is not None:
        document["schedules"] = {
            name: {"paused": _pause_json(who), "pending_triggers": pending}
            for name, (who, pending) in schedules.items()
        }
    return document


def controls_lines(
    paused: Mapping[str, str], schedules: Mapping[str, tuple[str | None, int]] | None = None
) -> list[str]:
    """The controls in effect, for ``status`` and ``history``: each schedule (paused by whom, pending
    triggers) and each paused task; nothing when no schedule is shown and no task is paused."""
    lines = []
    for name, (who, pending) in (schedules or {}).items():
        state = f"paused by {paused_by(who)}" if who is not None else "not paused"
        waiting = f"; {pending} trigger{'s' if pending != 1 else ''} pending" if pending else ""
        lines.append(f"  schedule {name!r}: {state}{waiting}")
    for name, who in paused.items():
        lines.append(f"  task {name!r}: paused by {paused_by(who)} (it starts nowhere until resumed)")
    return ["controls:", *lines] if lines else []
