"""run_chain: validation, eager scheduling, dependency semantics, waiting for other workers."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

import aiotasks
from aiotasks import InvalidChain, TaskError, _chain, finish_task, release_lock, run_chain, task_boilerplate
from aiotasks._chain import Chain, ChainRun, State, prepare_run
from tests.support import Gate, Wire, eventually, load_scripts, lock_and_marker_keys

DATE = "20261125"
SeedFunc = Callable[[str | None], Awaitable[dict[str, Any]]]


def seed_task(
    name: str, body: Callable[[], Awaitable[None]] | None = None, *, fail: bool = False
) -> SeedFunc:
    """A seed-style task (boilerplate by hand) that uses whatever client the chain lends it."""

    async def func(date_string: str | None = None) -> dict[str, Any]:
        conn, lock_key, success_key, result, task_id = await task_boilerplate(name, date_string)
        if result["status"] == "skipped":
            return result
        try:
            if body is not None:
                await body()
            if fail:
                result["status"] = "failed"
                raise TaskError("failed", f"{name} failed on purpose")
            result["status"] = "success"
            await finish_task(conn, lock_key, success_key, task_id)
            return result
        finally:
            await release_lock(conn, lock_key, task_id)

    return func


async def noop() -> None:
    return None


def noop_func(date_string: str | None = None) -> dict[str, Any]:
    return {"status": "success"}


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "named"),
    [
        pytest.param([{"id": "a", "func": noop_func}, {"id": "a", "func": noop_func}], "'a'", id="duplicate"),
        pytest.param([{"id": "a", "func": noop_func, "depends_on": ["zz"]}], "'zz'", id="unknown-dep"),
        pytest.param([{"id": "a", "func": noop_func, "depends_on": ["a"]}], "'a'", id="self-dep"),
        pytest.param(
            [
                {"id": "a", "func": noop_func, "depends_on": ["c"]},
                {"id": "b", "func": noop_func, "depends_on": ["a"]},
                {"id": "c", "func": noop_func, "depends_on": ["b"]},
            ],
            "->",
            id="cycle",
        ),
        pytest.param([{"id": "a", "func": "not callable"}], "'not callable'", id="non-callable"),
        pytest.param([{"id": "a b", "func": noop_func}], "'a b'", id="bad-id"),
        pytest.param([{"func": noop_func}], "None", id="missing-id"),
        pytest.param([{"id": "a", "func": noop_func, "depend_on": []}], "depend_on", id="typo-key"),
        pytest.param([{"id": "a", "func": noop_func, "depends_on": "b"}], "'b'", id="deps-string"),
        pytest.param([{"id": "a", "func": noop_func, "retries": -1}], "-1", id="bad-retries"),
        pytest.param([{"id": "a", "func": noop_func, "recurring": "yes"}], "'yes'", id="bad-recurring"),
        pytest.param(["a"], "'a'", id="not-a-dict"),
        pytest.param([], "the chain has no tasks", id="empty"),
    ],
)
def test_invalid_chain_names_the_culprit(chain: list[Any], named: str) -> None:
    """Every kind of invalid chain raises InvalidChain (a ValueError) naming the bad value."""
    with pytest.raises(InvalidChain, match=named) as caught:
        Chain(chain)
    assert isinstance(caught.value, ValueError)


def test_cycle_is_named_in_order() -> None:
    """A cycle is reported as the path that closes it."""
    chain = [
        {"id": "a", "func": noop_func, "depends_on": ["c"]},
        {"id": "b", "func": noop_func, "depends_on": ["a"]},
        {"id": "c", "func": noop_func, "depends_on": ["b"]},
        {"id": "d", "func": noop_func},
    ]
    with pytest.raises(InvalidChain) as caught:
        Chain(chain)
    cycle = str(caught.value).split(": ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]


async def test_invalid_chain_writes_nothing(redis_client: Redis) -> None:
    """A chain that fails validation sends no command to Redis, not even for its valid tasks."""
    before = await redis_client.info("commandstats")
    chain = [{"id": "ok", "func": seed_task("ok")}, {"id": "bad", "func": noop_func, "depends_on": ["nope"]}]
    with pytest.raises(InvalidChain):
        await run_chain(chain, DATE, redis=redis_client)
    after = await redis_client.info("commandstats")
    changed = {k for k in after if k != "cmdstat_info" and after[k] != before.get(k)}
    assert changed == set()
    assert await lock_and_marker_keys(redis_client) == []


async def test_bad_date_is_refused_before_running(fake_redis: Redis) -> None:
    """A malformed date raises InvalidDate before any task runs."""
    ran: list[str] = []

    async def body() -> None:
        ran.append("a")

    with pytest.raises(aiotasks.InvalidDate, match="2026-11-25"):
        await run_chain([{"id": "a", "func": seed_task("a", body)}], "2026-11-25", redis=fake_redis)
    assert ran == []


def test_deep_chain_validates_without_recursion() -> None:
    """A 5,000-deep linear chain validates (no recursion limit in cycle detection)."""
    chain = [{"id": "t0", "func": noop_func}] + [
        {"id": f"t{i}", "func": noop_func, "depends_on": [f"t{i - 1}"]} for i in range(1, 5000)
    ]
    assert len(Chain(chain).levels()) == 5000


def test_select_keeps_what_a_task_needs() -> None:
    """Chain.select keeps the named task and its transitive dependencies only."""
    chain = Chain(
        [
            {"id": "a", "func": noop_func},
            {"id": "b", "func": noop_func, "depends_on": ["a"]},
            {"id": "c", "func": noop_func, "depends_on": ["b"]},
            {"id": "d", "func": noop_func},
        ]
    )
    assert set(chain.select(["b"]).nodes) == {"a", "b"}
    with pytest.raises(InvalidChain, match="'x'"):
        chain.select(["x"])


# -- scheduling -------------------------------------------------------------------------------------


async def test_dependent_starts_before_unrelated_slow_task_ends(fake_redis: Redis) -> None:
    """Eager scheduling: c (after a) starts while b, independent and slow, is still running."""
    c_started = asyncio.Event()

    async def slow_b() -> None:
        await asyncio.wait_for(c_started.wait(), timeout=10)

    async def c_body() -> None:
        c_started.set()

    chain = [
        {"id": "a", "func": seed_task("a")},
        {"id": "b", "func": seed_task("b", slow_b)},
        {"id": "c", "func": seed_task("c", c_body), "depends_on": ["a"]},
    ]
    results = await run_chain(chain, DATE, redis=fake_redis)
    assert {name: r["status"] for name, r in results.items()} == dict.fromkeys("abc", "success")


async def test_independent_tasks_run_concurrently(fake_redis: Redis) -> None:
    """Ten independent tasks are all running at the same time (a barrier only they can pass together)."""
    arrived = 0
    everyone = asyncio.Event()

    async def barrier() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 10:
            everyone.set()
        await asyncio.wait_for(everyone.wait(), timeout=10)

    chain = [{"id": f"t{i}", "func": seed_task(f"t{i}", barrier)} for i in range(10)]
    results = await run_chain(chain, DATE, redis=fake_redis)
    assert all(r["status"] == "success" for r in results.values())


async def test_max_concurrency_bounds_running_bodies(fake_redis: Redis) -> None:
    """With max_concurrency=3, at most three bodies run at once, and three do."""
    running = peak = 0

    async def body() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(5):
            await asyncio.sleep(0)
        running -= 1

    chain = [{"id": f"t{i}", "func": seed_task(f"t{i}", body)} for i in range(12)]
    results = await run_chain(chain, DATE, redis=fake_redis, max_concurrency=3)
    assert all(r["status"] == "success" for r in results.values())
    assert peak == 3


async def test_dependents_of_a_failure_are_skipped_and_name_it(fake_redis: Redis) -> None:
    """A failed task's dependents are skipped (dependency_failed, then _blocked); others still run."""
    ran: list[str] = []

    def recording(name: str) -> Callable[[], Awaitable[None]]:
        async def body() -> None:
            ran.append(name)

        return body

    chain = [
        {"id": "a", "func": seed_task("a", recording("a"), fail=True)},
        {"id": "b", "func": seed_task("b", recording("b")), "depends_on": ["a"]},
        {"id": "c", "func": seed_task("c", recording("c")), "depends_on": ["b"]},
        {"id": "d", "func": seed_task("d", recording("d"))},
    ]
    results = await run_chain(chain, DATE, redis=fake_redis)
    assert results["a"]["status"] == "failed"
    assert results["a"]["errors"] == ["a failed on purpose"]
    assert (results["b"]["status"], results["b"]["reason"], results["b"]["blocked_by"]) == (
        "skipped",
        "dependency_failed",
        "a",
    )
    assert (results["c"]["reason"], results["c"]["blocked_by"]) == ("dependency_blocked", "b")
    assert results["d"]["status"] == "success"
    assert sorted(ran) == ["a", "d"]


