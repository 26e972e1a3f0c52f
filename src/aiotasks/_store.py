"""The Redis door: the one place that sends aiotasks' own commands.

Acquire, finish, release, renew, status reads and marker resets all go through
a :class:`Store`, one per Redis client and event loop. User task bodies keep
using the client they are given; only the library's own traffic passes here,
which is what makes these rules true everywhere at once:

Coalescing
    Commands are queued and sent by at most ``lanes`` sender tasks, each using
    one connection of the client's pool at a time. A lane that finds one
    command sends it as it is (no pipeline overhead, no added latency); a lane
    that finds several (issued in the same loop tick, or while the other lanes
    were busy) sends them as one non-transactional pipeline. Each caller gets
    its own reply or its own error. So 1,000 runs in flight use at most
    ``lanes`` connections, never "Too many connections", and under load the
    cost per command falls to what a pipeline costs. This is the auto-pipelining
    of ioredis and rueidis, kept small: redis-py has none, and the asyncio
    clients that do (valkey-glide) would replace redis-py rather than sit on it.

Order
    A run awaits each of its commands before sending the next, so its finish
    never overtakes its acquire, whichever lane carries them.

Cancellation
    A caller cancelled while its command is still queued is dropped before the
    command is sent. Once sent, a command's outcome is always learned before
    the cancellation is delivered, and an acquire that took the lock for a
    cancelled caller gives it back first (in the cancelled coroutine, shielded).

Errors and retries
    redis-py's connection and timeout errors become :class:`RedisUnavailable`,
    refused credentials :class:`RedisAuthError`; messages name the server as
    ``host:port/db``, never with a password. Every script is safe to retry, so
    a connection error (a killed idle connection, a proxy, a failover) is
    retried by the door, up to ``DOOR_ATTEMPTS`` attempts with exponential
    backoff and jitter; cluster clients, which route and retry by themselves
    across nodes, are left to do so.
    Timeouts are not retried by the door: a stalled server fails the run.

Connections
    For a plain ``redis.asyncio.Redis`` the door takes a connection from the
    client's pool and writes and reads the commands itself: the same bytes as
    ``execute_command`` or a pipeline, without redis-py's per-call wrapping
    (its retry loop, which the door replaces, and its observability hooks).

Redis Cluster
    redis-py's cluster pipeline splits a batch by node; every script touches
    one task's two keys, which share a hash tag (see ``_keys``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from ._cancel import settle, shielded
from ._constants import SUCCESS_MARKER
from ._errors import RedisAuthError, RedisUnavailable
from ._keys import TaskKeys
from ._scripts import ACQUIRE, FINISH, RELEASE, RENEW, STATUS, Script

__all__ = ["Acquired", "AnyRedis", "Completed", "Held", "LockState", "Store", "store_for"]

logger = logging.getLogger("aiotasks.store")

#: What every public ``redis=`` parameter accepts.
AnyRedis = Redis | RedisCluster

#: Default number of sender lanes (connections) per client for the library's own commands.
DEFAULT_LANES: Final = 2
#: Most commands sent in one pipeline; a longer queue goes out in several.
MAX_BATCH: Final = 512
#: Attempts of a batch after connection errors, when the client does not retry by itself.
DOOR_ATTEMPTS: Final = 3
#: First pause between those attempts, in seconds (doubled each time, with jitter).
DOOR_BACKOFF: Final = 0.05

_AUTH_REPLY: Final = re.compile(r"^(NOAUTH|WRONGPASS|NOPERM)\b")


class Acquired(NamedTuple):
    """The lock is ours."""


class Completed(NamedTuple):
    """The success marker exists; nothing was written."""


class Held(NamedTuple):
    """Another run holds the lock."""

    holder: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class LockState:
    """One (task, date) as Redis sees it right now."""

    completed: bool
    holder: str | None
    ttl_ms: int


class _Op:
    """One command on its way: queued, sent, then replied (result or exception)."""

    __slots__ = ("args", "dropped", "future", "replied", "reply", "script", "sent", "waiter")

    def __init__(self, script: Script | None, args: tuple[Any, ...], future: asyncio.Future[Any] | None):
        self.script = script
        self.args = args  # for a script: numkeys, *keys, *argv; else the whole command
        self.future = future  # None when the caller sends it itself
        self.sent = False
        self.dropped = False
        self.replied = False
        self.reply: Any = None
        #: Created only by a caller cancelled after sending, to learn the outcome anyway.
        self.waiter: asyncio.Future[None] | None = None

    def command(self, *, load: bool = False) -> tuple[Any, ...]:
        if self.script is None:
            return self.args
        if load:
            return ("EVAL", self.script.source, *self.args)
        return ("EVALSHA", self.script.sha, *self.args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
    scheme = "rediss" if "ssl_context" in kwargs or "ssl_cert_reqs" in kwargs else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{host}:{port}/{db}"


def _secrets_of(client: Any) -> list[str]:
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


def _translate(exc: BaseException, client: Any) -> BaseException:
    message = str(exc) or type(exc).__name__
    for secret in _secrets_of(client):
        message = message.replace(secret, "***")
    server = describe(client)
    if isinstance(exc, rex.AuthenticationError | rex.NoPermissionError) or (
        isinstance(exc, rex.ResponseError) and _AUTH_REPLY.match(message)
    ):
        return RedisAuthError(f"Redis at {server} refused our credentials: {message}", server)
    if isinstance(exc, rex.ReadOnlyError):
        return RedisUnavailable(f"Redis at {server} is a read-only replica: {message}", server)
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, rex.ClusterError)):
        return RedisUnavailable(f"Redis at {server} is unavailable: {message}", server)
    if isinstance(exc, rex.RedisClusterException | OSError):
        return RedisUnavailable(f"Redis at {server} is unavailable: {message}", server)
    return exc


def _retries_by_itself(client: Any) -> bool:
    if isinstance(client, RedisCluster):
        return True
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    retry = kwargs.get("retry")
    return retry is not None and retry.get_retries() > 0


class Store:
    """The library's door to one Redis client on one event loop.

    Use :func:`store_for` rather than the constructor: it keeps one per client.
    """

    def __init__(self, client: AnyRedis, *, lanes: int = DEFAULT_LANES) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.server = describe(client)
        self.loop = asyncio.get_running_loop()
        self._lanes = lanes
        # Plain clients are driven at connection level, which bypasses their own
        # retries; cluster and single-connection clients (and fakeredis) go
        # through their own execute_command and pipelines.
        self._pool: ConnectionPool | None = (
            client.connection_pool
            if type(client) is Redis and client.connection is None and not client.single_connection_client
            else None
        )
        self._attempts = DOOR_ATTEMPTS if self._pool is not None or not _retries_by_itself(client) else 1
        self._busy = 0
        self._starting = False
        self._queue: deque[_Op] = deque()
        self._senders: set[asyncio.Task[None]] = set()

    # -- the library's operations ------------------------------------------------

    async def acquire(
        self, keys: TaskKeys, token: str, ttl_ms: int, *, check_success: bool
    ) -> Acquired | Completed | Held:
        """Check the marker and take the lock, atomically, in one round trip.

        If the caller is cancelled (or the outcome is unknown because Redis
        failed) after the script was sent, the lock is given back before the
        exception propagates, so an interrupted acquire leaves nothing behind.
        """
        op = self._submit(ACQUIRE, 2, keys.lock, keys.success, token, ttl_ms, int(check_success))
        try:
            reply = await self._wait(op)
        except BaseException:
            if op.sent and self._may_hold(op):
                await shielded(self._give_back(keys.lock, token))
            raise
        code = int(reply[0])
        if code == 1:
            return Acquired()
        if code == 2:
            return Completed()
        return Held(_text(reply[1]) if reply[1] is not None else "", int(reply[2]))

    async def finish(self, keys: TaskKeys, token: str, success_ttl: int) -> bool:
        """Record success and release, in one step; False if the lock was no longer ours."""
        return (
            int(await self._call(FINISH, 2, keys.lock, keys.success, token, success_ttl, SUCCESS_MARKER)) != 0
        )

    async def release(self, lock_key: str, token: str) -> bool:
        """Delete the lock if it still holds ``token``; False otherwise."""
        return int(await self._call(RELEASE, 1, lock_key, token)) == 1

    async def renew(self, lock_key: str, token: str, ttl_ms: int) -> bool:
        """Reset the lock's TTL to ``ttl_ms`` if it still holds ``token``."""
        return int(await self._call(RENEW, 1, lock_key, token, ttl_ms)) == 1

    async def status(self, keys: TaskKeys) -> LockState:
        """Read a task's marker, holder and TTL in one command."""
        exists, holder, pttl = await self._call(STATUS, 2, keys.lock, keys.success)
        return LockState(bool(exists), None if holder is None else _text(holder), int(pttl))

    async def delete(self, key: str) -> bool:
        """Delete one key (a success marker, for ``reset``)."""
        return int(await self._call(None, "DEL", key)) == 1

    async def ping(self) -> None:
        """Check that Redis answers, with translated errors."""
        try:
            await self.client.ping()
        except Exception as exc:
            raise translate(exc, self.client) from exc

    # -- cancellation ------------------------------------------------------------

    @staticmethod
    def _may_hold(op: _Op) -> bool:
        if not op.replied or isinstance(op.reply, BaseException):
            return True  # unknown outcome: the lock may be ours
        return int(op.reply[0]) == 1

    async def _give_back(self, lock_key: str, token: str) -> None:
        try:
            await self.release(lock_key, token)
        except Exception as exc:
            logger.warning(
                "could not release %s after an interrupted acquire (%s); "
                "if it was taken, it expires within its TTL",
                lock_key,
                translate(exc, self.client),
            )

    # -- coalescing ----------------------------------------------------------------

    async def _call(self, script: Script | None, *args: Any) -> Any:
        """Send a command; straight from the caller's task when nothing else is in flight.

        Only commands whose interrupted outcome the caller can clean up go this
        way (finish, release, renew, reads): an acquire always goes through a
        lane, so that its outcome is learned even if its caller is cancelled.
        """
        if self._busy or self._queue:
            return await self._wait(self._submit(script, *args))
        op = _Op(script, args, None)
        op.sent = True
        self._busy += 1
        try:
            await self._send([op])
        finally:
            self._busy -= 1
            self._start_lane()
        if isinstance(op.reply, BaseException):
            raise op.reply
        return op.reply

    def _submit(self, script: Script | None, *args: Any) -> _Op:
        op = _Op(script, args, self.loop.create_future())
        self._queue.append(op)
        self._start_lane()
        return op

    def _start_lane(self) -> None:
        if self._queue and self._busy < self._lanes and not self._starting:
            # The lane runs on the next loop iteration, so everything
            # submitted in this tick goes out with it.
            self._starting = True
            sender = self.loop.create_task(self._send_queued())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _wait(self, op: _Op) -> Any:
        assert op.future is not None
        try:
            return await op.future
        except asyncio.CancelledError:
            if not op.sent:
                op.dropped = True
            elif not op.replied:
                # Sent: learn the outcome before letting the cancellation through.
                op.waiter = self.loop.create_future()
                await settle(op.waiter)
            raise

    async def _send_queued(self) -> None:
        self._starting = False
        self._busy += 1
        try:
            while self._queue:
                batch: list[_Op] = []
                while self._queue and len(batch) < MAX_BATCH:
                    op = self._queue.popleft()
                    if not op.dropped:
                        op.sent = True
                        batch.append(op)
                if batch:
                    await self._send(batch)
        finally:
            self._busy -= 1

    async def _send(self, batch: list[_Op]) -> None:
        attempt = 1
        while True:
            try:
                replies = await self._execute(batch, load=False)
                missing = [op for op, reply in zip(batch, replies, strict=True) if _noscript(reply)]
                if missing:
                    loaded = dict(zip(map(id, missing), await self._execute(missing, load=True), strict=True))
                    replies = [loaded.get(id(op), reply) for op, reply in zip(batch, replies, strict=True)]
                break
            except rex.ConnectionError as exc:
                if attempt >= self._attempts:
                    self._fail(batch, exc)
                    return
                pause = random.uniform(0.5, 1.0) * DOOR_BACKOFF * 2 ** (attempt - 1)
                logger.info(
                    "retrying %d command(s) in %.2fs: %s", len(batch), pause, translate(exc, self.client)
                )
                attempt += 1
                try:
                    await asyncio.sleep(pause)
                except BaseException as cancelled:
                    self._fail(batch, cancelled)
                    raise
            except BaseException as exc:
                self._fail(batch, exc)
                if not isinstance(exc, Exception):
                    raise
                return
        for op, reply in zip(batch, replies, strict=True):
            _deliver(op, translate(reply, self.client) if isinstance(reply, Exception) else reply)

    def _fail(self, batch: list[_Op], exc: BaseException) -> None:
        error = translate(exc, self.client) if isinstance(exc, Exception) else exc
        for op in batch:
            _deliver(op, error)

    async def _execute(self, batch: Sequence[_Op], *, load: bool) -> list[Any]:
        """Send one batch, one round trip; a reply that is an error comes back as that exception."""
        commands = [op.command(load=load) for op in batch]
        if self._pool is not None:
            return await self._execute_on_connection(self._pool, commands)
        if len(commands) == 1:
            try:
                return [await self.client.execute_command(*commands[0])]
            except rex.ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    @staticmethod
    async def _execute_on_connection(pool: ConnectionPool, commands: list[tuple[Any, ...]]) -> list[Any]:
        # What execute_command and a non-transactional pipeline do, without the per-call
        # wrapping (retry, observability, a timer per reply) that costs more than the
        # round trip itself in redis-py 8: the door retries itself, and the connection
        # still disconnects itself on any error, so it goes back to the pool clean.
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await _write(connection, [_pack(commands)])
            replies: list[Any] = []
            try:
                async with asyncio.timeout(connection.socket_timeout or None):
                    for _ in commands:
                        try:
                            # math.inf: no timer of redis-py's per reply; the batch has one.
                            replies.append(await connection.read_response(timeout=math.inf))
                        except rex.ResponseError as exc:
                            replies.append(exc)
            except TimeoutError:
                raise rex.TimeoutError("Timeout reading from the socket") from None
            return replies
        finally:
            await pool.release(connection)


def _pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
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


async def _write(connection: Any, data: list[bytes]) -> None:
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


def _noscript(reply: Any) -> bool:
    return isinstance(reply, rex.NoScriptError) or (
        isinstance(reply, rex.ResponseError) and str(reply).startswith("NOSCRIPT")
    )


def _deliver(op: _Op, outcome: Any) -> None:
    op.reply, op.replied = outcome, True
    future = op.future
    if future is not None and not future.done():
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        elif isinstance(outcome, BaseException):
            future.cancel()
        else:
            future.set_result(outcome)
    if op.waiter is not None and not op.waiter.done():
        op.waiter.set_result(None)


_stores: weakref.WeakKeyDictionary[Any, Store] = weakref.WeakKeyDictionary()


def store_for(client: AnyRedis) -> Store:
    """The :class:`Store` of ``client`` on the running loop, created on first use."""
    store = _stores.get(client)
    if store is None or store.loop is not asyncio.get_running_loop():
        store = _stores[client] = Store(client)
    return store
