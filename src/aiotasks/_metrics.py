"""Metrics: in-process Prometheus metrics (optional), and the exposition the CLI computes from records.

In-process (``pip install 'aiotasks-redis[metrics]'``, i.e. ``prometheus_client``),
on the default registry, so a service that already serves ``/metrics`` gets:

``aiotasks_runs_total{task, outcome}``       counter; outcome ``success``, a
    failure's reason (``error``, ``timeout``, ``lock_lost``, ``cancelled``,
    ...) or a skip's (``already_completed``, ``lock_held``); a scheduler's
    slots not run (``missed``, ``paused``) and trigger requests it took
    (``triggered``, besides the triggered run's own outcome)
``aiotasks_run_duration_seconds{task}``      histogram of finished runs
``aiotasks_lock_wait_seconds{task}``         histogram: how long a chain waited
    for another worker's run of the task
``aiotasks_runs_in_progress{task}``          gauge

Without ``prometheus_client`` nothing is imported and each call is one
test of a global. The first call decides (``find_spec``), once per process.

A run's updates are nearly free: plain counts (ints, a float sum, a bucket
found by ``bisect``) under one uncontended lock, with no ``prometheus_client``
code on that path; a collector registered once builds the families from
them at each scrape, the same exposition as the library's ``Counter``,
``Histogram`` and ``Gauge`` would give (``_created`` samples included).

From records (``aiotasks metrics TARGET``): :func:`exposition` renders the
Prometheus text format from every host's records, for node_exporter's
textfile collector or a scrape of ``--serve``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping
from itertools import accumulate
from typing import TYPE_CHECKING, Final, cast

from ._records import TaskSummary

if TYPE_CHECKING:
    from prometheus_client import Counter
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry

__all__ = [
    "enabled",
    "exposition",
    "observe_run",
    "observe_skip",
    "observe_start",
    "observe_wait",
    "serve_metrics",
]

logger = logging.getLogger("aiotasks.metrics")

_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, float("inf"))
#: The buckets' ``le`` labels, written as prometheus_client writes them (``1.0``, ``+Inf``).
_LE: Final = tuple(repr(float(bound)) if bound != float("inf") else "+Inf" for bound in _BUCKETS)

_RUNS: Final = ("aiotasks_runs_total", "Runs and skips, by outcome")
_DURATION: Final = ("aiotasks_run_duration_seconds", "Duration of finished runs")
_WAIT: Final = ("aiotasks_lock_wait_seconds", "Time spent waiting for another worker's run")
_IN_PROGRESS: Final = ("aiotasks_runs_in_progress", "Runs in progress")

# The tallies: plain numbers a run updates under one lock (a few dict and slot
# operations, no allocation once its task and outcome are known); the families are
# built from them at each scrape (:class:`_Collector`). One process-wide lock, because
# runs may finish on event loops in several threads while a scrape reads from the
# exporter's thread: it makes each update whole (``+=`` is a read, then a write) and
# each scrape a consistent snapshot. ``acquire``/``release`` rather than ``with``: half
# the cost on CPython 3.11.
_lock: Final = threading.Lock()


class _Histogram:
    """A histogram's series: per-bucket (not cumulative) counts, the sum, its creation time."""

    __slots__ = ("counts", "created", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(_BUCKETS)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # The first bucket whose bound is >= value: prometheus_client's ``value <= bound``.
        self.counts[bisect_left(_BUCKETS, value)] += 1
        self.total += value


class _Task(_Histogram):
    """A task that started a run: its duration histogram, runs in progress, and its outcomes' counts."""

    __slots__ = ("in_progress", "outcomes")

    def __init__(self, outcomes: dict[str, int]) -> None:
        super().__init__()
        self.in_progress = 0
        self.outcomes = outcomes  # the task's dict in ``_outcomes``, held for one lookup less


#: task -> outcome -> runs and skips
_outcomes: dict[str, dict[str, int]] = {}
#: ``(task, outcome)`` -> when the counter's series appeared (``_created``), in order of appearance
_outcomes_created: dict[tuple[str, str], float] = {}
#: the tasks that started a run (a gauge and a duration histogram each), in order of appearance
_tasks: dict[str, _Task] = {}
#: task -> how long chains waited for another worker's run of it
_waits: dict[str, _Histogram] = {}


def _new_outcome(task: str, outcome: str) -> None:
    """``task``'s first ``outcome`` (0); the first of any of its outcomes makes its dict."""
    outcomes = _outcomes.get(task)
    if outcomes is None:
        outcomes = _outcomes[task] = {}
    if outcome not in outcomes:
        outcomes[outcome] = 0
        _outcomes_created[task, outcome] = time.time()


def _new_task(task: str) -> _Task:
    """``task``'s first start (or a finish without one): its gauge and duration histogram appear."""
    found = _tasks.get(task)
    if found is None:
        found = _tasks[task] = _Task(_outcomes.setdefault(task, {}))
    return found


#: Whether ``prometheus_client`` is installed (and the collector registered); None until the first call.
_on: bool | None = None


def _decide() -> bool:
    """Whether the metrics are on; the first call finds out and registers the collector."""
    global _on
    if _on is None:
        try:
            installed = importlib.util.find_spec("prometheus_client") is not None
        except ValueError:  # sys.modules says it is not importable
            installed = False
        if installed:
            _register()
        _on = installed
    return _on


def _register(registry: CollectorRegistry | None = None) -> None:
    """Put a :class:`_Collector` on ``registry`` (``prometheus_client``'s default one).

    Registering again (a test, ``importlib.reload``) replaces the collector of
    this or an earlier copy of this module; names taken by anyone else are
    logged and left alone (the tallies still count, unexposed).
    """
    from prometheus_client import REGISTRY

    registry = REGISTRY if registry is None else registry
    collector = _Collector()
    try:
        registry.register(collector)
    except ValueError as exc:  # DuplicateTimeseries
        holder = _holder(registry, _RUNS[0])
        ours = type(holder).__module__ == __name__ and type(holder).__qualname__ == _Collector.__qualname__
        if holder is None or not ours:
            logger.warning("aiotasks metrics not registered: %s", exc)
            return
        registry.unregister(holder)
        registry.register(collector)


def _holder(registry: CollectorRegistry, name: str) -> Collector | None:
    """The collector that owns ``name`` on ``registry``; None when it can't be known.

    ``prometheus_client`` has no public lookup (only once, at registration, is
    it needed): its private map of names is read where it exists. Without it
    every holder is unknown, as a stranger's: the collector of an earlier copy
    of this module (``importlib.reload``) then stays, and this one is not
    registered (logged). CI pins this on the lowest and newest ``prometheus_client``.
    """
    names = getattr(registry, "_names_to_collectors", None)
    found = names.get(name) if isinstance(names, dict) else None
    return cast("Collector | None", found)


#: A counter on no registry: whether its samples include ``_created``, asked at each scrape.
_probe: Counter | None = None


def _created_on() -> bool:
    """Whether ``_created`` samples are on (``prometheus_client.disable_created_metrics()``, or
    ``PROMETHEUS_DISABLE_CREATED_SERIES`` at its import), as the library's own instruments read it.

    There is no public getter: a counter of its own answers, through the public
    ``collect()`` (about 3 µs per scrape; nothing per run).
    """
    global _probe
    if _probe is None:
        from prometheus_client import Counter

        _probe = Counter("aiotasks_created_probe", "Whether _created samples are on", registry=None)
    return any(sample.name.endswith("_created") for family in _probe.collect() for sample in family.samples)


class _Collector:
    """Builds the four families from the tallies, at each scrape (``prometheus_client``'s collector protocol).

    The same families, help texts, buckets and sample order (series in order
    of appearance, ``_created`` as the library's own instruments, honouring
    ``disable_created_metrics()``) as ``Counter``, ``Histogram`` and ``Gauge``
    fed the same observations.
    """

    def describe(self) -> list[Metric]:
        """The families without samples: what the registry checks for duplicate names."""
        return list(_families())

    def collect(self) -> list[Metric]:
        """The families with the tallies' samples, copied under the lock."""
        with _lock:
            runs = [(key, _outcomes[key[0]][key[1]], since) for key, since in _outcomes_created.items()]
            in_progress = [(task, tally.in_progress) for task, tally in _tasks.items()]
            histograms = [
                [(task, [*h.counts], h.total, h.created) for task, h in tallies.items()]
                for tallies in (_tasks, _waits)
            ]
        created = _created_on()
        runs_family, duration_family, wait_family, in_progress_family = _families()
        for (task, outcome), value, since in runs:
            runs_family.add_metric((task, outcome), float(value), created=since if created else None)
        for family, rows in zip((duration_family, wait_family), histograms, strict=True):
            for task, counts, total, since in rows:
                family.add_metric((task,), list(zip(_LE, map(float, accumulate(counts)), strict=True)), total)
                if created:
                    family.add_sample(family.name + "_created", {"task": task}, since)
        for task, value in in_progress:
            in_progress_family.add_metric((task,), float(value))
        return [runs_family, duration_family, wait_family, in_progress_family]


def _families() -> tuple[
    CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily, GaugeMetricFamily
]:
    """The four families, empty."""
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    return (
        CounterMetricFamily(*_RUNS, labels=("task", "outcome")),
        HistogramMetricFamily(*_DURATION, labels=("task",)),
        HistogramMetricFamily(*_WAIT, labels=("task",)),
        GaugeMetricFamily(*_IN_PROGRESS, labels=("task",)),
    )


def enabled() -> bool:
    """Whether the in-process metrics are on (``prometheus_client`` is installed)."""
    return _on or _decide()


def observe_start(task: str) -> None:
    """A run of ``task`` took its lock."""
    if not (_on or _decide()):
        return
    _lock.acquire()
    try:
        try:
            _tasks[task].in_progress += 1
        except KeyError:
            _new_task(task).in_progress += 1
    finally:
        _lock.release()


def observe_run(task: str, outcome: str, seconds: float) -> None:
    """A run of this process finished (after :func:`observe_start`), records or not.

    :param outcome: ``success`` or the failure's reason.
    :param seconds: the run's time on this host's monotonic clock.
    """
    if not (_on or _decide()):
        return
    _lock.acquire()
    try:
        try:
            tally = _tasks[task]
        except KeyError:
            tally = _new_task(task)
        tally.in_progress -= 1
        try:
            tally.outcomes[outcome] += 1
        except KeyError:
            _new_outcome(task, outcome)
            tally.outcomes[outcome] += 1
        tally.counts[bisect_left(_BUCKETS, seconds)] += 1  # inline of _Histogram.observe: a call less
        tally.total += seconds
    finally:
        _lock.release()


def observe_skip(task: str, reason: str) -> None:
    """A call of ``task`` was skipped (``already_completed``, ``lock_held``, ``missed``, ``paused``),
    or a scheduler took a trigger of its chain (``triggered``)."""
    if not (_on or _decide()):
        return
    _lock.acquire()
    try:
        try:
            _outcomes[task][reason] += 1
        except KeyError:
            _new_outcome(task, reason)
            _outcomes[task][reason] += 1
    finally:
        _lock.release()


def observe_wait(task: str, seconds: float) -> None:
    """A chain waited ``seconds`` for another worker's run of ``task``."""
    if not (_on or _decide()):
        return
    with _lock:
        histogram = _waits.get(task)
        if histogram is None:
            histogram = _waits[task] = _Histogram()
        histogram.observe(seconds)


# -- the exposition computed from records ---------------------------------------------------

_FAMILIES: Final = (
    ("aiotasks_last_success_timestamp_seconds", "End of the last successful run (server clock)."),
    ("aiotasks_last_failure_timestamp_seconds", "End of the last failed run (server clock)."),
    ("aiotasks_last_run_duration_seconds", "Duration of the last finished run."),
    ("aiotasks_task_running", "Runs of the task holding their lock right now, on any host."),
)
_LAST_END: Final = (
    "aiotasks_task_last_end_timestamp_seconds",
    "End of the newest run of each outcome (server clock): success and failed of every run; "
    "abandoned (its start: a dead run records no end), missed and paused among the task's recent runs.",
)
_PAUSED: Final = (
    "aiotasks_task_paused",
    "1 while the task is paused fleet-wide (aiotasks pause --task): no host starts it; else 0.",
)
#: The outcomes of ``_LAST_END``, in the order of its samples: the statuses a finished record can have.
_ENDED: Final = ("success", "failed", "abandoned", "missed", "paused")


def _last_ends(summary: TaskSummary) -> dict[str, int]:
    """When the newest run of each outcome ended, in ms (an abandoned run: when it started).

    Success and failure come from the index's two scores, which every run
    updates; abandoned, missed and paused (a slot not fired, its schedule
    paused) runs leave no score, so they are looked for among ``summary.runs``
    (newest first).
    """
    found: dict[str, int | None] = {"success": summary.last_success, "failed": summary.last_failure}
    for run in summary.runs:
        if run.status in ("abandoned", "missed", "paused") and found.get(run.status) is None:
            found[run.status] = run.ended if run.ended is not None else run.started
    return {outcome: ms for outcome in _ENDED if (ms := found.get(outcome)) is not None}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def exposition(summaries: Iterable[TaskSummary], paused: Mapping[str, str] | None = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of the tasks' records.

    A task that never succeeded (within the retention) has no
    ``last_success`` sample: alert on its absence too (``absent()``).
    ``aiotasks_task_last_end_timestamp_seconds{task, outcome}`` has a sample
    per outcome seen (``success``, ``failed``, ``abandoned``, ``missed``,
    ``paused``), so an alert can fire on a run that died or a slot no host ran.

    :param paused: the paused tasks (``aiotasks.paused_tasks``): with it, each
        task has an ``aiotasks_task_paused`` sample, 1 or 0 (a skip for a pause
        writes no record, so this is what shows a task held for long).
    """
    rows: dict[str, list[str]] = {name: [] for name, _ in (*_FAMILIES, _LAST_END, _PAUSED)}
    for summary in summaries:
        label = f'{{task="{_label(summary.task)}"}}'
        values = {
            "aiotasks_last_success_timestamp_seconds": summary.last_success and summary.last_success / 1000,
            "aiotasks_last_failure_timestamp_seconds": summary.last_failure and summary.last_failure / 1000,
            "aiotasks_last_run_duration_seconds": summary.last_duration,
            "aiotasks_task_running": summary.running,
        }
        for name, value in values.items():
            if value is not None:
                rows[name].append(f"{name}{label} {_number(value)}")
        for outcome, ms in _last_ends(summary).items():
            rows[_LAST_END[0]].append(
                f'{_LAST_END[0]}{{task="{_label(summary.task)}",outcome="{outcome}"}} {_number(ms / 1000)}'
            )
        if paused is not None:
            rows[_PAUSED[0]].append(f"{_PAUSED[0]}{label} {int(summary.task in paused)}")
    lines = []
    for name, help_text in (*_FAMILIES, _LAST_END, *([_PAUSED] if paused is not None else [])):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *rows[name]]
    return "\n".join(lines) + "\n"


#: The content type of the text exposition.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The longest request head ``serve_metrics`` reads.
MAX_REQUEST: Final = 8192


async def serve_metrics(scrape: Callable[[], Awaitable[bytes]], host: str, port: int) -> asyncio.Server:
    """An HTTP server answering ``GET /metrics`` (and ``/``) with ``await scrape()``.

    One response per connection, computed at each scrape. A failed read
    answers 503 with the error's one line (Redis errors are already free of
    credentials); anything else 404 or 405.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = [*head[:MAX_REQUEST].decode("latin-1").split(" ", 2), "", ""]
            if method not in ("GET", "HEAD"):
                status, body = "405 Method Not Allowed", b"use GET\n"
            elif path.split("?")[0] not in ("/", "/metrics"):
                status, body = "404 Not Found", b"see /metrics\n"
            else:
                try:
                    status, body = "200 OK", await scrape()
                except Exception as exc:
                    logger.warning("metrics scrape failed: %s", exc)
                    status, body = "503 Service Unavailable", f"{exc}\n".encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port, limit=MAX_REQUEST)
