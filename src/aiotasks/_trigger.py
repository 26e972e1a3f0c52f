"""Run now: ask the serving fleet to run a schedule's chain for one key (``aiotasks trigger``).

A request is a JSON document pushed onto the schedule's ``triggers`` list
(:func:`aiotasks._keys.schedule_keys`)::

    {"id": "9f1c...", "schedule": "nightly", "key": "20261125", "force": false,
     "by": "host:pid", "expires_at": 1795000000000}

Every serving :class:`~aiotasks.Scheduler` watches all its schedules' lists
with one blocking ``BRPOP`` (see ``_scheduler``), so exactly one replica pops
each request: Redis hands a list's entry to one blocked client. That replica
claims it (``...:triggers:claim:ID``, set once: a push the door retried
after a lost reply may have put the request on the list twice, and only the
first pop of an id runs it) while answering on the request's own reply list
(``...:triggers:reply:ID``, a short TTL) ``taken`` (by ``host:pid``, with the
key), runs the chain for the key under the usual locks and markers
(``force`` ignores the markers, never a lock), each task's record saying
who asked, and answers ``done`` with the chain's results; or ``expired`` (it
popped the request too late: dropped) or ``rejected`` (the key is not one of
the schedule's).

A request nobody pops before ``expires_at`` is withdrawn by the requester
(``LREM``): it can't run later, after the caller was told it expired. The
replicas compare ``expires_at`` with their own clock, so clock skew between
hosts shifts the expiry by as much.

What is lost when a process dies: a requester that dies leaves its request to
be run (it was asked for) or to expire; a replica killed between its pop and
its ``taken`` reply loses the request (the requester hears nothing and says
so); killed while it runs the chain, its locks free within their TTL and the
key's markers say what completed: trigger again to finish the rest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ._clock import current_clock
from ._context import resolve
from ._errors import InvalidDate, InvalidSchedule, TriggerExpired
from ._keys import check_namespace, check_schedule_name, is_slot_key, parse_run_key, schedule_keys
from ._records import HOST
from ._schedule import Schedule
from ._store import AnyRedis, Store, Watcher

__all__ = ["TriggerRequest", "Triggered", "reply_key", "trigger", "trigger_key"]

logger = logging.getLogger("aiotasks.trigger")

#: Seconds a request waits for a replica unless told otherwise.
DEFAULT_EXPIRES: Final = 30.0
#: The longest a request may wait (a day).
MAX_EXPIRES: Final = 86400.0
#: Seconds a reply list outlives its last reply (a requester reads it at once, if it is alive).
REPLY_TTL: Final = 300
#: Seconds a requester still waits for the reply of a request that was popped as it expired.
REPLY_GRACE: Final = 5.0
#: The longest single blocking read of a requester (it then checks its deadline again).
_READ: Final = 1.0


def _me() -> str:
    return f"{HOST}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    """One request, as it travels on a schedule's ``triggers`` list."""

    id: str
    schedule: str
    key: str | None
    force: bool
    by: str
    #: ms since the epoch on the requester's clock.
    expires_at: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "schedule": self.schedule,
                "key": self.key,
                "force": self.force,
                "by": self.by,
                "expires_at": self.expires_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> TriggerRequest:
        """Decode a request; :class:`ValueError` for anything that is not one."""
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError("not an object")
        request = cls(
            str(found["id"]),
            str(found["schedule"]),
            None if found.get("key") is None else str(found["key"]),
            bool(found.get("force", False)),
            str(found.get("by", "?")),
            int(found["expires_at"]),
        )
        if not request.id.isalnum():
            raise ValueError(f"bad id {request.id!r}")
        return request


@dataclass(frozen=True, slots=True)
class Triggered:
    """What :func:`trigger` learnt: who took the request and, with ``wait``, how the chain ended.

    :ivar results: each task's result dict (with ``wait``), else None.
    """

    id: str
    schedule: str
    key: str
    taken_by: str
    results: dict[str, dict[str, Any]] | None = field(default=None)


def reply_key(triggers: str, request_id: str) -> str:
    """The list a replica answers one request on (same hash tag as the triggers list)."""
    return f"{triggers}:reply:{request_id}"


