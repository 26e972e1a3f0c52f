"""In-process Prometheus metrics (the ``metrics`` extra) and their absence (issue 13)."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import cast

import pytest
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

import aiotasks
from aiotasks import Run, TaskError, _metrics
from tests.test_cli import ROOT, child_env

DATE = "20261125"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_runs_and_skips_are_counted(redis_client: Redis) -> None:
    """aiotasks_runs_total counts success, failure reasons and skips; durations and in-progress follow."""

    @aiotasks.task(name="m_ok")
    async def ok(run: Run) -> None:
        assert value("aiotasks_runs_in_progress", task="m_ok") == 1

    @aiotasks.task(name="m_bad", timeout=0.01)
    async def bad(run: Run) -> None:
        await asyncio.Event().wait()

    before = {
        outcome: value("aiotasks_runs_total", task=task, outcome=outcome)
        for task, outcome in (("m_ok", "success"), ("m_ok", "already_completed"), ("m_bad", "timeout"))
    }
    durations = value("aiotasks_run_duration_seconds_count", task="m_ok")
    await ok(DATE, redis=redis_client)
    await ok(DATE, redis=redis_client)
    with pytest.raises(TaskError):
        await bad(DATE, redis=redis_client)
    assert value("aiotasks_runs_total", task="m_ok", outcome="success") == before["success"] + 1
    assert value("aiotasks_runs_total", task="m_ok", outcome="already_completed") == (
        before["already_completed"] + 1
    )
    assert value("aiotasks_runs_total", task="m_bad", outcome="timeout") == before["timeout"] + 1
    assert value("aiotasks_run_duration_seconds_count", task="m_ok") == durations + 1
    assert value("aiotasks_runs_in_progress", task="m_ok") == 0


async def test_durations_are_observed_without_records(redis_client: Redis) -> None:
    """Regression (with retention=0 aiotasks_run_duration_seconds was never fed: it took the record's
    server times): runs without records observe their duration and count like the others."""

    @aiotasks.task(name="m_norecords", retention=0)
    async def plain(run: Run) -> None:
        pass

    durations = value("aiotasks_run_duration_seconds_count", task="m_norecords")
    runs = value("aiotasks_runs_total", task="m_norecords", outcome="success")
    await plain(DATE, redis=redis_client)
    assert value("aiotasks_run_duration_seconds_count", task="m_norecords") == durations + 1
    assert value("aiotasks_runs_total", task="m_norecords", outcome="success") == runs + 1
    assert await redis_client.exists(f"run:m_norecords:{DATE}") == 0


@pytest.mark.parametrize("retention", [None, 0], ids=["records", "retention=0"])
async def test_a_failure_has_the_same_outcome_label_with_or_without_records(
    redis_client: Redis, retention: int | None
) -> None:
    """Without records (and hooks) no Outcome is built: the label comes from the result dict, and
    says what the record's would: the failure's reason, error for a raise, cancelled."""
    suffix = "rec" if retention is None else "plain"
    started = asyncio.Event()

    @aiotasks.task(name=f"m_slow_{suffix}", timeout=0.01, retention=retention)
    async def slow(run: Run) -> None:
        await asyncio.Event().wait()

    @aiotasks.task(name=f"m_raise_{suffix}", retention=retention)
    async def raising(run: Run) -> None:
        raise ValueError("no")

    @aiotasks.task(name=f"m_stop_{suffix}", retention=retention)
    async def stopped(run: Run) -> None:
        started.set()
        await asyncio.Event().wait()

    expected = {slow.name: "timeout", raising.name: "error", stopped.name: "cancelled"}
    before = {
        task: value("aiotasks_runs_total", task=task, outcome=label) for task, label in expected.items()
    }
    for failing in (slow, raising):
        with pytest.raises(TaskError):
            await failing(DATE, redis=redis_client)
    runner = asyncio.ensure_future(stopped(DATE, redis=redis_client))
    await asyncio.wait_for(started.wait(), 10)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    for task, label in expected.items():
        assert value("aiotasks_runs_total", task=task, outcome=label) == before[task] + 1, (task, label)
        assert value("aiotasks_runs_in_progress", task=task) == 0


async def test_a_chain_wait_is_observed(redis_client: Redis) -> None:
    """aiotasks_lock_wait_seconds observes a chain's wait for another worker's lock."""

    @aiotasks.task(name="m_wait")
    async def waited(run: Run) -> None:
        pass

    before = value("aiotasks_lock_wait_seconds_count", task="m_wait")
    await redis_client.set(f"lock:m_wait:{DATE}", "someone", px=100)  # a worker that died
    results = await aiotasks.run_chain([waited], DATE, redis=redis_client)
    assert results["m_wait"]["status"] == "success"
    assert value("aiotasks_lock_wait_seconds_count", task="m_wait") == before + 1


def test_without_prometheus_client_nothing_is_imported() -> None:
    """Without prometheus_client a run works and the metrics import nothing."""
    program = """