async def test_an_exception_is_recorded_not_raised(fake_redis: Redis) -> None:
    """Any exception in a task is recorded as failed with its text; the chain itself does not raise."""

    async def explode(date_string: str | None = None) -> dict[str, Any]:
        raise RuntimeError("kaboom")

    results = await run_chain(
        [{"id": "x", "func": explode}, {"id": "y", "func": seed_task("y")}], DATE, redis=fake_redis
    )
    assert results["x"]["status"] == "failed"
    assert results["x"]["errors"] == ["Unexpected error: RuntimeError: kaboom"]
    assert results["y"]["status"] == "success"


@pytest.mark.parametrize(
    ("returned", "error"),
    [(None, "NoneType"), ({"status": "pending"}, "'pending'"), ([1], "list")],
    ids=["none", "pending", "list"],
)
async def test_a_task_must_return_a_finished_result(fake_redis: Redis, returned: Any, error: str) -> None:
    """A task returning something other than a result dict with a final status is failed."""

    async def func(date_string: str | None = None) -> Any:
        return returned

    results = await run_chain([{"id": "x", "func": func}], DATE, redis=fake_redis)
    assert results["x"]["status"] == "failed"
    assert error in results["x"]["errors"][0]


async def test_completed_dependency_satisfies_dependents(fake_redis: Redis) -> None:
    """A dependency skipped as already_completed lets its dependents run."""
    await fake_redis.set(f"success:a:{DATE}", "completed")
    chain = [{"id": "a", "func": seed_task("a")}, {"id": "b", "func": seed_task("b"), "depends_on": ["a"]}]
    results = await run_chain(chain, DATE, redis=fake_redis)
    assert (results["a"]["status"], results["a"]["reason"]) == ("skipped", "already_completed")
    assert results["b"]["status"] == "success"


