"""The Redis door: the one place that sends aiotasks' own commands.

Acquire, finish, release, renew, status reads and marker resets all go through
a :class:`Store`, one per Redis client and event loop. User task bodies keep
using the client they are given; only the library's own traffic passes here,
which is what makes these rules true everywhere at once:

Coalescing
    A command issued while nothing else is in flight goes out at once from
    the caller's own task, as it is: no pipeline, no hand-over, no added
    latency. Otherwise it is queued, and at most ``lanes`` sender tasks (each
    using one connection at a time) send what they find queued as one
    non-transactional pipeline: everything issued in the same loop tick, or
    while the other lanes were busy. Each caller gets its own reply or its own
    error. So 1,000 runs in flight use at most ``lanes`` connections, never
    "Too many connections", and under load the cost per command falls to what
    a pipeline costs. This is the auto-pipelining of ioredis and rueidis, kept
    small: redis-py has none, and the asyncio clients that do (valkey-glide)
    would replace redis-py rather than sit on it.

Order
    A run awaits each of its commands before sending the next, so its finish
    never overtakes its acquire, whichever lane carries them.

Cancellation
    A caller cancelled while its command is still queued is dropped before the
    command is sent. Once sent, a command's outcome is always learned before
    the cancellation is delivered (the door reads the reply on the same
    connection, see ``_read``), and an acquire that took the lock for a
    cancelled caller gives it back first (in the cancelled coroutine, shielded).
    On clients whose replies redis-py reads (cluster, single-connection), an
    acquire is always sent by a lane, which its caller's cancellation can't cut
    short.

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
    Between batches it keeps up to ``lanes`` of those connections checked out,
    and hands them back after ``HOLD_IDLE`` seconds without use: taking and
    returning a pooled connection costs redis-py 8 about as much as the round
    trip itself. It keeps none when the pool is smaller than ``HOLD_MIN_POOL``,
    so task bodies sharing a small pool never wait on the door's idle ones. A
    kept connection skips the pool's stale-connection check; one that went
    stale (the server closed it) fails with a connection error, which the door
    retries at once on a fresh connection.

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
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import anyio
from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection

from ._cancel import settle, shielded
from ._constants import SUCCESS_MARKER
from ._errors import RedisAuthError, RedisUnavailable
from ._keys import TaskKeys
from ._records import Outcome, acquire_args, finish_args, release_args
from ._scripts import ACQUIRE, FINISH, GRID, MISSED, RELEASE, RENEW, RUNS, STATUS, Script

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
#: Smallest pool from which the door keeps connections between batches.
HOLD_MIN_POOL: Final = 16
#: Seconds a kept connection may sit unused before it goes back to the pool.
HOLD_IDLE: Final = 1.0

_AUTH_REPLY: Final = re.compile(r"^(NOAUTH|WRONGPASS|NOPERM)\b")


@dataclass(frozen=True, slots=True)
class Acquired:
    """The lock is ours.

    :ivar fence: the fencing token, larger than any earlier acquisition's of
        this (task, date); 0 when the run keeps no record (retention 0).
    :ivar started: the start on the Redis server's clock, ms since the epoch (0 without a record).
    """

    fence: int = field(default=0, compare=False)
    started: int = field(default=0, compare=False)


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

    def __init__(self, script: Script | None, args: tuple[Any, ...]):
        self.script = script
        self.args = args  # for a script: numkeys, *keys, *argv; else the whole command
        self.future: asyncio.Future[Any] | None = None  # set when queued for a lane
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
    tls = issubclass(getattr(pool, "connection_class", object), SSLConnection) or "ssl_context" in kwargs
    scheme = "rediss" if tls else "redis"
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
    if isinstance(exc, rex.NoPermissionError) or message.startswith("NOPERM"):
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
        self._hold = self._pool is not None and self._pool.max_connections >= HOLD_MIN_POOL
        self._held: list[AbstractConnection] = []
        self._last_use = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        #: A sending task's cancellation, held back while it read its replies (see ``_read``).
        self._held_back: dict[asyncio.Task[Any] | None, asyncio.CancelledError] = {}
        self._busy = 0
        self._starting = False
        self._queue: deque[_Op] = deque()
        self._senders: set[asyncio.Task[None]] = set()

    # -- the library's operations ------------------------------------------------

    async def acquire(
        self, keys: TaskKeys, token: str, ttl_ms: int, *, check_success: bool, retention_ms: int = 0
    ) -> Acquired | Completed | Held:
        """Check the marker and take the lock, atomically, in one round trip.

        With ``retention_ms`` > 0 the same script starts the run's record and
        hands out its fencing token (see ``_records``).

        If the caller is cancelled (or the outcome is unknown because Redis
        failed) after the script was sent, the lock is given back before the
        exception propagates, so an interrupted acquire leaves nothing behind.
        """
        op = _Op(ACQUIRE, acquire_args(keys, token, ttl_ms, check_success, retention_ms))
        try:
            # Straight from this task only where a cancellation can't cut the reply short.
            reply = await self._run(op, direct=self._pool is not None)
        except BaseException:
            if op.sent and self._may_hold(op):
                cancelled = Outcome(retention_ms, "failed", "cancelled") if retention_ms else None
                await shielded(self._give_back(keys.lock, token, cancelled))
            raise
        code = int(reply[0])
        if code == 1:
            return Acquired(int(reply[1]), int(reply[2]))
        if code == 2:
            return Completed()
        return Held(_text(reply[1]) if reply[1] is not None else "", int(reply[2]))

    async def finish(
        self, keys: TaskKeys, token: str, success_ttl: int, outcome: Outcome | None = None
    ) -> bool:
        """Record success and release, in one step; False if the lock was no longer ours.

        ``outcome`` (a success) goes into the run's record; if the lock was
        lost the record says ``failed``, ``lock_lost`` instead.
        """
        if outcome is not None and (outcome.error or outcome.counters):
            outcome = outcome.without(_secrets_of(self.client))
        args = finish_args(keys, token, success_ttl, SUCCESS_MARKER, outcome)
        return int(await self._call(FINISH, *args)) != 0

    async def release(self, lock_key: str, token: str, outcome: Outcome | None = None) -> bool:
        """Delete the lock if it still holds ``token``; False otherwise.

        ``outcome`` goes into the run's record either way (unless it already has one).
        """
        if outcome is not None and (outcome.error or outcome.counters):
            outcome = outcome.without(_secrets_of(self.client))
        return int(await self._call(RELEASE, *release_args(lock_key, token, outcome))) == 1

    async def renew(self, lock_key: str, token: str, ttl_ms: int) -> bool:
        """Reset the lock's TTL to ``ttl_ms`` if it still holds ``token``."""
        return int(await self._call(RENEW, 1, lock_key, token, ttl_ms)) == 1

    async def status(self, keys: TaskKeys) -> LockState:
        """Read a task's marker, holder and TTL in one command."""
        exists, holder, pttl = await self._call(STATUS, 2, keys.lock, keys.success)
        return LockState(bool(exists), None if holder is None else _text(holder), int(pttl))

    async def read_grid(self, keys: Sequence[str]) -> list[Any]:
        """The GRID script's reply for one task's dates (lock, marker, state keys per date)."""
        return list(await self._call(GRID, len(keys), *keys))

    async def read_runs(self, history: str, count: int, records: str, locks: str) -> list[Any]:
        """The RUNS script's reply: one task's last success and failure, and newest ``count`` runs."""
        return list(await self._call(RUNS, 1, history, count, records, locks))

    async def mark_missed(self, keys: Sequence[str], args: Sequence[Any]) -> bool:
        """The MISSED script: record a slot no host ran (see ``_records.record_missed``)."""
        return int(await self._call(MISSED, len(keys), *keys, *args)) == 1

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

    async def _give_back(self, lock_key: str, token: str, outcome: Outcome | None) -> None:
        try:
            await self.release(lock_key, token, outcome)
        except Exception as exc:
            logger.warning(
                "could not release %s after an interrupted acquire (%s); "
                "if it was taken, it expires within its TTL",
                lock_key,
                translate(exc, self.client),
            )

    # -- coalescing ----------------------------------------------------------------

    async def _call(self, script: Script | None, *args: Any) -> Any:
        return await self._run(_Op(script, args), direct=True)

    async def _run(self, op: _Op, *, direct: bool) -> Any:
        """Send ``op``: straight from the caller's task when nothing else is in flight.

        Otherwise it queues for a lane. ``direct=False`` always queues: for a
        command whose interrupted outcome the caller could not clean up (an
        acquire, on clients whose replies the door does not read itself).
        """
        if self._busy or self._queue or not direct:
            op.future = self.loop.create_future()
            self._queue.append(op)
            self._start_lane()
            return await self._wait(op)
        task = asyncio.current_task()
        op.sent = True
        self._busy += 1
        try:
            await self._send([op])
        finally:
            self._busy -= 1
            self._start_lane()
            held_back = self._held_back.pop(task, None)
        if held_back is not None:
            raise held_back  # the caller was cancelled while its reply was read (see _read)
        if isinstance(op.reply, BaseException):
            raise op.reply
        return op.reply

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
        task = asyncio.current_task()
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
                    if task in self._held_back:
                        raise self._held_back.pop(task)  # cancelled (shut down) while reading
        finally:
            self._held_back.pop(task, None)
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

    async def _execute_on_connection(
        self, pool: ConnectionPool, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        if self._held:
            try:
                return await self._exchange(pool, self._held.pop(), commands)
            except rex.ConnectionError:
                pass  # it went stale while kept (the server closed it): once more, on a pooled one
        return await self._exchange(pool, await pool.get_connection(), commands)  # type: ignore[no-untyped-call]

    async def _exchange(
        self, pool: ConnectionPool, connection: AbstractConnection, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        # What execute_command and a non-transactional pipeline do, without the per-call
        # wrapping (retry, observability, a timer per reply) that costs more than the
        # round trip itself in redis-py 8: the door retries itself.
        keep = False
        try:
            await _write(connection, [_pack(commands)])
            replies, held_back = await _read(connection, len(commands))
            if held_back is not None:
                self._held_back[asyncio.current_task()] = held_back
            keep = self._hold and len(self._held) < self._lanes
            return replies
        except BaseException:
            # A reply may be left unread: the connection can't serve anyone as it is.
            await connection.disconnect(nowait=True)
            raise
        finally:
            if keep:
                self._keep(connection)
            else:
                await pool.release(connection)

    def _keep(self, connection: AbstractConnection) -> None:
        self._held.append(connection)
        self._last_use = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(HOLD_IDLE, self._hand_back_idle)

    def _hand_back_idle(self) -> None:
        self._idle_timer = None
        if not self._held:
            return
        unused_for = self.loop.time() - self._last_use
        if unused_for < HOLD_IDLE:
            self._idle_timer = self.loop.call_later(HOLD_IDLE - unused_for, self._hand_back_idle)
            return
        held, self._held = self._held, []
        task = self.loop.create_task(self._release(held))
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _release(self, connections: list[AbstractConnection]) -> None:
        assert self._pool is not None
        for connection in connections:
            await self._pool.release(connection)


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


async def _read(
    connection: AbstractConnection, count: int
) -> tuple[list[Any], asyncio.CancelledError | None]:
    """Read the ``count`` replies to a request just written (a reply that is an error comes as it).

    Once a request is written its replies are always read, so that the
    connection stays usable and the caller learns what its commands did: a
    cancellation that arrives meanwhile is held back until they are (redis-py's
    parser resumes a read cut short) and returned, for the sending task to
    re-raise once the replies are delivered. Only ``socket_timeout`` cuts a
    read short; then, or if the read fails, a held-back cancellation is raised.
    """
    replies: list[Any] = []
    held_back: asyncio.CancelledError | None = None
    shield: anyio.CancelScope | None = None
    try:
        async with asyncio.timeout(connection.socket_timeout or None) as timer:
            while len(replies) < count:
                try:
                    # math.inf: no timer of redis-py's per reply; the batch has one.
                    replies.append(
                        await connection.read_response(timeout=math.inf, disconnect_on_error=False)
                    )
                except rex.ResponseError as exc:
                    replies.append(exc)
                except asyncio.CancelledError as exc:
                    if timer.expired():
                        raise
                    if shield is None:
                        held_back = exc
                        # An anyio scope would re-deliver its cancellation every loop iteration.
                        shield = anyio.CancelScope(shield=True)
                        shield.__enter__()
    except BaseException as exc:
        if held_back is not None:
            raise held_back from None
        if isinstance(exc, TimeoutError):
            raise rex.TimeoutError("Timeout reading from the socket") from None
        raise
    finally:
        if shield is not None:
            shield.__exit__(None, None, None)
    return replies, held_back


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
