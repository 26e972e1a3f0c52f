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
    never overtakes its acquire, whichever lane carries them. (A cancelled
    run's last command may still be with the door when its cleanup's release
    goes out; either order leaves the lock released.)

Cancellation
    A cancelled caller gets control back at once; what it asked for is
    finished by the door, which owns the connection:

    * a command cancelled before its request was written is not sent, except a
      release, which the door always sends (a release is never unwanted);
    * once a request is written, the door reads its reply, in a task of its
      own if the caller stopped waiting (so the connection stays usable), and
      acts on it: an acquire that took the lock for a cancelled caller gives
      it back; a release or finish takes effect as Redis ran it;
    * :meth:`Store.give_back` releases without waiting for the reply at all:
      what a cancelled run or a run whose lock was lost uses, so that neither
      waits on a Redis that has stalled.

    All of this needs the event loop to keep running. If it stops first
    (``asyncio.run`` returning while Redis stalls), a request already written
    still runs on Redis, while one not yet written is never sent: a lock
    taken or not released that way expires within its TTL (``lock_timeout``),
    which bounds every such case. The door's own tasks, cancelled as the loop
    ends, close their commands and start nothing (a give-back queued then would
    never be sent). :meth:`Store.drain` waits until the door has nothing left
    in flight, for a clean shutdown.

Errors and retries
    redis-py's connection and timeout errors become :class:`RedisUnavailable`,
    refused credentials :class:`RedisAuthError`; messages name the server as
    ``host:port/db``, never with a password. A failure before a request is
    written (the connection refused, credentials refused) is a known outcome:
    nothing reached Redis, nothing is given back, and it is not retried by the
    door, since the client's own retry policy already retried the connect.
    After a request was written its outcome is unknown; every script is safe
    to retry, so a connection error then (a killed idle connection, a proxy,
    a failover) is retried, up to ``DOOR_ATTEMPTS`` attempts with exponential
    backoff and jitter (cluster clients route and retry by themselves across
    nodes, and are left to). A release the door retried that finds no lock
    reports it released: its first attempt did (a cluster client's own
    retries are invisible to the door, so there it reports False). An error
    reply (``READONLY``, ``NOPERM``...) is a known outcome too: the script
    wrote nothing, so an acquire answered so has nothing to give back.

Timeouts
    Timeouts are not retried: a stalled server fails the run, within the
    client's ``socket_timeout``. A new connection would not be accepted in
    time either, so the door settles a timed-out batch behind itself, on its
    own connection, before dropping it: Redis runs one connection's commands
    in order, even those of a client that has gone. An acquire is followed by
    its release, a finish or release by itself again, as ``EVAL`` (a server
    that lost its script cache answers the ``EVALSHA`` ``NOSCRIPT``). Whenever
    Redis wakes, the lock is given back or the finish takes effect, rather
    than the lock staying for its TTL.

Pool limits
    A pool at its ``max_connections`` (a local limit of the client, not an
    error of Redis; a Redis Cluster client has one such pool per node) makes
    the door's commands wait for a free connection, up to ``POOL_WAIT``
    seconds, rather than fail: task bodies sharing the client's pool can't
    make a run leave its lock behind. Only after that is it an error, which
    says it is the client's pool limit. The door also knows how many task
    bodies can share that pool besides its own connections:
    :attr:`Store.bodies` bounds them (``_slots``), so bodies using the client never run
    it out of connections (the decorator and the chain take a slot per body).

Connections
    For a plain ``redis.asyncio.Redis`` the door takes connections from the
    client's pool and writes and reads the commands itself, keeping up to
    ``lanes`` of them between batches (see ``_wire``, which holds every
    reliance on redis-py internals). A kept connection skips the pool's
    stale-connection check; one that went stale (the server closed it) fails
    with a connection error, which the door retries at once on a fresh one.

Blocking reads
    A :class:`Watcher` (the scheduler's trigger listener, a ``trigger``
    waiting for its reply) holds one connection of the client's pool for
    its ``BRPOP``/``BLPOP``, never a lane: the door's commands never queue
    behind a blocked read. The task bodies get one slot less while it lives.

Redis Cluster
    redis-py's cluster pipeline splits a batch by node; every script touches
    one task's two keys, which share a hash tag (see ``_keys``). The cluster
    client reads its own replies, so there an acquire is always sent by a
    lane, and a command whose caller was cancelled mid-flight is asked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from redis import exceptions as rex
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

from . import _wire as wire
from ._constants import SUCCESS_MARKER, Reason
from ._errors import RedisAuthError
from ._keys import ScheduleKeys, TaskKeys
from ._records import (
    Outcome,
    acquire_args,
    acquire_request,
    finish_args,
    finish_request,
    record_keys,
    release_args,
)
from ._scripts import (
    ACQUIRE,
    CANCEL,
    CLAIM,
    CLEAR,
    FINISH,
    GRID,
    MISSED,
    PUSH,
    RELEASE,
    RENEW,
    RUNS,
    SCHEDULE,
    STATUS,
    Script,
)
from ._slots import BodySlots, capacity

__all__ = [
    "Acquired",
    "AnyRedis",
    "Completed",
    "Held",
    "LockState",
    "Paused",
    "Store",
    "Watcher",
    "skip_reason",
    "store_for",
]

