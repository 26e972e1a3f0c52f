"""The one clock that code deciding by time reads (STYLE 16: time is a parameter).

Three questions are asked of it: what time is it on the wall (an aware UTC
``datetime``, never a naive one), what does the monotonic clock say (for
measuring durations), and "wake me at this wall-clock instant". The default
is :class:`SystemClock`; tests install a :class:`FakeClock` whose time only
moves when the test says so, and whose sleepers wake in deadline order::

    clock = FakeClock(dt.datetime(2026, 3, 29, 0, 59, tzinfo=dt.UTC))
    with use_clock(clock):
        ...                          # code under test calls current_clock()
        await clock.sleepers(1)      # the scheduler is asleep, waiting for its slot
        clock.advance(60)            # it wakes and fires the slot
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Iterator
from typing import Final, Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "current_clock", "set_clock", "use_clock"]

#: The longest a real sleep lasts before the wall clock is read again, so a
#: stepped clock (NTP, a suspended VM) delays a slot by at most this much.
MAX_NAP: Final = 60.0


class Clock(Protocol):
    """Wall time, monotonic time and sleeping until a wall-clock instant."""

    def now(self) -> dt.datetime:
        """The wall-clock time, an aware ``datetime`` in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations only)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        ...

    async def sleep_until(self, when: dt.datetime) -> None:
        """Return once :meth:`now` has reached ``when`` (an aware ``datetime``)."""
        ...


class SystemClock:
    """The host's clocks; sleeping until an instant re-reads the wall clock at least every minute."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until(self, when: dt.datetime) -> None:
        # The event loop's timers run on the monotonic clock; a wall-clock
        # instant is reached by short naps so a clock step is noticed.
        while (left := (when - self.now()).total_seconds()) > 0:  # noqa: ASYNC110 (a timer, not a flag)
            await asyncio.sleep(min(left, MAX_NAP))


class FakeClock:
    """A clock for tests: time moves only through :meth:`advance`.

    :meth:`advance` wakes the sleepers whose deadline it passes, earliest
    first (they run once the test yields, and see the advanced time, as code
    woken late by a busy loop would); :meth:`sleepers` lets a test wait,
    without sleeping, until the code under test is asleep again.

    :param start: the initial wall time (aware; stored in UTC).
    """

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware datetime, not {start!r}")
        self._now = start.astimezone(dt.UTC)
        self._monotonic = 0.0
        self._heap: list[tuple[dt.datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed: asyncio.Event | None = None

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + dt.timedelta(seconds=seconds))

    async def sleep_until(self, when: dt.datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (when, next(self._order), waiter))
        self._notify()
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: forget it
                waiter.cancel()
            self._notify()

    def advance(self, seconds: float | dt.timedelta) -> None:
        """Move time forward and wake every sleeper whose deadline has come, earliest first."""
        delta = seconds if isinstance(seconds, dt.timedelta) else dt.timedelta(seconds=seconds)
        if delta < dt.timedelta(0):
            raise ValueError(f"time only moves forward, not by {delta}")
        target = self._now + delta
        while self._heap and self._heap[0][0] <= target:
            when, _, waiter = heapq.heappop(self._heap)
            self._step_to(when)
            if not waiter.done():
                waiter.set_result(None)
        self._step_to(target)

    def _step_to(self, when: dt.datetime) -> None:
        if when > self._now:
            self._monotonic += (when - self._now).total_seconds()
            self._now = when

    @property
    def pending(self) -> int:
        """How many sleepers are waiting right now."""
        return sum(1 for _, _, waiter in self._heap if not waiter.done())

    @property
    def next_wake(self) -> dt.datetime | None:
        """The earliest deadline of a waiting sleeper."""
        live = [when for when, _, waiter in self._heap if not waiter.done()]
        return min(live, default=None)

    async def sleepers(self, count: int = 1) -> None:
        """Wait (on an event, not a timer) until at least ``count`` sleepers are waiting."""
        while self.pending < count:
            self._changed = self._changed or asyncio.Event()
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


_current: Clock = SystemClock()


def current_clock() -> Clock:
    """The clock in use: the system's, unless a test installed another."""
    return _current


def set_clock(clock: Clock) -> Clock:
    """Install ``clock`` for the whole process; returns the one it replaces."""
    global _current
    previous, _current = _current, clock
    return previous


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Install ``clock`` for the duration of a ``with`` block."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)