def trigger_key(schedule: Schedule, key: str | dt.date | None, now: dt.datetime) -> str:
    """The run key a trigger of ``schedule`` runs: ``key`` checked against it, else the slot due now.

    The default is the latest slot at or before ``now``: a daily schedule's
    logical date of its last fire time (at 01:00 for a 02:00 schedule,
    yesterday's), a sub-daily schedule's current slot.

    :raises InvalidDate: ``key`` is not a date or slot, or not of this schedule's
        kind (a date for a daily schedule, a slot of its own for a sub-daily one).
    """
    if key is None:
        last = schedule.last_slot(now)
        return last.key if last is not None else schedule.key(now)
    found = parse_run_key(key)
    if schedule.daily:
        if is_slot_key(found):
            raise InvalidDate(
                f"invalid key {found!r} for schedule {schedule.name!r}: it runs once a day, keyed by "
                "its date YYYYMMDD",
                key,
            )
        return found
    sample = schedule.key(now)
    if not is_slot_key(found) or len(found) != len(sample):
        raise InvalidDate(
            f"invalid key {found!r} for schedule {schedule.name!r}: it keys each run by its slot, "
            f"like {sample!r}",
            key,
        )
    seconds = int(found[13:15] or 0)
    wall = dt.datetime(
        int(found[:4]), int(found[4:6]), int(found[6:8]), int(found[9:11]), int(found[11:13]), seconds
    )
    # A key is a wall time: in a repeated hour it names two instants, and the slot
    # may be at either (every="40m" fires 02:20 on the second pass only). Step back
    # in real time: a second before 03:00 on the wall is skipped on a spring-forward day.
    instants = (wall.replace(tzinfo=schedule.zone, fold=fold).astimezone(dt.UTC) for fold in (0, 1))
    if all(schedule.next_slot(at - dt.timedelta(seconds=1)).key != found for at in instants):
        raise InvalidDate(f"invalid key {found!r}: schedule {schedule.name!r} has no such slot", key)
    return found


def check_expires(expires: object) -> float:
    """Validate a request's lifetime in seconds (more than 0, at most a day)."""
    if isinstance(expires, bool) or not isinstance(expires, int | float) or not 0 < expires <= MAX_EXPIRES:
        raise InvalidSchedule(
            f"expires must be a number of seconds above 0 and at most {MAX_EXPIRES:g}, not {expires!r}",
            expires,
        )
    return float(expires)