async def test_force_reruns_completed_tasks(fake_redis: Redis) -> None:
    """force=True makes seed-style and decorated tasks run despite their markers."""

    @aiotasks.task()
    async def deco(run: aiotasks.Run) -> None:
        return None

    chain: list[Any] = [{"id": "a", "func": seed_task("a")}, deco]
    await run_chain(chain, DATE, redis=fake_redis)
    again = await run_chain(chain, DATE, redis=fake_redis)
    assert {r["reason"] for r in again.values()} == {"already_completed"}
    forced = await run_chain(chain, DATE, redis=fake_redis, force=True)
    assert {r["status"] for r in forced.values()} == {"success"}


async def test_decorated_tasks_declare_their_dependencies(fake_redis: Redis) -> None:
    """A list of decorated tasks runs in the order their depends_on declares."""
    order: list[str] = []

    @aiotasks.task()
    async def first(run: aiotasks.Run) -> None:
        order.append("first")

    @aiotasks.task(depends_on=[first])
    def second(run: aiotasks.Run) -> None:  # a sync body, in a worker thread
        order.append("second")

    results = await run_chain([second, first], DATE, redis=fake_redis)
    assert order == ["first", "second"]
    assert list(results) == ["second", "first"]  # results keep the chain's order
    assert results["second"]["status"] == "success"


