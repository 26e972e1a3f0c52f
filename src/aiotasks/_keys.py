"""Task names, dates and the Redis keys built from them.

Keys keep the seed's names on a standalone Redis::

    lock:{task_name}:{date}        success:{task_name}:{date}

On Redis Cluster every script touches one task's keys together (its lock and
marker, and its run records, see ``_records``), so all of a task's keys, for
every date, hash to one slot; the part between braces is the hash tag::

    lock:{task_name}:date          success:{task_name}:date

A run is keyed by its date, ``YYYYMMDD``, or, for a schedule that fires more
than once a day, by its slot: the local wall time in the schedule's zone,
``YYYYMMDDTHHMM`` (``YYYYMMDDTHHMMSS`` for intervals with seconds). Both kinds
sort in time order as strings, and a slot key never looks like a date.

A namespace, when configured, is prepended as ``namespace:`` to both forms.
Task names and namespaces are restricted to ``[A-Za-z0-9_.-]`` so that keys
can't be ambiguous (no ``:``), can't break hash tags (no braces), and are safe
in ``SCAN`` patterns and ACL key patterns (no ``*?[]``).

A schedule's controls (``pause --schedule``, ``trigger``) live under its name,
with one hash tag for every schedule of a namespace, so that one blocking read
watches all of a scheduler's trigger lists on Redis Cluster too::

    schedule:{aiotasks}:NAME:paused     schedule:{aiotasks}:NAME:triggers
    ns:schedule:{ns}:NAME:paused        (with a namespace)

Schedule names are restricted to ``[A-Za-z0-9_.,-]`` (a default name is the
schedule's task names joined by ``,``).

A task's pause (``pause --task``) is one key per task, with the task's own hash
tag, so that the acquire script, which touches the task's lock, reads it in
the same slot::

    paused:task_name                (standalone)
    paused:{task_name}              (Redis Cluster)
    ns:paused:...                   (with a namespace)

A request to cancel a running run (``aiotasks cancel``) sits next to its lock,
under the same hash tag, so that the renewal script reads it on Redis Cluster
too (see ``_cancel_run``)::

    cancel:{task_name}:date        cancel:task_name:date (standalone)
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple, overload

from ._clock import current_clock
from ._errors import InvalidConfig, InvalidDate, InvalidSchedule, InvalidTaskName

__all__ = [
    "DateRange",
    "ScheduleKeys",
    "TaskKeys",
    "cancel_key",
    "check_namespace",
    "check_schedule_name",
    "check_task_name",
    "date_range",
    "format_date",
    "format_slot",
    "is_slot_key",
    "parse_date",
    "parse_run_key",
    "paused_key",
    "schedule_keys",
    "task_keys",
    "today",
]

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", re.ASCII)
#: A schedule's name: task names joined by ``,`` (its default) are valid.
_SCHEDULE_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.,\-]+", re.ASCII)
_DATE_RE: Final = re.compile(r"[0-9]{8}", re.ASCII)
_SLOT_RE: Final = re.compile(r"([0-9]{8})T([0-9]{2})([0-9]{2})([0-9]{2})?", re.ASCII)
MAX_NAME_LENGTH: Final = 200
#: Every ``MMDD`` of a leap year (a common year lacks ``0229``).
_MONTH_DAYS: Final = frozenset(
    f"{month:02d}{day:02d}"
    for month in range(1, 13)
    for day in range(1, calendar.monthrange(2000, month)[1] + 1)
)


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


def check_schedule_name(name: object) -> str:
    """Return ``name`` if it is a valid schedule name, else raise :class:`InvalidSchedule`.

    A schedule's name is part of its control keys (:func:`schedule_keys`):
    1-200 characters from ``A-Z a-z 0-9 _ . , -``, so a default name (its task
    names joined by ``,``) is always one.
    """
    if not isinstance(name, str):
        raise InvalidSchedule(f"schedule name must be a string, not {type(name).__name__}: {name!r}", name)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidSchedule(
            f"schedule name is longer than {MAX_NAME_LENGTH} characters: {name[:40]!r}...", name
        )
    if not _SCHEDULE_NAME_RE.fullmatch(name):
        raise InvalidSchedule(
            f"invalid schedule name {name!r}: use 1-{MAX_NAME_LENGTH} characters from A-Z a-z 0-9 _ . , -",
            name,
        )
    return name


def format_date(day: dt.date) -> str:
    """``day`` as ``YYYYMMDD``, always eight digits (``strftime("%Y")`` drops the
    leading zeros of years before 1000 on glibc)."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def format_slot(local: dt.datetime, *, seconds: bool = False) -> str:
    """A slot's wall time ``local`` as ``YYYYMMDDTHHMM`` (``YYYYMMDDTHHMMSS`` with ``seconds``)."""
    slot = f"{format_date(local.date())}T{local.hour:02d}{local.minute:02d}"
    return f"{slot}{local.second:02d}" if seconds else slot


def today() -> str:
    """Today's date in this host's local zone, as ``YYYYMMDD`` (what the seed defaults to).

    The time comes from :func:`aiotasks._clock.current_clock`, so tests can fix it.
    """
    return format_date(current_clock().now().astimezone().date())


def parse_date(value: str | dt.date | None) -> str:
    """Normalise a run's date to ``YYYYMMDD``.

    :param value: ``None`` for today, a ``datetime.date``, or a string of exactly
        eight ASCII digits naming a real calendar day.
    :raises InvalidDate: for anything else, naming the value.
    """
    if value is None:
        return today()
    if isinstance(value, dt.date):
        return format_date(value)
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise InvalidDate(f"invalid date {value!r}: expected YYYYMMDD", value)
    _day(value)
    return value


