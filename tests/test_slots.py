"""Body slots (``_slots.BodySlots``): a semaphore whose fast path is two plain calls.

Pure asyncio: the slots never talk to Redis. Tests with real bodies on a real
client are in test_task.py (500 bodies) and test_run_outcomes.py (nesting).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from aiotasks._slots import NO_SLOT, BodySlots


class Body:
    """One body's context (each run has its own, as each asyncio task has): it takes and gives back."""

    def __init__(self, slots: BodySlots) -> None:
        self.slots = slots
        self.context = contextvars.Context()
        self.token: Any = None

    def enter(self) -> Any:
        self.token = self.context.run(self.slots.enter)
        return self.token

    async def take(self) -> Any:
        """Enter, or wait for a slot (as the decorator does), in this body's context."""
        self.token = self.enter()
        if self.token is None:
            self.token = await asyncio.get_running_loop().create_task(self.slots.wait(), context=self.context)
        return self.token

    def leave(self) -> None:
        self.context.run(self.slots.leave, self.token)


async def wait_until_queued(slots: BodySlots, count: int) -> None:
    """Let the loop run until ``count`` bodies wait in line (each wait is a task of its own here)."""
    for _ in range(100):
        if len(slots._waiters) == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(slots._waiters)} bodies wait, not {count}")


def free(slots: BodySlots) -> int:
    """How many slots are free now, found by taking them (and giving them back)."""
    bodies: list[Body] = []
    while len(bodies) < 100:
        body = Body(slots)
        if body.enter() in (None, NO_SLOT):
            break
        bodies.append(body)
    for body in reversed(bodies):
        body.leave()
    return len(bodies)


async def test_without_a_limit_every_body_runs_and_takes_nothing() -> None:
    slots = BodySlots(None)
    assert [Body(slots).enter() for _ in range(3)] == [NO_SLOT] * 3
    slots.leave(NO_SLOT)


async def test_a_full_set_makes_the_next_body_wait_for_the_first_slot_given_back() -> None:
    slots = BodySlots(2)
    first, second, third = Body(slots), Body(slots), Body(slots)
    assert first.enter() not in (None, NO_SLOT)
    assert second.enter() not in (None, NO_SLOT)
    waiter = asyncio.ensure_future(third.take())
    await wait_until_queued(slots, 1)
    assert not waiter.done()
    second.leave()
    assert await asyncio.wait_for(waiter, 10) not in (None, NO_SLOT)  # the freed slot passed on
    assert free(slots) == 0
    third.leave()
    first.leave()
    assert free(slots) == 2


async def test_a_body_nested_in_one_that_holds_a_slot_takes_none() -> None:
    slots = BodySlots(1)
    outer = Body(slots)
    assert outer.enter() not in (None, NO_SLOT)
    assert outer.context.run(slots.enter) is NO_SLOT  # same context: a task called from the body
    other = BodySlots(1)
    assert outer.context.run(other.enter) not in (None, NO_SLOT)  # another client's slots are its own


@pytest.mark.parametrize("handed", [False, True], ids=["before its turn", "just as it was handed a slot"])
async def test_a_cancelled_waiter_never_keeps_a_slot_from_the_next(handed: bool) -> None:
    """The first of two waiters is cancelled, before the slot comes free (it leaves the queue) or
    just after it was handed the slot and before it ran (it passes the slot on): either way the
    second gets a slot, and none is lost."""
    slots = BodySlots(1)
    holder, first, second = Body(slots), Body(slots), Body(slots)
    holder.enter()
    waiting_first = asyncio.ensure_future(first.take())
    waiting_second = asyncio.ensure_future(second.take())
    await wait_until_queued(slots, 2)
    if handed:
        holder.leave()  # handed to the first waiter, which has not run yet
    waiting_first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting_first
    if not handed:
        holder.leave()
    await asyncio.wait_for(waiting_second, 10)
    second.leave()
    assert free(slots) == 1


async def test_a_slot_given_back_with_nobody_waiting_is_free_again() -> None:
    slots = BodySlots(3)
    bodies = [Body(slots) for _ in range(3)]
    for body in bodies:
        body.enter()
    assert free(slots) == 0
    for body in bodies:
        body.leave()
    assert free(slots) == 3


async def test_a_slot_freed_between_enter_and_wait_is_taken_at_once() -> None:
    """enter() said "wait", then a slot came free before wait() ran (another task in between):
    wait() takes it instead of queueing behind nobody."""
    slots = BodySlots(1)
    holder, late = Body(slots), Body(slots)
    holder.enter()
    assert late.enter() is None
    holder.leave()
    waiting = asyncio.get_running_loop().create_task(slots.wait(), context=late.context)
    late.token = await asyncio.wait_for(waiting, 10)
    assert free(slots) == 0
    late.leave()
    assert free(slots) == 1


async def test_a_watcher_takes_one_slot_while_it_lives_and_a_waiting_body_gets_it_back() -> None:
    """Regression: the trigger listener holds a connection of the pool for good; while it lives the
    bodies get one slot less (never below one), and giving it back lets a waiting body in at once."""
    slots = BodySlots(2)
    assert slots.reserve(1) == 1
    assert free(slots) == 1
    first, second = Body(slots), Body(slots)
    await first.take()
    waiting = asyncio.create_task(second.take())
    await wait_until_queued(slots, 1)
    slots.reserve(-1)
    await waiting
    assert free(slots) == 0
    first.leave()
    second.leave()
    assert free(slots) == 2
    one = BodySlots(1)
    assert one.reserve(1) == 0  # a lone slot stays: bodies must be able to run
    assert BodySlots(None).reserve(1) == 0