import asyncio, sys
sys.modules["prometheus_client"] = None  # as if not installed
import aiotasks, fakeredis
from aiotasks import _metrics

@aiotasks.task()
async def t(run):
    pass

async def main():
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    status = (await t("20261125", redis=client))["status"]
    loaded = sorted(name for name in sys.modules if name.startswith("prometheus_client."))
    print(status, _metrics.enabled(), sys.modules["prometheus_client"], loaded, _metrics._tasks)

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["success", "False", "None", "[]", "{}"]


# -- the exposition: the same as prometheus_client's own instruments --------------------------

BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, float("inf"))
ODD = 'm_same_"odd\\\n'  # a quote, a backslash and a newline to escape
# What a process observes, (kind, task, outcome, seconds): starts, runs, skips and waits, with
# durations below, on and between bucket bounds.
OBSERVATIONS: tuple[tuple[str, str, str, float], ...] = (
    ("start", "m_same_a", "", 0),
    ("run", "m_same_a", "success", 0.003),
    ("skip", "m_same_b", "lock_held", 0),
    ("start", "m_same_a", "", 0),
    ("start", ODD, "", 0),
    ("run", "m_same_a", "timeout", 0.5),
    ("wait", "m_same_c", "", 2.5),
    ("skip", "m_same_a", "already_completed", 0),
    ("start", "m_same_b", "", 0),
    ("wait", "m_same_c", "", 0.0),
    ("run", "m_same_b", "error", 1e6),
    ("skip", ODD, "missed", 0),
    ("start", "m_same_b", "", 0),
    ("run", "m_same_b", "error", 7200.0),
)


def reference(to: CollectorRegistry) -> None:
    """Feed OBSERVATIONS to prometheus_client's Counter, Histogram and Gauge as aiotasks defined them."""
    help_runs, help_wait = "Runs and skips, by outcome", "Time spent waiting for another worker's run"
    runs = Counter("aiotasks_runs_total", help_runs, ["task", "outcome"], registry=to)
    duration = Histogram(
        "aiotasks_run_duration_seconds", "Duration of finished runs", ["task"], buckets=BUCKETS, registry=to
    )
    wait = Histogram("aiotasks_lock_wait_seconds", help_wait, ["task"], buckets=BUCKETS, registry=to)
    in_progress = Gauge("aiotasks_runs_in_progress", "Runs in progress", ["task"], registry=to)
    for kind, task, outcome, seconds in OBSERVATIONS:
        if kind == "start":
            in_progress.labels(task).inc()
            duration.labels(task)  # the series appears at the first start
        elif kind == "run":
            in_progress.labels(task).dec()
            runs.labels(task, outcome).inc()
            duration.labels(task).observe(seconds)
        elif kind == "skip":
            runs.labels(task, outcome).inc()
        else:
            wait.labels(task).observe(seconds)