def parse_run_key(value: str | dt.date | None) -> str:
    """Normalise a run's key: a date (as :func:`parse_date`) or a slot.

    :param value: anything :func:`parse_date` takes, or a slot
        ``YYYYMMDDTHHMM`` / ``YYYYMMDDTHHMMSS`` naming a real day and time.
    :raises InvalidDate: for anything else, naming the value.
    """
    if value.__class__ is str and len(value) == 8 and value.isascii() and value.isdigit():
        # A date, as parse_date checks it, without making a datetime.date: the common case.
        assert isinstance(value, str)
        md = value[4:]
        if md in _MONTH_DAYS and value[:4] != "0000" and (md != "0229" or calendar.isleap(int(value[:4]))):
            return value
    if not isinstance(value, str) or len(value) <= 8:
        return parse_date(value)
    match = _SLOT_RE.fullmatch(value)
    if match is None:
        raise InvalidDate(f"invalid date or slot {value!r}: expected YYYYMMDD or YYYYMMDDTHHMM[SS]", value)
    day, hour, minute, second = match.groups()
    try:
        parse_date(day)
    except InvalidDate:
        raise InvalidDate(f"invalid slot {value!r}: no such day", value) from None
    if int(hour) > 23 or int(minute) > 59 or int(second or 0) > 59:
        raise InvalidDate(f"invalid slot {value!r}: no such time of day", value)
    return value


def is_slot_key(key: str) -> bool:
    """Whether a validated run key names a slot (``...THHMM``) rather than a date."""
    return len(key) > 8


def _day(value: str) -> dt.date:
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError as exc:
        raise InvalidDate(f"invalid date {value!r}: {exc}", value) from None


class DateRange(Sequence[str]):
    """Every date from ``first`` to ``last`` inclusive, as ``YYYYMMDD``, made one at a time.

    Its length is known without building the dates, so a caller can refuse a
    range that is too long before anything runs.

    :param first: the first date, ``YYYYMMDD``.
    :param last: the last date, ``YYYYMMDD``, not before ``first``.
    :raises InvalidDate: a malformed date, or ``last`` before ``first``.
    """

    __slots__ = ("_length", "_start")

    def __init__(self, first: str, last: str) -> None:
        self._start = _day(parse_date(first))
        end = _day(parse_date(last))
        if end < self._start:
            raise InvalidDate(f"date range is reversed: {first} is after {last}", last)
        self._length = (end - self._start).days + 1

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("date range index out of range")
        return format_date(self._start + dt.timedelta(days=index))

    def __iter__(self) -> Iterator[str]:
        day, step = self._start, dt.timedelta(days=1)
        for _ in range(self._length):
            yield format_date(day)
            if day < dt.date.max:
                day += step


def date_range(first: str, last: str) -> DateRange:
    """Every date from ``first`` to ``last`` inclusive (lazily: see :class:`DateRange`).

    :raises InvalidDate: when ``last`` is before ``first``.
    """
    return DateRange(first, last)


def task_keys(task_name: str, date: str, *, namespace: str | None, cluster: bool) -> TaskKeys:
    """Build the lock and success keys; inputs must already be validated."""
    prefix = f"{namespace}:" if namespace else ""
    if cluster:
        tagged = f"{{{task_name}}}:{date}"
        return TaskKeys(f"{prefix}lock:{tagged}", f"{prefix}success:{tagged}")
    return TaskKeys(f"{prefix}lock:{task_name}:{date}", f"{prefix}success:{task_name}:{date}")


def cancel_key(lock_key: str) -> str | None:
    """The cancel-request key that goes with ``lock_key`` (as :func:`task_keys` builds it).

    Derived from the lock key rather than from the task's name, so that the
    lease, which only knows the lock key, finds it: ``[ns:]lock:T:D`` becomes
    ``[ns:]cancel:T:D`` (``T`` keeps its braces on a cluster: same slot).

    :returns: None for a lock key of another shape (a caller's own key): such a
        run can't be cancelled from elsewhere.
    """
    parts = lock_key.split(":")
    if len(parts) not in (3, 4) or parts[-3] != "lock" or not parts[-2] or not parts[-1]:
        return None
    parts[-3] = "cancel"
    return ":".join(parts)


class ScheduleKeys(NamedTuple):
    """The control keys of one schedule (docs/reference/keys.md)."""

    #: A string (``host:pid|ms`` of who paused it), no TTL: the schedule is paused while it exists.
    paused: str
    #: A list of pending trigger requests (``aiotasks trigger``), popped by one serving replica.
    triggers: str


def schedule_keys(name: str, *, namespace: str | None) -> ScheduleKeys:
    """A schedule's control keys; ``name`` must already be validated (``check_schedule_name``).

    Every schedule of a namespace shares one hash tag, so one blocking read can
    watch all of a scheduler's schedules on Redis Cluster.
    """
    prefix = f"{namespace}:" if namespace else ""
    head = f"{prefix}schedule:{{{namespace or 'aiotasks'}}}:{name}"
    return ScheduleKeys(f"{head}:paused", f"{head}:triggers")


def paused_key(task_name: str, *, namespace: str | None, cluster: bool) -> str:
    """A task's ``paused`` key (a string ``host:pid|ms`` of who paused it, no TTL); ``task_name``
    must already be validated. Its hash tag is the task's, as in :func:`task_keys`, so the
    acquire script reads it on Redis Cluster too (``_records`` derives the same key from a lock key).
    """
    prefix = f"{namespace}:" if namespace else ""
    return f"{prefix}paused:{{{task_name}}}" if cluster else f"{prefix}paused:{task_name}"
