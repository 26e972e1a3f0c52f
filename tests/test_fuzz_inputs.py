"""Bad input, fuzzed: every bad value gets the documented error (or exit code) and nothing reaches Redis.

Each property has an oracle written independently of the code under test: what
README documents as valid (names, dates, chain entries), so a test fails both
when a bad value is accepted and when a good one is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import re
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

#: README: 1-200 characters from A-Z a-z 0-9 _ . -, not starting with . or -.
NAME_RULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}", re.ASCII)


def is_valid_name(name: str) -> bool:
    return NAME_RULE.fullmatch(name) is not None


def is_valid_date(text: str) -> bool:
    """README: exactly eight ASCII digits naming a real calendar day (YYYYMMDD)."""
    try:
        day = dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return False
    return f"{day.year:04d}{day.month:02d}{day.day:02d}" == text


NAMES = st.one_of(st.text(max_size=30), st.text(alphabet=string.ascii_letters + "_.-: {}*", max_size=12))
DATES = st.one_of(st.text(max_size=10), st.integers(10_000_000, 99_999_999).map(str), st.just("20261125"))
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(name=NAMES, date=DATES)
def test_boilerplate_inputs(redis_url: str, name: str, date: str) -> None:
    """A valid name and date start a run with those values; a bad one raises InvalidTaskName or
    InvalidDate carrying the bad value, with zero round trips."""

    async def attempt() -> tuple[dict[str, Any] | InvalidInput, int]:
        wire = Wire()
        client = wire.client(redis_url)
        try:
            conn, lock_key, _, result, task_id = await task_boilerplate(name, date, redis=client)
            await aiotasks.release_lock(conn, lock_key, task_id)
            return result, wire.round_trips
        except (InvalidTaskName, InvalidDate) as exc:
            return exc, wire.round_trips
        finally:
            await client.aclose()

    outcome, round_trips = asyncio.run(attempt())
    bad: dict[type[InvalidInput], str] = {InvalidTaskName: name} if not is_valid_name(name) else {}
    if not is_valid_date(date):
        bad[InvalidDate] = date
    if not bad:
        assert isinstance(outcome, dict), outcome
        assert (outcome["task"], outcome["date"], outcome["status"]) == (name, date, "pending")
    else:  # when both are bad, either error will do, as long as it names its own value
        assert isinstance(outcome, InvalidInput), outcome
        assert isinstance(outcome, ValueError)
        assert type(outcome) in bad
        assert outcome.value == bad[type(outcome)]
        assert round_trips == 0


@FUZZ
@given(name=NAMES)
def test_decorator_names(name: str) -> None:
    """@task(name) accepts exactly the valid names and refuses the rest with InvalidTaskName."""

    async def body(run: aiotasks.Run) -> None:
        return None

    if is_valid_name(name):
        assert aiotasks.task(name)(body).name == name
    else:
        with pytest.raises(InvalidTaskName) as caught:
            aiotasks.task(name)(body)
        assert caught.value.value == name


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
    """Any chain spec raises InvalidChain (a ValueError) and nothing else, or is accepted as written."""
    try:
        chain = Chain(entries)
    except InvalidChain as exc:
        assert isinstance(exc, InvalidInput)
        assert isinstance(exc, ValueError)
    else:
        assert [node.id for node in chain] == [entry["id"] for entry in entries]
        assert [node.depends_on for node in chain] == [tuple(e.get("depends_on", ())) for e in entries]


def _seed_style(date_string: str | None = None) -> None:
    return None


CHAIN_IDS = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), min_size=2, max_size=6, unique=True
)
ATTEMPT_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "recurring": st.booleans(),
    "timeout": st.one_of(st.none(), st.floats(0.001, 1e6)),
    "retries": st.integers(0, 5),
    "retry_delay": st.floats(0.001, 600),
}


@st.composite
def valid_chains(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Chains valid by construction: unique valid ids, dependencies only on earlier ids, valid options."""
    ids = draw(CHAIN_IDS)
    entries = []
    for position, node_id in enumerate(ids):
        deps = draw(st.lists(st.sampled_from(ids[:position]), unique=True)) if position else []
        options = draw(st.fixed_dictionaries({}, optional=ATTEMPT_OPTIONS))
        entries.append({"id": node_id, "func": _seed_style, "depends_on": deps, **options})
    return draw(st.permutations(entries))


