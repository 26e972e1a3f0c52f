"""The run path's leaner packing and objects (issue 22): the same bytes, nothing left for the GC."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Connection, Redis

import aiotasks
from aiotasks import Run, _records
from aiotasks._constants import SUCCESS_MARKER
from aiotasks._keys import TaskKeys, task_keys
from aiotasks._records import (
    Outcome,
    RunForms,
    acquire_args,
    acquire_request,
    finish_args,
    finish_request,
)
from aiotasks._scripts import ACQUIRE, FINISH
from aiotasks._wire import pack

_names = st.sampled_from(["report", "t", "a_b-c.d", "x%dy", "täsk"])
_dates = st.sampled_from(["20261125", "20261126", "20261125T0930", "2026112", "x"])
_tokens = st.one_of(st.sampled_from(["abcdefgh", "zyxwvuts"]), st.text(min_size=1, max_size=12))
_outcomes = st.one_of(
    st.none(),
    st.builds(
        Outcome,
        retention_ms=st.sampled_from([0, 86_400_000]),
        status=st.sampled_from(["success", "failed"]),
        reason=st.sampled_from(["", "lock_lost"]),
        attempts=st.integers(1, 3),
        error=st.sampled_from(["", "boom %s ü"]),
        counters=st.sampled_from(["", '{"rows":12}', '{"p":"%d"}']),
        ended=st.sampled_from([0, 1_764_000_000_123]),
        fresh=st.booleans(),
    ),
)


def _keys(name: str, date: str, namespace: str | None, cluster: bool, own: bool) -> TaskKeys:
    # A caller's own keys (``finish_task`` takes any) may have any shape.
    return (
        TaskKeys(f"mine:{date}", f"other-{date}x")
        if own
        else task_keys(name, date, namespace=namespace, cluster=cluster)
    )


def _redis_py(command: tuple[Any, ...]) -> bytes:
    return b"".join(Connection().pack_commands([command]))


@given(
    name=_names, dates=st.lists(_dates, min_size=2, max_size=3), token=_tokens,
    namespace=st.sampled_from([None, "ns", "n%s"]), cluster=st.booleans(), own=st.booleans(),
    ttl=st.integers(1, 10**9), check=st.booleans(), retention=st.sampled_from([0, 1000, 2_592_000_000]),
)  # fmt: skip
def test_an_acquire_from_its_format_is_packed_as_its_arguments(
    name: str,
    dates: list[str],
    token: str,
    namespace: str | None,
    cluster: bool,
    own: bool,
    ttl: int,
    check: bool,
    retention: int,
) -> None:
    """For any task, date, token and options (the second date reusing the first one's format),
    the ACQUIRE request packed from a format is byte for byte what redis-py packs from its arguments."""
    for date in dates:
        keys = _keys(name, date, namespace, cluster, own)
        packed = acquire_request(ACQUIRE.sha, keys, token, ttl, check, retention)
        command = ("EVALSHA", ACQUIRE.sha, *acquire_args(keys, token, ttl, check, retention))
        assert packed is None or packed == pack([command]) == _redis_py(command)


@given(
    name=_names, dates=st.lists(_dates, min_size=2, max_size=3), token=_tokens,
    namespace=st.sampled_from([None, "ns"]), cluster=st.booleans(), own=st.booleans(),
    ttl=st.integers(1, 10**9), outcome=_outcomes,
)  # fmt: skip
def test_a_finish_from_its_format_is_packed_as_its_arguments(
    name: str,
    dates: list[str],
    token: str,
    namespace: str | None,
    cluster: bool,
    own: bool,
    ttl: int,
    outcome: Outcome | None,
) -> None:
    """The FINISH request packed from a format (the outcome's fields packed per run) is byte for
    byte what redis-py packs from its arguments, with or without a record and counters."""
    for date in dates:
        keys = _keys(name, date, namespace, cluster, own)
        packed = finish_request(FINISH.sha, keys, token, ttl, SUCCESS_MARKER, outcome)
        command = ("EVALSHA", FINISH.sha, *finish_args(keys, token, ttl, SUCCESS_MARKER, outcome))
        assert packed is None or packed == pack([command]) == _redis_py(command)


def test_the_decorators_keys_always_have_a_format() -> None:
    """A decorated task's keys (plain, namespaced, cluster-tagged) are packed from a format, not
    argument by argument."""
    outcome = Outcome(86_400_000, "success", ended=1_764_000_000_123, fresh=True)
    for namespace, cluster in [(None, False), ("ns", False), (None, True), ("ns", True)]:
        keys = task_keys("report", "20261125", namespace=namespace, cluster=cluster)
        assert acquire_request(ACQUIRE.sha, keys, "abcdefgh", 300_000, True, 86_400_000) is not None
        assert acquire_request(ACQUIRE.sha, keys, "abcdefgh", 300_000, True, 0) is not None
        assert finish_request(FINISH.sha, keys, "abcdefgh", 86_400, SUCCESS_MARKER, outcome) is not None
        assert finish_request(FINISH.sha, keys, "abcdefgh", 86_400, SUCCESS_MARKER, None) is not None


@pytest.mark.parametrize("retention", [None, 0], ids=["records", "no-records"])
@pytest.mark.parametrize("concurrent", [1, 16])
async def test_runs_leave_no_reference_cycles(
    redis_client: Redis, retention: int | None, concurrent: int
) -> None:
    """A successful run frees everything it made by reference counting: nothing is left for the
    garbage collector (regression: a trailer's closure and a lease's shared timer each held a cycle,
    and at 1,000 concurrent runs collecting them cost more CPU than the runs did)."""

    async def body(run: Run) -> None:
        run.result["rows"] = 1

    task = aiotasks.Task(body, name="cycles", retention=retention)
    dates = [f"202611{day:02d}" for day in range(1, 29)]

    async def runs(chosen: list[str]) -> None:
        for start in range(0, len(chosen), concurrent):
            await asyncio.gather(
                *(task(date, redis=redis_client) for date in chosen[start : start + concurrent])
            )

    await runs(dates[:12])  # first uses: the door's connections, caches, formats
    gc.collect()
    gc.disable()
    try:
        await runs(dates[12:])
        assert gc.collect() == 0
    finally:
        gc.enable()


_success_outcomes = st.builds(
    Outcome,
    retention_ms=st.sampled_from([0, 86_400_000]),
    status=st.sampled_from(["success", "failed"]),
    reason=st.sampled_from(["", "lock_lost"]),
    attempts=st.integers(1, 12),
    error=st.sampled_from(["", "boom %s"]),
    counters=st.sampled_from(["", '{"rows":12}']),
    ended=st.sampled_from([0, 7, 1_764_000_000_123]),
    fresh=st.booleans(),
)


@given(
    name=_names, dates=st.lists(st.sampled_from(["20261125", "20261126", "20270101"]), min_size=1),
    slot=st.booleans(), tokens=st.lists(st.text("abcdefgh0123456789", min_size=8, max_size=8), min_size=1),
    namespace=st.sampled_from([None, "ns", "n%s"]), cluster=st.booleans(), ttl=st.integers(1, 10**9),
    check=st.booleans(), retention=st.sampled_from([0, 1000, 2_592_000_000]),
    outcome=st.one_of(st.none(), _success_outcomes),
)  # fmt: skip
def test_a_tasks_run_forms_pack_what_the_requests_pack(
    name: str,
    dates: list[str],
    slot: bool,
    tokens: list[str],
    namespace: str | None,
    cluster: bool,
    ttl: int,
    check: bool,
    retention: int,
    outcome: Outcome | None,
) -> None:
    """A task's forms, made for its first run key, pack every later run's ACQUIRE and FINISH (keys
    of the same length, any token) byte for byte as acquire_request and finish_request do; the
    finish leaves to the door what it can't fill (texts, counters, a failure)."""
    keys = [
        task_keys(name, d + ("T0930" if slot else ""), namespace=namespace, cluster=cluster) for d in dates
    ]
    first = dates[0] + ("T0930" if slot else "")
    forms = RunForms(keys[0], first, ttl, check, retention, 86_400, SUCCESS_MARKER)
    for date, run_keys in zip(dates, keys, strict=True):
        key = date + ("T0930" if slot else "")
        assert (forms.lock + key, forms.success + key) == run_keys
        for token in tokens:
            day, run = key.encode(), token.encode()
            assert forms.acquire(day, run, retention) == acquire_request(
                ACQUIRE.sha, run_keys, token, ttl, check, retention
            )
            packed = forms.finish(day, run, outcome)
            plain = outcome is None or outcome.retention_ms <= 0
            texts = outcome is not None and bool(outcome.reason or outcome.error or outcome.counters)
            simple = outcome is not None and outcome.status == "success" and outcome.ended and not texts
            if plain or simple:
                assert packed == finish_request(FINISH.sha, run_keys, token, 86_400, SUCCESS_MARKER, outcome)
            else:
                assert packed is None


def test_run_forms_refuse_keys_not_of_a_task() -> None:
    with pytest.raises(ValueError, match="not a task's own keys"):
        RunForms(TaskKeys("mine:20261125", "other"), "20261125", 1000, True, 0, 86_400, SUCCESS_MARKER)


def test_a_forked_childs_acquire_names_its_own_pid() -> None:
    """The acquire's ``pid|host`` is baked into the form: a child (its own ``_pid_host``) gets a
    new form, not its parent's pid."""
    keys = task_keys("report", "20261125", namespace=None, cluster=False)
    forms = RunForms(keys, "20261125", 300_000, True, 86_400_000, 86_400, SUCCESS_MARKER)
    parent = _records._pid_host[0]
    before = forms.acquire(b"20261125", b"abcdefgh", 86_400_000)
    assert before is not None
    assert parent in before
    _records._pid_host[0] = b"4242|child-host"  # as _records._forked sets it in a child
    try:
        after = forms.acquire(b"20261125", b"abcdefgh", 86_400_000)
        assert after is not None
        assert b"4242|child-host" in after
        assert parent not in after
        assert after == acquire_request(ACQUIRE.sha, keys, "abcdefgh", 300_000, True, 86_400_000)
    finally:
        _records._pid_host[0] = parent
