"""Which Redis, namespace and options a call uses when it isn't told.

A chain run sets :data:`current` for the tasks it runs, so seed-style tasks
that call ``task_boilerplate()`` with no client use the chain's client,
namespace and ``force`` flag without any change. Outside a chain, the default
comes from :meth:`Settings.from_env`: ``AIOTASKS_REDIS_URL``, else
``redis://localhost:6379/6``; that client is built once per event loop.
"""

from __future__ import annotations

import asyncio
import weakref
from contextvars import ContextVar
from dataclasses import dataclass

from ._config import Settings, env_namespace, env_settings
from ._store import AnyRedis, Store, store_for

__all__ = ["Binding", "current", "default_client", "resolve"]


@dataclass(frozen=True, slots=True)
class Binding:
    """What the enclosing chain run lends to the calls made inside it."""

    redis: AnyRedis
    namespace: str | None = None
    #: Ignore success markers (the CLI's ``--force``): tasks run even if completed.
    force: bool = False


current: ContextVar[Binding | None] = ContextVar("aiotasks_binding", default=None)

_default_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Settings, AnyRedis]] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> AnyRedis:
    """The client built from :meth:`Settings.from_env`, one per event loop."""
    loop = asyncio.get_running_loop()
    settings = env_settings()
    cached = _default_clients.get(loop)
    if cached is None or cached[0] != settings:
        cached = _default_clients[loop] = (settings, settings.create_client())
    return cached[1]


def resolve(redis: AnyRedis | None) -> tuple[Store, str | None, bool]:
    """The store, namespace and force flag for a call given ``redis`` (or not).

    An explicit client wins; else the enclosing chain's; else the default.
    The namespace and ``force`` come from the enclosing chain, else from the
    environment (``AIOTASKS_NAMESPACE``) and ``False``.
    """
    binding = current.get()
    if binding is not None:
        return (
            store_for(redis if redis is not None else binding.redis),
            binding.namespace,
            binding.force,
        )
    if redis is not None:
        return store_for(redis), env_namespace(), False
    return store_for(default_client()), env_settings().namespace, False