logger = logging.getLogger("aiotasks.store")

#: What every public ``redis=`` parameter accepts.
AnyRedis = Redis | RedisCluster

#: Default number of sender lanes (connections) per client for the library's own commands.
DEFAULT_LANES: Final = 2
#: Most commands sent in one pipeline; a longer queue goes out in several.
MAX_BATCH: Final = 512
#: Attempts of a written command after connection errors, when the client does not retry by itself.
DOOR_ATTEMPTS: Final = 3
#: First pause between those attempts, in seconds (doubled each time, with jitter).
DOOR_BACKOFF: Final = 0.05
#: Seconds a command waits for a free connection when the client's pool is at its limit.
POOL_WAIT: Final = 30.0
#: Pause between two tries for a free connection, in seconds.
POOL_POLL: Final = 0.01


@dataclass(slots=True)  # not frozen: its __init__ would cost every run an object.__setattr__ per field
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


class Paused(NamedTuple):
    """The task is paused (``aiotasks pause --task``); nothing was written."""


def skip_reason(outcome: Completed | Held | Paused) -> Reason:
    """The ``reason`` of a run skipped at its acquire."""
    if isinstance(outcome, Completed):
        return Reason.ALREADY_COMPLETED
    return Reason.PAUSED if isinstance(outcome, Paused) else Reason.LOCK_HELD


@dataclass(frozen=True, slots=True)
class LockState:
    """One (task, date) as Redis sees it right now."""

    completed: bool
    holder: str | None
    ttl_ms: int


# Where a command is in the door (``_Op.state``).
_QUEUED: Final = 0  # waiting for a lane
_SENDING: Final = 1  # taken by a sender: being written, or its reply being read by that sender
_DOOR: Final = 2  # the door owns the outcome: a door task reads the reply, or a retry is due
_DONE: Final = 3  # replied, failed, or dropped before it was sent


