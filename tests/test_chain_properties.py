"""Properties of run_chain over random DAGs with random failures and durations (hypothesis)."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
from hypothesis import given, settings
from hypothesis import strategies as st

import aiotasks
from aiotasks import run_chain

DATE = "20261125"


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[list[int], bool, int]]:
    """A DAG as (dependencies, fails, yields) per task; a task depends only on earlier ones."""
    size = draw(st.integers(min_value=1, max_value=12))
    tasks = []
    for index in range(size):
        deps = draw(st.lists(st.integers(0, index - 1), unique=True, max_size=3)) if index else []
        tasks.append(
            (
                deps,
                draw(st.booleans().map(lambda b: b and draw(st.integers(0, 3)) == 0)),
                draw(st.integers(0, 4)),
            )
        )
    return tasks


async def execute(
    spec: list[tuple[list[int], bool, int]], max_concurrency: int | None
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []

    def make(name: str, fails: bool, yields: int) -> aiotasks.Task:
        async def body(run: aiotasks.Run) -> None:
            log.append(("start", name))
            for _ in range(yields):
                await asyncio.sleep(0)
            log.append(("end", name))
            if fails:
                raise RuntimeError(f"{name} fails")

        return aiotasks.Task(body, name=name)

    chain = [
        {"id": f"t{i}", "func": make(f"t{i}", fails, yields), "depends_on": [f"t{d}" for d in deps]}
        for i, (deps, fails, yields) in enumerate(spec)
    ]
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        results = await run_chain(chain, DATE, redis=client, max_concurrency=max_concurrency)
        assert await client.keys("lock:*") == []
    finally:
        await client.aclose()
    return results, log


@settings(max_examples=60, deadline=None)
@given(spec=dags(), max_concurrency=st.one_of(st.none(), st.integers(1, 4)))
def test_random_dags_respect_dependencies(
    spec: list[tuple[list[int], bool, int]], max_concurrency: int | None
) -> None:
    """No task starts before its deps succeeded; one terminal state each; failures block dependents."""
    results, log = asyncio.run(execute(spec, max_concurrency))
    position = {event: index for index, event in enumerate(log)}
    assert len(position) == len(log), "a body ran twice"
    assert set(results) == {f"t{i}" for i in range(len(spec))}
    for index, (deps, fails, _) in enumerate(spec):
        name = f"t{index}"
        result = results[name]
        assert result["status"] in ("success", "skipped", "failed")
        deps_ok = all(results[f"t{d}"]["status"] == "success" for d in deps)
        if deps_ok:
            # Everything it needed succeeded: it must have run, after each dependency ended.
            assert ("start", name) in position
            for dep in deps:
                assert position[("end", f"t{dep}")] < position[("start", name)]
            assert result["status"] == ("failed" if fails else "success")
        else:
            # A dependency failed or was blocked: this task never started and says why.
            assert ("start", name) not in position
            assert result["status"] == "skipped"
            assert result["reason"] in ("dependency_failed", "dependency_blocked")
            assert result["blocked_by"] in {f"t{d}" for d in deps}
