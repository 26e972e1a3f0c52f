"""Run records: what every run leaves in Redis, and how it is read back.

A run writes no extra request for its record: the scripts it already sends
carry it (``_scripts``). The acquire notes the start, the finish or release the
outcome, with the Redis server's clock, so hosts never disagree. Per task ``T``,
date ``D`` and run token ``R`` (the run's ``task_id``), next to the seed's keys::

    run:T:D   HASH  f     the fencing counter
                    l     the latest run's token
                    R     the run's start: 'fence|started|pid|host'
                    R:o   its outcome: 'ended|status|reason|attempts|first error'
                    R:c   the body's counters (JSON), only when there are any
                    (a slot a scheduler missed: R is 'missed', status 'missed';
                    one it did not fire, its schedule paused: both 'paused')
    runs:T    ZSET  'D:R' scored by start time in ms (for history), and '~s',
                    '~f' scored by the end of the last success and failure

(An ACL user of aiotasks needs ``~run:* ~runs:*`` besides ``~lock:* ~success:*``, and
``~paused:*``: the acquire reads a task's pause, see ``_keys``.)

A record is packed into one or two fields of its date's hash, so a run costs
its scripts few commands on the server: the acquire 6 more than without
records (``TIME``, ``HGET`` of the fence, one ``HSET``, ``ZADD``, a ``PEXPIRE``
each), a finish 2 (the outcome's ``HSET`` and the index's ``ZADD``; its end is
the start plus the run's time on the client's monotonic clock, and a run that
held its lock to the end knows its record exists without reading it). Where
the time goes (Redis 7.0, each command taken out of the script in turn, a new
date per run): the new runs hash about 3.5 µs, the index's new member 3, the
outcome's field 3, every other call 0.5-1, and the script's own Lua (string
work, more arguments) 1-1.5; a new date's acquire costs about 10 µs more than
without records, its finish about 5. Much of that is the allocations any
record needs: an index in a stream (``XADD``, whose ID is the server's clock)
instead of ``TIME`` and ``ZADD`` measured only about 1 µs less.

On Redis Cluster ``T`` is written ``{T}``, the task's hash tag, as in its lock
and marker: every key of one task shares one slot. A namespace prefixes them
all. Both keys get the retention as their TTL at every acquire (default 30
days, ``AIOTASKS_RETENTION``, ``retention=``): a run ends within its lock's TTL,
far inside the retention, and the index, refreshed by every date's runs,
outlives each runs hash. About one acquisition in 16 (chosen by the
microseconds of the server's clock, so no state is read for it) trims the
index to the retention: it holds the retention's runs plus, on average, the 16
before them, and goes entirely a retention after the task's last run. A
retention of 0 writes no records.

A record with no outcome is ``running`` while its token holds its date's lock,
else ``abandoned``: the worker died, or lost its lock and never came back.

A run started by ``aiotasks trigger`` has ``triggered_by`` (``host:pid`` of
who asked) in its result dict, so it is kept with the counters (``R:c``):
the layout above is unchanged, and :attr:`RunRecord.triggered_by` reads it.
A run cancelled with ``aiotasks cancel`` keeps who asked the same way
(``cancelled_by``, :attr:`RunRecord.cancelled_by`), besides its outcome
``failed``, reason ``cancelled``, error ``cancelled by host:pid``.

The record's key names (everything after the lock key's own prefix) are
derived from the lock key, so that ``finish_task`` and ``release_lock``, which
only get the seed's ``lock_key``, find them: per run by splitting off the date
(what precedes it is parsed once per task), as bytes for the wire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from . import _wire as wire
from ._config import environ
from ._constants import Reason, Status
from ._errors import InvalidConfig
from ._keys import TaskKeys, task_keys
from ._scripts import ACQUIRE, FINISH

if TYPE_CHECKING:  # the readers take a Store; the Store imports this module's key builders
    from ._store import Store

__all__ = [
    "CANCELLED_BY",
    "DEFAULT_RETENTION",
    "TRIGGERED_BY",
    "Cell",
    "CellState",
    "Outcome",
    "RecordKeys",
    "RunRecord",
    "TaskSummary",
    "read_grid",
    "read_runs",
    "record_keys",
    "record_missed",
    "retention_ms",
]

#: Records are kept this many seconds (30 days) unless told otherwise.
DEFAULT_RETENTION: Final = 30 * 86400
#: The first error text is cut to this many characters.
MAX_ERROR: Final = 500
#: The counters' JSON is cut to this many bytes (keys dropped from the end).
MAX_COUNTERS: Final = 4096
#: A run that ends this long (ms) before its record's retention runs out
#: writes its outcome without checking that the record exists (``Outcome.fresh``).
FRESH_MARGIN_MS: Final = 60_000
#: The result-dict entry of a run started by ``aiotasks trigger``: ``host:pid`` of who asked.
TRIGGERED_BY: Final = "triggered_by"
#: The result-dict entry of a run cancelled by ``aiotasks cancel``: ``host:pid`` of who asked.
CANCELLED_BY: Final = "cancelled_by"
#: This host, as ``socket.gethostname()`` says (no lookup).
HOST: Final = socket.gethostname()
#: This process's id and ``pid|host`` as the acquire packs it, kept current
#: across fork() (``os.getpid()`` is a system call per run).
_pid = [os.getpid()]
_pid_host = [f"{_pid[0]}|{HOST}".encode()]
#: The length of a run's token (``_boilerplate.new_task_id``), as the request formats hold it.
TOKEN_BYTES: Final = 8
#: The retentions as the ACQUIRE script gets them.
_retentions: dict[int, bytes] = {}


def _forked() -> None:
    _pid[0] = os.getpid()
    _pid_host[0] = f"{_pid[0]}|{HOST}".encode()


os.register_at_fork(after_in_child=_forked)
_SUCCESS: Final = Status.SUCCESS.value
#: Result-dict keys that are the library's, not the body's counters.
_STANDARD: Final = frozenset(
    {"task", "date", "task_id", "status", "errors", "warnings", "reason", "attempts", "fence"}
)
#: A first attempt's result-dict keys (no ``attempts`` entry) when the body set no counters.
_FIRST_TRY: Final = _STANDARD - {"attempts"}
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def retention_ms(value: float | str | None = None) -> int:
    """Validate a retention and return it in ms (0: write no records).

    :param value: seconds, or a string such as ``"30d"``, ``"12h"``, ``"90m"``,
        ``"600"``; ``None`` for ``AIOTASKS_RETENTION``, else 30 days.
    :raises InvalidConfig: naming the value.
    """
    if value is None:
        return _env_retention(environ(b"AIOTASKS_RETENTION"))
    if value.__class__ is int and value >= 0:  # a decorator's own, checked once per run
        return value * 1000
    return _retention_ms(value, "retention")


@functools.lru_cache(maxsize=16)
def _env_retention(value: bytes | None) -> int:
    if not value:
        return DEFAULT_RETENTION * 1000
    return _retention_ms(value.decode(errors="replace"), "AIOTASKS_RETENTION")


def _retention_ms(value: float | str, source: str) -> int:
    seconds: float
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _UNITS.get(text[-1:], 0)
        try:
            seconds = float(text[:-1] if unit else text) * (unit or 1)
        except ValueError:
            raise InvalidConfig(
                f"{source} must be seconds or a number with s, m, h or d, not {value!r}", value
            ) from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(f"{source} must be a number of seconds, not {value!r}", value)
    else:
        seconds = value
    if not seconds >= 0 or seconds == float("inf"):
        raise InvalidConfig(
            f"{source} must be 0 (no records) or a positive number of seconds, not {value!r}", value
        )
    return round(seconds * 1000)


class RecordKeys(NamedTuple):
    """The record keys of one (task, date), derived from its lock key."""

    task: str
    date: str
    #: ``run:T:D``: the date's runs hash (fence counter, latest token, records).
    state: str
    #: ``runs:T``: the task's index of runs.
    history: str
    #: ``run:T:``: a date's runs hash is this prefix + ``D``.
    records: str
    #: ``lock:T:``: a date's lock is this prefix + ``D``.
    locks: str
    #: ``paused:T``: the task's pause (``_keys.paused_key``), read by the acquire script.
    paused: str


@functools.lru_cache(maxsize=4096)  # a run's acquire and its finish/release derive the same keys
def record_keys(lock_key: str) -> RecordKeys | None:
    """The record keys that go with ``lock_key`` (as ``_keys.task_keys`` builds it).

    :returns: None for a lock key of another shape (a caller's own key): such
        a run is locked as usual but leaves no record.
    """
    parts = lock_key.split(":")
    if len(parts) not in (3, 4) or parts[-3] != "lock" or not parts[-2] or not parts[-1]:
        return None
    prefix = f"{parts[0]}:" if len(parts) == 4 else ""
    tag, date = parts[-2], parts[-1]
    task = tag[1:-1] if tag.startswith("{") and tag.endswith("}") else tag
    if not task or "{" in task or "}" in task:
        return None
    return RecordKeys(
        task,
        date,
        f"{prefix}run:{tag}:{date}",
        f"{prefix}runs:{tag}",
        f"{prefix}run:{tag}:",
        f"{prefix}lock:{tag}:",
        f"{prefix}paused:{tag}",
    )


#: Per lock-key head (the lock key up to its date): the runs hashes' prefix, the
#: index and the task's paused key, encoded for the wire, or None for a key of another shape.
_heads: dict[str, tuple[bytes, bytes, bytes] | None] = {}
_MAX_HEADS: Final = 4096


#: The last lock keys' record keys: a run's acquire derives them, its trailer and
#: its finish or release find them here.
_recent: dict[str, tuple[bytes, bytes, bytes, bytes] | None] = {}
_MAX_RECENT: Final = 1024


def _wire_keys(lock_key: str) -> tuple[bytes, bytes, bytes, bytes] | None:
    """The runs hash, the index and the date of ``lock_key``'s record, and its task's paused key,
    as bytes for the wire (the door passes bytes through as they are); None when it has no record
    (see :func:`record_keys`).

    Every run has a new lock key (a new date, or a new task), so a cache keyed by
    it serves only that run's own later calls (``_recent``); the head (everything
    before the date) is cached once per task and namespace.
    """
    try:
        return _recent[lock_key]
    except KeyError:
        pass
    if len(_recent) >= _MAX_RECENT:
        _recent.clear()
    found = _recent[lock_key] = _derive_wire_keys(lock_key)
    return found


def _derive_wire_keys(lock_key: str) -> tuple[bytes, bytes, bytes, bytes] | None:
    head, _, date = lock_key.rpartition(":")
    try:
        found = _heads[head]
    except KeyError:
        keys = record_keys(f"{head}:0")
        found = None if keys is None else (keys.records.encode(), keys.history.encode(), keys.paused.encode())
        if len(_heads) >= _MAX_HEADS:
            _heads.clear()
        _heads[head] = found
    if found is None or not date:
        return None
    encoded = date.encode()
    return found[0] + encoded, found[1], encoded, found[2]


def task_record_keys(task: str, *, namespace: str | None, cluster: bool) -> RecordKeys | None:
    """A task's record keys that do not depend on the date (history, prefixes)."""
    return record_keys(task_keys(task, "0", namespace=namespace, cluster=cluster).lock)


