"""Finishing work that must not be cut short by cancellation.

``anyio.CancelScope(shield=True)`` alone is not enough for a library that runs
inside plain asyncio code: a native ``Task.cancel()`` (``asyncio.wait_for``,
``asyncio.timeout``, a ``TaskGroup`` whose sibling failed) still interrupts an
await inside the shield. Here the work runs as its own future, and the caller
waits for it through any number of cancellations, then re-delivers the
cancellation. The anyio shield is kept as well so that an anyio cancel scope
does not re-deliver its cancellation on every loop iteration while we wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["settle", "shielded"]

T = TypeVar("T")


async def settle(future: asyncio.Future[T], on_cancel: Callable[[], object] | None = None) -> bool:
    """Wait until ``future`` is done, whatever cancellations the caller receives meanwhile.

    The future's result or exception is left on it for the caller to read.

    :param on_cancel: called on each cancellation received while waiting (for
        example to ask a worker thread to stop early).
    :returns: whether the caller was cancelled while waiting; the caller must
        then re-raise ``CancelledError`` itself once it has done its cleanup.
    """
    cancelled = False
    with anyio.CancelScope(shield=True):
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                if future.done():
                    # The future itself was cancelled (its owner shut down): nothing to wait for.
                    cancelled = cancelled or not future.cancelled()
                    break
                cancelled = True
                if on_cancel is not None:
                    on_cancel()
            except BaseException:
                break  # the future failed: its exception stays on it for the caller
    return cancelled


async def shielded(work: Awaitable[T], on_cancel: Callable[[], object] | None = None) -> T:
    """Run ``work`` to completion even if the caller is cancelled meanwhile.

    The cleanup stays in the cancelled coroutine (not a detached task that may
    never run): the caller resumes only once ``work`` has finished, and then
    receives ``CancelledError`` if it was cancelled while waiting, else the
    result of ``work`` (or its exception).
    """
    future = asyncio.ensure_future(work)
    if await settle(future, on_cancel):
        if not future.cancelled() and future.exception() is not None:
            future.exception()  # retrieved: the cancellation wins, not this error
        raise asyncio.CancelledError
    return future.result()
