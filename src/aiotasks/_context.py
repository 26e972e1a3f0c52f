"""Which Redis, namespace and options a call uses when it isn't told.

A chain run sets :data:`current` for the tasks it runs, so seed-style tasks
that call ``task_boilerplate()`` with no client use the chain's client,
namespace and ``force`` flag without any change. Outside a chain, the default
comes from :meth:`Settings.from_env`: ``AIOTASKS_REDIS_URL``, else
``redis://localhost:6379/6``; that client is built once per event loop.

A chain also gives each attempt of a task a :class:`NodeReport`, through which
the run the task's function starts (with :func:`task_boilerplate` or a
decorated task) tells the chain its name, keys, ``task_id`` and result dict.

aiotasks runs on asyncio only: :func:`running_loop` says so in a typed error
when it is called from another event loop (trio) or from no loop at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ._config import Settings, env_namespace, env_settings
from ._errors import InvalidConfig
from ._keys import TaskKeys
from ._store import AnyRedis, Store, store_for

__all__ = [
    "Binding",
    "NodeReport",
    "current",
    "default_client",
    "report_run",
    "reporting_to",
    "resolve",
    "running_loop",
    "store_of",
]


@dataclass(frozen=True, slots=True)
class Binding:
    """What the enclosing chain run lends to the calls made inside it."""

    redis: AnyRedis
    namespace: str | None = None
    #: Ignore success markers (the CLI's ``--force``): tasks run even if completed.
    force: bool = False


current: ContextVar[Binding | None] = ContextVar("aiotasks_binding", default=None)


@dataclass(slots=True, eq=False)
class NodeReport:
    """What the function of one chain task says about the run it started.

    The chain hands a fresh report to each attempt of a task (through the
    attempt's context, see :func:`reporting_to`); :func:`task_boilerplate` and
    a decorated task fill it in when they start a run (the first one, should
    the function start several). So the chain knows the name, keys and result
    dict the function really used, whatever the entry's ``id`` says: it waits
    on those keys when another worker holds them, and keeps that result dict
    (its ``task_id`` and counters) when the function raises instead of
    returning it. All fields stay None when the function started no run.
    """

    task_name: str | None = None
    keys: TaskKeys | None = None
    task_id: str | None = None
    result: dict[str, Any] | None = None
    #: Entries the chain adds to that run's result dict when it starts (who
    #: triggered the run), so its record keeps them with the counters.
    extra: dict[str, Any] | None = None


_report: ContextVar[NodeReport | None] = ContextVar("aiotasks_node_report", default=None)


@contextlib.contextmanager
def reporting_to(report: NodeReport) -> Iterator[NodeReport]:
    """Runs started in this block (and in tasks and threads it starts) fill in ``report``."""
    token = _report.set(report)
    try:
        yield report
    finally:
        _report.reset(token)


def report_run(task_name: str, keys: TaskKeys, task_id: str, result: dict[str, Any]) -> None:
    """Tell the enclosing chain task, if any, about a run that starts now."""
    report = _report.get()
    if report is not None and report.task_name is None:
        report.task_name, report.keys, report.task_id, report.result = task_name, keys, task_id, result
        if report.extra:
            result.update(report.extra)


def running_loop() -> asyncio.AbstractEventLoop:
    """The running asyncio event loop.

    :raises InvalidConfig: no asyncio loop runs here: called from trio (also
        through anyio's trio backend) or outside any event loop.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise InvalidConfig(
            "aiotasks requires asyncio: no asyncio event loop is running here "
            "(under anyio, use its asyncio backend; trio is not supported)"
        ) from None


def store_of(client: AnyRedis) -> Store:
    """The door to ``client`` on the running loop, after checking that it is asyncio's."""
    try:
        loop = asyncio.get_running_loop()  # (running_loop's test, without its frame: once per run)
    except RuntimeError:
        loop = running_loop()  # raises the error that says why
    return store_for(client, loop)


_default_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Settings, AnyRedis]] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> AnyRedis:
    """The client built from :meth:`Settings.from_env`, one per event loop."""
    loop = running_loop()
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
            store_of(redis if redis is not None else binding.redis),
            binding.namespace,
            binding.force,
        )
    if redis is not None:
        return store_of(redis), env_namespace(), False
    return store_of(default_client()), env_settings().namespace, False