# -- what the scripts are sent -----------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """How a run ended, as its finish or release writes it into its record.

    Never changed once made (the door shares some between runs): not ``frozen``
    only because a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, which cost every recorded run 1.5 µs of CPU.
    """

    retention_ms: int
    status: str
    reason: str = ""
    attempts: int = 1
    error: str = ""
    counters: str = ""
    #: The end, ms on the server's clock (0: the script reads its clock).
    ended: int = 0
    #: The record surely exists without an outcome while the lock is held:
    #: the run started well within the retention (the script then checks nothing).
    fresh: bool = False
    #: What :meth:`args` returns, once it was asked.
    _args: tuple[str | bytes, ...] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        result: Mapping[str, Any],
        retention_ms: int,
        *,
        status: Status | None = None,
        default_reason: Reason | None = None,
        started: int = 0,
        seconds: float = 0.0,
    ) -> Outcome:
        """The outcome a result dict describes.

        A status other than ``success`` or ``failed`` (still ``pending``: the
        body was interrupted) is written as ``failed`` with ``default_reason``
        (``cancelled`` unless given); a failure with no reason (the body
        raised) gets reason ``error``. ``status`` overrides the dict's (a
        finish records the success the caller is about to report).

        :param started: the run's start on the server's clock (ms, from the
            acquire); with ``seconds``, the run's time on this host's monotonic
            clock, the end is ``started`` + ``seconds``: the script need not
            read the server's clock again (it ends up earlier than the
            server's own reading by the request's one-way latency).
        """
        said, reason = ending_of(result, status, default_reason)
        errors = result.get("errors") or []
        error = str(errors[0])[:MAX_ERROR] if errors else ""
        attempts = result.get("attempts", 1)
        elapsed = round(seconds * 1000)
        return cls(
            retention_ms,
            said,
            reason,
            attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else 1,
            error,
            counters_json(result),
            started + elapsed if started else 0,
            bool(started) and elapsed + FRESH_MARGIN_MS < retention_ms,
        )

    @classmethod
    def succeeded(cls, result: Mapping[str, Any], retention_ms: int, started: int, seconds: float) -> Outcome:
        """``Outcome.of(result, retention_ms, status=SUCCESS, started=started, seconds=seconds)``,
        made directly in the common case: a first attempt with no counters."""
        if result.keys() <= _FIRST_TRY and not result.get("errors"):
            elapsed = round(seconds * 1000)
            return cls(
                retention_ms,
                _SUCCESS,
                "",
                1,
                "",
                "",
                started + elapsed if started else 0,
                bool(started) and elapsed + FRESH_MARGIN_MS < retention_ms,
            )
        return cls.of(result, retention_ms, status=Status.SUCCESS, started=started, seconds=seconds)

    @property
    def label(self) -> str:
        """The ``outcome`` label of ``aiotasks_runs_total``: success, or the failure's reason."""
        return outcome_label(self.status, self.reason)

    def record(self, run: Any, started: int, seconds: float) -> RunRecord:
        """The record this outcome completes, for hooks.

        Nothing is read back: ``ended`` is ``started`` (the server's clock, from
        the acquire) plus the run's time on this host's monotonic clock.

        :param run: the run's ``task_name``, ``date``, ``task_id`` and ``fence``
            (a :class:`aiotasks.Run`, or the boilerplate's record of one).
        """
        return RunRecord(
            task=run.task_name,
            date=run.date,
            task_id=run.task_id,
            status=self.status,
            reason=self.reason or None,
            fence=run.fence,
            host=HOST,
            pid=_pid[0],
            started=started or None,
            ended=(started + round(seconds * 1000)) if started else None,
            attempts=self.attempts,
            error=self.error or None,
            counters=json.loads(self.counters) if self.counters else {},
        )

    def without(self, secrets: Sequence[str]) -> Outcome:
        """This outcome with every secret (a client's password) in its texts replaced by ``***``."""
        if not secrets or not (self.error or self.counters):
            return self
        error, counters = self.error, self.counters
        for secret in secrets:
            error, counters = error.replace(secret, "***"), counters.replace(secret, "***")
        return replace(self, error=error, counters=counters)

    def args(self) -> tuple[str | bytes, ...]:
        """The ARGV tail the FINISH and RELEASE scripts read: the packed outcome, fresh, and the
        counters only when there are any."""
        if self._args is not None:  # an acquire's give-back outcome serves every run
            return self._args
        packed: str | bytes
        if self.status == "success" and self.ended and not (self.reason or self.error):
            packed = b"%d|success||%d|" % (self.ended, self.attempts)  # the common case, no str
        else:
            packed = f"{self.ended or ''}|{self.status}|{self.reason}|{self.attempts}|{self.error}"
        fresh = b"1" if self.fresh else b"0"
        args = (packed, fresh, self.counters) if self.counters else (packed, fresh)
        self._args = args
        return args


