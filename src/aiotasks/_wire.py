"""The Redis door's side of redis-py: wire I/O, the door's connections, redis-py's errors.

For a plain ``redis.asyncio.Redis`` the door (``_store``) takes a connection
from the client's pool and writes and reads its commands itself: the same
bytes as ``execute_command`` or a pipeline, without redis-py's per-call
wrapping (its retry loop, which the door replaces, its observability hooks and
a timer per reply), which costs redis-py 8 about as much as the round trip.
:class:`Connections` keeps a few of those connections between batches.

That relies on redis-py internals. Each reliance is one small function here,
with a fallback to the public path where one exists:

* :func:`write` uses the connection's stream writer (``connection._writer``),
  falling back to ``send_packed_command``;
* :func:`read` feeds the connection's hiredis reader (``connection._parser``:
  its ``_reader`` and ``_stream``) from the socket and takes the replies from
  it, as redis-py's hiredis parser does, minus redis-py's per-reply wrapping
  (a coroutine chain four deep, an error text formatted per call), which cost
  a run more CPU than the rest of its reply handling; on any other parser,
  RESP3 where the reader can't tell push frames apart, or a health-check
  interval it falls back to ``read_response(timeout=math.inf,
  disconnect_on_error=False)``. Both rely on the reader resuming a
  read that a cancellation cut short (hiredis and the pure-Python parser both
  do): a reader that stops waiting leaves the rest of the reply for whoever
  reads next;
* :func:`take` is ``pool.get_connection()``, whose signature changed across
  redis-py versions; :class:`Connections` checks connections out of the pool
  and back with the pool's public ``get_connection``/``release``.

:func:`translate` turns redis-py's errors into aiotasks' at this boundary,
never with a password in the message. It first unwraps what Redis before 7.0
made of an error inside a script (``_script_error``), so that every server
in the supported range gives the same error for the same refusal.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis import exceptions as rex
from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection

from ._errors import RedisAuthError, RedisUnavailable

try:  # redis-py's hiredis parser and the reader's "incomplete" marker (see :func:`read`)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser

    _HiredisParser: Any = _AsyncHiredisParser
except ImportError:  # another redis-py layout: always the public path
    _NOT_ENOUGH_DATA, _HiredisParser = object(), None

__all__ = [
    "HOLD_IDLE",
    "HOLD_MIN_POOL",
    "Connections",
    "describe",
    "noscript",
    "pack",
    "pack_args",
    "pool_limit",
    "read",
    "retries_by_itself",
    "take",
    "template",
    "translate",
    "write",
]

#: Smallest pool from which the door keeps connections between batches.
HOLD_MIN_POOL: Final = 16
#: Seconds a kept connection may sit unused before it goes back to the pool.
HOLD_IDLE: Final = 1.0

_AUTH_REPLY: Final = re.compile(r"^(NOAUTH|WRONGPASS|NOPERM)\b")
_CLOSED: Final = "Connection closed by server."
#: Redis before 7.0 wrapped an error a command raised inside a script in an ERR, which redis-py
#: strips: "Error running script (call to f_<sha>): @user_script:<line>: [@user_script: <line>: -]
#: WRONGTYPE Operation against a key...". Redis 7.0 and later, and Valkey, reply with the command's
#: own error: "WRONGTYPE Operation against a key... script: <sha>, on @user_script:<line>.".
_SCRIPT_WRAPPER: Final = (
    r"Error running script \(call to f_[0-9a-f]+\): @user_script:\d+: (?:@user_script: \d+: )?"
)
_WRAPPED_SCRIPT_ERROR: Final = re.compile(
    rf"^{_SCRIPT_WRAPPER}-?(?P<code>[A-Z]+) (?P<text>.*)$",
    re.DOTALL,
)
#: A script's command that the ACL user may not run, or whose key it may not touch: no error code
#: (an ERR, which redis-py strips), so not unwrapped above. Redis 6.2 wraps "The user executing
#: the script can't ...", 7.0 says it bare, Redis 8 and Valkey say "ACL failure in script: No
#: permissions to ...". The read scripts (GRID, RUNS) build some keys from prefixes: a missing
#: key pattern shows up here.
_SCRIPT_ACL: Final = re.compile(
    rf"^(?:{_SCRIPT_WRAPPER})?(?:The user executing the script can't|ACL failure in script: )"
)
#: The redis-py error a reply of that code would have been, where it is not a plain ResponseError.
_ERROR_CLASSES: Final[dict[str, type[rex.ResponseError]]] = {
    "READONLY": rex.ReadOnlyError,
    "NOPERM": rex.NoPermissionError,
    "OOM": rex.OutOfMemoryError,
}


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """The RESP requests for a batch of the door's commands, as one buffer.

    redis-py's ``pack_command`` takes any argument type and splits large values
    into chunks; the door only sends short strings and integers (and a script's
    source once), and packing them here costs a fraction of that: one format
    per command, its template made once per argument count.
    """
    parts: list[bytes] = []
    for command in commands:
        data = [arg if type(arg) is bytes else str(arg).encode() for arg in command]
        template = _TEMPLATES.get(len(data))
        if template is None:
            template = _TEMPLATES[len(data)] = b"*%d\r\n" % len(data) + b"$%d\r\n%b\r\n" * len(data)
        values: list[Any] = []
        for item in data:
            values.append(len(item))
            values.append(item)
        parts.append(template % tuple(values))
    return b"".join(parts)


#: :func:`pack`'s RESP template of a command, by its number of arguments.
_TEMPLATES: dict[int, bytes] = {}


def template(args: Sequence[bytes | tuple[bytes, int]], tail: int = 0) -> bytes:
    """One command's RESP as a ``%``-format, for a command sent again and again with a few
    parts changed (a run's keys and token): made once, filled with one ``%`` per call.

    :param args: each argument as its bytes, or ``(head, n)``: ``head`` followed by a hole of
        exactly ``n`` bytes (``%b``), filled per call.
    :param tail: how many more arguments follow, given at each call as one more ``%b``: their
        RESP, as :func:`pack_args` makes it.
    """
    parts = [b"*%d\r\n" % (len(args) + tail)]
    for arg in args:
        if isinstance(arg, tuple):
            head, size = arg
            parts.append(b"$%d\r\n%b%%b\r\n" % (len(head) + size, head.replace(b"%", b"%%")))
        else:
            parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg.replace(b"%", b"%%")))
    if tail:
        parts.append(b"%b")
    return b"".join(parts)


def pack_args(args: Sequence[Any]) -> bytes:
    """The RESP of ``args`` as the end of a request (no count): what fills a :func:`template`'s tail."""
    return b"".join(
        [
            b"$%d\r\n%b\r\n" % (len(data), data)
            for data in [a if type(a) is bytes else str(a).encode() for a in args]
        ]
    )


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
    if not connection.socket_timeout:  # redis-py's default: no timer, which costs more than a reply
        await _read_replies(connection, count, replies)
        return
    async with asyncio.timeout(connection.socket_timeout) as timer:
        try:
            await _read_replies(connection, count, replies)
        except asyncio.CancelledError:
            if timer.expired():
                raise rex.TimeoutError("Timeout reading from the socket") from None
            raise


async def _read_replies(connection: AbstractConnection, count: int, replies: list[Any]) -> None:
    parser: Any = getattr(connection, "_parser", None)
    if (
        parser.__class__ is _HiredisParser
        and parser._reader is not None
        # RESP3 only where hiredis marks push frames (3.2 and later, redis-py 6 and later).
        and (getattr(parser, "_hiredis_PushNotificationType", None) or connection.protocol in (2, "2", None))
        and not connection.health_check_interval
    ):
        await _read_hiredis(parser, count, replies)
        return
    while len(replies) < count:
        try:
            replies.append(await connection.read_response(timeout=math.inf, disconnect_on_error=False))
        except rex.ResponseError as exc:
            replies.append(exc)


async def _read_hiredis(parser: Any, count: int, replies: list[Any]) -> None:
    """What ``_AsyncHiredisParser.read_response`` does, in one frame per batch.

    The reader was made by redis-py (``on_connect``) with redis-py's error
    classes: an error reply comes out of it as an exception object, a
    ``ConnectionError`` among them (``LOADING``) is raised as redis-py raises
    it. A RESP3 push frame (a server's maintenance notice) goes to the
    parser's own handler, and the reply it came before is read next.
    """
    reader, stream = parser._reader, parser._stream
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    while len(replies) < count:
        if not parser._connected:
            raise rex.ConnectionError(_CLOSED)
        reply = reader.gets()
        if reply is _NOT_ENOUGH_DATA:
            try:
                data = await stream.read(parser._read_size)
            except OSError as exc:
                raise rex.ConnectionError(f"Error while reading from the socket: {exc.args}") from exc
            if not data:
                raise rex.ConnectionError(_CLOSED)
            reader.feed(data)
            continue
        if isinstance(reply, rex.ConnectionError):
            raise reply
        if push is not None and isinstance(reply, push):
            await parser.handle_push_response(reply)
            continue
        replies.append(reply)


# -- the door's connections ------------------------------------------------------------


class Connections:
    """The door's connections from one client's pool: taken, kept between batches, given back.

    Between batches up to ``lanes`` connections stay checked out, and go back
    to the pool after ``HOLD_IDLE`` seconds without use: taking and returning
    a pooled connection costs redis-py 8 about as much as the round trip. None
    are kept when the pool is smaller than ``HOLD_MIN_POOL``, so task bodies
    sharing a small pool never wait on the door's idle ones.

    :param spawn: runs a coroutine as one of the door's tasks (the hand-back).
    """

    def __init__(self, pool: ConnectionPool, lanes: int, *, spawn: Callable[[Any], None]) -> None:
        self.pool = pool
        self._keep_up_to = lanes if pool.max_connections >= HOLD_MIN_POOL else 0
        self._spawn = spawn
        self._loop = asyncio.get_running_loop()
        #: Connections kept out of the pool, idle.
        self.held: list[AbstractConnection] = []
        self._last_use = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def kept(self) -> AbstractConnection | None:
        """A kept connection, if any (it skipped the pool's stale-connection check)."""
        return self.held.pop() if self.held else None

    async def take(self) -> AbstractConnection:
        """A connection from the pool (see :func:`take`)."""
        return await take(self.pool)

    def keep(self, connection: AbstractConnection) -> bool:
        """Keep a connection whose replies were all read, if there is room; False if not kept."""
        if len(self.held) >= self._keep_up_to:
            return False
        self.held.append(connection)
        self._last_use = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_later(HOLD_IDLE, self._hand_back_idle)
        return True

    async def put(self, connection: AbstractConnection, *, reusable: bool) -> None:
        """Done with ``connection``: kept if ``reusable`` and there is room, else back to the pool.

        One that is not reusable (a reply may be left unread) is disconnected first.
        """
        if reusable and self.keep(connection):
            return
        if not reusable:
            await connection.disconnect(nowait=True)
        await self.pool.release(connection)

    def _hand_back_idle(self) -> None:
        self._idle_timer = None
        if not self.held:
            return
        unused_for = self._loop.time() - self._last_use
        if unused_for < HOLD_IDLE:
            self._idle_timer = self._loop.call_later(HOLD_IDLE - unused_for, self._hand_back_idle)
            return
        held, self.held = self.held, []
        self._spawn(self._release(held))

    async def _release(self, connections: list[AbstractConnection]) -> None:
        for connection in connections:
            await self.pool.release(connection)


# -- naming the server, and redis-py's errors ----------------------------------------------


def describe(client: Any) -> str:
    """Name the server a client talks to, without credentials."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        return f"redis-cluster://{node.host}:{node.port}" if node else "redis-cluster"
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {}) or {}
    if "server" in kwargs or type(client).__module__.startswith("fakeredis"):
        return "in-process store"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    tls = issubclass(getattr(pool, "connection_class", object), SSLConnection) or "ssl_context" in kwargs
    scheme = "rediss" if tls else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{host}:{port}/{db}"


def secrets_of(client: Any) -> list[str]:
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {}) or {}
    found = [kwargs.get("password")]
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        if node is not None:
            found.append(node.connection_kwargs.get("password"))
    return [s for s in found if isinstance(s, str) and s]


def translate(exc: BaseException, client: Any) -> BaseException:
    """Map a redis-py error to aiotasks' error, or return it unchanged.

    The message never contains the client's password, even if redis-py put it there.
    """
    if isinstance(exc, RedisUnavailable):
        return exc
    translated = _translate(exc, client)
    if translated is not exc:
        translated.__cause__ = exc
    return translated


def _script_error(exc: BaseException) -> BaseException:
    """The error a script's command raised, as Redis 7.0+ replies it, where Redis 6.2 wrapped it.

    So ``READONLY`` on a replica is redis-py's ``ReadOnlyError`` and a ``WRONGTYPE`` starts with
    ``WRONGTYPE`` on every server; any other error is returned unchanged.
    """
    found = _WRAPPED_SCRIPT_ERROR.match(str(exc)) if type(exc) is rex.ResponseError else None
    if found is None:
        return exc
    code, text = found["code"], found["text"]
    # redis-py strips the generic "ERR " and keeps every other code in the message.
    return _ERROR_CLASSES.get(code, rex.ResponseError)(text if code == "ERR" else f"{code} {text}")


def _translate(exc: BaseException, client: Any) -> BaseException:
    exc = _script_error(exc)
    message = str(exc) or type(exc).__name__
    for secret in secrets_of(client):
        message = message.replace(secret, "***")
    server = describe(client)
    if isinstance(exc, rex.NoPermissionError) or message.startswith("NOPERM") or _SCRIPT_ACL.match(message):
        # The credentials were accepted; the ACL user lacks a permission, which Redis names.
        return RedisAuthError(f"Redis at {server} denied our ACL user a permission: {message}", server)
    if isinstance(exc, rex.AuthenticationError) or (
        isinstance(exc, rex.ResponseError) and _AUTH_REPLY.match(message)
    ):
        return RedisAuthError(f"Redis at {server} refused our credentials: {message}", server)
    if isinstance(exc, rex.InvalidResponse):
        return RedisUnavailable(
            f"Redis at {server} answered with something that is not the Redis protocol "
            f"(is it a Redis server?): {message}",
            server,
        )
    if pool_limit(exc):
        return RedisUnavailable(
            f"no connection to {server} came free while the door waited: the client's connection pool "
            "is at its max_connections (a local limit of the client, not an error of Redis)",
            server,
        )
    if isinstance(exc, rex.ReadOnlyError):
        return RedisUnavailable(f"Redis at {server} is a read-only replica: {message}", server)
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, rex.ClusterError)):
        return RedisUnavailable(f"Redis at {server} is unavailable: {message}", server)
    if isinstance(exc, rex.RedisClusterException | OSError):
        return RedisUnavailable(f"Redis at {server} is unavailable: {message}", server)
    return exc


def retries_by_itself(client: Any) -> bool:
    if isinstance(client, RedisCluster):
        return True
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    retry = kwargs.get("retry")
    return retry is not None and retry.get_retries() > 0


def pool_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is a pool at its ``max_connections``: a local limit, nothing was sent.

    Recent redis-py raises ``MaxConnectionsError`` for it (redis-py #3859, after 7.1);
    before, its asyncio pool raised a plain ``ConnectionError("Too many connections")``.
    """
    return isinstance(exc, rex.MaxConnectionsError) or (
        type(exc) is rex.ConnectionError and str(exc) == "Too many connections"
    )


def noscript(reply: Any) -> bool:
    return isinstance(reply, rex.NoScriptError) or (
        isinstance(reply, rex.ResponseError) and str(reply).startswith("NOSCRIPT")
    )
