"""The Redis door's wire I/O: requests written and replies read on a redis-py connection.

For a plain ``redis.asyncio.Redis`` the door (``_store``) takes a connection
from the client's pool and writes and reads its commands itself: the same
bytes as ``execute_command`` or a pipeline, without redis-py's per-call
wrapping (its retry loop, which the door replaces, its observability hooks and
a timer per reply), which costs redis-py 8 about as much as the round trip.

That relies on redis-py internals. Each reliance is one small function here,
with a fallback to the public path where one exists:

* :func:`write` uses the connection's stream writer (``connection._writer``),
  falling back to ``send_packed_command``;
* :func:`read` calls ``read_response(timeout=math.inf, disconnect_on_error=False)``
  and relies on redis-py's reply parsers resuming a read that a cancellation
  cut short (hiredis and the pure-Python parser both do): a reader that stops
  waiting leaves the rest of the reply for whoever reads next;
* :func:`take` is ``pool.get_connection()``, whose signature changed across
  redis-py versions.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

__all__ = ["pack", "read", "take", "write"]


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """The RESP requests for a batch of the door's commands, as one buffer.

    redis-py's ``pack_command`` takes any argument type and splits large values
    into chunks; the door only sends short strings and integers (and a script's
    source once), and packing them here costs a fraction of that.
    """
    parts: list[bytes] = []
    for command in commands:
        parts.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def take(pool: ConnectionPool) -> AbstractConnection:
    """A connected connection from ``pool``; ``MaxConnectionsError`` if the pool is full.

    A failure here (refused, auth, pool limit) happens before any request of
    the door's is written: it is a known outcome, nothing reached Redis.
    """
    return await pool.get_connection()  # type: ignore[no-untyped-call,no-any-return]


async def write(connection: Any, data: list[bytes]) -> None:
    """``connection.send_packed_command(data)``, minus a task per write.

    redis-py bounds each write with ``asyncio.wait_for``, which on Python 3.11
    creates a task and costs two extra loop iterations per command, a fifth of
    a round trip on loopback. A write that fits the socket's buffer completes
    at once; ``asyncio.timeout`` bounds waiting for the rare one that does not.
    """
    writer = getattr(connection, "_writer", None)
    if not isinstance(writer, asyncio.StreamWriter) or connection.health_check_interval:
        await connection.send_packed_command(data)
        return
    try:
        writer.writelines(data)
        if writer.transport.get_write_buffer_size():  # else the kernel took it all at once
            async with asyncio.timeout(connection.socket_timeout or None):
                await writer.drain()
    except BaseException as exc:
        # As redis-py does: a half-written command poisons the connection.
        await connection.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):
            raise rex.TimeoutError("Timeout writing to socket") from None
        if isinstance(exc, OSError):
            raise rex.ConnectionError(f"Error while writing to socket: {exc}") from exc
        raise


async def read(connection: AbstractConnection, count: int, replies: list[Any]) -> None:
    """Read replies to a request already written until ``replies`` holds ``count``.

    A reply that is an error is appended as that exception. ``socket_timeout``
    bounds the whole read (one timer per batch, not one per reply, hence
    ``math.inf`` for redis-py's own) and then raises redis-py's ``TimeoutError``.

    Cancellation goes through at once and leaves the connection as it is:
    ``replies`` holds what was read so far and a later ``read`` on the same
    connection (by the door, in its own task) goes on where this one stopped.
    """
    async with asyncio.timeout(connection.socket_timeout or None) as timer:
        try:
            while len(replies) < count:
                try:
                    replies.append(
                        await connection.read_response(timeout=math.inf, disconnect_on_error=False)
                    )
                except rex.ResponseError as exc:
                    replies.append(exc)
        except asyncio.CancelledError:
            if timer.expired():
                raise rex.TimeoutError("Timeout reading from the socket") from None
            raise
