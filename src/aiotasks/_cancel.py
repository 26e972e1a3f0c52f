"""Finishing work that must not be cut short by cancellation.

``anyio.CancelScope(shield=True)`` alone is not enough for a library that runs
inside plain asyncio code: a native ``Task.cancel()`` (``asyncio.wait_for``,
``asyncio.timeout``, a ``TaskGroup`` whose sibling failed) still interrupts an
await inside the shield. Here the work runs as its own future, and the caller
waits for it through any number of cancellations, then re-delivers the
cancellation.

anyio cancel scopes need two more things. A scope re-sends its cancellation on
every loop iteration until it lands, so once the first one is received an anyio
shield keeps the repeats out while we wait; it is entered only then, because a
shield entered from the start would hide the cancellation altogether (the
caller would never learn it, nor tell a worker thread to stop, and would wait
forever for a thread that waits to be told). And a scope only swallows the
cancellation it sent, so the caller re-raises that very exception, not a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["settle", "shielded"]

T = TypeVar("T")


async def settle(
    future: asyncio.Future[T], on_cancel: Callable[[], object] | None = None
) -> asyncio.CancelledError | None:
    """Wait until ``future`` is done, whatever cancellations the caller receives meanwhile.

    The future's result or exception is left on it for the caller to read.

    :param on_cancel: called on each cancellation received while waiting (for
        example to ask a worker thread to stop early).
    :returns: the first cancellation the caller received while waiting, or
        None; the caller must re-raise it (that exception, not a new one) once
        it has done its cleanup.
    """
    received: asyncio.CancelledError | None = None
    shield: anyio.CancelScope | None = None
    try:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError as exc:
                if future.done():
                    # The future itself was cancelled (its owner shut down): nothing to wait for.
                    if not future.cancelled():
                        received = received or exc
                    break
                received = received or exc
                if on_cancel is not None:
                    on_cancel()
                if shield is None:
                    shield = anyio.CancelScope(shield=True)
                    shield.__enter__()
            except BaseException:
                break  # the future failed: its exception stays on it for the caller
    finally:
        if shield is not None:
            shield.__exit__(None, None, None)
    return received


async def shielded(work: Awaitable[T], on_cancel: Callable[[], object] | None = None) -> T:
    """Run ``work`` to completion even if the caller is cancelled meanwhile.

    The cleanup stays in the cancelled coroutine (not a detached task that may
    never run): the caller resumes only once ``work`` has finished, and then
    receives ``CancelledError`` if it was cancelled while waiting, else the
    result of ``work`` (or its exception).
    """
    future = asyncio.ensure_future(work)
    cancelled = await settle(future, on_cancel)
    if cancelled is not None:
        if not future.cancelled() and future.exception() is not None:
            future.exception()  # retrieved: the cancellation wins, not this error
        raise cancelled
    return future.result()