class _Op:
    """One command on its way: queued, written, then replied (result or exception)."""

    __slots__ = (
        "_args",
        "abandoned",
        "attempts",
        "by_caller",
        "future",
        "load",
        "maybe_landed",
        "must_land",
        "packed",
        "pool_deadline",
        "reply",
        "script",
        "state",
        "then",
        "trailed",
        "trailer",
        "written",
    )

    def __init__(
        self,
        script: Script | None,
        args: tuple[Any, ...] | Callable[[], tuple[Any, ...]],
        *,
        must_land: bool = False,
        then: Callable[[_Op], None] | None = None,
        trailer: Callable[[], tuple[Script, tuple[Any, ...]]] | None = None,
        packed: bytes | None = None,
    ) -> None:
        self.script = script
        #: For a script: numkeys, *keys, *argv; else the whole command. Or what makes them, when
        #: they are only needed off the common path (``packed`` is given): see :attr:`args`.
        self._args = args
        #: The request as ``EVALSHA``, already packed (see ``_records.acquire_request``), or None.
        self.packed = packed
        #: Sent even if its caller is cancelled before it is written (a release).
        self.must_land = must_land
        #: What the door does with the outcome once nobody waits for it.
        self.then = then
        #: The script (and its args) that settles this command if its reply does not come in
        #: time; made only then (an acquire's would cost its run a release's args).
        self.trailer = trailer
        #: That trailer was written right behind this command on its connection (see Store._read).
        self.trailed = False
        self.state = _QUEUED
        self.abandoned = False  # its caller stopped waiting (cancelled, or gave it to the door)
        self.future: asyncio.Future[Any] | None = None  # what a waiting caller awaits
        self.load = False  # send as EVAL (the server answered NOSCRIPT)
        self.written = False  # the current attempt's request was (perhaps partly) written
        self.by_caller = False  # the current attempt is sent from its caller's own task (not a lane)
        self.maybe_landed = False  # an earlier attempt was written, and its reply never came
        self.attempts = 1
        self.pool_deadline: float | None = None
        self.reply: Any = None

    @property
    def args(self) -> tuple[Any, ...]:
        """The command's arguments (made on first use when given as a function)."""
        args = self._args
        if not isinstance(args, tuple):
            args = self._args = args()
        return args

    def trailing_command(self) -> tuple[Any, ...] | None:
        """The trailer as EVAL, which runs whether or not the server has the script cached."""
        if self.trailer is None:
            return None
        script, args = self.trailer()
        return ("EVAL", script.source, *args)

    def command(self, *, load: bool = False) -> tuple[Any, ...]:
        if self.script is None:
            return self.args
        if load:
            return ("EVAL", self.script.source, *self.args)
        return ("EVALSHA", self.script.sha, *self.args)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Store:
    """The library's door to one Redis client on one event loop.

    Use :func:`store_for` rather than the constructor: it keeps one per client.
    """

    def __init__(self, client: AnyRedis, *, lanes: int = DEFAULT_LANES) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.server = wire.describe(client)
        self.loop = asyncio.get_running_loop()
        #: ``loop.time``: asyncio's own is ``time.monotonic`` behind a Python method, which a run
        #: would call twice; that C function is used directly then (uvloop keeps its own clock).
        self.clock: Callable[[], float] = (
            time.monotonic
            if getattr(self.loop.time, "__func__", None) is asyncio.BaseEventLoop.time
            else self.loop.time
        )
        self._lanes = lanes
        # Plain clients are driven at connection level, which bypasses their own
        # retries; cluster and single-connection clients (and fakeredis) go
        # through their own execute_command and pipelines.
        pool: ConnectionPool | None = (
            client.connection_pool
            if type(client) is Redis and client.connection is None and not client.single_connection_client
            else None
        )
        self._attempts = DOOR_ATTEMPTS if pool is not None or not wire.retries_by_itself(client) else 1
        self._connections = None if pool is None else wire.Connections(pool, lanes, spawn=self._spawn)
        #: The door writes requests itself: a caller may hand it one already packed.
        self.packs = self._connections is not None
        #: Senders and connections in use by the door (the caller's lone command, lanes, readers).
        self._busy = 0
        self._starting = False
        self._queue: deque[_Op] = deque()
        #: The door's own tasks: lanes, and readers of replies whose callers stopped waiting.
        self._senders: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._drained: asyncio.Future[None] | None = None  # what drain() waits on
        self._pool_full = False
        #: False once Redis refused the renewal script the cancel-request key (an ACL without it).
        self._cancel_readable = True
        #: The slots of the task bodies that share the client (see ``_slots``).
        self.bodies = BodySlots(capacity(client, lanes))
        #: The runs' first lock renewals, by when they are due: one loop timer per slot
        #: (``_task._Lease``).
        self.renewals: dict[tuple[float, int], set[Any]] = {}

    # -- the library's operations ------------------------------------------------

    async def acquire(
        self,
        keys: TaskKeys,
        token: str,
        ttl_ms: int,
        *,
        check_success: bool,
        retention_ms: int = 0,
        packed: bytes | None = None,
    ) -> Acquired | Completed | Held | Paused:
        """Check the marker and the task's pause and take the lock, atomically, in one round trip.

        With ``retention_ms`` > 0 the same script starts the run's record and
        hands out its fencing token (see ``_records``); a lock given back
        records the run as failed (``cancelled``, or ``redis_unavailable`` when
        Redis stalled).

        If the outcome is unknown because Redis failed after the script was
        written, the lock is given back before the error propagates; if the
        caller is cancelled after that, the door reads the reply and gives the
        lock back if it was taken. An interrupted acquire leaves nothing behind.

        :param packed: the request, already packed by the caller (``_records.RunForms``); used
            where the door writes requests itself (:attr:`packs`).
        """
        if self._connections is None:
            packed = None
        elif packed is None:
            packed = acquire_request(ACQUIRE.sha, keys, token, ttl_ms, check_success, retention_ms)
        op = _Op(
            ACQUIRE,
            # Packed, the arguments are needed only if it is sent again as EVAL (NOSCRIPT).
            functools.partial(acquire_args, keys, token, ttl_ms, check_success, retention_ms)
            if packed is not None
            else acquire_args(keys, token, ttl_ms, check_success, retention_ms),
            then=lambda op: self._give_back_if_taken(keys.lock, token, _cancelled(retention_ms), op),
            trailer=lambda: (RELEASE, release_args(keys.lock, token, _stalled(retention_ms))),
            packed=packed,
        )
        try:
            # Straight from this task only where the door reads the reply itself.
            reply = await self._run(op, direct=self._connections is not None)
        except Exception:
            if _may_hold(op):
                await self.give_back(keys.lock, token, _stalled(retention_ms))
            raise
        code = int(reply[0])
        if code == 1:
            return Acquired(int(reply[1]), int(reply[2]))
        if code == 2:
            return Completed()
        if code == 4:
            return Paused()
        return Held(_text(reply[1]) if reply[1] is not None else "", int(reply[2]))

    async def finish(
        self,
        keys: TaskKeys,
        token: str,
        success_ttl: int,
        outcome: Outcome | None = None,
        *,
        packed: bytes | None = None,
    ) -> bool:
        """Record success and release, in one step; False if the lock was no longer ours.

        ``outcome`` (a success) goes into the run's record; if the lock was
        lost the record says ``failed``, ``lock_lost`` instead.

        :param packed: the request, already packed by the caller, for an outcome without texts
            (nothing to remove a password from); see :meth:`acquire`.
        """
        if packed is None or self._connections is None:
            outcome = self._scrubbed(outcome)
            packed = (
                finish_request(FINISH.sha, keys, token, success_ttl, SUCCESS_MARKER, outcome)
                if self._connections is not None
                else None
            )
        args = functools.partial(finish_args, keys, token, success_ttl, SUCCESS_MARKER, outcome)
        # (The trailer makes its own arguments: one that reached the op would be a reference cycle,
        # left to the garbage collector once per run.)
        op = _Op(
            FINISH, args if packed is not None else args(), trailer=lambda: (FINISH, args()), packed=packed
        )
        return int(await self._run(op, direct=True)) != 0

    async def release(self, lock_key: str, token: str, outcome: Outcome | None = None) -> bool:
        """Delete the lock if it still holds ``token``; False otherwise.

        ``outcome`` goes into the run's record either way (unless it already
        has one). Sent even if the caller is cancelled first. A retry after a
        lost reply that finds no lock reports True: the lost attempt deleted it
        (or the lock expired at that very moment, which no client could tell apart).
        """
        op = self._release_op(lock_key, token, outcome)
        code = int(await self._run(op, direct=True))
        return code == 1 or (code == -1 and op.maybe_landed)

    async def give_back(self, lock_key: str, token: str, outcome: Outcome | None = None) -> None:
        """Release the lock without waiting for Redis's answer.

        Returns once the request is written (or queued, when every lane is
        busy); the door reads the reply and logs a failure, after which the
        lock expires within its TTL. For cleanup that must not wait on a
        stalled Redis: a cancelled run, a run whose lock was lost.
        """
        op = self._release_op(lock_key, token, outcome)
        op.abandoned = True
        await self._run(op, direct=self._connections is not None)

    async def renew(
        self, lock_key: str, token: str, ttl_ms: int, cancel_key: str | None = None
    ) -> bool | str:
        """Reset the lock's TTL to ``ttl_ms`` if it still holds ``token``.

        :param cancel_key: the run's cancel-request key (``_keys.cancel_key``),
            read by the same script: a request to cancel costs no extra round trip.
        :returns: whether the lock is still ours; or, when it is and someone
            asked to cancel this run (``aiotasks cancel``), who: ``'host:pid|ms'``.
        """
        if cancel_key is None or not self._cancel_readable:
            return int(await self._call(RENEW, 1, lock_key, token, ttl_ms)) == 1
        try:
            reply = await self._call(RENEW, 2, lock_key, cancel_key, token, ttl_ms)
        except RedisAuthError as exc:
            # An ACL user granted the seed's keys and the records but not ~cancel:* (the rules
            # documented before cancel existed): renew as before rather than lose every long run's
            # lock; its runs can't be cancelled, said once.
            self._cancel_readable = False
            logger.warning("runs on this client can't be cancelled (grant its ACL user ~cancel:*): %s", exc)
            return int(await self._call(RENEW, 1, lock_key, token, ttl_ms)) == 1
        return int(reply) == 1 if isinstance(reply, int) else _text(reply)

    async def cancel(self, lock_key: str, cancel_key: str, by: str, ttl_ms: int) -> tuple[int, str, int, str]:
        """The CANCEL script: ask the holder of ``lock_key`` to cancel its run, if there is one.

        :returns: (0 nothing runs, nothing written | 1 request written | 2 one
            was pending already, the holder's token, the lock's TTL in ms, who
            asked first ('' unless 2)).
        """
        reply = list(await self._call(CANCEL, 2, lock_key, cancel_key, by, ttl_ms))
        if int(reply[0]) == 0:
            return 0, "", -2, ""
        first = _text(reply[3]) if len(reply) > 3 else ""
        return int(reply[0]), _text(reply[1]), int(reply[2]), first

    async def status(self, keys: TaskKeys) -> LockState:
        """Read a task's marker, holder and TTL in one command."""
        exists, holder, pttl = await self._call(STATUS, 2, keys.lock, keys.success)
        return LockState(bool(exists), None if holder is None else _text(holder), int(pttl))

    async def read_grid(self, prefixes: tuple[str, str, str], dates: Sequence[str]) -> list[Any]:
        """The GRID script's flat reply for one task's ``dates`` (7 entries per date), given its
        locks', markers' and runs hashes' key prefixes; ``dates`` must not be empty."""
        return list(await self._call(GRID, 1, prefixes[0] + dates[0], *prefixes, *dates))

    async def read_runs(self, history: str, count: int, records: str, locks: str) -> list[Any]:
        """The RUNS script's reply: one task's last success and failure, and newest ``count`` runs."""
        return list(await self._call(RUNS, 1, history, count, records, locks))

    async def read_records(self, state: str, lock: str) -> tuple[dict[str, bytes], str | None]:
        """One date's runs hash (every field, names decoded) and its lock's holder: two commands
        sent together (a grid cell opened in the web console)."""
        fields, holder = await asyncio.gather(
            self._call(None, "HGETALL", state), self._call(None, "GET", lock)
        )
        # The door reads raw replies (a flat list); a client with RESP3 would give a map.
        pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2], strict=True)
        return {_text(name): value for name, value in pairs}, (None if holder is None else _text(holder))

    async def mark_missed(self, keys: Sequence[str], args: Sequence[Any]) -> bool:
        """The MISSED script: record a slot no host ran (see ``_records.record_missed``)."""
        return int(await self._call(MISSED, len(keys), *keys, *args)) == 1

    async def read_schedule(self, keys: ScheduleKeys) -> tuple[str | None, int]:
        """A schedule's controls in one command: who paused it (or None), and its pending triggers."""
        paused, pending = await self._call(SCHEDULE, 2, keys.paused, keys.triggers)
        return (None if paused is None else _text(paused)), int(pending)

    async def push(self, key: str, entry: str, ttl_ms: int, *, head: bool) -> int:
        """Push ``entry`` onto the list ``key`` (at its head, or its tail), which then lives at
        least ``ttl_ms``; the list's length."""
        return int(await self._call(PUSH, 1, key, entry, ttl_ms, "l" if head else "r"))

    async def withdraw(self, key: str, entry: str) -> bool:
        """Remove ``entry`` (every copy) from the list ``key``; False if it is not there (popped)."""
        return int(await self._call(None, "LREM", key, 0, entry)) > 0

    async def claim(
        self, claim: str, replies: str, token: str, ttl_ms: int, reply: str, reply_ttl_ms: int
    ) -> bool:
        """The CLAIM script: whether this pop of a trigger request runs it (and ``reply`` is pushed)."""
        args = (claim, replies, token, ttl_ms, reply, reply_ttl_ms)
        return int(await self._call(CLAIM, 2, *args)) == 1

    def watcher(self) -> Watcher:
        """A :class:`Watcher`: blocking reads on a connection of their own, never a lane's; the
        task bodies get one slot less while it lives, so they never take that connection's place."""
        return Watcher(self.client, self.bodies)

    async def get(self, key: str) -> str | None:
        """Read one string key (a cancel request, for ``status``)."""
        found = await self._call(None, "GET", key)
        return None if found is None else _text(found)

    async def delete(self, key: str) -> bool:
        """Delete one key (a success marker for ``clear``, a pause for ``resume``); False if none."""
        return int(await self._call(None, "DEL", key)) == 1

    async def clear(self, keys: TaskKeys) -> bool:
        """The CLEAR script: delete a (task, date)'s success marker (its record then no longer makes
        the grid say completed); False if there was none."""
        found = record_keys(keys.lock)
        if found is None:
            return int(await self._call(CLEAR, 1, keys.success)) == 1
        return int(await self._call(CLEAR, 2, keys.success, found.state)) == 1

    async def set_new(self, key: str, value: str) -> bool:
        """Set ``key`` to ``value`` (no TTL) unless it exists (a pause); False if it did: nothing written."""
        return await self._call(None, "SET", key, value, "NX") is not None

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The string values of ``keys`` (None where missing): one ``MGET``, or on Redis Cluster,
        whose keys may live on several nodes, one ``GET`` each, sent together."""
        if not keys:
            return []
        if self.cluster:
            found = await asyncio.gather(*(self._call(None, "GET", key) for key in keys))
        else:
            found = await self._call(None, "MGET", *keys)
        return [None if value is None else _text(value) for value in found]

    async def ping(self) -> None:
        """Check that Redis answers, with translated errors."""
        try:
            await self.client.ping()
        except Exception as exc:
            raise wire.translate(exc, self.client) from exc

    async def drain(self, within: float | None = None) -> bool:
        """Wait until every command handed to the door has its outcome.

        That includes those whose callers were cancelled and the locks given
        back for them, which a busy door may still hold queued: call it before
        the event loop ends for a clean shutdown (what is not yet written when
        the loop ends is never sent).

        :param within: the most seconds to wait (None: as long as it takes).
        :returns: whether the door has nothing left in flight.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._in_flight:
                    if self._drained is None:
                        self._drained = self.loop.create_future()
                    await asyncio.shield(self._drained)
        return not self._in_flight

    # -- what the door does with outcomes nobody waits for -------------------------

    def _scrubbed(self, outcome: Outcome | None) -> Outcome | None:
        """``outcome`` with the client's password removed from its texts (they come from bodies)."""
        if outcome is not None and (outcome.error or outcome.counters):
            return outcome.without(wire.secrets_of(self.client))
        return outcome

    def _release_op(self, lock_key: str, token: str, outcome: Outcome | None = None) -> _Op:
        args = release_args(lock_key, token, self._scrubbed(outcome))
        return _Op(
            RELEASE,
            args,
            must_land=True,
            then=functools.partial(_log_failed_release, lock_key),
            trailer=lambda: (RELEASE, args),
        )

    def _give_back_if_taken(self, lock_key: str, token: str, outcome: Outcome | None, op: _Op) -> None:
        if _may_hold(op):
            release = self._release_op(lock_key, token, outcome)
            release.abandoned = True
            self._open(release)
            self._enqueue(release)

    # -- submitting and waiting ------------------------------------------------------

    async def _call(self, script: Script | None, *args: Any) -> Any:
        return await self._run(_Op(script, args), direct=True)

    async def _run(self, op: _Op, *, direct: bool) -> Any:
        """Send ``op``: straight from the caller's task when nothing else is in flight.

        Otherwise it queues for a lane. ``direct=False`` always queues: for a
        command whose outcome matters after a cancellation, on clients whose
        replies redis-py reads (a lane, being the door's, reads them anyway).
        """
        # (_open, _enqueue and _start_lane's test written out: this runs twice per run.)
        self._in_flight += 1
        if direct and not self._busy and not self._queue:
            self._busy += 1
            try:
                await self._send([op], by_caller=True)
            finally:
                self._busy -= 1
                if self._queue:
                    self._start_lane()
        else:
            op.state = _QUEUED
            self._queue.append(op)
            if self._busy < self._lanes and not self._starting:
                self._start_lane()
        if op.abandoned:
            return None  # given to the door, which reads the outcome
        if op.state != _DONE:
            # Queued, or back with the door after this exchange (NOSCRIPT, a retry, a full pool).
            future = op.future = self.loop.create_future()
            try:
                await future
            except asyncio.CancelledError:
                if op.state != _DONE or not isinstance(op.reply, asyncio.CancelledError):
                    self._abandon(op)  # else the door itself is shutting down
                raise
        if isinstance(op.reply, BaseException):
            raise op.reply
        return op.reply

    def _abandon(self, op: _Op) -> None:
        """The caller of ``op`` was cancelled while it waited for a lane."""
        op.abandoned = True
        if op.state == _DONE:
            _settle(op)  # its outcome came in the same loop iteration
        elif op.state == _QUEUED and not (op.must_land or op.maybe_landed):
            self._close(op, None)  # never sent: nothing to learn

    def _open(self, op: _Op) -> None:
        self._in_flight += 1  # (written out in _run)

    def _close(self, op: _Op, outcome: Any) -> None:
        """``op``'s outcome is known (or it was dropped unsent): deliver it, once."""
        if op.state == _DONE:
            return
        op.state, op.reply = _DONE, outcome
        future = op.future
        if future is not None and not future.done():
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            elif isinstance(outcome, BaseException):
                future.cancel()
            else:
                future.set_result(outcome)
        if op.abandoned:
            _settle(op)
        self._in_flight -= 1
        if not self._in_flight and self._drained is not None:
            self._drained.set_result(None)
            self._drained = None

    def _enqueue(self, op: _Op) -> None:
        op.state = _QUEUED
        self._queue.append(op)
        self._start_lane()

    def _requeue(self, ops: list[_Op], delay: float = 0.0) -> None:
        """Send ``ops`` again, ahead of the queue, after ``delay`` seconds."""
        for op in ops:
            op.state = _DOOR
        if delay:
            self.loop.call_later(delay, self._put_back, ops)
        else:
            self._put_back(ops)

    def _put_back(self, ops: list[_Op]) -> None:
        for op in reversed(ops):
            if op.state != _DOOR:
                continue
            if op.abandoned and not (op.must_land or op.maybe_landed):
                self._close(op, None)  # its caller left before it was ever written
            else:
                op.state = _QUEUED
                self._queue.appendleft(op)
        self._start_lane()

    def _start_lane(self) -> None:
        if self._queue and self._busy < self._lanes and not self._starting:
            # The lane runs on the next loop iteration, so everything
            # submitted in this tick goes out with it.
            self._starting = True
            self._spawn(self._send_queued())

    def _spawn(self, work: Any) -> None:
        task = self.loop.create_task(work)
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _send_queued(self) -> None:
        self._starting = False
        self._busy += 1
        try:
            while self._queue:
                batch: list[_Op] = []
                while self._queue and len(batch) < MAX_BATCH:
                    op = self._queue.popleft()
                    if op.state == _QUEUED:
                        batch.append(op)
                if batch:
                    await self._send(batch)
        finally:
            self._busy -= 1

    # -- one exchange and its outcome ------------------------------------------------

    async def _send(self, batch: list[_Op], *, by_caller: bool = False) -> None:
        """One exchange for ``batch``; each op ends with its outcome, or back with the door.

        :param by_caller: sent from the caller's own task (the lone-command path), not a door task.
        """
        load = False
        for op in batch:
            op.state, op.written, op.by_caller = _SENDING, False, by_caller
            load = load or op.load
        try:
            replies = await self._execute(batch, load=load)
        except asyncio.CancelledError as exc:
            self._interrupted(batch, exc)
            raise
        except Exception as exc:
            self._failed(batch, exc)
            return
        except BaseException as exc:
            for op in batch:
                self._close(op, exc)
            raise
        if replies is not None:  # None: a door task reads them (see _exchange)
            self._replied(batch, replies)

    def _interrupted(self, batch: list[_Op], cancelled: asyncio.CancelledError) -> None:
        if not batch[0].by_caller:
            # One of the door's own tasks was cancelled: the event loop is shutting down.
            for op in batch:
                if op.state == _SENDING:
                    self._close(op, cancelled)
            return
        # The caller's own task stopped waiting: the door finishes what it started.
        for op in batch:
            op.abandoned = True
            if op.state != _SENDING:
                continue  # a door task reads its reply
            if op.written or op.must_land:
                op.maybe_landed |= op.written
                self._requeue([op])  # outcome unknown, or never sent: ask (again)
            else:
                self._close(op, None)  # never sent: nothing to learn

    def _replied(self, batch: list[_Op], replies: list[Any]) -> None:
        self._pool_full = False
        reload: list[_Op] = []
        for op, reply in zip(batch, replies, strict=True):
            if not isinstance(reply, Exception):
                self._close(op, reply)
            elif wire.noscript(reply) and not op.load:
                op.load = True  # again as EVAL, which also loads the script
                reload.append(op)
            else:
                # An error reply is a known outcome: the script wrote nothing. Nor did an earlier
                # attempt whose reply was lost, or this one (same token) would have found its lock;
                # and giving back on a server that refuses (READONLY, NOPERM, OOM) would only fail.
                op.maybe_landed = False
                self._close(op, wire.translate(reply, self.client))
        if reload:
            self._requeue(reload)

    def _failed(self, batch: list[_Op], exc: Exception) -> None:
        written = False
        for op in batch:
            op.maybe_landed |= op.written
            written = written or op.written
        if wire.pool_limit(exc):
            self._wait_for_connection(batch, exc)
            return
        retry = written and isinstance(exc, rex.ConnectionError)
        again: list[_Op] = []
        for op in batch:
            if retry and op.attempts < self._attempts:
                again.append(op)
            else:
                self._close(op, wire.translate(exc, self.client))
        if again:
            pause = random.uniform(0.5, 1.0) * DOOR_BACKOFF * 2 ** (again[0].attempts - 1)
            for op in again:
                op.attempts += 1
            why = wire.translate(exc, self.client)
            logger.info("retrying %d command(s) in %.2fs: %s", len(again), pause, why)
            self._requeue(again, pause)

    def _wait_for_connection(self, batch: list[_Op], exc: Exception) -> None:
        """The client's pool is full: a local limit, so wait for a connection to come free."""
        if not self._pool_full:
            self._pool_full = True
            logger.info(
                "waiting for a free connection to %s: the client's pool is at its max_connections",
                self.server,
            )
        now = self.loop.time()
        waiting = []
        for op in batch:
            if op.pool_deadline is None:
                op.pool_deadline = now + POOL_WAIT
            if now < op.pool_deadline:
                waiting.append(op)
            else:
                self._close(op, wire.translate(exc, self.client))
        if waiting:
            self._requeue(waiting, POOL_POLL)

    # -- on the wire -----------------------------------------------------------------

    async def _execute(self, batch: Sequence[_Op], *, load: bool) -> list[Any] | None:
        """Send one batch, one round trip; a reply that is an error comes back as that exception.

        None when the replies are left to a door task (nobody waits for them).
        """
        if self._connections is not None:
            request = b"".join(
                [
                    op.packed if op.packed is not None and not load else wire.pack([op.command(load=load)])
                    for op in batch
                ]
            )
            return await self._execute_on_connection(self._connections, batch, request)
        commands = [op.command(load=load) for op in batch]
        for op in batch:
            op.written = True  # redis-py sends it: from here on it may reach Redis
        try:
            if len(commands) == 1:
                try:
                    return [await self.client.execute_command(*commands[0])]
                except rex.ResponseError as exc:
                    return [exc]
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute(raise_on_error=False))
        except rex.ConnectionError as exc:
            # A lone command the pool refused was not sent. In a pipeline, a cluster client may have
            # sent other nodes' parts before one node's pool refused: all stay "maybe written", so
            # an acquire among them is given back, a release or finish is sent again (both safe).
            if len(batch) == 1 and wire.pool_limit(exc):
                batch[0].written = False
            raise

    async def _execute_on_connection(
        self, connections: wire.Connections, batch: Sequence[_Op], request: bytes
    ) -> list[Any] | None:
        kept = connections.kept()
        if kept is not None:
            try:
                return await self._exchange(connections, kept, batch, request)
            except rex.ConnectionError:
                # It went stale while kept (the server closed it): once more, on a pooled one.
                for op in batch:
                    op.maybe_landed |= op.written
        return await self._exchange(connections, await connections.take(), batch, request)

    async def _exchange(
        self,
        connections: wire.Connections,
        connection: AbstractConnection,
        batch: Sequence[_Op],
        request: bytes,
    ) -> list[Any] | None:
        """Write the batch (``request``, its commands packed) on ``connection`` and read its replies.

        If the caller's task stops waiting once the request is written (it is
        cancelled, or nobody waits for these replies), a door task reads them
        on the same connection instead, and acts on them.
        """
        handed_over = reusable = False
        try:
            for op in batch:
                op.written = True
            await wire.write(connection, [request])
            replies: list[Any] = []
            if batch[0].abandoned and batch[0].by_caller:  # a caller's batch is its one command
                handed_over = True
                self._read_later(connections, connection, batch, replies)
                return None
            try:
                await self._read(connection, batch, replies)
            except asyncio.CancelledError:
                if batch[0].by_caller:
                    handed_over = True
                    self._read_later(connections, connection, batch, replies)
                raise
            reusable = True
            return replies
        finally:
            # Unless every reply was read, the connection can't serve anyone as it is.
            if not handed_over and not (reusable and connections.keep(connection)):
                await connections.put(connection, reusable=reusable)

    async def _read(self, connection: AbstractConnection, batch: Sequence[_Op], replies: list[Any]) -> None:
        """Read the batch's replies; if they don't come in time, settle it behind itself.

        Redis runs one connection's commands in order, and still runs what a
        client wrote before it closed the connection. So when the read times
        out (Redis stalled, or slow), the door writes each command's trailer
        right behind the batch on the same connection before it is dropped:
        the release of an acquire, the finish or release again for those. As
        EVAL, so a server that lost its script cache still runs them. Whenever
        Redis gets to the batch, what it took is given back and what was asked
        takes effect, with no new connection needed, which a stalled server
        would not accept in time either.
        """
        try:
            await wire.read(connection, len(batch), replies)
        except rex.TimeoutError:
            trailing = [op for op in batch if op.trailer is not None]
            commands = [command for op in trailing if (command := op.trailing_command()) is not None]
            if commands:
                try:
                    await wire.write(connection, [wire.pack(commands)])
                except Exception:  # the connection is gone too: the TTL bounds it
                    logger.debug("could not write the trailers of %d command(s)", len(commands))
                else:
                    for op in trailing:
                        op.trailed = True
            raise

    def _read_later(
        self,
        connections: wire.Connections,
        connection: AbstractConnection,
        batch: Sequence[_Op],
        replies: list[Any],
    ) -> None:
        """Hand a connection whose replies are still to come to a door task, which reads them."""
        for op in batch:
            op.state = _DOOR
        self._busy += 1  # it holds a connection, as a lane does
        self._spawn(self._read_rest(connections, connection, list(batch), replies))

    async def _read_rest(
        self,
        connections: wire.Connections,
        connection: AbstractConnection,
        batch: list[_Op],
        replies: list[Any],
    ) -> None:
        try:
            reusable = False
            try:
                await self._read(connection, batch, replies)
                reusable = True
            finally:
                await connections.put(connection, reusable=reusable)
        except Exception as exc:
            self._failed(batch, exc)
        except BaseException as exc:  # the event loop is shutting down
            for op in batch:
                self._close(op, exc)
            raise
        else:
            self._replied(batch, replies)
        finally:
            self._busy -= 1
            self._start_lane()