async def test_plain_sync_function_runs_in_a_thread(fake_redis: Redis) -> None:
    """A plain def in a chain runs in a worker thread, not on the event loop's thread."""
    import threading

    loop_thread = threading.get_ident()
    seen: list[int] = []

    def func(date_string: str | None = None) -> dict[str, Any]:
        seen.append(threading.get_ident())
        return {"task": "s", "date": date_string, "status": "success"}

    results = await run_chain([{"id": "s", "func": func}], DATE, redis=fake_redis)
    assert results["s"]["status"] == "success"
    assert seen
    assert seen[0] != loop_thread


async def test_plain_task_timeout_and_retries(fake_redis: Redis) -> None:
    """A plain task's timeout fails it with reason timeout; retries call it again until it succeeds."""
    calls = 0

    async def flaky(date_string: str | None = None) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ValueError(f"attempt {calls}")
        return {"status": "success"}

    async def hangs(date_string: str | None = None) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    chain = [
        {"id": "flaky", "func": flaky, "retries": 2, "retry_delay": 0.001},
        {"id": "hangs", "func": hangs, "timeout": 0.05},
    ]
    results = await run_chain(chain, DATE, redis=fake_redis)
    assert (results["flaky"]["status"], results["flaky"]["attempts"]) == ("success", 3)
    assert (results["hangs"]["status"], results["hangs"]["reason"]) == ("failed", "timeout")


async def test_seed_tasks_use_the_chains_client_and_namespace(fake_redis: Redis) -> None:
    """task_boilerplate() with no client inside a chain uses the chain's client and namespace."""
    results = await run_chain([{"id": "a", "func": seed_task("a")}], DATE, redis=fake_redis, namespace="app1")
    assert results["a"]["status"] == "success"
    assert await fake_redis.exists(f"app1:success:a:{DATE}") == 1
    assert await fake_redis.exists(f"success:a:{DATE}") == 0


