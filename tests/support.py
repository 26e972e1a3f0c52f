"""Helpers shared by tests: wire counting, a gate on the Redis door, polling for a condition."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Connection, ConnectionPool, Redis

from aiotasks import release_lock, task_boilerplate
from aiotasks._scripts import ACQUIRE, FINISH, RELEASE, RENEW, STATUS
from aiotasks._store import DEFAULT_LANES, Store, store_for

Execute = Callable[..., Awaitable[list[Any] | None]]


@dataclass
class Wire:
    """Counts what a client really sends: commands, round trips and connections opened.

    A new connection's handshake is not counted: only requests made through it.

    Every request is written through the connection's stream writer, whoever
    sends it (redis-py, or the aiotasks door writing to the connection itself),
    so the writer gets a counting class: a write is a round trip, and the
    requests in it are counted by parsing what is written.
    """

    round_trips: int = 0
    connections: int = 0
    #: Connections opened, including reconnections of the same connection object.
    connects: int = 0
    clients: list[Redis] = field(default_factory=list)
    #: What was written, parsed only when :attr:`commands` is read (benchmarks time the writes).
    written: list[bytes] = field(default_factory=list)
    #: Set on every write: a request is on its way to Redis.
    wrote: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def commands(self) -> int:
        return sum(map(count_requests, self.written))

    def reset(self) -> None:
        self.round_trips = 0
        self.written.clear()

    def client(self, url: str, **options: Any) -> Redis:
        wire = self

        class CountingWriter(asyncio.StreamWriter):
            def writelines(self, data: Any) -> None:
                data = list(data)
                wire.round_trips += 1
                wire.written.append(b"".join(data))
                wire.wrote.set()
                super().writelines(data)

        class Counting(Connection):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                wire.connections += 1

        async def handshake(connection: Connection) -> None:
            # redis-py's public hook, called (in every supported version) once the socket is open.
            await connection.on_connect()
            wire.connects += 1
            connection._writer.__class__ = CountingWriter

        # from_pool: closing the client closes its connections too.
        pool = ConnectionPool.from_url(
            url, connection_class=Counting, redis_connect_func=handshake, **options
        )
        client = Redis.from_pool(pool)
        self.clients.append(client)
        return client


def count_requests(data: bytes) -> int:
    """How many requests (RESP arrays of bulk strings) ``data`` holds."""
    count = position = 0
    while position < len(data):
        end = data.index(b"\r\n", position)
        assert data[position : position + 1] == b"*", data[position : position + 20]
        arguments = int(data[position + 1 : end])
        position = end + 2
        for _ in range(arguments):
            end = data.index(b"\r\n", position)
            position = end + 2 + int(data[position + 1 : end]) + 2
        count += 1
    return count


@dataclass
class Gate:
    """Holds the Redis door's sends of chosen commands until opened, to hit exact moments.

    ``before``: the command waits before it reaches Redis (in flight for the
    door, not yet executed). ``after``: it ran on Redis; its reply is held.
    ``log`` lists every batch the door sent, by command name; ``commands``
    every command in the order sent, with its arguments.
    """

    before: set[str] = field(default_factory=set)
    after: set[str] = field(default_factory=set)
    log: list[list[str]] = field(default_factory=list)
    commands: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    most_in_flight: int = 0

    def open(self) -> None:
        self.opened.set()

    def wrap(self, original: Execute) -> Execute:
        async def gated(store: Store, batch: Sequence[Any], *, load: bool) -> list[Any] | None:
            names = [op.script.name if op.script else str(op.args[0]) for op in batch]
            self.log.append(names)
            if not load:
                self.commands.extend(zip(names, (op.args for op in batch), strict=True))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.before.intersection(names):
                    self.reached.set()
                    await self.opened.wait()
                replies = await original(store, batch, load=load)
                if self.after.intersection(names):
                    self.reached.set()
                    await self.opened.wait()
                return replies
            finally:
                self.in_flight -= 1

        return gated


async def lock_and_marker_keys(client: Redis) -> list[bytes]:
    """The seed's keys (locks and success markers, any namespace) in Redis, sorted.

    What a run leaves behind apart from its run records (``_records``), which
    every run writes.
    """
    keys = [key for key in await client.keys("*") if isinstance(key, bytes)]
    return sorted(k for k in keys if re.match(rb"^([^:]+:)?(lock|success):", k))


async def load_scripts(client: Redis) -> None:
    """Load every script, so that a gated command is the one that runs (not a NOSCRIPT probe)."""
    for script in (ACQUIRE, FINISH, RELEASE, RENEW, STATUS):
        await client.script_load(script.source)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    """Poll ``check`` until it is true (a condition, not a timing); fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


#: Longest a test waits for a child process or a server to reach a point (bounds a hang; times nothing).
PATIENCE: Final = 60.0


def until(check: Callable[[], bool], what: str, *processes: subprocess.Popen[str]) -> None:
    """Poll ``check`` until it holds (a condition, not a timing), at most ``PATIENCE`` seconds.

    Fails naming ``what``, or with the output of one of ``processes`` that exited first.
    """
    deadline = time.monotonic() + PATIENCE
    while not check():
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"exited ({process.returncode}) before {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


async def cancel_while_queued(
    gate: Gate, client: Redis, command: Callable[[], Awaitable[object]], what: str
) -> None:
    """Cancel ``command`` while it waits in the door's queue, then let everything through.

    Every lane is first given an acquire that ``gate`` holds before it reaches Redis
    (``gate.before`` must name ``"acquire"``), so ``command`` must queue; once it is
    cancelled there the gate opens and the blockers' locks are released.
    """
    blockers = []
    for lane in range(DEFAULT_LANES):  # occupy every lane, one batch each
        blockers.append(asyncio.ensure_future(task_boilerplate(f"b{lane}", "20261125", redis=client)))

        async def sent(count: int = lane + 1) -> bool:
            return len(gate.log) >= count

        await eventually(sent, f"lane {lane} holds a batch")
    queued = asyncio.ensure_future(command())

    async def in_the_queue() -> bool:
        return bool(store_for(client)._queue)

    await eventually(in_the_queue, f"{what} waits for a lane")
    queued.cancel()
    try:
        await queued
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError(f"{what} was not cancelled")
    gate.open()
    for done in await asyncio.gather(*blockers):
        await release_lock(done[0], done[1], done[4])
