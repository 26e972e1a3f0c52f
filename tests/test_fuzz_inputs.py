"""Bad input, fuzzed: every bad value gets the documented error (or exit code) and nothing reaches Redis."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import string
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import aiotasks
from aiotasks import InvalidChain, InvalidDate, InvalidInput, InvalidTaskName, task_boilerplate
from aiotasks._chain import Chain
from aiotasks._cli import main
from tests.support import Wire

NAMES = st.one_of(st.text(max_size=30), st.text(alphabet=string.ascii_letters + "_.-: {}*", max_size=12))
DATES = st.one_of(st.text(max_size=10), st.integers(10_000_000, 99_999_999).map(str), st.just("20261125"))
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(name=NAMES, date=DATES)
def test_boilerplate_inputs(redis_url: str, name: str, date: str) -> None:
    """Any name and date: a run starts, or InvalidTaskName/InvalidDate is raised with zero round trips."""

    async def attempt() -> tuple[type[Exception] | None, int]:
        wire = Wire()
        client = wire.client(redis_url)
        try:
            conn, lock_key, _, result, task_id = await task_boilerplate(name, date, redis=client)
            await aiotasks.release_lock(conn, lock_key, task_id)
            assert result["task"] == name
            return None, wire.round_trips
        except (InvalidTaskName, InvalidDate) as exc:
            assert isinstance(exc, ValueError)
            return type(exc), wire.round_trips
        finally:
            await client.aclose()

    error, round_trips = asyncio.run(attempt())
    if error is not None:
        assert round_trips == 0


@FUZZ
@given(name=NAMES)
def test_decorator_names(name: str) -> None:
    """@task(name) accepts exactly the valid names and refuses the rest with InvalidTaskName."""

    async def body(run: aiotasks.Run) -> None:
        return None

    try:
        assert aiotasks.task(name)(body).name == name
    except InvalidTaskName as exc:
        assert exc.value == name


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.text(alphabet="abc", max_size=2), max_size=3), st.just(print), st.just(len),
)  # fmt: skip
ENTRIES = st.dictionaries(
    st.sampled_from(["id", "func", "depends_on", "recurring", "timeout", "retries", "retry_delay", "junk"]),
    VALUES,
    max_size=5,
)


@FUZZ
@given(entries=st.one_of(st.lists(ENTRIES, max_size=5), VALUES))
def test_chain_specs(entries: Any) -> None:
    """Any chain spec validates, or raises InvalidChain (a ValueError); never another exception."""
    try:
        chain = Chain(entries)
    except InvalidChain as exc:
        assert isinstance(exc, InvalidInput)
        assert isinstance(exc, ValueError)
    else:
        assert len(chain) == len(entries)


@pytest.fixture
def quiet_cli_logging() -> Iterator[None]:
    """main() configures the aiotasks logger, as a program does; put it back for the other tests."""
    logger = logging.getLogger("aiotasks")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


OPTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    "--date",
                    "--from",
                    "--to",
                    "--only",
                    "--max-concurrency",
                    "--wait-timeout",
                    "--format",
                    "--task",
                    "--namespace",
                ]
            ),
            st.one_of(DATES, st.text(max_size=6)),
        ),
        st.tuples(st.sampled_from(["--force", "--json", "--yes", "-v"])),
    ),
    max_size=4,
).map(lambda pairs: [token for pair in pairs for token in pair])
TARGETS = st.sampled_from(
    [
        "tests/chains/cli_chains.py:chain",
        "tests/chains/cli_chains.py:cyclic",
        "tests/chains/cli_chains.py:nope",
        "tests/chains/cli_chains.py:not_a_chain",
        "nope:x",
        "no-colon",
    ]
)
ARGS = st.one_of(
    st.tuples(st.sampled_from(["run", "plan", "status", "reset"]), TARGETS, OPTIONS).map(
        lambda parts: [parts[0], parts[1], *parts[2]]
    ),
    st.lists(st.text(max_size=8), max_size=4),
)  # fmt: skip


@FUZZ
@given(argv=ARGS)
def test_cli_arguments(redis_url: str, quiet_cli_logging: None, argv: list[str]) -> None:
    """Any argument list: a documented exit code, at most one error line, no traceback, no write on error."""
    with redis.Redis.from_url(redis_url) as admin:
        before = admin.info("commandstats")
        out, err = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            pytest.MonkeyPatch.context() as env,
        ):
            env.setenv("AIOTASKS_REDIS_URL", redis_url)
            env.delenv("AIOTASKS_NAMESPACE", raising=False)
            code = main(argv)
        after = admin.info("commandstats")
    event(f"exit code {code}")
    assert code in (0, 1, 2, 3)
    errors = [line for line in err.getvalue().splitlines() if line.startswith("aiotasks: error:")]
    assert len(errors) == (1 if code in (2, 3) else 0), err.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code == 2:  # refused: not a single command beyond the test's own INFO
        assert {k for k in after if after[k] != before.get(k)} <= {"cmdstat_info"}
