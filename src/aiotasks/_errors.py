"""Exceptions raised by aiotasks.

Every exception the library raises on purpose derives from one root::

    AioTasksError
    ├── TaskError                 a run failed (body raised, lock lost, Redis failed mid-run)
    ├── InvalidInput (ValueError) bad input, refused before any Redis command is sent
    │   ├── InvalidTaskName
    │   ├── InvalidDate
    │   ├── InvalidChain
    │   ├── InvalidConfig
    │   └── InvalidSchedule
    ├── TriggerExpired            no serving scheduler took a ``trigger`` request in time
    ├── CancelTimeout (TimeoutError) a cancelled run still held its lock after ``cancel``'s timeout
    └── RedisUnavailable          Redis could not be reached, timed out, or refused us
        │   (also a redis.exceptions.ConnectionError)
        └── RedisAuthError        wrong password or ACL user
            (also a redis.exceptions.AuthenticationError)

Errors from redis-py are translated at the Redis door (``_store``) with
``raise ... from exc``. The translated message never contains a password: it
names the server by its redacted URL or ``host:port``.

The Redis errors are also redis-py's own, so code written for redis-py (the
seed's template catches ``redis.RedisError``) catches them unchanged::

    redis.exceptions.RedisError
    └── ConnectionError
        ├── RedisUnavailable
        └── AuthenticationError
            └── RedisAuthError
"""

from __future__ import annotations

from typing import Any

from redis import exceptions as rex

__all__ = [
    "AioTasksError",
    "CancelTimeout",
    "InvalidChain",
    "InvalidConfig",
    "InvalidDate",
    "InvalidInput",
    "InvalidSchedule",
    "InvalidTaskName",
    "RedisAuthError",
    "RedisUnavailable",
    "TaskError",
    "TriggerExpired",
]


class AioTasksError(Exception):
    """Root of every exception raised by aiotasks."""


class TaskError(AioTasksError):
    """A task run failed; the seed's ``TaskError(status, message)``.

    :param status: the run's status, ``"failed"`` for every error aiotasks raises.
    :param message: a human-readable explanation.
    :param result: the run's result dict (status ``failed``, the error text in
        ``errors``), when the failure happened inside a run.
    """

    def __init__(self, status: str, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.result = result

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


class InvalidInput(AioTasksError, ValueError):
    """Bad input, detected before anything is sent to Redis.

    :param value: the offending value, as given.
    """

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class InvalidTaskName(InvalidInput):
    """A task name that is empty, too long, or would make Redis keys ambiguous."""


class InvalidDate(InvalidInput):
    """A date that is not ``YYYYMMDD`` naming a real calendar day."""


class InvalidChain(InvalidInput):
    """A chain that can't run: duplicate ids, unknown dependencies, a cycle, a non-callable."""


class InvalidConfig(InvalidInput):
    """A setting that can't be used: a malformed Redis URL, a bad namespace or timeout."""


class InvalidSchedule(InvalidInput):
    """A schedule that can't run: a bad cron expression, interval, time zone, catch-up or target."""


class TriggerExpired(AioTasksError):
    """No serving scheduler took a :func:`aiotasks.trigger` request before it expired.

    :param schedule: the schedule's name.
    """

    def __init__(self, message: str, schedule: str) -> None:
        super().__init__(message)
        self.schedule = schedule


class CancelTimeout(AioTasksError, TimeoutError):
    """:func:`aiotasks.cancel` with ``wait`` delivered the request, but the run still held its
    lock when the ``timeout`` ran out (a body slow to stop; its lock frees within its TTL anyway).

    :param task_name: the task's name.
    :param date: the run's key.
    """

    def __init__(self, message: str, task_name: str, date: str) -> None:
        super().__init__(message)
        self.task_name = task_name
        self.date = date


class RedisUnavailable(AioTasksError, rex.ConnectionError):
    """Redis could not be reached, did not answer in time, or refused the command.

    Also a ``redis.exceptions.ConnectionError`` (so a ``redis.RedisError``).

    :param server: where we tried, password redacted (``redis://:***@host:6379/6``).
    """

    def __init__(self, message: str, server: str = "") -> None:
        super().__init__(message)
        self.server = server

    # redis-py's errors print as "network:Name"; ours keep the usual form.
    __repr__ = BaseException.__repr__


class RedisAuthError(RedisUnavailable, rex.AuthenticationError):
    """Redis refused our credentials (wrong password, unknown user, missing ACL permission).

    Also a ``redis.exceptions.AuthenticationError``.
    """