def ending_of(
    result: Mapping[str, Any], status: Status | None = None, default_reason: Reason | None = None
) -> tuple[str, str]:
    """The status and reason a finished run's result dict says (see :meth:`Outcome.of`)."""
    said: Any = status or result.get("status")
    if said == Status.SUCCESS:
        return _SUCCESS, ""
    if said != Status.FAILED:
        return Status.FAILED.value, (default_reason or Reason.CANCELLED).value
    return Status.FAILED.value, str(result.get("reason") or "error")


def outcome_label(status: str, reason: str) -> str:
    """The ``outcome`` label of ``aiotasks_runs_total``: success, or the failure's reason."""
    return status if status == Status.SUCCESS else reason or status


def counters_json(result: Mapping[str, Any]) -> str:
    """The body's own entries of a result dict as JSON, at most ``MAX_COUNTERS`` bytes."""
    if result.keys() <= _STANDARD:  # the common case, at the cost of one set comparison
        return ""
    counters = {k: v for k, v in result.items() if k not in _STANDARD and isinstance(k, str)}
    if not counters:
        return ""
    text = json.dumps(counters, default=str, separators=(",", ":"))
    while len(text.encode()) > MAX_COUNTERS and counters:
        counters.pop(next(reversed(counters)))
        text = json.dumps({**counters, "_truncated": True}, default=str, separators=(",", ":"))
    return text


