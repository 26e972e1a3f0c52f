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
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ._constants import DEFAULT_REDIS_URL
from ._errors import InvalidConfig
from ._keys import check_namespace

__all__ = ["URL_OPTIONS", "Settings", "env_namespace", "env_settings", "in_process_client", "redact_url"]

_SCHEMES: Final = ("redis", "rediss", "unix")
_SECRET_NAME: Final = re.compile(r"(?i)pass|auth|secret|token")


def _flag(value: str) -> bool:
    # redis-py reads any value but 0/F/FALSE/N/NO as true: accept only what it reads as meant.
    lowered = value.lower()
    if lowered in ("1", "t", "true", "y", "yes"):
        return True
    if lowered in ("0", "f", "false", "n", "no"):
        return False
    raise ValueError("expected true or false")


def _count(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError("expected a whole number")
    return int(value)


def _seconds(value: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError("expected a positive finite number of seconds")
    return number


def _protocol(value: str) -> int:
    if value not in ("2", "3"):
        raise ValueError("expected 2 or 3")
    return int(value)


def _cert_reqs(value: str) -> str:
    if value.lower() not in ("none", "optional", "required"):
        raise ValueError("expected none, optional or required")
    return value


#: The query options a Redis URL may carry, each with the check of its value: what
#: redis-py's URL parser and connection classes accept (anything else would reach
#: them as an unexpected keyword argument, or as a string where a number belongs).
URL_OPTIONS: Final[Mapping[str, Callable[[str], object]]] = MappingProxyType(
    {
        "db": _count,
        "username": str,
        "password": str,
        "client_name": str,
        "protocol": _protocol,
        "socket_timeout": _seconds,
        "socket_connect_timeout": _seconds,
        "socket_keepalive": _flag,
        "retry_on_timeout": _flag,
        "health_check_interval": _count,
        "max_connections": _count,
        "timeout": _seconds,
        "ssl_ca_certs": str,
        "ssl_ca_path": str,
        "ssl_certfile": str,
        "ssl_keyfile": str,
        "ssl_password": str,
        "ssl_cert_reqs": _cert_reqs,
        "ssl_check_hostname": _flag,
    }
)
#: Options that name local files, checked before a client is built.
_TLS_FILES: Final = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
#: Options redis-py's ``RedisCluster`` does not take.
_NOT_FOR_CLUSTER: Final = frozenset({"retry_on_timeout", "timeout", "ssl_ca_path", "ssl_password"})
#: Option names that end a secret option's value when redacting (``&name=``).
_NEXT_OPTION: Final = "|".join(re.escape(name) for name in URL_OPTIONS)
_SECRET_QUERY: Final = re.compile(
    rf"(?is)([?&][^=&#]*(?:pass|auth|secret|token)[^=&#]*=).*?(?=&(?:{_NEXT_OPTION})=|\Z)"
)
_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
#: What a password in a URL must not contain unencoded, and why the URL is not shown.
_ENCODE_HINT: Final = (
    "percent-encode '/', '?', '#' and '@' in a password (%2F, %3F, %23, %40), and '@' in an option; "
    "the URL is not shown because it may hold a password"
)


def redact_url(url: str) -> str:
    """``url`` with any password (in the user-info or the query) replaced by ``***``.

    The user-info is everything between ``scheme://`` and the *last* ``@``,
    whatever characters come before it: a password holding ``/``, ``?``, ``#``
    or ``@`` (common in generated ones) is hidden whole, even though such a URL
    is refused as malformed. Only a user name (before the first ``:``) is kept.
    Over-redacting a URL whose query holds an ``@`` is the price of that.
    """
    match = _SCHEME.match(url)
    scheme, rest = (match.group(), url[match.end() :]) if match else ("", url)
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{':***' if colon else ''}@{after}"
    return scheme + _SECRET_QUERY.sub(r"\1***", rest)


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
        if self.cluster and self.redis_url is None:
            raise InvalidConfig("a Redis Cluster needs a URL naming one of its nodes", None)
        if self.redis_url is not None:
            _check_url(self.redis_url, cluster=self.cluster)
        if self.namespace is not None:
            check_namespace(self.namespace)
        for name in ("socket_timeout", "connect_timeout", "pool_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (value > 0 and math.isfinite(value)):
                raise InvalidConfig(f"{name} must be a positive finite number, not {value!r}", value)
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
        _check_tls_files(self.url)
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
    return _namespace_for(environ(b"AIOTASKS_NAMESPACE"))


@functools.lru_cache(maxsize=16)
def _namespace_for(value: bytes | None) -> str | None:
    return check_namespace(value.decode(errors="replace")) if value else None


#: ``os.environ``'s own mapping where it is keyed by bytes (POSIX): a lookup there is a
#: dict lookup, where ``os.environ.get`` encodes the name and decodes the value, and for an
#: unset name (the usual case) raises and catches a KeyError inside ``Mapping.get``. Paid
#: twice a run (namespace, retention); measured with timeit (CPython 3.11, 2-core EPYC):
#: :func:`environ` 107 ns a call, ``os.environ.get`` 740 ns unset / 308 ns set,
#: ``os.environb.get`` 602 / 235 ns: about 1.3 µs a run more, some 1% of a run's CPU at the
#: benchmarks' 10,000 runs/s. It is private: where it is missing, the public way.
_ENVIRON: Final = getattr(os.environ, "_data", None) if os.supports_bytes_environ else None


def _environ(name: bytes) -> bytes | None:
    value = os.environ.get(name.decode())
    return None if value is None else value.encode()


#: ``os.environb.get(name)``, read at every call (tests and services change it): where the
#: mapping is keyed by bytes (its values are bytes too), its own ``get``, with no Python frame.
environ: Final[Callable[[bytes], bytes | None]] = _ENVIRON.get if isinstance(_ENVIRON, dict) else _environ


@functools.lru_cache(maxsize=16)
def _settings_for(values: tuple[str | None, ...]) -> Settings:
    return Settings.from_env({k: v for k, v in zip(_ENV_VARS, values, strict=True) if v is not None})


def _check_url(url: object, *, cluster: bool) -> None:
    """Refuse a URL redis-py would misread or choke on, naming the problem, never a password.

    A URL that can't be parsed is not shown at all: the part that breaks it is
    often a password holding a reserved character.
    """
    if not isinstance(url, str) or not url:
        raise InvalidConfig(f"Redis URL must be a non-empty string, not {url!r}", url)
    shown = redact_url(url)

    def bad(problem: str, *, show: bool = True) -> InvalidConfig:
        if not show:
            return InvalidConfig(f"bad Redis URL: {problem}", None)
        return InvalidConfig(f"bad Redis URL {shown}: {problem}", shown)

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        # Only a well-formed scheme is named: anything else may be a password.
        named = f", not {scheme}://" if sep and _SCHEME.match(url) else ""
        raise bad(f"it must start with {', '.join(s + '://' for s in _SCHEMES)}{named}", show=False)
    # The user-info ends at the last '@' (see redact_url). redis-py, like urllib,
    # ends it at the first '/', '?' or '#': an '@' after one of those means a
    # password holding it, which redis-py would read as host, port or path.
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[cut:]:
        raise bad(_ENCODE_HINT, show=False)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number
    except ValueError:
        # Past an '@' the port can't be part of a password (the redacted URL hides the
        # user-info whole); with no '@', the "port" may be a password missing its "@host".
        if "@" in rest:
            raise bad("the port is not a number") from None
        raise bad(f"the port is not a number; {_ENCODE_HINT}", show=False) from None
    db = 0
    if scheme != "unix":
        if not parts.hostname:
            raise bad("no host")
        if port == 0:
            raise bad("port 0")
        path = parts.path.lstrip("/")
        if path and not (path.isascii() and path.isdigit()):
            raise bad(f"the database must be a number, not {path!r}")
        db = int(path) if path else 0
    options = parse_qsl(parts.query, keep_blank_values=True)
    secret = any(_SECRET_NAME.search(name) for name, _ in options)
    for name, value in options:
        check = URL_OPTIONS.get(name)
        if check is None:
            # After a secret option, an unknown name may be the rest of a password holding '&'.
            named = "an unknown option" if secret else f"unknown option {name!r}"
            raise bad(f"{named}; known options: {', '.join(sorted(URL_OPTIONS))}")
        try:
            check(value)
        except ValueError as exc:
            given = "***" if _SECRET_NAME.search(name) else repr(value)
            raise bad(f"option {name}={given}: {exc}") from None
        if name.startswith("ssl_") and scheme != "rediss":
            raise bad(f"option {name} needs a rediss:// URL (TLS)")
        if name == "socket_keepalive" and scheme == "unix":
            raise bad(f"option {name} does not apply to unix:// sockets")
        if cluster and name in _NOT_FOR_CLUSTER:
            raise bad(f"option {name} is not supported for a Redis Cluster")
        if name == "db":
            db = int(value)
    if cluster and db != 0:
        raise bad(
            f"a Redis Cluster has only database 0, and this URL names database {db}: "
            "drop it from the URL (a namespace keeps applications apart)"
        )


def _check_tls_files(url: str) -> None:
    """Name a TLS file of the URL that does not exist, before the connection fails without naming it."""
    for name, value in parse_qsl(urlsplit(url).query):
        if name in _TLS_FILES and not os.path.exists(value):
            raise InvalidConfig(f"TLS file {name}={value} does not exist", value)


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
            "pip install 'aiotasks-redis[local]', or '.[local]' from a checkout "
            "(or set AIOTASKS_REDIS_URL / --redis-url)",
            None,
        ) from exc
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return client