class Watcher:
    """Blocking pops (``BRPOP``, ``BLPOP``) on one connection of the client's pool, held until
    :meth:`close`: a blocked read never holds up the door's lanes.

    A cluster client sends each pop to the node of its keys (they share a hash
    tag), on its own connection to that node.
    """

    def __init__(self, client: AnyRedis, bodies: BodySlots) -> None:
        self._client = client
        self._bodies = bodies
        self._reserved = bodies.reserve(1)
        self._own: Redis | None = None
        if isinstance(client, Redis):  # a client that is one connection too: its pool's other one
            self._own = client.client()
        options = (
            client.nodes_manager.connection_kwargs
            if isinstance(client, RedisCluster)
            else client.connection_pool.connection_kwargs
        )
        limit = options.get("socket_timeout")
        #: A read longer than the client's ``socket_timeout`` would time out: block for half of it at most.
        self._most = float(limit) / 2 if limit else None

    def block(self, seconds: float) -> float:
        """How long a pop may block: ``seconds``, or less where the client's socket timeout is shorter."""
        return min(seconds, self._most) if self._most else seconds

    async def pop(self, keys: Sequence[str], seconds: float, *, tail: bool = True) -> tuple[str, str] | None:
        """Pop one entry from the first non-empty list of ``keys`` (from its tail, or its head),
        waiting up to ``seconds`` (see :meth:`block`); None when none came."""
        client = self._own if self._own is not None else self._client
        command = "BRPOP" if tail else "BLPOP"
        try:
            reply = await client.execute_command(command, *keys, round(self.block(seconds), 3))
        except Exception as exc:
            raise wire.translate(exc, self._client) from exc
        if not reply:
            return None
        return _text(reply[0]), _text(reply[1])

    async def close(self) -> None:
        """Give the connection back to the pool (and its slot to the task bodies)."""
        self._bodies.reserve(-self._reserved)
        self._reserved = 0
        if self._own is not None:
            await self._own.aclose()


