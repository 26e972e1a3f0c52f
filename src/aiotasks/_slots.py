"""Body slots: how many task bodies may use one Redis client at once.

Task bodies get the run's client (``run.redis``) and may use it, one pooled
connection each. The door needs its own connections from the same pool, so a
client whose pool has a hard limit can serve only so many bodies at once
besides the door (:func:`capacity`); the decorator and the chain hold a slot
per body, and a body that finds every slot taken waits for one, rather than
make the pool refuse a connection to the door (which would leave a lock
behind) or to a body.

A body nested in one that holds a slot of the same client (a task called
from a task body, a decorated task in a chain) takes none, so nesting never
waits on itself: the slots a context holds live in a context variable.

This is a semaphore with a fast path that is not a coroutine: a run takes
and gives back a slot with two plain calls, since it does so every time.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import RedisCluster

__all__ = ["BodySlots", "capacity"]


def capacity(client: Any, lanes: int) -> int | None:
    """How many task bodies can use ``client`` at once, one connection each.

    That is what its pool can serve (per node, for a cluster) minus the
    ``lanes`` connections the door may use for the library's own commands.
    None when the client needs no limit: its pool waits for a free connection
    by itself (``BlockingConnectionPool``), or it has a single connection.
    """
    if isinstance(client, RedisCluster):
        limit = client.nodes_manager.connection_kwargs.get("max_connections")
    else:
        pool = getattr(client, "connection_pool", None)
        if pool is None or isinstance(pool, BlockingConnectionPool) or client.single_connection_client:
            return None
        limit = pool.max_connections
    if isinstance(limit, bool) or not isinstance(limit, int):
        return None
    return max(1, limit - lanes)


#: The slot sets the current context holds a slot of.
_holding: contextvars.ContextVar[tuple[BodySlots, ...]] = contextvars.ContextVar(
    "aiotasks_body_slots", default=()
)

#: What :meth:`BodySlots.enter` returns when the body takes no slot (no limit, or nested).
NO_SLOT: Final[Any] = object()


class BodySlots:
    """``limit`` slots for the task bodies of one client (None: no limit, every call is free)."""

    __slots__ = ("_taken", "_waiters", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._taken = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def enter(self) -> Any:
        """Take a slot if one is free: a token for :meth:`leave`; None if the caller must :meth:`wait`."""
        if self.limit is None:
            return NO_SLOT
        held = _holding.get()
        if self in held:
            return NO_SLOT
        if self._taken < self.limit and not self._waiters:
            self._taken += 1
            return _holding.set((*held, self))
        return None

    async def wait(self) -> Any:
        """Wait for a slot (after :meth:`enter` said None): a token for :meth:`leave`."""
        assert self.limit is not None
        if self._taken < self.limit and not self._waiters:
            self._taken += 1  # one came free since enter() (the caller was not this call's task)
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_over()  # it was handed a slot as it was cancelled: pass it on
                else:
                    self._waiters.remove(waiter)
                raise
        return _holding.set((*_holding.get(), self))

    def leave(self, token: Any) -> None:
        """Give back the slot :meth:`enter` or :meth:`wait` took (a no-op for ``NO_SLOT``)."""
        if token is NO_SLOT:
            return
        _holding.reset(token)
        if self._waiters:
            self._hand_over()
        else:
            self._taken -= 1  # (the slot is free: _hand_over's common case)

    def _hand_over(self) -> None:
        """A slot came free: the first waiter gets it, else it is free."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: still taken
                return
        self._taken -= 1

    def reserve(self, count: int) -> int:
        """Take ``count`` slots out of the limit (negative: give them back) for connections the
        door holds for a while (a :class:`~aiotasks._store.Watcher`'s); how many it took, for
        giving back exactly that. Never below one slot."""
        if self.limit is None:
            return 0
        before = self.limit
        self.limit = max(1, before - count)
        while self._waiters and self._taken < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._taken += 1  # handed to the waiter, as _hand_over does
                waiter.set_result(None)
        return before - self.limit

    def hold(self) -> _Held:
        """Hold a slot while an ``async with`` block runs (a class, not a generator: it is
        entered per task of a chain)."""
        return _Held(self)


class _Held:
    """:meth:`BodySlots.hold`'s context manager."""

    __slots__ = ("_slots", "_token")

    def __init__(self, slots: BodySlots) -> None:
        self._slots = slots
        self._token: Any = NO_SLOT

    async def __aenter__(self) -> None:
        token = self._slots.enter()
        self._token = token if token is not None else await self._slots.wait()

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.leave(self._token)