@FUZZ
@given(entries=valid_chains())
def test_valid_chains_are_accepted_as_written(entries: list[dict[str, Any]]) -> None:
    """A valid chain is accepted: every entry with its id, dependencies and options, in a dependency order."""
    chain = Chain(entries)
    assert {node.id for node in chain} == {entry["id"] for entry in entries}
    for entry in entries:
        node = chain.nodes[entry["id"]]
        assert node.depends_on == tuple(entry["depends_on"])
        assert (node.recurring, node.timeout) == (entry.get("recurring", False), entry.get("timeout"))
        assert (node.retries, node.retry_delay) == (entry.get("retries", 0), entry.get("retry_delay", 1.0))
    position = {name: index for index, name in enumerate(chain.order)}
    assert len(position) == len(entries)
    assert all(position[dep] < position[node.id] for node in chain for dep in node.depends_on)


DEFECTS = [
    "junk_key", "func_not_callable", "bad_id", "duplicate_id", "unknown_dependency",
    "self_dependency", "cycle", "recurring_not_bool", "bad_retries", "bad_timeout", "not_a_list",
]  # fmt: skip


@FUZZ
@given(entries=valid_chains(), defect=st.sampled_from(DEFECTS), data=st.data())
def test_one_defect_is_refused_naming_it(
    entries: list[dict[str, Any]], defect: str, data: st.DataObject
) -> None:
    """A valid chain with one defect added is refused with InvalidChain whose value names the culprit."""
    spec: Any = entries
    victim = data.draw(st.sampled_from(entries))
    culprit: Any = victim["id"]
    if defect == "junk_key":
        victim["junk"], culprit = 1, ["junk"]
    elif defect == "func_not_callable":
        victim["func"] = culprit = data.draw(st.sampled_from([None, 3, "task_x", ["f"]]))
    elif defect == "bad_id":
        victim["id"] = culprit = data.draw(
            st.sampled_from(["", "a b", "a:b", "{a}", ".a", "-a", "é", None, 7])
        )
    elif defect == "duplicate_id":
        spec = [*entries, {"id": victim["id"], "func": _seed_style}]
    elif defect == "unknown_dependency":
        victim["depends_on"] = [*victim["depends_on"], "not-in-chain"]
        culprit = "not-in-chain"
    elif defect == "self_dependency":
        victim["depends_on"] = [*victim["depends_on"], victim["id"]]
    elif defect == "cycle":
        other = next(entry for entry in entries if entry is not victim)
        victim["depends_on"] = [*victim["depends_on"], other["id"]]
        other["depends_on"] = [*other["depends_on"], victim["id"]]
    elif defect == "recurring_not_bool":
        victim["recurring"] = culprit = data.draw(st.sampled_from([1, 0, "yes", None, 0.5]))
    elif defect == "bad_retries":
        victim["retries"] = data.draw(st.sampled_from([-1, 1.5, True, "2", None]))
    elif defect == "bad_timeout":
        victim["timeout"] = data.draw(st.sampled_from([0, -1, float("nan"), float("inf"), "5", True]))
    else:
        spec = culprit = data.draw(st.sampled_from([None, 3, "a,b", b"a", {"id": "a"}]))
    with pytest.raises(InvalidChain) as caught:
        Chain(spec)
    if defect == "cycle":
        assert isinstance(caught.value.value, list)
        assert victim["id"] in caught.value.value
    else:
        assert caught.value.value == culprit


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
#: Targets that are no chain (a cycle, a missing name, not a chain, no file, no colon): always exit 2.
BAD_TARGETS = [
    "tests/chains/cli_chains.py:cyclic",
    "tests/chains/cli_chains.py:nope",
    "tests/chains/cli_chains.py:not_a_chain",
    "nope:x",
    "no-colon",
]
COMMANDS = ["run", "plan", "status", "reset"]
TARGETS = st.sampled_from(["tests/chains/cli_chains.py:chain", *BAD_TARGETS])
ARGS = st.one_of(
    st.tuples(st.sampled_from(COMMANDS), TARGETS, OPTIONS).map(
        lambda parts: [parts[0], parts[1], *parts[2]]
    ),
    st.lists(st.text(max_size=8), max_size=4),
)  # fmt: skip


@FUZZ
@given(argv=ARGS)
def test_cli_arguments(redis_url: str, quiet_cli_logging: None, argv: list[str]) -> None:
    """Any argument list: a documented exit code (2 for a target that is no chain), at most one error
    line, no traceback, no write on error."""
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
    if argv[:1] and argv[0] in COMMANDS and argv[1:2] and argv[1] in BAD_TARGETS:
        assert code == 2, err.getvalue()
    errors = [line for line in err.getvalue().splitlines() if line.startswith("aiotasks: error:")]
    assert len(errors) == (1 if code in (2, 3) else 0), err.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code == 2:  # refused: not a single command beyond the test's own INFO
        assert {k for k in after if after[k] != before.get(k)} <= {"cmdstat_info"}