def _retention(retention: int) -> bytes:
    found = _retentions.get(retention)
    if found is None:
        if len(_retentions) >= 64:
            _retentions.clear()
        found = _retentions[retention] = b"%d" % retention
    return found


def acquire_args(
    keys: TaskKeys, token: str, ttl_ms: int, check_success: bool, retention: int
) -> tuple[Any, ...]:
    """numkeys, KEYS and ARGV of the ACQUIRE script (without record keys when there is no record).

    The task's paused key goes last (an odd number of keys says it is there): a
    lock key of another shape than ``_keys.task_keys``'s (a caller's own) has
    no task name to pause by, and no record.
    """
    check = b"1" if check_success else b"0"
    found = _wire_keys(keys.lock)
    if found is None:
        return (2, keys.lock, keys.success, token, ttl_ms, check)
    state, history, date, paused = found
    if retention <= 0:
        return (3, keys.lock, keys.success, paused, token, ttl_ms, check)
    return (
        5, keys.lock, keys.success, state, history, paused,
        token, ttl_ms, check, _retention(retention), _pid_host[0], date,
    )  # fmt: skip


def finish_args(
    keys: TaskKeys, token: str, success_ttl: int, marker: str, outcome: Outcome | None
) -> tuple[Any, ...]:
    """numkeys, KEYS and ARGV of the FINISH script."""
    found = _wire_keys(keys.lock) if outcome is not None and outcome.retention_ms > 0 else None
    if found is None or outcome is None:
        return (2, keys.lock, keys.success, token, success_ttl, marker)
    return (4, keys.lock, keys.success, found[0], found[1], token, success_ttl, marker, *outcome.args())


def release_args(lock_key: str, token: str, outcome: Outcome | None) -> tuple[Any, ...]:
    """numkeys, KEYS and ARGV of the RELEASE script."""
    found = _wire_keys(lock_key) if outcome is not None and outcome.retention_ms > 0 else None
    if found is None or outcome is None:
        return (1, lock_key, token)
    return (3, lock_key, found[0], found[1], token, *outcome.args())


# -- the same, packed from formats made once per task --------------------------------------

#: The RESP formats of the ACQUIRE and FINISH requests (as ``EVALSHA``), per task and shape
#: (see :func:`acquire_request`); None for keys no format fits.
_formats: dict[tuple[Any, ...], bytes | None] = {}
_MAX_FORMATS: Final = 1024


def _split(keys: TaskKeys) -> tuple[str, str, str] | None:
    """The lock key's head and date and the marker's head, when the marker ends with the same date."""
    head, colon, date = keys.lock.rpartition(":")
    success = keys.success
    if not colon or not date or not success.endswith(date):
        return None
    return head + colon, date, success[: len(success) - len(date)]


def _format(key: tuple[Any, ...], make: Any) -> bytes | None:
    found = _formats.get(key, b"")
    if found == b"":
        if len(_formats) >= _MAX_FORMATS:
            _formats.clear()
        found = _formats[key] = make()
    return found


