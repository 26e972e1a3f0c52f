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
acquired, renewing or releasing again is harmless, and finishing again reports
the marker that the first attempt wrote.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

__all__ = ["ACQUIRE", "FINISH", "GRID", "RELEASE", "RENEW", "RUNS", "STATUS", "Script"]


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
-- KEYS[3..5] - optional, all three or none (no run record): the (task, date)'s
--   state hash (fence counter, latest run's token), the task's history index
--   (ZSET of 'date:token' scored by start time in ms) and this run's record
--   (HASH; its key is the state key .. ':' .. token)
-- ARGV[1] - the run's token (its task_id)
-- ARGV[2] - the lock's TTL in milliseconds
-- ARGV[3] - '1' to skip when the marker exists, '0' to ignore the marker
-- ARGV[4..7] - with the record keys: retention in ms, host, pid, date
-- return {1, fence, started ms} the lock is ours (also when it already held
--            this token: a retried acquire is idempotent, resets the TTL, never
--            stretches it, and hands back the first attempt's fence);
--        {2} the marker exists: already completed, nothing written;
--        {3, holder, pttl} another token holds the lock, with its TTL left in ms
if ARGV[3] == '1' and redis.call('exists', KEYS[2]) == 1 then
    return {2}
end
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    local holder = redis.call('get', KEYS[1])
    if holder ~= ARGV[1] then
        return {3, holder, redis.call('pttl', KEYS[1])}
    end
    redis.call('pexpire', KEYS[1], ARGV[2])
    if #KEYS < 5 then
        return {1, 0, 0}
    end
    local first = redis.call('hmget', KEYS[5], 'fence', 'started')
    return {1, tonumber(first[1]) or 0, tonumber(first[2]) or 0}
end
if #KEYS < 5 then
    return {1, 0, 0}
end
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local keep = tonumber(ARGV[4])
-- The fence only grows: +1 per acquisition while the state hash lives (it
-- outlives locks by the retention), and a new state hash starts from the
-- server's clock in ms, above any fence handed out before it expired.
local fence = redis.call('hincrby', KEYS[3], 'fence', 1)
if fence == 1 then
    fence = now
    redis.call('hset', KEYS[3], 'fence', string.format('%d', now))
end
-- The previous run of this (task, date) wrote no outcome and its lock is gone
-- (we just took it): its worker died, or it lost the lock and is still
-- paused. Say so now; its own late outcome, if any, overwrites this.
local previous = redis.call('hget', KEYS[3], 'last')
if previous and previous ~= ARGV[1] then
    local old = string.sub(KEYS[5], 1, #KEYS[5] - #ARGV[1]) .. previous
    if redis.call('hexists', old, 'status') == 0 and redis.call('exists', old) == 1 then
        redis.call('hset', old, 'status', 'abandoned')
    end
end
redis.call('hset', KEYS[3], 'last', ARGV[1])
redis.call('pexpire', KEYS[3], keep)
local started = string.format('%d', now)
redis.call('hset', KEYS[5], 'fence', fence, 'host', ARGV[5], 'pid', ARGV[6], 'started', started)
redis.call('pexpire', KEYS[5], keep)
redis.call('zadd', KEYS[4], now, ARGV[7] .. ':' .. ARGV[1])
redis.call('zremrangebyscore', KEYS[4], '-inf', now - keep)
redis.call('pexpire', KEYS[4], keep)
return {1, fence, now}
""",
)

# Shared by FINISH and RELEASE: write a run's outcome into its record, once.
_WRITE_OUTCOME: Final = """
-- record, summary: the run's record and the task's summary hash (last success,
-- last failure, last duration: what metrics read); the outcome comes from
-- ARGV[at ..]: retention ms, status, reason, attempts, first error, counters
-- JSON ('' for none); status and reason may be overridden by the caller.
-- Writes nothing when the record does not exist (never started, or expired:
-- never create one without its TTL) or already has an outcome (a retried call,
-- or the seed's release after a finish); an 'abandoned' mark is overwritten.
local function write_outcome(record, summary, at, status, reason, error)
    local found = redis.call('hmget', record, 'started', 'status')
    local started, current = found[1], found[2]
    if not started or (current and current ~= 'abandoned') then
        return
    end
    local time = redis.call('time')
    local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    local ended = string.format('%d', now)
    local fields = {'status', status, 'ended', ended, 'attempts', ARGV[at + 3]}
    if reason ~= '' then
        fields[#fields + 1], fields[#fields + 2] = 'reason', reason
    end
    if error ~= '' then
        fields[#fields + 1], fields[#fields + 2] = 'error', error
    end
    if ARGV[at + 5] ~= '' then
        fields[#fields + 1], fields[#fields + 2] = 'counters', ARGV[at + 5]
    end
    redis.call('hset', record, unpack(fields))
    local last = status == 'success' and 'success' or 'failure'
    redis.call('hset', summary, last, ended, 'duration', now - tonumber(started))
    redis.call('pexpire', summary, ARGV[at])
end
"""

FINISH: Final = Script(
    "finish",
    _WRITE_OUTCOME
    + """
-- KEYS[1] - the lock key
-- KEYS[2] - the success-marker key
-- KEYS[3], KEYS[4] - optional, both or none: this run's record, the task's summary hash
-- ARGV[1] - the run's token
-- ARGV[2] - the marker's TTL in seconds
-- ARGV[3] - the marker's value
-- ARGV[4..9] - with the record keys: retention ms, 'success', '', attempts, '', counters
-- return 1 the lock was ours: marker written and lock deleted, in one step;
--        2 the lock is not ours but the marker exists (a retried finish whose
--          first attempt landed): nothing written;
--        0 the lock is not ours and there is no marker: nothing written
-- The record gets the outcome in all three cases (failed, lock_lost for 0):
-- it is keyed by this run's own token, so that is safe without the lock.
local code = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[2], ARGV[3], 'EX', ARGV[2])
    redis.call('del', KEYS[1])
    code = 1
elseif redis.call('exists', KEYS[2]) == 1 then
    code = 2
end
if #KEYS >= 4 then
    if code == 0 then
        local lost = 'lock lost before the run could be recorded: it expired or was taken'
        write_outcome(KEYS[3], KEYS[4], 4, 'failed', 'lock_lost', lost)
    else
        write_outcome(KEYS[3], KEYS[4], 4, ARGV[5], ARGV[6], ARGV[8])
    end
end
return code
""",
)

RELEASE: Final = Script(
    "release",
    _WRITE_OUTCOME
    + """
-- KEYS[1] - the lock key
-- KEYS[2], KEYS[3] - optional, both or none: this run's record, the task's summary hash
-- ARGV[1] - the run's token
-- ARGV[2..7] - with the record keys: retention ms, status, reason, attempts,
--              first error, counters; status '' writes no outcome
-- return 1 the lock was ours and is deleted; 0 it is not ours: lock untouched
-- The record gets the outcome either way (keyed by this run's own token).
local code = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
    code = redis.call('del', KEYS[1])
end
if #KEYS >= 3 and ARGV[3] ~= '' then
    write_outcome(KEYS[2], KEYS[3], 2, ARGV[3], ARGV[4], ARGV[6])
end
return code
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

GRID: Final = Script(
    "grid",
    """
-- KEYS - for each date of one task, three keys: its lock, its success marker,
--        its state hash (whose 'last' names the latest run's token)
-- return for each date {marker exists, lock holder, lock TTL ms, latest token,
--        that run's status, reason, host, pid, started, ended, error, attempts, fence}
-- Read-only. One task per call (on a cluster its keys share one slot); the
-- record's key is the state key .. ':' .. token.
local cells = {}
for i = 1, #KEYS, 3 do
    local holder = redis.call('get', KEYS[i])
    local cell = {redis.call('exists', KEYS[i + 1]), holder, holder and redis.call('pttl', KEYS[i]) or -2}
    local last = redis.call('hget', KEYS[i + 2], 'last')
    cell[4] = last
    if last then
        local fields = redis.call('hmget', KEYS[i + 2] .. ':' .. last,
            'status', 'reason', 'host', 'pid', 'started', 'ended', 'error', 'attempts', 'fence')
        for j = 1, 9 do
            cell[4 + j] = fields[j]
        end
    end
    cells[#cells + 1] = cell
end
return cells
""",
)

RUNS: Final = Script(
    "runs",
    """
-- KEYS[1] - one task's history index (ZSET of 'date:token', score = start ms)
-- KEYS[2] - the task's summary hash (last success, last failure, last duration)
-- ARGV[1] - how many runs, newest first
-- ARGV[2] - the records' key prefix: a record is ARGV[2] .. date .. ':' .. token
-- ARGV[3] - the locks' key prefix: a date's lock is ARGV[3] .. date
-- return {summary as field, value, ...; then per run {member, holder of its
--        date's lock, its record as field, value, ...}}
-- Read-only. The records and locks are named, not passed: they share the
-- task's hash slot on a cluster, and are only known once the index is read.
local out = {redis.call('hgetall', KEYS[2])}
for _, member in ipairs(redis.call('zrevrange', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
    local date = string.match(member, '^(.*):[^:]*$')
    out[#out + 1] = {member, redis.call('get', ARGV[3] .. date), redis.call('hgetall', ARGV[2] .. member)}
end
return out
""",
)
