"""Task names, dates and the keys built from them."""

from __future__ import annotations

import datetime as dt
import string
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotasks import InvalidDate, InvalidSchedule, InvalidTaskName
from aiotasks._clock import FakeClock, use_clock
from aiotasks._keys import (
    check_schedule_name,
    check_task_name,
    date_range,
    format_slot,
    is_slot_key,
    parse_date,
    parse_run_key,
    schedule_keys,
    task_keys,
    today,
)

NAME_ALPHABET = string.ascii_letters + string.digits + "_.-"


@pytest.mark.parametrize(
    "name",
    ["task_contributions_analysis", "a", "A1", "_x", "x.y-z", "9lives", "a" * 200],
)
def test_valid_task_names(name: str) -> None:
    """Names from [A-Za-z0-9_.-], starting with a letter, digit or underscore, up to 200 long."""
    assert check_task_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", " ", "a b", "a\tb", "a\n", "a:b", "{a}", "a}", "a*", "a?", "a[1]", ".a", "-a", "é", "a" * 201, "١٢"],
)
def test_invalid_task_names_are_refused(name: str) -> None:
    """Empty names, whitespace, ':', braces, glob characters, non-ASCII and overlong names are refused."""
    with pytest.raises(InvalidTaskName) as caught:
        check_task_name(name)
    assert isinstance(caught.value, ValueError)
    assert repr(name[:40]) in str(caught.value)


@pytest.mark.parametrize("name", [None, 42, b"bytes", ["a"]])
def test_non_string_task_names_are_refused(name: object) -> None:
    """A task name must be a str; the error names the type."""
    with pytest.raises(InvalidTaskName, match=type(name).__name__):
        check_task_name(name)


@given(st.text(min_size=1, max_size=250))
def test_any_text_is_a_valid_name_or_refused_with_the_value(name: str) -> None:
    """Any string either validates unchanged or raises InvalidTaskName carrying the value."""
    valid = len(name) <= 200 and set(name) <= set(NAME_ALPHABET) and name[0] not in ".-"
    if valid:
        assert check_task_name(name) == name
    else:
        with pytest.raises(InvalidTaskName) as caught:
            check_task_name(name)
        assert caught.value.value == name


@pytest.mark.parametrize(
    "date",
    [
        "2026112",
        "202611250",
        "2026-11-25",
        "20261325",
        "20260230",
        "20250229",
        "00000101",
        "2026112a",
        "",
        "١٢٣٤٥٦٧٨",
    ],
)
def test_malformed_dates_are_refused(date: str) -> None:
    """Anything but eight ASCII digits naming a real calendar day is refused, naming the value."""
    with pytest.raises(InvalidDate) as caught:
        parse_date(date)
    assert isinstance(caught.value, ValueError)
    assert repr(date) in str(caught.value)


def test_dates_accept_date_objects_and_default_to_today() -> None:
    """None means today in the host's zone, read from the replaceable clock (immune to midnight)."""
    instant = dt.datetime(2031, 7, 14, 12, 0, tzinfo=dt.UTC)
    with use_clock(FakeClock(instant)):
        assert parse_date(None) == today() == instant.astimezone().strftime("%Y%m%d")
    assert parse_date(dt.date(2028, 2, 29)) == "20280229"
    assert parse_date("20280229") == "20280229"


@given(st.dates(min_value=dt.date(1, 1, 1)))
def test_every_real_day_round_trips(day: dt.date) -> None:
    """Every real calendar day, as YYYYMMDD text or as a date object, comes back as the same 8 digits."""
    text = f"{day.year:04d}{day.month:02d}{day.day:02d}"
    assert parse_date(text) == text
    assert parse_date(day) == text


def test_dates_before_year_1000_keep_eight_digits() -> None:
    """Regression: years before 1000 were formatted with strftime's %Y, giving '9991230' (7 digits),
    which the run then refused as an invalid date although --date 09991230 is accepted."""
    assert list(date_range("09991230", "10000102")) == ["09991230", "09991231", "10000101", "10000102"]
    assert parse_date(dt.date(999, 1, 2)) == "09990102"
    assert parse_date(dt.date(1, 1, 1)) == "00010101"
    assert list(date_range("99991230", "99991231")) == ["99991230", "99991231"]


def test_a_long_date_range_is_not_built_up_front() -> None:
    """Regression: --from 00010101 --to 99991231 built 3.6 million strings (hundreds of MB) before the
    first task; the range now knows its length and makes each date only when asked."""
    tracemalloc.start()
    try:
        dates = date_range("00010101", "99991231")
        assert len(dates) == (dt.date(9999, 12, 31) - dt.date(1, 1, 1)).days + 1
        assert (dates[0], dates[1], dates[-1]) == ("00010101", "00010102", "99991231")
        assert next(iter(dates)) == "00010101"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_date_range_is_inclusive_and_ordered() -> None:
    """A backfill range includes both ends, across a month end, and refuses a reversed range."""
    assert list(date_range("20260227", "20260302")) == ["20260227", "20260228", "20260301", "20260302"]
    assert list(date_range("20261125", "20261125")) == ["20261125"]
    with pytest.raises(InvalidDate, match="20261124"):
        date_range("20261125", "20261124")


