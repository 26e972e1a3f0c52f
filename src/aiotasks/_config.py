"""Settings, and the Redis clients aiotasks builds itself.

Clients that aiotasks builds (the CLI's, and the default one behind
``AIOTASKS_REDIS_URL``) use a :class:`redis.asyncio.BlockingConnectionPool`:
when every connection is busy, a command waits up to ``pool_timeout`` seconds
for one instead of failing with "Too many connections", so seed-style task
bodies that use the connection directly still work in a 300-wide chain.
Connection errors are retried ``retries`` times with exponential backoff and
jitter; each attempt is bounded by ``connect_timeout`` / ``socket_timeout``,
so an unreachable or stalled Redis fails a run in bounded time instead of
hanging it.

Clients you build yourself keep their own settings; pass them as ``redis=``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ._errors import InvalidConfig
from ._keys import check_namespace

__all__ = ["Settings", "env_namespace", "env_settings", "in_process_client", "redact_url"]

_SCHEMES: Final = ("redis", "rediss", "unix")
_SECRET_QUERY: Final = re.compile(r"(?i)([?&][^=&]*(?:pass|auth|secret|token)[^=&]*=)[^&]*")
_USERINFO: Final = re.compile(r"^([a-z+]+://)([^@/]*)@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password (in the user-info or the query) replaced by ``***``."""

    def userinfo(match: re.Match[str]) -> str:
        user, sep, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}{':***' if sep else ''}@"

    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(userinfo, url, count=1))


def _env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise InvalidConfig(f"{name} must be true or false, not {value!r}", value)


def _env_float(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidConfig(f"{name} must be a number, not {value!r}", value) from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Where Redis is and how aiotasks' own clients talk to it.

    :param redis_url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
        for TLS (certificates as query options, e.g. ``?ssl_ca_certs=/ca.pem``),
        or ``unix:///path.sock?db=6``. ``None`` means "not configured": the
        library then uses ``redis://localhost:6379/6`` (the seed's scheduler
        Redis) and the CLI uses the in-process store.
    :param cluster: treat ``redis_url`` as a seed node of a Redis Cluster.
    :param namespace: optional key prefix, so several applications share one
        Redis (``ns:lock:task:date``).
    :param socket_timeout: seconds to wait for a reply before the attempt fails.
    :param connect_timeout: seconds to wait for a connection to open.
    :param pool_timeout: seconds a command waits for a free pooled connection.
    :param max_connections: size of the connection pool.
    :param retries: how many times a command is retried after a connection
        error or timeout (exponential backoff from 50 ms, capped at 1 s, with jitter).
    """

    redis_url: str | None = None
    cluster: bool = False
    namespace: str | None = None
    socket_timeout: float = 5.0
    connect_timeout: float = 5.0
    pool_timeout: float = 20.0
    max_connections: int = 50
    retries: int = 3

    def __post_init__(self) -> None:
        if self.redis_url is not None:
            _check_url(self.redis_url)
        if self.namespace is not None:
            check_namespace(self.namespace)
        for name in ("socket_timeout", "connect_timeout", "pool_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise InvalidConfig(f"{name} must be a positive number, not {value!r}", value)
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise InvalidConfig(
                f"max_connections must be a positive integer, not {self.max_connections!r}",
                self.max_connections,
            )
        if not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidConfig(f"retries must be >= 0, not {self.retries!r}", self.retries)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Settings:
        """Settings for ``url``, other fields from ``options`` or their defaults."""
        return cls(redis_url=url, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``AIOTASKS_REDIS_URL``, ``AIOTASKS_REDIS_CLUSTER``,
        ``AIOTASKS_NAMESPACE``, ``AIOTASKS_SOCKET_TIMEOUT`` and ``AIOTASKS_POOL_TIMEOUT``;
        unset or empty variables keep the defaults."""
        env = os.environ if environ is None else environ
        options: dict[str, Any] = {}
        if url := env.get("AIOTASKS_REDIS_URL"):
            options["redis_url"] = url
        if cluster := env.get("AIOTASKS_REDIS_CLUSTER"):
            options["cluster"] = _env_bool(cluster, "AIOTASKS_REDIS_CLUSTER")
        if namespace := env.get("AIOTASKS_NAMESPACE"):
            options["namespace"] = namespace
        for var, name in (
            ("AIOTASKS_SOCKET_TIMEOUT", "socket_timeout"),
            ("AIOTASKS_POOL_TIMEOUT", "pool_timeout"),
        ):
            if value := env.get(var):
                options[name] = _env_float(value, var)
        return cls(**options)

    def with_options(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @property
    def url(self) -> str:
        """The URL clients connect to: ``redis_url``, or the seed's default."""
        from ._constants import DEFAULT_REDIS_URL

        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def redacted_url(self) -> str:
        """:attr:`url` with its password replaced by ``***``, safe to log."""
        return redact_url(self.url)

    def create_client(self) -> Redis | RedisCluster:
        """A new client for :attr:`url` (close it with ``await client.aclose()``).

        Standalone clients get a waiting (blocking) pool; cluster clients keep
        redis-py's per-node pools, which have no fixed limit.
        """
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), self.retries)
        common: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "retry": retry,
        }
        try:
            if self.cluster:
                return RedisCluster.from_url(self.url, **common)
            pool = BlockingConnectionPool.from_url(
                self.url, max_connections=self.max_connections, timeout=self.pool_timeout, **common
            )
        except (ValueError, TypeError) as exc:
            message = redact_url(str(exc)).replace(self.url, self.redacted_url)
            raise InvalidConfig(f"bad Redis URL {self.redacted_url}: {message}", self.redacted_url) from None
        return Redis.from_pool(pool)