def ours(text: bytes) -> str:
    """The aiotasks lines of an exposition about the m_same_ tasks, ``_created`` values blanked."""
    lines = [
        re.sub(r"(_created\{.*\}) \S+$", r"\1 T", line)
        for line in text.decode().splitlines()
        if (line.startswith("# ") and "aiotasks_" in line) or 'task="m_same_' in line
    ]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def observed() -> None:
    """OBSERVATIONS fed to the in-process metrics, once."""
    for kind, task, outcome, seconds in OBSERVATIONS:
        if kind == "start":
            _metrics.observe_start(task)
        elif kind == "run":
            _metrics.observe_run(task, outcome, seconds)
        elif kind == "skip":
            _metrics.observe_skip(task, outcome)
        else:
            _metrics.observe_wait(task, seconds)


def created_samples(on: bool) -> None:
    """``prometheus_client``'s public switch of ``_created`` samples (its functions are untyped)."""
    switch = enable_created_metrics if on else disable_created_metrics
    switch()  # type: ignore[no-untyped-call]


@pytest.fixture(params=[True, False], ids=["created", "no-created"])
def created(request: pytest.FixtureRequest) -> Iterator[bool]:
    """With and without the ``_created`` samples (``prometheus_client``'s public switch), restored after."""
    was = _metrics._created_on()
    created_samples(bool(request.param))
    try:
        yield bool(request.param)
    finally:
        created_samples(was)


RENDERS: dict[str, Callable[[CollectorRegistry], bytes]] = {
    "text": generate_latest,
    "openmetrics": openmetrics.generate_latest,
}


@pytest.mark.parametrize("render", RENDERS)
def test_exposition_is_prometheus_clients_own(observed: None, created: bool, render: str) -> None:
    """The default registry shows what prometheus_client's Counter/Histogram/Gauge would for the same
    observations: families, help, types, buckets, labels (escaped), values, series order, _created."""
    expected = CollectorRegistry()
    reference(expected)
    got = ours(RENDERS[render](REGISTRY))
    assert got == ours(RENDERS[render](expected))
    assert ("_created{" in got) is created
    assert 'aiotasks_run_duration_seconds_bucket{le="7200.0",task="m_same_b"} 1.0' in got


def test_exposition_parses(observed: None) -> None:
    """prometheus_client's parsers read the exposition back: four families of the documented types."""
    documented = {
        "aiotasks_runs": "counter",
        "aiotasks_run_duration_seconds": "histogram",
        "aiotasks_lock_wait_seconds": "histogram",
        "aiotasks_runs_in_progress": "gauge",
    }
    for families in (
        text_string_to_metric_families(generate_latest(REGISTRY).decode()),
        parse_openmetrics(openmetrics.generate_latest(REGISTRY).decode()),  # type: ignore[no-untyped-call]
    ):
        types = {family.name: family.type for family in families if family.name.startswith("aiotasks_")}
        assert types.items() >= documented.items()
    assert value("aiotasks_runs_total", task="m_same_b", outcome="error") == 2
    assert value("aiotasks_runs_in_progress", task=ODD) == 1
    assert value("aiotasks_lock_wait_seconds_sum", task="m_same_c") == 2.5


# -- registration -----------------------------------------------------------------------------


def test_registering_again_replaces_the_collector() -> None:
    """Registering twice (a test, a second start) neither raises nor shows the families twice."""
    registry = CollectorRegistry(auto_describe=True)
    _metrics._register(registry)
    _metrics._register(registry)
    assert generate_latest(registry).decode().count("# TYPE aiotasks_runs_total counter") == 1


def test_names_taken_by_someone_else_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    """A registry where another collector already owns aiotasks_runs_total keeps it; a warning says why."""
    registry = CollectorRegistry(auto_describe=True)
    Counter("aiotasks_runs_total", "Someone else's", registry=registry)
    with caplog.at_level(logging.WARNING, "aiotasks.metrics"):
        _metrics._register(registry)
    assert "Someone else's" in generate_latest(registry).decode()
    assert "aiotasks metrics not registered" in caplog.text