def _acquire_form(
    sha: str,
    keys: TaskKeys,
    head: str,
    success: str,
    day: int,
    run: int,
    ttl_ms: int,
    check: bool,
    records: bool,
) -> bytes | None:
    """The ACQUIRE request's format for keys of this shape: holes for the date (``day`` bytes),
    the token (``run`` bytes) and, with records, ``pid|host`` (its own hole: it changes in a
    forked child); None for a caller's own keys (no task to pause by, no record)."""
    found = _wire_keys(keys.lock)
    if found is None:
        return None
    args: list[bytes | tuple[bytes, int]] = [
        b"EVALSHA", sha.encode(), b"5" if records else b"3", (head.encode(), day), (success.encode(), day),
    ]  # fmt: skip
    if records:
        args += [(found[0][: len(found[0]) - len(found[2])], day), found[1]]
    args += [found[3], (b"", run), b"%d" % ttl_ms, b"1" if check else b"0"]
    return wire.template(args, 3 if records else 0)


def _finish_form(
    sha: str,
    keys: TaskKeys,
    head: str,
    success: str,
    day: int,
    run: int,
    success_ttl: int,
    marker: str,
    tail: int,
) -> bytes | None:
    """The FINISH request's format (see :func:`_acquire_form`): ``tail`` more arguments (the
    outcome's) follow as one hole; None for keys that can't have a record when ``tail`` asks for one."""
    found = _wire_keys(keys.lock) if tail else None
    if tail and found is None:
        return None
    args: list[bytes | tuple[bytes, int]] = [
        b"EVALSHA", sha.encode(), b"4" if found else b"2", (head.encode(), day), (success.encode(), day),
    ]  # fmt: skip
    if found is not None:
        args += [(found[0][: len(found[0]) - len(found[2])], day), found[1]]
    args += [(b"", run), b"%d" % success_ttl, marker.encode()]
    return wire.template(args, tail)


def _acquire_tail(retention: int, day: bytes) -> bytes:
    """The ARGV tail of a recorded acquire: retention, ``pid|host`` and the date."""
    pid_host = _pid_host[0]
    return b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        _retention_arg(retention),
        len(pid_host),
        pid_host,
        len(day),
        day,
    )


def _retention_arg(retention: int) -> bytes:
    found = _retention_args.get(retention)
    if found is None:
        value = _retention(retention)
        if len(_retention_args) >= 64:
            _retention_args.clear()
        found = _retention_args[retention] = b"$%d\r\n%b\r\n" % (len(value), value)
    return found


_retention_args: dict[int, bytes] = {}


def _outcome_tail(outcome: Outcome) -> bytes:
    """The FINISH request's outcome arguments, packed (a success without counters, with no ``str``)."""
    tail = outcome.args()
    packed, fresh = tail[0], tail[1]
    if len(tail) == 2 and isinstance(packed, bytes) and isinstance(fresh, bytes):
        return b"$%d\r\n%b\r\n$1\r\n%b\r\n" % (len(packed), packed, fresh)
    return wire.pack_args(tail)


def acquire_request(
    sha: str, keys: TaskKeys, token: str, ttl_ms: int, check_success: bool, retention: int
) -> bytes | None:
    """The ``EVALSHA`` request of :func:`acquire_args`, packed as ``_wire.pack`` packs it, from a
    format made once per task and shape: only the date and the token are filled in per run.

    None when no format fits (a caller's own keys): the door packs the arguments instead.
    """
    split = _split(keys)
    if split is None:
        return None
    head, date, success = split
    day, run = date.encode(), token.encode()
    records = retention > 0
    key = (sha, head, success, len(day), len(run), ttl_ms, check_success, records)
    form = _format(
        key,
        lambda: _acquire_form(sha, keys, head, success, len(day), len(run), ttl_ms, check_success, records),
    )
    if form is None:
        return None
    if records:
        return form % (day, day, day, run, _acquire_tail(retention, day))
    return form % (day, day, run)


def finish_request(
    sha: str, keys: TaskKeys, token: str, success_ttl: int, marker: str, outcome: Outcome | None
) -> bytes | None:
    """The ``EVALSHA`` request of :func:`finish_args`, packed from a format made once per task and
    shape (see :func:`acquire_request`); the outcome's fields are packed per run."""
    split = _split(keys)
    if split is None:
        return None
    head, date, success = split
    day, run = date.encode(), token.encode()
    tail = outcome.args() if outcome is not None and outcome.retention_ms > 0 else ()
    key = (sha, head, success, len(day), len(run), success_ttl, marker, len(tail))
    form = _format(
        key,
        lambda: _finish_form(sha, keys, head, success, len(day), len(run), success_ttl, marker, len(tail)),
    )
    if form is None:
        return None
    if not tail:
        return form % (day, day, run)
    assert outcome is not None
    return form % (day, day, day, run, _outcome_tail(outcome))