_ENV_VARS: Final = (
    "AIOTASKS_REDIS_URL",
    "AIOTASKS_REDIS_CLUSTER",
    "AIOTASKS_NAMESPACE",
    "AIOTASKS_SOCKET_TIMEOUT",
    "AIOTASKS_POOL_TIMEOUT",
)


def env_settings() -> Settings:
    """:meth:`Settings.from_env` for the current environment, parsed once per distinct value.

    The library asks for it on every call made without a chain, so it must be cheap.
    """
    return _settings_for(tuple(os.environ.get(name) for name in _ENV_VARS))


def env_namespace() -> str | None:
    """``AIOTASKS_NAMESPACE``, validated: all a call given its own client needs, in one lookup."""
    return _namespace_for(os.environ.get("AIOTASKS_NAMESPACE") or None)


@functools.lru_cache(maxsize=16)
def _namespace_for(value: str | None) -> str | None:
    return None if value is None else check_namespace(value)


@functools.lru_cache(maxsize=16)
def _settings_for(values: tuple[str | None, ...]) -> Settings:
    return Settings.from_env({k: v for k, v in zip(_ENV_VARS, values, strict=True) if v is not None})


def _check_url(url: object) -> None:
    if not isinstance(url, str) or not url:
        raise InvalidConfig(f"Redis URL must be a non-empty string, not {url!r}", url)
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number
    except ValueError as exc:
        raise InvalidConfig(f"bad Redis URL {shown}: {exc}", shown) from None
    if parts.scheme not in _SCHEMES:
        raise InvalidConfig(f"bad Redis URL {shown}: scheme must be one of {', '.join(_SCHEMES)}", shown)
    if parts.scheme != "unix":
        if not parts.hostname:
            raise InvalidConfig(f"bad Redis URL {shown}: no host", shown)
        if port == 0:
            raise InvalidConfig(f"bad Redis URL {shown}: port 0", shown)
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise InvalidConfig(f"bad Redis URL {shown}: database must be a number, not {db!r}", shown)
    for key, value in parse_qsl(parts.query):
        if key == "db" and not value.isdigit():
            raise InvalidConfig(f"bad Redis URL {shown}: database must be a number", shown)


def in_process_client() -> Redis:
    """A client on a new in-process store (fakeredis, running our Lua through lupa).

    It coordinates nothing across processes: every process that creates one
    has its own private data.
    """
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis needs it to run our scripts)
    except ImportError as exc:
        raise InvalidConfig(
            "no Redis configured, and the in-process store needs fakeredis with Lua: "
            "pip install 'aiotasks[local]' (or set AIOTASKS_REDIS_URL / --redis-url)",
            None,
        ) from exc
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return client
