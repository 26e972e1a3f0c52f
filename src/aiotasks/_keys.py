"""Task names, dates and the Redis keys built from them.

Keys keep the seed's names on a standalone Redis::

    lock:{task_name}:{date}        success:{task_name}:{date}

On Redis Cluster every script touches one task's keys together (its lock and
marker, and its run records, see ``_records``), so all of a task's keys, for
every date, hash to one slot; the part between braces is the hash tag::

    lock:{task_name}:date          success:{task_name}:date

A namespace, when configured, is prepended as ``namespace:`` to both forms.
Task names and namespaces are restricted to ``[A-Za-z0-9_.-]`` so that keys
can't be ambiguous (no ``:``), can't break hash tags (no braces), and are safe
in ``SCAN`` patterns and ACL key patterns (no ``*?[]``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final, NamedTuple

from ._errors import InvalidConfig, InvalidDate, InvalidTaskName

__all__ = ["TaskKeys", "check_namespace", "check_task_name", "parse_date", "task_keys", "today"]

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", re.ASCII)
_DATE_RE: Final = re.compile(r"[0-9]{8}", re.ASCII)
MAX_NAME_LENGTH: Final = 200


class TaskKeys(NamedTuple):
    """The two keys of one (task, date)."""

    lock: str
    success: str


def _check_name(kind: str, value: object, error: type[InvalidTaskName | InvalidConfig]) -> str:
    if not isinstance(value, str):
        raise error(f"{kind} must be a string, not {type(value).__name__}: {value!r}", value)
    if len(value) > MAX_NAME_LENGTH:
        raise error(f"{kind} is longer than {MAX_NAME_LENGTH} characters: {value[:40]!r}...", value)
    if not _NAME_RE.fullmatch(value):
        raise error(
            f"invalid {kind} {value!r}: use 1-{MAX_NAME_LENGTH} characters from "
            "A-Z a-z 0-9 _ . - (not starting with . or -)",
            value,
        )
    return value


def check_task_name(name: object) -> str:
    """Return ``name`` if it is a valid task name, else raise :class:`InvalidTaskName`."""
    return _check_name("task name", name, InvalidTaskName)


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is a valid key namespace, else raise :class:`InvalidConfig`."""
    return _check_name("namespace", namespace, InvalidConfig)


def today() -> str:
    """Today's date on this host's local clock, as ``YYYYMMDD`` (what the seed defaults to)."""
    return dt.date.today().strftime("%Y%m%d")


def parse_date(value: str | dt.date | None) -> str:
    """Normalise a run's date to ``YYYYMMDD``.

    :param value: ``None`` for today, a ``datetime.date``, or a string of exactly
        eight ASCII digits naming a real calendar day.
    :raises InvalidDate: for anything else, naming the value.
    """
    if value is None:
        return today()
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise InvalidDate(f"invalid date {value!r}: expected YYYYMMDD", value)
    try:
        dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError as exc:
        raise InvalidDate(f"invalid date {value!r}: {exc}", value) from None
    return value


def date_range(first: str, last: str) -> list[str]:
    """Every date from ``first`` to ``last`` inclusive, both already valid ``YYYYMMDD``.

    :raises InvalidDate: when ``last`` is before ``first``.
    """
    start = dt.datetime.strptime(first, "%Y%m%d").date()
    end = dt.datetime.strptime(last, "%Y%m%d").date()
    if end < start:
        raise InvalidDate(f"date range is reversed: {first} is after {last}", last)
    return [
        (start + dt.timedelta(days=offset)).strftime("%Y%m%d") for offset in range((end - start).days + 1)
    ]


def task_keys(task_name: str, date: str, *, namespace: str | None, cluster: bool) -> TaskKeys:
    """Build the lock and success keys; inputs must already be validated."""
    prefix = f"{namespace}:" if namespace else ""
    if cluster:
        tagged = f"{{{task_name}}}:{date}"
        return TaskKeys(f"{prefix}lock:{tagged}", f"{prefix}success:{tagged}")
    return TaskKeys(f"{prefix}lock:{task_name}:{date}", f"{prefix}success:{task_name}:{date}")