class RunForms:
    """One task's keys and its ACQUIRE and FINISH requests for one kind of run, made once.

    A kind of run is what the requests' constant parts depend on: the task,
    its namespace, Redis Cluster or not, the length of the run key (a date or a
    slot), whether the marker is checked, the retention. Per run only the
    key's date and the token (and at the finish a success's end) are filled
    in, with one ``%`` each: the same bytes :func:`acquire_request` and
    :func:`finish_request` make, without deriving the task's keys or formats
    again from the run's keys.
    """

    __slots__ = ("_acquire", "_day", "_finish", "_finish_plain", "_make", "_pid_host", "lock", "success")

    def __init__(
        self,
        keys: TaskKeys,
        date: str,
        ttl_ms: int,
        check: bool,
        retention: int,
        success_ttl: int,
        marker: str,
    ) -> None:
        split = _split(keys)
        if split is None or split[1] != date:
            raise ValueError(f"not a task's own keys: {keys}")
        head, _, success = split
        day = len(date.encode())
        #: The lock and marker keys without the run key.
        self.lock, self.success = head, success
        # The acquire's retention and pid|host are constants in its format (a forked child remakes it).
        self._make = functools.partial(
            _acquire_form, ACQUIRE.sha, keys, head, success, day, TOKEN_BYTES, ttl_ms, check
        )
        self._pid_host = b""
        self._day = day
        self._acquire = self._made(retention)
        # A success's two outcome arguments are the format's last holes: its packed outcome
        # (length varies) and its freshness.
        form = _finish_form(FINISH.sha, keys, head, success, day, TOKEN_BYTES, success_ttl, marker, 2)
        self._finish = None if form is None else form[:-2] + b"$%d\r\n%b\r\n$1\r\n%b\r\n"
        self._finish_plain = _finish_form(
            FINISH.sha, keys, head, success, day, TOKEN_BYTES, success_ttl, marker, 0
        )

    def _made(self, retention: int) -> bytes | None:
        self._pid_host = pid_host = _pid_host[0]
        form = self._make(retention > 0)
        if form is None or retention <= 0:
            return form
        value = _retention(retention)
        # The tail's first two arguments are constants: the format's holes are doubled ``%``s.
        constant = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(value), value, len(pid_host), pid_host)
        return form[:-2] + constant.replace(b"%", b"%%") + b"$%d\r\n%%b\r\n" % self._day

    def acquire(self, day: bytes, token: bytes, retention: int) -> bytes | None:
        """The run's ACQUIRE request (``day`` and ``token`` encoded; ``retention`` the one this
        kind of run was made for)."""
        form = self._acquire
        if form is None:
            return None
        if retention <= 0:
            return form % (day, day, token)
        if self._pid_host is not _pid_host[0]:
            form = self._acquire = self._made(retention)
            assert form is not None
        return form % (day, day, day, token, day)

    def finish(self, day: bytes, token: bytes, outcome: Outcome | None) -> bytes | None:
        """The run's FINISH request; None where the door must pack it (an outcome with texts,
        which the door first clears of the client's password, or other than a success)."""
        if outcome is None or outcome.retention_ms <= 0:
            return None if self._finish_plain is None else self._finish_plain % (day, day, token)
        if self._finish is None or outcome.status != _SUCCESS or not outcome.ended:
            return None
        if outcome.reason or outcome.error or outcome.counters:
            return None
        packed = b"%d|success||%d|" % (outcome.ended, outcome.attempts)  # as Outcome.args packs it
        return self._finish % (day, day, day, token, len(packed), packed, b"1" if outcome.fresh else b"0")


class CellState(StrEnum):
    """A (task, date) in the grid, and a run in history (``success``/``failed`` there)."""

    COMPLETED = "completed"
    FAILED = "failed"
    RUNNING = "running"
    ABANDONED = "abandoned"
    PENDING = "pending"
    #: A recurring task with no record for the date (it writes no marker: "pending" would mislead).
    RECURRING = "recurring"
    #: A scheduler woke too late for the slot (beyond its catch-up) and no host ran it.
    MISSED = "missed"
    #: The slot passed while its schedule was paused (``pause --schedule``): no host fired it.
    PAUSED = "paused"


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC (``2026-11-25T02:00:01.250Z``).

    A grid's JSON formats two per cell (9,000 for 50 tasks x 90 dates), so the date part is
    built once per day (``_days``) and the time of day from tables: 0.25 µs rather than 1.3 µs.
    The text is :func:`_iso_of`'s; outside 1834-2106 (``_FAST``) that one itself is used, since
    its float division rounds some milliseconds down from about 2242 on.
    """
    if ms is None:
        return None
    if not -_FAST < ms < _FAST:
        return _iso_of(ms)
    day, rest = divmod(ms, _DAY_MS)
    head = _days.get(day)
    if head is None:
        if len(_days) >= _MAX_DAYS:
            _days.clear()
        head = _days[day] = _iso_of(day * _DAY_MS)[:11]  # 'YYYY-MM-DDT'
    seconds, milli = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{head}{_TWO[hour]}:{_TWO[minute]}:{_TWO[second]}.{_MILLI[milli]}"


def _iso_of(ms: int) -> str:
    """:func:`iso` by ``datetime`` (the reference: the same text)."""
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_DAY_MS: Final = 86_400_000
#: :func:`iso`'s fast range, in ms either side of the epoch (2**32 s: 1834 to 2106).
_FAST: Final = 2**32 * 1000
#: 'YYYY-MM-DDT' per day since the epoch (:func:`iso`); cleared when full.
_days: dict[int, str] = {}
_MAX_DAYS: Final = 4096
_TWO: Final = tuple(f"{i:02d}" for i in range(60))
_MILLI: Final = tuple(f"{i:03d}Z" for i in range(1000))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as its record says, decoded once here for every reader.

    ``status`` is ``success``, ``failed``, ``running`` or ``abandoned``;
    ``started``/``ended`` are the Redis server's clock in ms since the epoch.
    """

    task: str
    date: str
    task_id: str
    status: str
    reason: str | None = None
    fence: int = 0
    host: str = ""
    pid: int = 0
    started: int | None = None
    ended: int | None = None
    attempts: int | None = None
    error: str | None = None
    counters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def triggered_by(self) -> str | None:
        """``host:pid`` of who asked for this run with ``aiotasks trigger``, else None.

        The run's result dict carries it (``TRIGGERED_BY``), so it is kept with
        the body's counters: no field of the record's layout changes.
        """
        found = self.counters.get(TRIGGERED_BY)
        return found if isinstance(found, str) else None

    @property
    def cancelled_by(self) -> str | None:
        """``host:pid`` of who cancelled this run with ``aiotasks cancel``, else None (kept as
        :attr:`triggered_by` is)."""
        found = self.counters.get(CANCELLED_BY)
        return found if isinstance(found, str) else None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, on the server's clock."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started) / 1000

    def to_json(self) -> dict[str, Any]:
        """The document ``history --json`` prints for one run."""
        return {
            "task": self.task,
            "date": self.date,
            "task_id": self.task_id,
            "status": self.status,
            "reason": self.reason,
            "host": self.host,
            "pid": self.pid,
            "started": iso(self.started),
            "ended": iso(self.ended),
            "duration": self.duration,
            "attempts": self.attempts,
            "errors": [self.error] if self.error else [],
            "fence": self.fence,
            "triggered_by": self.triggered_by,
            "cancelled_by": self.cancelled_by,
            "counters": {k: v for k, v in self.counters.items() if k not in _OURS},
        }


