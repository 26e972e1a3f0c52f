"""Shared fixtures: real redis-server and Redis Cluster per session (clean per test); fakeredis for units."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis
from redis.asyncio import Redis, RedisCluster

from aiotasks._store import Store
from tests.proxy import Proxy
from tests.servers import LocalCluster, RedisServer
from tests.support import Gate, Wire, load_scripts


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server started for this test session on a free port, stopped at the end."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, its data wiped before the test (it is our own server)."""
    with redis.Redis.from_url(redis_server.url) as sync:
        sync.flushall()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """A default ``redis.asyncio`` client on the clean session server."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def cluster_servers() -> Iterator[LocalCluster]:
    """A Redis Cluster of three masters started once for the session on free ports, stopped at the end."""
    with LocalCluster() as started:
        yield started


@pytest.fixture
def cluster(cluster_servers: LocalCluster) -> LocalCluster:
    """The session's cluster, every master's data wiped before the test (it is our own cluster)."""
    for node in cluster_servers.nodes:
        with redis.Redis.from_url(node.url) as sync:
            sync.flushall()
    return cluster_servers


@pytest.fixture
async def cluster_client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A ``RedisCluster`` client on the clean session cluster."""
    client = RedisCluster.from_url(cluster.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def fake_redis() -> AsyncIterator[Redis]:
    """An in-process fakeredis client (runs our Lua through lupa); unit tests only."""
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    """A factory of clients whose round trips and connections are counted."""
    counter = Wire()
    try:
        yield counter
    finally:
        for client in counter.clients:
            await client.aclose()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Install a :class:`Gate` on every Store's sending step."""
    holder = Gate()
    monkeypatch.setattr(Store, "_execute", holder.wrap(Store._execute))
    return holder


@pytest.fixture
async def proxy(redis_server: RedisServer, redis_url: str) -> AsyncIterator[Proxy]:
    """A loopback proxy in front of the clean session server, which can hold or drop traffic."""
    async with Proxy(redis_server.port) as started:
        yield started


@pytest.fixture
async def proxied(proxy: Proxy, redis_client: Redis) -> AsyncIterator[Redis]:
    """A client that talks to Redis through ``proxy``, connected and with the scripts loaded.

    Without socket timeouts (as in issue 12.5): whatever waits on a held reply waits for good.
    """
    await load_scripts(redis_client)
    client = Redis.from_url(proxy.url, socket_timeout=None, socket_connect_timeout=None)
    await client.ping()
    try:
        yield client
    finally:
        proxy.release_requests()
        proxy.release_replies()
        await client.aclose()
