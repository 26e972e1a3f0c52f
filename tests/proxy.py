"""A loopback TCP proxy in front of a real ``redis-server`` that holds or drops traffic on command.

It runs on the test's own event loop, so a test decides exactly when a request
reaches Redis and when a reply comes back, and learns through events that the
proxy is holding something (no sleeps, no timing)::

    async with Proxy(redis_server.port) as proxy:
        client = Redis.from_url(proxy.url)
        await client.ping()                 # connected, handshake done
        proxy.hold_replies()
        ...                                 # a command runs on Redis; its reply waits here
        await proxy.reply_held.wait()
        proxy.release_replies()

Holding applies to data that arrives while it is on; what is held is then
forwarded in order once released.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Proxy"]

CHUNK = 65536


class Proxy:
    """Forwards 127.0.0.1:``port`` (its own, free) to a redis-server on 127.0.0.1:``upstream_port``.

    :ivar request_held: set once a request from a client is being held.
    :ivar reply_held: set once a reply from Redis is being held.
    :ivar dropped: set once a reply was dropped (and its client connection closed).
    :ivar connections: client connections accepted so far.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.connections = 0
        self.request_held = asyncio.Event()
        self.reply_held = asyncio.Event()
        self.dropped = asyncio.Event()
        self._requests_open = asyncio.Event()
        self._replies_open = asyncio.Event()
        self._requests_open.set()
        self._replies_open.set()
        self._drop_replies = 0
        self._drop_scripts = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # -- what a test commands ----------------------------------------------------

    def hold_requests(self) -> None:
        """Keep requests from clients here (Redis does not see them) until :meth:`release_requests`."""
        self.request_held.clear()
        self._requests_open.clear()

    def release_requests(self) -> None:
        self._requests_open.set()

    def hold_replies(self) -> None:
        """Let requests run on Redis but keep their replies here until :meth:`release_replies`."""
        self.reply_held.clear()
        self._replies_open.clear()

    def release_replies(self) -> None:
        self._replies_open.set()

    def drop_next_reply(self) -> None:
        """The next reply from Redis (its request ran) is discarded and its client connection closed."""
        self.dropped.clear()
        self._drop_replies = 1

    def drop_script_replies(self, count: int) -> None:
        """The replies to the next ``count`` requests that run a script are dropped, as
        :meth:`drop_next_reply` drops one (a new connection's handshake is answered)."""
        self.dropped.clear()
        self._drop_scripts = count

    # -- running ---------------------------------------------------------------------

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.release_requests()
        self.release_replies()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.update((client_writer, redis_writer))
        doomed = [False]  # this connection's next reply is to be dropped (it answers a script)
        for pump in (
            self._pump(client_reader, redis_writer, requests=True, peer=client_writer, doomed=doomed),
            self._pump(redis_reader, client_writer, requests=False, peer=redis_writer, doomed=doomed),
        ):
            task = asyncio.get_running_loop().create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        requests: bool,
        peer: asyncio.StreamWriter,
        doomed: list[bool],
    ) -> None:
        gate, held = (
            (self._requests_open, self.request_held) if requests else (self._replies_open, self.reply_held)
        )
        try:
            while data := await reader.read(CHUNK):
                if not gate.is_set():
                    held.set()
                    await gate.wait()
                if requests and self._drop_scripts and (b"EVALSHA" in data or b"EVAL\r\n" in data):
                    self._drop_scripts -= 1
                    doomed[0] = True
                if not requests and (self._drop_replies or doomed[0]):
                    if not doomed[0]:
                        self._drop_replies -= 1
                    writer.close()  # the client's connection: its request ran, its reply is gone
                    peer.close()
                    self.dropped.set()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for end in (writer, peer):
                with contextlib.suppress(Exception):
                    end.close()
                self._writers.discard(end)

    def __repr__(self) -> str:
        return f"<Proxy 127.0.0.1:{self.port} -> {self.upstream_port}>"