#: Result-dict entries the library adds, kept with the counters but shown apart from them.
_OURS: Final = frozenset({TRIGGERED_BY, CANCELLED_BY})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    text = _text(value)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _number(text: str | None) -> int | None:
    """:func:`_int` of a field already text (a record's parts): a grid decodes 5 per cell."""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def decode_record(
    task: str, date: str, token: str, start: Any, outcome: Any, counters: Any, holder: Any
) -> RunRecord | None:
    """A record from its fields in the runs hash (None if it has no start: expired).

    ``start`` is ``'fence|started|pid|host'``, ``outcome`` ``'ended|status|reason|
    attempts|first error'`` or None: no outcome reads ``running`` while the run's
    token holds its date's lock, else ``abandoned``. ``counters`` is JSON or None.
    """
    started = _text(start)
    if started is None:
        return None
    fence, began, pid, host = [*started.split("|", 3), "", "", "", ""][:4]
    ended: str | None = None
    reason = error = attempts = None
    said = _text(outcome)
    if said is None:
        status = CellState.RUNNING.value if _text(holder) == token else CellState.ABANDONED.value
    else:
        ended, status, reason, attempts, error = [*said.split("|", 4), "", "", "", "", ""][:5]
    loaded: Any = None
    raw = _text(counters)
    if raw:
        try:
            loaded = json.loads(raw)
        except ValueError:
            loaded = None
    return RunRecord(
        task=task,
        date=date,
        task_id=token,
        status=status,
        reason=reason or None,
        fence=_number(fence) or 0,
        host=host,
        pid=_number(pid) or 0,
        started=_number(began),
        ended=_number(ended),
        attempts=_number(attempts),
        error=error or None,
        counters=loaded if isinstance(loaded, dict) else {},
    )


@dataclass(frozen=True, slots=True)
class Cell:
    """One (task, date) of the grid: its state and the latest run behind it."""

    state: CellState
    reason: str | None = None
    holder: str | None = None
    ttl_ms: int | None = None
    run: RunRecord | None = None
    #: A running cell: ``host:pid`` of who asked to cancel it (``aiotasks cancel``), not yet acted on.
    cancel_requested_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The grid's JSON cell: ``state`` and whatever else is known."""
        cell: dict[str, Any] = {"state": self.state.value}
        if self.reason:
            cell["reason"] = self.reason
        if self.holder is not None:
            cell["holder"] = self.holder
            cell["ttl_s"] = round((self.ttl_ms or 0) / 1000, 1)
        if self.cancel_requested_by is not None:
            cell["cancel_requested_by"] = self.cancel_requested_by
        if self.run is not None:
            run = self.run
            cell.update(task_id=run.task_id, host=run.host, pid=run.pid, started=iso(run.started))
            if run.ended is not None:
                cell.update(ended=iso(run.ended), duration=run.duration)
            if run.error:
                cell["error"] = run.error
            if run.triggered_by:
                cell["triggered_by"] = run.triggered_by
            if run.cancelled_by:
                cell["cancelled_by"] = run.cancelled_by
        return cell


