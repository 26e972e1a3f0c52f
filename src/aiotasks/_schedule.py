"""When a chain runs: cron expressions and intervals in an explicit time zone, as keyed slots.

A :class:`Schedule` turns wall-clock rules into *slots*: the instants it fires
at, each with the run key its chain runs under, which is what makes "once per
slot across every replica" a property of the keys rather than of coordination:

* a **daily** schedule (it fires at most once per local day: a cron with one
  minute and one hour, or ``every="1d"``) keys each run by its *logical date*,
  ``YYYYMMDD`` -- the seed's keys, unchanged. The logical date is the slot's
  date in the schedule's zone (not the host's) plus ``date_offset`` days, so
  hosts in different zones agree, and ``date_offset=-1`` processes yesterday;
* a schedule that fires more than once a day keys each run by its slot, the
  local wall time in the schedule's zone: ``YYYYMMDDTHHMM``, or
  ``YYYYMMDDTHHMMSS`` when ``every`` has seconds.

Daylight saving time (the docs' "Time zones and DST" page has the whole story
and a table): slot keys never repeat, and each slot is strictly after the one
before it, so replicas started at any moment agree on the slots to come.

* A fixed-time cron (no ``*`` heading its minute or hour field) follows
  Debian's cron, through cronsim: a time skipped when clocks spring forward
  fires at the first minute after the jump (times one jump skips fire there
  as one slot; Debian's cron fires each), and in the hour repeated when
  clocks fall back a wall time fires once, on its first pass.
* A wildcard cron (``0 * * * *``, ``*/15 1-3 * * *``) fires the wall times
  that exist: none in a skipped hour, those of a repeated hour once, on the
  first pass (Debian's cron fires both passes).
* ``every`` intervals are elapsed time counted from local midnight,
  restarting each day, so ``every="15m"`` fires at :00, :15, :30 and :45 of
  the local hour. It fires every instant of that grid except one whose key
  already fired: in a repeated hour, one whose wall time fired on the first
  pass (``"90m"`` fires 02:00 CET after 01:30 CEST, ``"30m"`` fires no second
  pass); ``"1d"``, the 23:00 of a 25-hour day.

Cron parsing is cronsim's, not ours: it is small, has no dependencies, works
with ``zoneinfo``, and is built to match Debian's cron including the DST
cases above (croniter, the other candidate, has a long history of DST bugs
and depends on dateutil).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ._chain import Chain, resolve_chain
from ._constants import REDIS_SUCCESS_TTL
from ._errors import InvalidSchedule
from ._keys import MAX_NAME_LENGTH, check_schedule_name, format_date, format_slot
from ._task import Task

__all__ = ["Schedule", "Slot", "parse_every"]

_EVERY_RE: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.ASCII)
_ONE_SECOND: Final = dt.timedelta(seconds=1)
_ONE_MINUTE: Final = dt.timedelta(minutes=1)
_ONE_HOUR: Final = dt.timedelta(hours=1)
_ONE_DAY: Final = dt.timedelta(days=1)
_UTC: Final = dt.UTC
#: How far back :meth:`Schedule.last_slot` looks, in turn, after one interval.
_REACH: Final = (dt.timedelta(days=1, seconds=1), dt.timedelta(days=32), dt.timedelta(days=367))


@dataclass(frozen=True, slots=True)
class Slot:
    """One firing of a schedule.

    :ivar at: the instant it fires, an aware UTC ``datetime``.
    :ivar key: the run key its chain runs under: the logical date ``YYYYMMDD``
        (daily schedules) or the slot ``YYYYMMDDTHHMM[SS]``.
    """

    at: dt.datetime
    key: str


def parse_every(value: object) -> dt.timedelta:
    """An interval from a ``timedelta`` or text like ``"15m"``, ``"1h30m"``, ``"10s"``, ``"1d"``.

    :raises InvalidSchedule: naming the value, unless it is a whole number of
        seconds from 1 s to 1 day.
    """
    if isinstance(value, dt.timedelta):
        interval = value
    elif (
        isinstance(value, str)
        and value
        and (match := _EVERY_RE.fullmatch(value.strip()))
        and any(match.groups())
    ):
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        interval = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        raise InvalidSchedule(
            f"invalid interval {value!r}: use a timedelta or text like '15m', '1h30m', '10s', '1d'", value
        )
    if interval < _ONE_SECOND:
        raise InvalidSchedule(f"interval {value!r} is under 1 second", value)
    if interval > _ONE_DAY:
        raise InvalidSchedule(f"interval {value!r} is over a day: use cron for longer periods", value)
    if interval % _ONE_SECOND:
        raise InvalidSchedule(f"interval {value!r} is not a whole number of seconds", value)
    return interval


@dataclass(frozen=True, eq=False)
class Schedule:
    """A chain (or one task) on a schedule: ``cron`` or ``every``, in the zone ``tz``.

    ::

        nightly = aiotasks.Schedule(chain, cron="0 2 * * *", tz="Europe/Berlin", date_offset=-1)
        odds = aiotasks.Schedule(task_odds, every="15m")

    :param target: a chain (any form :func:`run_chain` takes) or one decorated task.
    :param cron: a standard 5-field cron expression (minute hour day month weekday).
    :param every: an interval, ``timedelta`` or text (``"15m"``), 1 s to 1 day,
        counted from local midnight. Exactly one of ``cron`` and ``every``.
    :param tz: the IANA zone the rules and keys are read in (default ``"UTC"``).
    :param catchup: which slots missed while no scheduler ran (or while it was
        held up) still run when it starts or wakes, oldest first: a number of
        slots, or a ``timedelta`` reaching back from now; 0 for none. Default
        (``None``): the last slot for a daily schedule (so a deploy at 09:00
        still runs the 02:00 chain, or finds it completed with one request per
        task), none for a sub-daily one. Never further back than the shortest
        success-marker TTL among the target's tasks, so completed runs whose
        markers expired are never repeated.
    :param date_offset: days added to a daily run's logical date (``-1``: the
        previous day). Sub-daily schedules key by slot and refuse an offset.
    :param name: how the schedule is shown in state and logs, and named by its
        controls (``pause --schedule``, ``trigger``): 1-200 characters from
        ``A-Z a-z 0-9 _ . , -``. Default: its task names joined by ``,`` (cut
        to 191 characters plus a digest when longer). Two schedules of one
        :class:`~aiotasks.Scheduler` must have different names.
    :raises InvalidSchedule: naming the bad value, before anything runs.
    :raises InvalidChain: the target is a list that is not a valid chain.
    """

    target: Any
    cron: str | None = None
    every: str | dt.timedelta | None = None
    tz: str = "UTC"
    catchup: int | dt.timedelta | None = None
    date_offset: int = 0
    name: str | None = None
    chain: Chain = field(init=False, repr=False)
    zone: ZoneInfo = field(init=False, repr=False)
    interval: dt.timedelta | None = field(init=False, repr=False)
    daily: bool = field(init=False, repr=False)
    #: The catch-up actually used: a count or a reach-back, capped by the markers' TTL.
    horizon: dt.timedelta = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "chain", _target_chain(self.target))
        if not self.chain.nodes:
            raise InvalidSchedule("a schedule's chain has no tasks", self.target)
        if (self.cron is None) == (self.every is None):
            raise InvalidSchedule(
                "give exactly one of cron= and every=, not "
                + ("both" if self.cron is not None else "neither"),
                (self.cron, self.every),
            )
        set_(self, "zone", _zone(self.tz))
        if self.cron is not None:
            daily = _check_cron(self.cron)
            set_(self, "interval", None)
        else:
            interval = parse_every(self.every)
            set_(self, "interval", interval)
            daily = interval == _ONE_DAY
        set_(self, "daily", daily)
        if isinstance(self.date_offset, bool) or not isinstance(self.date_offset, int):
            raise InvalidSchedule(
                f"date_offset must be a whole number of days, not {self.date_offset!r}", self.date_offset
            )
        if self.date_offset and not daily:
            raise InvalidSchedule(
                f"date_offset={self.date_offset!r} needs a daily schedule: one that fires more than once "
                "a day keys each run by its slot",
                self.date_offset,
            )
        if abs(self.date_offset) > 366:
            raise InvalidSchedule(f"date_offset {self.date_offset!r} is more than a year", self.date_offset)
        catchup = self.catchup
        if catchup is None:
            catchup = 1 if daily else 0
            set_(self, "catchup", catchup)
        if isinstance(catchup, bool) or not (
            (isinstance(catchup, int) and catchup >= 0)
            or (isinstance(catchup, dt.timedelta) and catchup >= dt.timedelta(0))
        ):
            raise InvalidSchedule(
                f"catchup must be a number of slots >= 0 or a timedelta >= 0, not {catchup!r}", catchup
            )
        markers = dt.timedelta(seconds=_shortest_marker_ttl(self.chain))
        set_(self, "horizon", min(catchup, markers) if isinstance(catchup, dt.timedelta) else markers)
        if self.name is None:
            set_(self, "name", _default_name(self.chain))
        else:
            check_schedule_name(self.name)

    @property
    def rule(self) -> str:
        """The rule as written: ``cron 0 2 * * * Europe/Berlin`` or ``every 0:15:00 UTC``."""
        return f"cron {self.cron} {self.tz}" if self.cron is not None else f"every {self.interval} {self.tz}"

    def key(self, at: dt.datetime) -> str:
        """The run key of the slot firing at ``at``."""
        local = at.astimezone(self.zone)
        if self.daily:
            return format_date(local.date() + dt.timedelta(days=self.date_offset))
        seconds = self.interval is not None and bool(self.interval % dt.timedelta(minutes=1))
        return format_slot(local, seconds=seconds)

    def slots(self, after: dt.datetime) -> Iterator[Slot]:
        """Every slot strictly after ``after`` (aware), in time order; no key repeats.

        They are the tail of one sequence: a scheduler started at any instant,
        in either pass of a repeated hour too, gets the slots one running all
        along would fire from then on. Keys follow the wall clock, so in a
        repeated hour an interval's second-pass slot can have a key below the
        one before it (``every="40m"`` in Berlin: ``T0240`` CEST, then ``T0220`` CET).
        """
        times = self._cron_times(after) if self.cron is not None else self._grid_times(after)
        for at in times:
            yield Slot(at, self.key(at))

    def next_slot(self, after: dt.datetime) -> Slot:
        """The first slot strictly after ``after``."""
        return next(self.slots(after))

    def last_slot(self, now: dt.datetime) -> Slot | None:
        """The latest slot at or before ``now`` (None if it fired nowhere within a year).

        Looked for nearest first: an ``every="1s"`` schedule has 86,400 slots a
        day to walk through, a monthly cron one in the last 32 days.
        """
        first = (self.interval or dt.timedelta(minutes=1)) + _ONE_SECOND
        for reach in (first, *_REACH):
            slots = self.slots_between(now - reach, now)
            if slots:
                return slots[-1]
        return None

    def slots_between(self, after: dt.datetime, until: dt.datetime) -> list[Slot]:
        """The slots in ``(after, until]``, oldest first."""
        found = []
        for slot in self.slots(after):
            if slot.at > until:
                break
            found.append(slot)
        return found

    def catchup_slots(self, now: dt.datetime) -> list[Slot]:
        """The slots before ``now`` that a starting scheduler runs, oldest first (see ``catchup``)."""
        if not self.catchup:
            return []
        return self._within_catchup(self.slots_between(now - self.horizon, now), now)

    def due(self, after: dt.datetime, now: dt.datetime) -> tuple[list[Slot], list[Slot]]:
        """Split the slots in ``(after, now]`` into those to run and those missed.

        The newest is the slot the scheduler woke for and always runs; older
        ones (it woke late: a blocked loop, a suspended host) run within
        ``catchup``, the rest are missed. Both lists are oldest first.
        """
        slots = self.slots_between(after, now)
        if not slots:
            return [], []
        *late, current = slots
        keep = self._within_catchup(late, now) if self.catchup else []
        kept = {slot.at for slot in keep}
        return [*keep, current], [slot for slot in late if slot.at not in kept]

    def _within_catchup(self, slots: Sequence[Slot], now: dt.datetime) -> list[Slot]:
        slots = [slot for slot in slots if now - slot.at <= self.horizon]
        if isinstance(self.catchup, int):
            return list(slots[-self.catchup :]) if self.catchup else []
        return slots

    def _cron_times(self, after: dt.datetime) -> Iterator[dt.datetime]:
        # cronsim walks a fixed-time cron on the wall clock, as Debian's cron does:
        # it yields each wall time once, on its first pass (fold=0). Started in the
        # second pass of a repeated hour, it first meets wall times whose first
        # pass is already over: firing them would fire in the past, again and
        # again. A wildcard cron it walks in real time, meeting both passes; the
        # second pass's wall times are keys the first pass fired.
        assert self.cron is not None
        while True:
            for at in self._cron_walk(after):
                earlier = self._after_fall_back(after, at)
                yield earlier or at
                after = earlier or at
                if earlier:
                    break  # walk again from the instant cronsim stepped over

    def _cron_walk(self, after: dt.datetime) -> Iterator[dt.datetime]:
        assert self.cron is not None
        for local in CronSim(self.cron, after.astimezone(self.zone)):
            at = local.astimezone(_UTC)
            if at > after and not _second_pass(local):
                yield at

    def _after_fall_back(self, after: dt.datetime, at: dt.datetime) -> dt.datetime | None:
        """A slot in ``(after, at)`` that cronsim stepped over across a fall-back, or None.

        cronsim rolls the hour forward in steps of 3600 real seconds: across a
        fall-back shorter than an hour (Lord Howe's 30 minutes) it lands past the
        first wall times of the next hour (``* 2 * * *``: 02:30, not 02:00), or
        not, depending on where the walk started. It lands at most an hour late,
        so each minute of the hour before ``at`` is asked once (twice a year, a
        millisecond): a slot then never depends on when the walk started.
        """
        # cronsim starts rolling from the top of ``after``'s wall hour
        hour = after.astimezone(self.zone).replace(minute=0, second=0, microsecond=0)
        if _offset(hour) <= _offset(at.astimezone(self.zone)):
            return None  # no fall-back in between: the common case
        minute = max(after, at - _ONE_HOUR).replace(second=0, microsecond=0) + _ONE_MINUTE
        while minute < at:
            if next(self._cron_walk(minute - _ONE_SECOND)) == minute:
                return minute
            minute += _ONE_MINUTE
        return None

    def _grid_times(self, after: dt.datetime) -> Iterator[dt.datetime]:
        # Elapsed time from local midnight: aware arithmetic in UTC, not on the
        # wall clock, so the grid has no hole at either transition. An instant is
        # left out only if its key fired: in a repeated hour, one whose wall time
        # is itself on the grid's first pass; every="1d", the second instant of a
        # 25-hour day (its date fired at midnight).
        assert self.interval is not None
        interval = self.interval
        day = after.astimezone(self.zone).date()
        while True:
            start = _midnight(day, self.zone)
            end = _midnight(day + _ONE_DAY, self.zone)
            at = start if after < start else start + ((after - start) // interval + 1) * interval
            while at < end:
                if not self._repeats_a_key(at, start):
                    yield at
                at += interval
            day += _ONE_DAY

    def _repeats_a_key(self, at: dt.datetime, start: dt.datetime) -> bool:
        """Whether grid instant ``at`` (of the day starting at ``start``) has the key of an earlier one."""
        if self.daily:
            return at != start
        local = at.astimezone(self.zone)
        return _second_pass(local) and self._on_grid(local.replace(fold=0))

    def _on_grid(self, local: dt.datetime) -> bool:
        """Whether the grid of ``local``'s day has an instant at ``local``."""
        assert self.interval is not None
        return not (local.astimezone(_UTC) - _midnight(local.date(), self.zone)) % self.interval


def _midnight(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """The first instant of ``day`` in ``zone`` (its 00:00, or the jump's end if 00:00 is skipped), in UTC."""
    return dt.datetime.combine(day, dt.time(), zone).astimezone(_UTC)


def _offset(local: dt.datetime) -> dt.timedelta:
    """The UTC offset of an aware local time."""
    offset = local.utcoffset()
    assert offset is not None
    return offset


def _second_pass(local: dt.datetime) -> bool:
    """Whether an aware local time is in the second pass of a repeated (fall-back) hour."""
    return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()


def _target_chain(target: object) -> Chain:
    if isinstance(target, Task):
        return Chain([target])
    if isinstance(target, Chain):
        return target
    if isinstance(target, Sequence) and not isinstance(target, str | bytes):
        return resolve_chain(target)
    if isinstance(target, Mapping):
        return resolve_chain([target])
    raise InvalidSchedule(
        f"a schedule's target is a chain (a list of tasks) or a decorated task, not {target!r}", target
    )


def _default_name(chain: Chain) -> str:
    """The task names joined by ``,``; a name too long for the keys keeps its head and a digest
    of the whole, so two chains that differ only past the cut still get different names."""
    names = ",".join(chain.nodes)
    if len(names) <= MAX_NAME_LENGTH:
        return names
    digest = hashlib.sha1(names.encode()).hexdigest()[:8]
    return f"{names[: MAX_NAME_LENGTH - 9]}-{digest}"


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise InvalidSchedule(f"tz must be an IANA time zone name like 'Europe/Berlin', not {name!r}", name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown time zone {name!r}", name) from None


def _check_cron(expression: object) -> bool:
    """Validate a 5-field cron expression; whether it fires at most once a day."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise InvalidSchedule(
            f"invalid cron expression {expression!r}: expected 5 fields (minute hour day month weekday)",
            expression,
        )
    try:
        parsed = CronSim(expression, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise InvalidSchedule(f"invalid cron expression {expression!r}: {exc}", expression) from None
    return len(parsed.minutes) == 1 and len(parsed.hours) == 1


def _shortest_marker_ttl(chain: Chain) -> int:
    """The shortest success-marker TTL among a chain's tasks (seed-style ones use the seed's)."""
    return min(
        (node.func.success_ttl if isinstance(node.func, Task) else REDIS_SUCCESS_TTL for node in chain),
        default=REDIS_SUCCESS_TTL,
    )