def test_key_formats() -> None:
    """Standalone keys keep the seed's names; a namespace prefixes them; cluster: the task's hash tag."""
    assert task_keys("t", "20261125", namespace=None, cluster=False) == (
        "lock:t:20261125",
        "success:t:20261125",
    )
    assert task_keys("t", "20261125", namespace="app", cluster=False) == (
        "app:lock:t:20261125",
        "app:success:t:20261125",
    )
    assert task_keys("t", "20261125", namespace=None, cluster=True) == (
        "lock:{t}:20261125",
        "success:{t}:20261125",
    )
    assert task_keys("t", "20261125", namespace="app", cluster=True) == (
        "app:lock:{t}:20261125",
        "app:success:{t}:20261125",
    )


@pytest.mark.parametrize(
    "key", ["20261125", "20261125T0000", "20261125T2359", "20280229T1230", "20261125T235959"]
)
def test_run_keys_are_dates_or_slots(key: str) -> None:
    """A run key is a date or a slot YYYYMMDDTHHMM[SS]; only the longer form is a slot."""
    assert parse_run_key(key) == key
    assert is_slot_key(key) == (len(key) > 8)


def test_slot_keys_are_formatted_whole() -> None:
    """A slot key has an 8-digit date (years before 1000 too), HHMM, SS only when asked; it parses back."""
    early = dt.datetime(999, 12, 30, 7, 5, 9)
    assert format_slot(early) == "09991230T0705"
    assert format_slot(early, seconds=True) == "09991230T070509"
    for key in (format_slot(early), format_slot(early, seconds=True)):
        assert parse_run_key(key) == key
        assert is_slot_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "20261125T2400",
        "20261125T1260",
        "20261125T120060",
        "20250229T1200",
        "20261125T12",
        "20261125 1200",
        "20261125T1200Z",
        "2026112T12000",
        "20261125t1200",
    ],
)
def test_malformed_slots_are_refused(key: str) -> None:
    """A slot must name a real day and a real time of day; the error names the value."""
    with pytest.raises(InvalidDate) as caught:
        parse_run_key(key)
    assert repr(key) in str(caught.value)


def test_dates_stay_dates() -> None:
    """parse_date (used for --from/--to) still refuses a slot: a range is of dates."""
    with pytest.raises(InvalidDate):
        parse_date("20261125T1200")


@pytest.mark.parametrize("name", ["nightly", "a,b,c", "report.daily-v2", "_x", "x" * 200])
def test_valid_schedule_names(name: str) -> None:
    """Schedule names of key-safe characters, commas included (default names), are accepted."""
    assert check_schedule_name(name) == name


@pytest.mark.parametrize("name", ["", "a:b", "{tag}", "a b", "a*", "x" * 201, "ü"])
def test_invalid_schedule_names_are_refused_naming_the_value(name: str) -> None:
    """A schedule name that could break its control keys is refused, the error naming it."""
    with pytest.raises(InvalidSchedule) as caught:
        check_schedule_name(name)
    assert caught.value.value == name
    assert isinstance(caught.value, ValueError)


def test_schedule_keys_share_one_hash_tag_per_namespace() -> None:
    """Every schedule's control keys carry the namespace's one hash tag (one blocking read on Cluster)."""
    assert schedule_keys("nightly", namespace=None) == (
        "schedule:{aiotasks}:nightly:paused",
        "schedule:{aiotasks}:nightly:triggers",
    )
    keys = schedule_keys("a,b", namespace="prod")
    assert keys.paused == "prod:schedule:{prod}:a,b:paused"
    assert keys.triggers == "prod:schedule:{prod}:a,b:triggers"


def _parsed(parse: object, value: str) -> str | None:
    try:
        return parse(value)  # type: ignore[operator, no-any-return]
    except InvalidDate:
        return None


@given(
    st.one_of(
        st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(lambda d: d.strftime("%Y%m%d").zfill(8)),
        st.text("0123456789", min_size=8, max_size=8),
        st.sampled_from(["00000101", "20240229", "20230229", "21000229", "20000229", "20261231", "20261131"]),
        st.text("0123456789\u0661\uff11x", min_size=8, max_size=8),
    )
)
def test_a_dates_fast_path_agrees_with_parse_date(value: str) -> None:
    """parse_run_key's shortcut for eight ASCII digits accepts exactly the dates parse_date does
    (leap days, year 0000, day 31 of a short month, non-ASCII digits)."""
    assert _parsed(parse_run_key, value) == _parsed(parse_date, value)