async def trigger(
    schedule: Schedule | str,
    *,
    key: str | dt.date | None = None,
    force: bool = False,
    redis: AnyRedis | None = None,
    namespace: str | None = None,
    expires: float = DEFAULT_EXPIRES,
    wait: bool = False,
    on_taken: Callable[[Triggered], object] | None = None,
) -> Triggered:
    """Ask the serving schedulers to run ``schedule``'s chain for ``key`` now; one replica does.

    ::

        taken = await aiotasks.trigger(nightly, key="20261124", redis=client)
        print(taken.taken_by)  # host:pid of the replica that runs it

    :param schedule: the :class:`Schedule` (its key is then checked here), or its name.
    :param key: the run key: a date ``YYYYMMDD`` (daily schedules) or a slot
        ``YYYYMMDDTHHMM[SS]``. Default: the slot due now (see :func:`trigger_key`;
        with a bare name, the replica that takes it decides).
    :param force: ignore success markers: completed tasks run again (a lock is never ignored).
    :param redis: the client (as :func:`run_chain`).
    :param namespace: the schedulers' key prefix (default ``AIOTASKS_NAMESPACE``).
    :param expires: seconds the request waits for a replica to take it.
    :param wait: also wait for the chain's outcome (:attr:`Triggered.results`).
        A replica that dies mid-run leaves this waiting: cancel it.
    :param on_taken: called once a replica took the request (before the wait).
    :raises TriggerExpired: no replica took the request within ``expires``.
    :raises InvalidInput: ``InvalidSchedule``, ``InvalidDate`` or ``InvalidConfig``: bad input, before
        anything is written; ``InvalidDate`` also when the replica refuses the key (given with a bare name).
    """
    name = schedule.name if isinstance(schedule, Schedule) else schedule
    check_schedule_name(name)
    assert name is not None
    if isinstance(schedule, Schedule):
        run_key: str | None = trigger_key(schedule, key, current_clock().now())
    else:
        run_key = None if key is None else parse_run_key(key)
    lifetime = check_expires(expires)
    if namespace is not None:
        check_namespace(namespace)
    store, bound, _ = resolve(redis)
    keys = schedule_keys(name, namespace=bound if namespace is None else namespace)
    started = time.monotonic()
    request = TriggerRequest(
        secrets.token_hex(8),
        name,
        run_key,
        bool(force),
        _me(),
        int(current_clock().now().timestamp() * 1000 + lifetime * 1000),
    )
    entry = request.to_json()
    replies = reply_key(keys.triggers, request.id)
    await store.push(keys.triggers, entry, round(lifetime * 1000) + 60_000, head=True)
    watcher = store.watcher()
    try:
        taken = await _read(watcher, replies, started + lifetime)
        if taken is None:
            if await store.withdraw(keys.triggers, entry):
                raise TriggerExpired(
                    f"no replica serves schedule {name!r}: the request expired after {lifetime:g} s", name
                )
            # A replica popped it as it expired: its reply is on its way.
            taken = await _read(watcher, replies, time.monotonic() + REPLY_GRACE)
            if taken is None:
                raise TriggerExpired(
                    f"schedule {name!r}: a replica took the request as it expired but never answered "
                    "(it may have died); see `history`",
                    name,
                )
        state = taken.get("state")
        if state == "expired":
            raise TriggerExpired(
                f"schedule {name!r}: the request expired after {lifetime:g} s before a replica got to it "
                f"({taken.get('by', '?')} dropped it)",
                name,
            )
        if state == "rejected":
            raise InvalidDate(f"{taken.get('by', '?')} refused the trigger: {taken.get('error')}", key)
        result = Triggered(request.id, name, str(taken.get("key")), str(taken.get("by")))
        if on_taken is not None:
            on_taken(result)
        if not wait:
            return result
        while True:
            done = await _read(watcher, replies, None)
            if done is not None and done.get("state") == "done":
                results = done.get("results")
                return Triggered(
                    result.id, name, result.key, result.taken_by, results if isinstance(results, dict) else {}
                )
    finally:
        await watcher.close()


async def _read(watcher: Watcher, replies: str, deadline: float | None) -> dict[str, Any] | None:
    """The next reply on ``replies``, waiting until ``deadline`` (monotonic; None: for ever)."""
    while True:
        left = _READ if deadline is None else min(_READ, deadline - time.monotonic())
        if left <= 0:
            return None
        popped = await watcher.pop([replies], max(left, 0.01), tail=False)
        if popped is not None:
            try:
                found = json.loads(popped[1])
            except ValueError:
                logger.warning("ignoring a malformed reply on %s", replies)
                continue
            if isinstance(found, dict):
                return found


async def claim(store: Store, triggers: str, request: TriggerRequest, now_ms: int, **reply: Any) -> bool:
    """Claim a popped request and answer ``taken`` (``reply``), in one request: False when another
    pop of the same id claimed it first (a push that was retried put it on the list twice)."""
    token = secrets.token_hex(8)
    ttl = max(request.expires_at - now_ms, 0) + REPLY_TTL * 1000
    entry = json.dumps(reply, default=str, separators=(",", ":"))
    return await store.claim(
        f"{triggers}:claim:{request.id}", reply_key(triggers, request.id), token, ttl, entry, REPLY_TTL * 1000
    )


async def answer(store: Store, triggers: str, request_id: str, **reply: Any) -> None:
    """Push one reply to a request's reply list (a replica's side); a failure is logged only."""
    try:
        entry = json.dumps(reply, default=str, separators=(",", ":"))
        await store.push(reply_key(triggers, request_id), entry, REPLY_TTL * 1000, head=False)
    except Exception as exc:
        logger.warning("could not answer trigger %s (%s)", request_id, exc)