async def test_chain_namespace_comes_from_the_enclosing_chain_else_the_environment(
    fake_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without namespace=, a chain uses its enclosing chain's namespace, else AIOTASKS_NAMESPACE."""
    monkeypatch.setenv("AIOTASKS_NAMESPACE", "envns")

    async def nested(date_string: str | None = None) -> dict[str, Any]:
        inner = await run_chain([{"id": "b", "func": seed_task("b")}], date_string)
        return inner["b"]

    await run_chain([{"id": "a", "func": seed_task("a")}], DATE, redis=fake_redis)
    await run_chain([{"id": "n", "func": nested}], DATE, redis=fake_redis, namespace="outer")
    assert await fake_redis.exists(f"envns:success:a:{DATE}", f"outer:success:b:{DATE}") == 2


# -- cancellation and Redis trouble -----------------------------------------------------------------


async def test_cancelling_the_chain_releases_every_lock(redis_client: Redis) -> None:
    """Cancelling run_chain cancels running bodies (seed-style and decorated) and leaves no lock."""
    started = 0
    both = asyncio.Event()

    async def block() -> None:
        nonlocal started
        started += 1
        if started == 2:
            both.set()
        await asyncio.Event().wait()

    @aiotasks.task()
    async def deco(run: aiotasks.Run) -> None:
        await block()

    chain: list[Any] = [{"id": "seed", "func": seed_task("seed", block)}, deco]
    runner = asyncio.create_task(run_chain(chain, DATE, redis=redis_client))
    await asyncio.wait_for(both.wait(), timeout=10)
    assert len(await redis_client.keys("lock:*")) == 2
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await lock_and_marker_keys(redis_client) == []


async def test_unreachable_redis_fails_tasks_with_a_reason() -> None:
    """With Redis unreachable every task fails with reason redis_unavailable; nothing hangs."""
    from tests.servers import free_port

    client = aiotasks.Settings.from_url(
        f"redis://127.0.0.1:{free_port()}/0", retries=0, connect_timeout=1
    ).create_client()
    try:

        @aiotasks.task()
        async def deco(run: aiotasks.Run) -> None:
            return None

        chain: list[Any] = [
            {"id": "seed", "func": seed_task("seed")},
            deco,
            {"id": "after", "func": seed_task("after"), "depends_on": ["deco"]},
        ]
        results = await run_chain(chain, DATE, redis=client)
    finally:
        await client.aclose()
    assert {r["reason"] for name, r in results.items() if name != "after"} == {"redis_unavailable"}
    assert results["after"]["reason"] == "dependency_failed"


# -- another worker holds a task --------------------------------------------------------------------


async def wait_for_state(run: ChainRun, name: str, state: State) -> None:
    """Poll the run's progress until ``name`` reaches ``state`` (an observable, not a timing)."""
    for _ in range(2000):
        if run.progress[name].state is state:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{name} never reached {state}: {run.progress[name]}")


async def test_waits_for_a_holder_then_counts_its_success(redis_client: Redis) -> None:
    """A task held elsewhere is waited for; once the holder finishes it counts as completed."""
    await redis_client.set(f"lock:a:{DATE}", "other123", px=30_000)
    ran: list[str] = []

    async def b_body() -> None:
        ran.append("b")

    chain = Chain(
        [
            {"id": "a", "func": seed_task("a")},
            {"id": "b", "func": seed_task("b", b_body), "depends_on": ["a"]},
        ]
    )
    run = prepare_run(chain, DATE, redis=redis_client)
    began = time.monotonic()
    runner = asyncio.create_task(run.run())
    await wait_for_state(run, "a", State.WAITING)
    seen_waiting = time.monotonic()
    assert run.progress["a"].holder == "other123"
    assert 0 < (run.progress["a"].holder_ttl_ms or 0) <= 30_000
    # Let it poll the holder twice more (each poll reads a smaller TTL): a wait long enough to measure.
    ttls = {run.progress["a"].holder_ttl_ms}
    for _ in range(2000):
        if len(ttls) >= 3:
            break
        await asyncio.sleep(0.005)
        ttls.add(run.progress["a"].holder_ttl_ms)
    assert len(ttls) >= 3, "the waiting worker stopped polling the holder"
    assert ran == []  # the dependent does not start while its dependency runs elsewhere
    # The other worker finishes: marker written, lock released, in one step (as its finish would).
    holder_done = time.monotonic()
    await finish_task(redis_client, f"lock:a:{DATE}", f"success:a:{DATE}", "other123")
    results = await asyncio.wait_for(runner, timeout=10)
    ended = time.monotonic()
    assert (results["a"]["status"], results["a"]["reason"]) == ("skipped", "already_completed")
    assert results["a"]["waited_for"] == "other123"
    # The wait it reports (rounded to ms) covers at least the span the test watched it wait,
    # and at most the whole run.
    assert holder_done - seen_waiting - 0.001 <= results["a"]["wait_seconds"] <= ended - began + 0.001
    assert results["b"]["status"] == "success"
    assert ran == ["b"]


async def test_holder_that_failed_leaves_the_task_to_us(redis_client: Redis) -> None:
    """When the holder's lock goes away without a marker, the waiting worker runs the task itself."""
    await redis_client.set(f"lock:a:{DATE}", "other123", px=30_000)
    run = prepare_run(Chain([{"id": "a", "func": seed_task("a")}]), DATE, redis=redis_client)
    runner = asyncio.create_task(run.run())
    await wait_for_state(run, "a", State.WAITING)
    await release_lock(redis_client, f"lock:a:{DATE}", "other123")
    results = await asyncio.wait_for(runner, timeout=10)
    assert results["a"]["status"] == "success"
    assert results["a"]["task_id"] != "other123"
    assert await redis_client.exists(f"success:a:{DATE}") == 1


async def test_wait_timeout_blocks_dependents(redis_client: Redis) -> None:
    """A wait longer than wait_timeout ends as skipped/wait_timeout and blocks the dependents."""
    await redis_client.set(f"lock:a:{DATE}", "other123", px=60_000)
    chain = [{"id": "a", "func": seed_task("a")}, {"id": "b", "func": seed_task("b"), "depends_on": ["a"]}]
    results = await run_chain(chain, DATE, redis=redis_client, wait_timeout=0.05)
    assert (results["a"]["status"], results["a"]["reason"], results["a"]["waited_for"]) == (
        "skipped",
        "wait_timeout",
        "other123",
    )
    assert (results["b"]["reason"], results["b"]["blocked_by"]) == ("dependency_blocked", "a")


async def test_recurring_task_held_elsewhere_blocks_its_dependents(fake_redis: Redis) -> None:
    """A recurring task held elsewhere is skipped (lock_held); dependents: dependency_lock_held."""

    @aiotasks.task(recurring=True)
    async def odds(run: aiotasks.Run) -> None:
        return None

    await fake_redis.set(f"lock:odds:{DATE}", "other123", px=60_000)
    chain: list[Any] = [odds, {"id": "report", "func": seed_task("report"), "depends_on": ["odds"]}]
    results = await run_chain(chain, DATE, redis=fake_redis)
    assert (results["odds"]["status"], results["odds"]["reason"]) == ("skipped", "lock_held")
    assert (results["report"]["reason"], results["report"]["blocked_by"]) == ("dependency_lock_held", "odds")


async def test_prepare_run_refuses_bad_options(fake_redis: Redis) -> None:
    """max_concurrency, wait_timeout and namespace are validated before anything runs."""
    chain = Chain([{"id": "a", "func": noop_func}])
    with pytest.raises(aiotasks.InvalidConfig, match="0"):
        prepare_run(chain, DATE, redis=fake_redis, max_concurrency=0)
    with pytest.raises(aiotasks.InvalidConfig, match="-1"):
        prepare_run(chain, DATE, redis=fake_redis, wait_timeout=-1)
    with pytest.raises(aiotasks.InvalidConfig, match="'a b'"):
        prepare_run(chain, DATE, redis=fake_redis, namespace="a b")


# -- what the function really used, and how a wait paces itself -------------------------------------


class Stepper:
    """Stands in for the chain's pause between polls: records each pause and holds it until resumed."""

    def __init__(self, *, hold: bool = True) -> None:
        self.pauses: list[float] = []
        self.hold = hold
        self._requested: asyncio.Queue[float] = asyncio.Queue()
        self._allowed: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if self.hold:
            self._requested.put_nowait(seconds)
            await self._allowed.get()
        else:
            await asyncio.sleep(0)

    async def paused(self) -> float:
        """Wait until the chain pauses (it stays paused); return the pause it asked for."""
        return await asyncio.wait_for(self._requested.get(), timeout=20)

    def resume(self) -> None:
        """Let the paused chain go on."""
        self._allowed.put_nowait(None)


@pytest.fixture
def stepper(monkeypatch: pytest.MonkeyPatch) -> Stepper:
    """Replace the chain's pause between polls with a :class:`Stepper`."""
    stepper = Stepper()
    monkeypatch.setattr(_chain, "_pause", stepper)
    return stepper


async def test_an_entry_whose_id_is_not_its_task_name_waits_on_the_real_lock(
    wire: Wire, redis_url: str, redis_client: Redis, gate: Gate, stepper: Stepper
) -> None:
    """Regression (53,000 commands in 1.5 s: entry "alias" whose function locks "real" polled
    lock:alias, found it free, ran again, got lock_held, and so on): the chain learns the name from
    task_boilerplate, polls lock:real only, with a pause before every poll but the first, and
    counts the other worker's success."""
    client = wire.client(redis_url)
    await load_scripts(client)
    await redis_client.set(f"lock:real:{DATE}", "other123", px=60_000)
    wire.reset()
    run = prepare_run(Chain([{"id": "alias", "func": seed_task("real")}]), DATE, redis=client)
    runner = asyncio.ensure_future(run.run())
    for _ in range(3):
        assert 0 < await stepper.paused() <= 60
        assert run.progress["alias"].holder == "other123"
        stepper.resume()
    await stepper.paused()
    await finish_task(redis_client, f"lock:real:{DATE}", f"success:real:{DATE}", "other123")
    stepper.resume()
    results = await asyncio.wait_for(runner, timeout=20)
    assert (results["alias"]["status"], results["alias"]["reason"]) == ("skipped", "already_completed")
    assert (results["alias"]["task"], results["alias"]["waited_for"]) == ("real", "other123")
    polls = [args for name, args in gate.commands if name == "status"]
    assert [name for name, _ in gate.commands].count("acquire") == 1
    assert {args[1] for args in polls} == {f"lock:real:{DATE}"}
    assert len(polls) == len(stepper.pauses) + 1  # every poll but the first came after a pause
    assert wire.commands == 1 + len(polls)  # nothing else was sent


async def test_every_retry_of_a_wait_comes_after_a_longer_pause(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task whose holder keeps vanishing between its acquire and the chain's poll is retried
    after a pause each time (growing), never in a tight loop."""
    stepper = Stepper(hold=False)
    monkeypatch.setattr(_chain, "_pause", stepper)
    calls = 0

    async def flapping(date_string: str | None = None) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls < 5:  # another worker holds it during our acquire, and fails right after
            await redis_client.set(f"lock:flap:{DATE}", "other123", px=60_000)
        result = await seed_task("flap")(date_string)
        await release_lock(redis_client, f"lock:flap:{DATE}", "other123")
        return result

    results = await run_chain([{"id": "flap", "func": flapping}], DATE, redis=redis_client)
    assert results["flap"]["status"] == "success"
    assert calls == 5
    assert len(stepper.pauses) == calls - 2  # the first retry follows the first poll at once
    assert stepper.pauses == sorted(stepper.pauses)
    assert stepper.pauses[0] < stepper.pauses[-1]


async def test_a_function_claiming_lock_held_with_nothing_to_wait_for_fails(redis_client: Redis) -> None:
    """A function that returns lock_held without starting a run through task_boilerplate, while no
    lock of its id is held, fails with a clear error (rather than being called again and again)."""
    calls = 0

    async def liar(date_string: str | None = None) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"status": "skipped", "reason": "lock_held"}

    chain = [
        {"id": "liar", "func": liar},
        {"id": "after", "func": seed_task("after"), "depends_on": ["liar"]},
    ]
    results = await run_chain(chain, DATE, redis=redis_client)
    assert results["liar"]["status"] == "failed"
    assert "nothing to wait for" in results["liar"]["errors"][-1]
    assert calls == 1
    assert (results["after"]["reason"], results["after"]["blocked_by"]) == ("dependency_failed", "liar")


async def test_a_poll_never_waits_past_the_holders_ttl(
    redis_client: Redis, stepper: Stepper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the poll interval set far above the holder's TTL, the pause is the TTL left (and a lock
    without a TTL gets the interval, not a tight loop); once the lock is gone the chain runs it."""
    monkeypatch.setattr(_chain, "_POLL_FIRST", 600.0)
    monkeypatch.setattr(_chain, "_POLL_MAX", 600.0)
    await redis_client.set(f"lock:a:{DATE}", "other123", px=30_000)
    run = prepare_run(Chain([{"id": "a", "func": seed_task("a")}]), DATE, redis=redis_client)
    runner = asyncio.ensure_future(run.run())
    seconds = await stepper.paused()
    seen_ttl = run.progress["a"].holder_ttl_ms
    assert seen_ttl is not None
    assert 0 < seconds <= seen_ttl / 1000 <= 30.0
    await redis_client.persist(f"lock:a:{DATE}")  # no TTL at all: the interval applies
    stepper.resume()
    assert await stepper.paused() == 600.0
    assert run.progress["a"].holder_ttl_ms == -1
    await release_lock(redis_client, f"lock:a:{DATE}", "other123")
    stepper.resume()
    results = await asyncio.wait_for(runner, timeout=20)
    assert results["a"]["status"] == "success"


# -- whatever a task raises -------------------------------------------------------------------------

RAISED: dict[str, Callable[[], BaseException]] = {
    "SystemExit": lambda: SystemExit(7),
    "KeyboardInterrupt": KeyboardInterrupt,
    "own-CancelledError": asyncio.CancelledError,
}
NAMED = {
    "SystemExit": "Unexpected error: SystemExit: 7",
    "KeyboardInterrupt": "Unexpected error: KeyboardInterrupt",
    "own-CancelledError": "Unexpected error: CancelledError",
}


@pytest.mark.parametrize("raised", list(RAISED))
async def test_a_base_exception_fails_its_task_and_the_chain_goes_on(
    redis_client: Redis, raised: str
) -> None:
    """Regression (sys.exit(7) in a body ended the CLI with 7 or 4, KeyboardInterrupt gave a
    traceback, a body's own CancelledError left {} and a dependent without blocked_by): from a
    decorated task, a seed-style async function or a plain sync one, the task fails naming the
    exception, its dependent is blocked by it, and the rest of the chain runs."""

    @aiotasks.task()
    async def deco(run: aiotasks.Run) -> None:
        raise RAISED[raised]()

    async def seed_body() -> None:
        raise RAISED[raised]()

    def plain(date_string: str | None = None) -> dict[str, Any]:
        raise RAISED[raised]()

    chain: list[Any] = [
        deco,
        {"id": "seed", "func": seed_task("seed", seed_body)},
        {"id": "plain", "func": plain},
        {"id": "fine", "func": seed_task("fine")},
    ]
    chain += [
        {"id": f"after_{n}", "func": seed_task(f"after_{n}"), "depends_on": [n]}
        for n in ("deco", "seed", "plain")
    ]
    results = await run_chain(chain, DATE, redis=redis_client)
    for name in ("deco", "seed", "plain"):
        assert (results[name]["status"], results[name]["errors"][-1]) == ("failed", NAMED[raised]), name
        assert (results[f"after_{name}"]["reason"], results[f"after_{name}"]["blocked_by"]) == (
            "dependency_failed",
            name,
        )
    assert results["fine"]["status"] == "success"
    assert await redis_client.keys("lock:*") == []


async def test_a_seed_task_that_raises_keeps_its_runs_result(redis_client: Redis) -> None:
    """Regression (a seed-style TaskError was recorded in a fresh dict: task_id None, counters lost):
    the chain keeps the result dict task_boilerplate made for that run, marked failed."""
    made: list[dict[str, Any]] = []

    async def counted(date_string: str | None = None) -> dict[str, Any]:
        conn, lock_key, _, result, task_id = await task_boilerplate("counted", date_string)
        made.append(result)
        try:
            result["items_processed"] = 3
            result["errors"].append("item 4 failed")
            raise TaskError("failed", "All items failed: 1 errors")
        finally:
            await release_lock(conn, lock_key, task_id)

    results = await run_chain([{"id": "counted", "func": counted}], DATE, redis=redis_client)
    result = results["counted"]
    assert result is made[0]
    assert result["task_id"] is not None
    assert (result["status"], result["items_processed"]) == ("failed", 3)
    assert result["errors"] == ["item 4 failed", "All items failed: 1 errors"]


async def test_a_plain_sync_function_past_its_timeout_says_it_was_waited_for(fake_redis: Redis) -> None:
    """A plain def past its chain timeout fails with reason timeout, saying its thread was waited for."""
    release = threading.Event()

    def slow(date_string: str | None = None) -> dict[str, Any]:
        release.wait(20)
        return {"status": "success"}

    runner = asyncio.ensure_future(
        run_chain([{"id": "slow", "func": slow, "timeout": 0.05}], DATE, redis=fake_redis)
    )

    async def timed_out() -> bool:  # the timeout cancelled the task running the function
        return any(t.get_name() == "aiotasks:slow" and t.cancelling() for t in asyncio.all_tasks())

    try:
        await eventually(timed_out, "the function's timeout fired")
    finally:
        release.set()
    results = await runner
    assert results["slow"]["reason"] == "timeout"
    assert re.fullmatch(
        r"timed out after 0\.05s \(the thread function returned after \d+\.\ds; it was waited for\)",
        results["slow"]["errors"][-1],
    )