def test_without_the_registrys_private_map_a_taken_name_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The fallback of the one private read (the registry's map of names): a registry without it
    answers None, and a second registration then keeps the first collector, logged, without raising."""
    assert _metrics._holder(cast("CollectorRegistry", object()), "aiotasks_runs_total") is None
    registry = CollectorRegistry(auto_describe=True)
    _metrics._register(registry)
    monkeypatch.setattr(_metrics, "_holder", lambda registry, name: None)
    with caplog.at_level(logging.WARNING, "aiotasks.metrics"):
        _metrics._register(registry)
    assert generate_latest(registry).decode().count("# TYPE aiotasks_runs_total counter") == 1
    assert "aiotasks metrics not registered" in caplog.text


def test_created_samples_follow_prometheus_clients_public_switch() -> None:
    """_created samples are on, off after disable_created_metrics(), on again after enable (read at
    each scrape through a public instrument, not the library's private flag)."""
    registry = CollectorRegistry(auto_describe=True)
    _metrics._register(registry)
    _metrics.observe_skip("m_switch", "lock_held")
    try:
        assert "aiotasks_runs_created{" in generate_latest(registry).decode()
        created_samples(False)
        assert "_created" not in generate_latest(registry).decode()
    finally:
        created_samples(True)
    assert "aiotasks_runs_created{" in generate_latest(registry).decode()


def test_a_reloaded_module_registers_without_raising() -> None:
    """importlib.reload of the module (fresh tallies) replaces the collector of the earlier copy."""
    program = """
import importlib
from prometheus_client import REGISTRY, generate_latest
from aiotasks import _metrics
_metrics.observe_skip("t", "lock_held")
_metrics = importlib.reload(_metrics)
_metrics.observe_skip("t", "lock_held")
text = generate_latest(REGISTRY).decode()
print(text.count("# TYPE aiotasks_runs_total counter"),
      REGISTRY.get_sample_value("aiotasks_runs_total", {"task": "t", "outcome": "lock_held"}))
"""
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1.0"]


# -- threads ----------------------------------------------------------------------------------


def test_runs_in_threads_and_scrapes_are_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs finishing in several threads while another scrapes: no update is lost, no scrape fails
    (series appear meanwhile), and each scrape is one moment (runs counted == durations observed)."""
    for tallies in ("_outcomes", "_outcomes_created", "_tasks", "_waits"):  # this test's own, emptied after
        monkeypatch.setattr(_metrics, tallies, {})
    task, threads, rounds = "m_threads", 4, 5000
    failures: list[BaseException] = []
    done = threading.Event()

    def scrape() -> dict[tuple[str, str | None, str | None], float]:
        return {
            (sample.name, sample.labels.get("le"), sample.labels.get("outcome")): sample.value
            for family in _metrics._Collector().collect()
            for sample in family.samples
            if sample.labels.get("task") == task
        }

    def runs(k: int) -> None:
        try:
            for i in range(rounds):
                _metrics.observe_start(task)
                _metrics.observe_skip(f"{task}_{k}_{i}", "lock_held")  # new series while scraping
                _metrics.observe_run(task, "success", 0.002)
        except BaseException as exc:
            failures.append(exc)

    def scrapes() -> None:
        try:
            while not done.is_set():
                samples = scrape()
                if not samples:
                    continue
                buckets = [v for (name, _, _), v in samples.items() if name.endswith("_bucket")]
                assert buckets == sorted(buckets)
                count = samples["aiotasks_run_duration_seconds_count", None, None]
                assert count == buckets[-1] == samples.get(("aiotasks_runs_total", None, "success"), 0)
                assert samples["aiotasks_runs_in_progress", None, None] in range(threads + 1)
        except BaseException as exc:
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often
    try:
        scraper = threading.Thread(target=scrapes)
        scraper.start()
        workers = [threading.Thread(target=runs, args=(k,)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        done.set()
        scraper.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    samples = scrape()
    assert samples["aiotasks_runs_total", None, "success"] == threads * rounds
    assert samples["aiotasks_run_duration_seconds_count", None, None] == threads * rounds
    assert samples["aiotasks_runs_in_progress", None, None] == 0
