"""Metrics: in-process Prometheus metrics (optional), and the exposition the CLI computes from records.

In-process (``pip install 'aiotasks-redis[metrics]'``, i.e. ``prometheus_client``),
on the default registry, so a service that already serves ``/metrics`` gets:

``aiotasks_runs_total{task, outcome}``       counter; outcome ``success``, a
    failure's reason (``error``, ``timeout``, ``lock_lost``, ``cancelled``,
    ...) or a skip's (``already_completed``, ``lock_held``)
``aiotasks_run_duration_seconds{task}``      histogram of finished runs
``aiotasks_lock_wait_seconds{task}``         histogram: how long a chain waited
    for another worker's run of the task
``aiotasks_runs_in_progress{task}``          gauge

Without ``prometheus_client`` nothing is imported and each call is one
attribute test. The first call decides (``find_spec``), once per process.

From records (``aiotasks metrics TARGET``): :func:`exposition` renders the
Prometheus text format from every host's records, for node_exporter's
textfile collector or a scrape of ``--serve``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from ._records import TaskSummary

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


class _Instruments:
    def __init__(self, client: Any) -> None:
        self.runs = client.Counter("aiotasks_runs_total", "Runs and skips, by outcome", ["task", "outcome"])
        self.duration = client.Histogram(
            "aiotasks_run_duration_seconds", "Duration of finished runs", ["task"], buckets=_BUCKETS
        )
        self.wait = client.Histogram(
            "aiotasks_lock_wait_seconds", "Time spent waiting for another worker's run", ["task"],
            buckets=_BUCKETS,
        )  # fmt: skip
        self.in_progress = client.Gauge("aiotasks_runs_in_progress", "Runs in progress", ["task"])
        # The labelled children, looked up once per task (``labels()`` takes a lock and a dict per call).
        self._task: dict[str, tuple[Any, Any]] = {}
        self._outcome: dict[tuple[str, str], Any] = {}

    def of_task(self, task: str) -> tuple[Any, Any]:
        """``task``'s in-progress gauge and duration histogram."""
        found = self._task.get(task)
        if found is None:
            found = self._task[task] = (self.in_progress.labels(task), self.duration.labels(task))
        return found

    def runs_of(self, task: str, outcome: str) -> Any:
        """``task``'s runs counter for ``outcome``."""
        found = self._outcome.get((task, outcome))
        if found is None:
            found = self._outcome[task, outcome] = self.runs.labels(task, outcome)
        return found


_state: dict[str, _Instruments | None] = {}


def _instruments() -> _Instruments | None:
    try:
        return _state["default"]
    except KeyError:
        pass
    found = None
    try:
        installed = importlib.util.find_spec("prometheus_client") is not None
    except ValueError:  # sys.modules says it is not importable
        installed = False
    if installed:
        import prometheus_client

        found = _Instruments(prometheus_client)
    _state["default"] = found
    return found


def enabled() -> bool:
    """Whether the in-process metrics are on (``prometheus_client`` is installed)."""
    return _instruments() is not None


def observe_start(task: str) -> None:
    """A run of ``task`` took its lock."""
    metrics = _instruments()
    if metrics is not None:
        metrics.of_task(task)[0].inc()


def observe_run(task: str, outcome: str, seconds: float) -> None:
    """A run of this process finished (after :func:`observe_start`), records or not.

    :param outcome: ``success`` or the failure's reason.
    :param seconds: the run's time on this host's monotonic clock.
    """
    metrics = _instruments()
    if metrics is None:
        return
    in_progress, duration = metrics.of_task(task)
    in_progress.dec()
    metrics.runs_of(task, outcome).inc()
    duration.observe(seconds)


def observe_skip(task: str, reason: str) -> None:
    """A call of ``task`` was skipped (``already_completed``, ``lock_held``, ``missed``)."""
    metrics = _instruments()
    if metrics is not None:
        metrics.runs_of(task, reason).inc()


def observe_wait(task: str, seconds: float) -> None:
    """A chain waited ``seconds`` for another worker's run of ``task``."""
    metrics = _instruments()
    if metrics is not None:
        metrics.wait.labels(task).observe(seconds)


# -- the exposition computed from records ---------------------------------------------------

_FAMILIES: Final = (
    ("aiotasks_last_success_timestamp_seconds", "End of the last successful run (server clock)."),
    ("aiotasks_last_failure_timestamp_seconds", "End of the last failed run (server clock)."),
    ("aiotasks_last_run_duration_seconds", "Duration of the last finished run."),
    ("aiotasks_task_running", "Runs of the task holding their lock right now, on any host."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def exposition(summaries: Iterable[TaskSummary]) -> str:
    """The Prometheus text exposition (format 0.0.4) of the tasks' records.

    A task that never succeeded (within the retention) has no
    ``last_success`` sample: alert on its absence too (``absent()``).
    """
    rows: dict[str, list[str]] = {name: [] for name, _ in _FAMILIES}
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
    lines = []
    for name, help_text in _FAMILIES:
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