def _may_hold(op: _Op) -> bool:
    """Whether an acquire may have taken the lock, and nothing gives it back yet.

    Yes if it said so, or if its outcome is unknown, unless its release was
    written right behind it (a trailer, after a timeout).
    """
    if op.state == _DONE and not isinstance(op.reply, BaseException) and op.reply is not None:
        return int(op.reply[0]) == 1
    return op.maybe_landed and not op.trailed


@functools.lru_cache(maxsize=64)
def _cancelled(retention_ms: int) -> Outcome | None:
    """What the give-back of an acquire whose caller was cancelled records (None without records).
    Built once per retention (outcomes are frozen), and only for the rare run that needs one."""
    return Outcome(retention_ms, "failed", "cancelled") if retention_ms else None


@functools.lru_cache(maxsize=64)
def _stalled(retention_ms: int) -> Outcome | None:
    """What the give-back of an acquire that Redis did not answer records (None without records)."""
    return Outcome(retention_ms, "failed", "redis_unavailable") if retention_ms else None


def _settle(op: _Op) -> None:
    if op.then is not None:
        op.then(op)


def _log_failed_release(lock_key: str, op: _Op) -> None:
    if not isinstance(op.reply, BaseException):
        return
    why = op.reply if isinstance(op.reply, Exception) else "the event loop stopped"
    if op.trailed:
        logger.warning(
            "Redis did not confirm the release of %s (%s); it runs when Redis does, "
            "else the lock expires within its TTL",
            lock_key,
            why,
        )
    else:
        logger.warning("could not release %s (%s); it expires within its TTL", lock_key, why)


_stores: weakref.WeakKeyDictionary[Any, Store] = weakref.WeakKeyDictionary()


def store_for(client: AnyRedis, loop: asyncio.AbstractEventLoop | None = None) -> Store:
    """The :class:`Store` of ``client`` on the running loop (``loop``, when the caller has it at
    hand), created on first use."""
    store = _stores.get(client)
    if store is None or store.loop is not (loop or asyncio.get_running_loop()):
        store = _stores[client] = Store(client)
    return store