def decode_cell(task: str, date: str, reply: Sequence[Any], at: int = 0) -> Cell:
    """A grid cell from the GRID script's reply for one date: its 7 entries from ``reply[at]``.

    The lock wins (``running``), then the marker (``completed``: markers are
    written by success only, also by hand in seed-style code), then the latest
    run's record (a recurring task shows its last run), else ``pending``. The
    script leaves the marker unread where it can't change the cell (a holder, or
    a latest run that succeeded), and the counters out unless they name who
    triggered or cancelled the run: a cell's run has no other counters.
    """
    exists, holder, pttl, token = reply[at], _text(reply[at + 1]), int(reply[at + 2]), _text(reply[at + 3])
    run = None
    if token is not None:
        run = decode_record(task, date, token, reply[at + 4], reply[at + 5], reply[at + 6], holder)
    if holder is not None:
        mine = run if run is not None and run.task_id == holder else None
        return Cell(CellState.RUNNING, holder=holder, ttl_ms=pttl, run=mine)
    if exists:
        return Cell(CellState.COMPLETED, run=run if run and run.status == Status.SUCCESS else None)
    if run is None:
        return Cell(CellState.PENDING)
    if run.status == Status.SUCCESS:
        return Cell(CellState.COMPLETED, run=run)
    if run.status == CellState.ABANDONED or run.status == CellState.RUNNING:
        return Cell(CellState.ABANDONED, run=run)
    if run.status == CellState.MISSED or run.status == CellState.PAUSED:
        return Cell(CellState(run.status), run=run)
    return Cell(CellState.FAILED, reason=run.reason, run=run)


_NOT_RUN: Final = frozenset({CellState.MISSED.value, CellState.PAUSED.value})


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """One task's recent runs and its last success/failure, as metrics need them.

    ``last_duration`` is that of the newest finished run among ``runs``.
    """

    task: str
    last_success: int | None
    last_failure: int | None
    last_duration: float | None
    runs: list[RunRecord]

    @property
    def running(self) -> int:
        """How many of ``runs`` hold their lock right now."""
        return sum(1 for run in self.runs if run.status == CellState.RUNNING)


async def read_grid(
    store: Store, tasks: Sequence[str], dates: Sequence[str], *, namespace: str | None
) -> dict[str, dict[str, Cell]]:
    """Every (task, date) cell: one GRID script per task, sent together (one coalesced batch)."""
    if not dates:
        return {task: {} for task in tasks}

    def prefixes_of(task: str) -> tuple[str, str, str]:
        # A key prefix is a key built with an empty date: ``lock:T:``, ``success:T:``, ``run:T:``.
        lock, success = task_keys(task, "", namespace=namespace, cluster=store.cluster)
        found = task_record_keys(task, namespace=namespace, cluster=store.cluster)
        return lock, success, found.records if found else lock

    replies = await asyncio.gather(*(store.read_grid(prefixes_of(task), dates) for task in tasks))
    starts = range(0, 7 * len(dates), 7)
    return {
        task: {date: decode_cell(task, date, reply, at) for at, date in zip(starts, dates, strict=True)}
        for task, reply in zip(tasks, replies, strict=True)
    }


async def record_missed(
    store: Store,
    retention: Mapping[str, int],
    key: str,
    *,
    namespace: str | None,
    note: str,
    status: CellState = CellState.MISSED,
) -> int:
    """Record that no host ran ``key`` (a scheduler's slot) for each task: one MISSED script per task.

    Each task whose slot has no marker, no lock and no record gets a record
    with token and status ``status`` (``note`` as its error text); replicas
    that all did not run the slot write it once. Tasks with a retention of 0
    are left out.

    :param retention: each task's retention in ms.
    :param status: ``missed`` (the scheduler woke too late) or ``paused`` (its schedule was paused).
    :returns: how many records were written.
    """
    calls = []
    for task, keep in retention.items():
        keys = task_keys(task, key, namespace=namespace, cluster=store.cluster)
        found = record_keys(keys.lock)
        if keep > 0 and found is not None:
            args = (keep, _pid_host[0], key, note[:MAX_ERROR].replace("|", "/"), status.value)
            calls.append(store.mark_missed((keys.lock, keys.success, found.state, found.history), args))
    return sum(await asyncio.gather(*calls))


async def read_runs(
    store: Store, tasks: Sequence[str], *, namespace: str | None, last: int
) -> dict[str, TaskSummary]:
    """Each task's ``last`` newest runs and summary: one RUNS script per task, sent together."""
    found = {task: task_record_keys(task, namespace=namespace, cluster=store.cluster) for task in tasks}
    replies = await asyncio.gather(
        *(store.read_runs(k.history, last, k.records, k.locks) for k in found.values() if k)
    )
    summaries: dict[str, TaskSummary] = {}
    for task, reply in zip([t for t, k in found.items() if k], replies, strict=True):
        runs = []
        for member, holder, start, outcome, counters in reply[2:]:
            date, _, token = str(_text(member)).rpartition(":")
            run = decode_record(task, date, token, start, outcome, counters, holder)
            if run is not None:  # else the record expired before the index entry was trimmed
                runs.append(run)
        # A slot no host ran (missed, paused) has a record but no run: it took no time.
        finished = next(
            (run.duration for run in runs if run.duration is not None and run.status not in _NOT_RUN), None
        )
        summaries[task] = TaskSummary(task, _int(reply[0]), _int(reply[1]), finished, runs)
    return summaries
