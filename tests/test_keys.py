"""Task names, dates and the keys built from them."""

from __future__ import annotations

import datetime as dt
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotasks import InvalidDate, InvalidTaskName
from aiotasks._keys import check_task_name, date_range, parse_date, task_keys, today

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
    """None means today (local clock); date objects are formatted as YYYYMMDD; leap days are real."""
    assert parse_date(None) == today() == dt.date.today().strftime("%Y%m%d")
    assert parse_date(dt.date(2028, 2, 29)) == "20280229"
    assert parse_date("20280229") == "20280229"


@given(st.dates(min_value=dt.date(1, 1, 1)))
def test_every_real_day_round_trips(day: dt.date) -> None:
    """Every real calendar day, written as YYYYMMDD, is accepted unchanged."""
    text = day.strftime("%Y%m%d").rjust(8, "0")
    assert parse_date(text) == text


def test_date_range_is_inclusive_and_ordered() -> None:
    """A backfill range includes both ends, across a month end, and refuses a reversed range."""
    assert date_range("20260227", "20260302") == ["20260227", "20260228", "20260301", "20260302"]
    assert date_range("20261125", "20261125") == ["20261125"]
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
