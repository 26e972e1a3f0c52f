"""The replaceable clock: the fake one moves only when told, and wakes sleepers in deadline order."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from aiotasks._clock import FakeClock, SystemClock, current_clock, use_clock

T0 = dt.datetime(2026, 3, 29, 0, 0, tzinfo=dt.UTC)


async def test_fake_clock_wakes_sleepers_in_deadline_order_at_their_deadline() -> None:
    """advance() wakes every due sleeper, earliest deadline first; later ones keep waiting."""
    clock = FakeClock(T0)
    seen: list[tuple[str, dt.datetime]] = []

    woke = {name: asyncio.Event() for name in ("late", "early", "never")}

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep_until(T0 + dt.timedelta(seconds=seconds))
        seen.append((name, clock.now()))
        woke[name].set()

    async with asyncio.TaskGroup() as group:
        for name, seconds in (("late", 30), ("early", 10), ("never", 90)):
            group.create_task(sleeper(name, seconds))
        await clock.sleepers(3)
        clock.advance(60)
        await woke["late"].wait()
        assert seen == [("early", T0 + dt.timedelta(seconds=60)), ("late", T0 + dt.timedelta(seconds=60))]
        assert clock.now() == T0 + dt.timedelta(seconds=60)
        assert clock.monotonic() == 60.0
        assert clock.pending == 1
        assert clock.next_wake == T0 + dt.timedelta(seconds=90)
        clock.advance(dt.timedelta(seconds=30))
    assert seen[-1] == ("never", T0 + dt.timedelta(seconds=90))


async def test_cancelled_sleeper_is_forgotten() -> None:
    """A cancelled sleeper no longer counts as waiting."""
    clock = FakeClock(T0)
    task = asyncio.create_task(clock.sleep(5))
    await clock.sleepers(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending == 0


def test_fake_clock_refuses_naive_times_and_going_back() -> None:
    """The fake clock is aware and monotonic: naive starts and negative steps are refused."""
    with pytest.raises(ValueError, match="aware"):
        FakeClock(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="forward"):
        FakeClock(T0).advance(-1)


def test_use_clock_installs_and_restores() -> None:
    """use_clock() replaces the process's clock for a block; the system clock is the default, in UTC."""
    assert isinstance(current_clock(), SystemClock)
    assert current_clock().now().tzinfo is dt.UTC
    fake = FakeClock(T0)
    with use_clock(fake):
        assert current_clock() is fake
    assert isinstance(current_clock(), SystemClock)
