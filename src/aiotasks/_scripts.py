"""Every Lua script aiotasks runs, in one place.

Each script is atomic on the server, compares the caller's token before it
changes a lock, and touches only the keys it is given (one task's lock and
marker, which share a hash slot on Redis Cluster).

Scripts are sent as ``EVALSHA`` and fall back to ``EVAL`` (which also loads
them) when the server answers ``NOSCRIPT``: after a restart, a failover, or on
a cluster node that has not seen them yet. redis-py's ``register_script``
helper does the same for one command, but inside a pipeline it first sends
``SCRIPT EXISTS`` on every execution, an extra round trip per batch; the Redis
door (``_store``) therefore sends ``EVALSHA`` itself and falls back per command.

Every script is safe to retry after a lost reply (the door retries
connection errors): acquiring again with the same token reports the lock as
acquired, renewing again is harmless, releasing again reports that no lock is
left (which the door, knowing it retried, takes as released), and finishing
again reports the marker that the first attempt wrote.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

__all__ = ["ACQUIRE", "FINISH", "RELEASE", "RENEW", "STATUS", "Script"]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1, computed once at import."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


ACQUIRE: Final = Script(
    "acquire",
    """
-- KEYS[1] - the lock key
-- KEYS[2] - the success-marker key
-- ARGV[1] - the run's token (its task_id)
-- ARGV[2] - the lock's TTL in milliseconds
-- ARGV[3] - '1' to skip when the marker exists, '0' to ignore the marker
-- return {1} the lock is ours (also when it already held this token: a retried
--            acquire is idempotent and resets the TTL, never stretches it);
--        {2} the marker exists: already completed, nothing written;
--        {3, holder, pttl} another token holds the lock, with its TTL left in ms
if ARGV[3] == '1' and redis.call('exists', KEYS[2]) == 1 then
    return {2}
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {1}
end
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return {1}
end
return {3, holder, redis.call('pttl', KEYS[1])}
""",
)

FINISH: Final = Script(
    "finish",
    """
-- KEYS[1] - the lock key
-- KEYS[2] - the success-marker key
-- ARGV[1] - the run's token
-- ARGV[2] - the marker's TTL in seconds
-- ARGV[3] - the marker's value
-- return 1 the lock was ours: marker written and lock deleted, in one step;
--        2 the lock is not ours but the marker exists (a retried finish whose
--          first attempt landed): nothing written;
--        0 the lock is not ours and there is no marker: nothing written
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[2], ARGV[3], 'EX', ARGV[2])
    redis.call('del', KEYS[1])
    return 1
end
if redis.call('exists', KEYS[2]) == 1 then
    return 2
end
return 0
""",
)

RELEASE: Final = Script(
    "release",
    """
-- KEYS[1] - the lock key
-- ARGV[1] - the run's token
-- return 1 the lock was ours and is deleted;
--        0 another token holds it: nothing written;
--        -1 there is no lock: it expired, or (for a retry) the earlier attempt
--           whose reply was lost deleted it
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
    return redis.call('del', KEYS[1])
end
if holder then
    return 0
end
return -1
""",
)

RENEW: Final = Script(
    "renew",
    """
-- KEYS[1] - the lock key
-- ARGV[1] - the run's token
-- ARGV[2] - the lock's TTL in milliseconds
-- return 1 the lock is ours and its TTL is reset to ARGV[2] (set, never added
--          to: a worker that dies leaves a key that frees within one TTL);
--        0 it is not ours (expired or taken): nothing written
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
""",
)

STATUS: Final = Script(
    "status",
    """
-- KEYS[1] - the lock key
-- KEYS[2] - the success-marker key
-- return {marker exists (0 or 1), lock holder's token or nil, lock TTL in ms (-2 if none)}
-- Read-only; one script rather than three commands so that one (task, date)
-- costs one command in a coalesced batch.
return {redis.call('exists', KEYS[2]), redis.call('get', KEYS[1]), redis.call('pttl', KEYS[1])}
""",
)
