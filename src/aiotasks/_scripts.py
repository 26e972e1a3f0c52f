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

__all__ = [
    "ACQUIRE",
    "CANCEL",
    "CLAIM",
    "CLEAR",
    "FINISH",
    "GRID",
    "MISSED",
    "PUSH",
    "RELEASE",
    "RENEW",
    "RUNS",
    "SCHEDULE",
    "STATUS",
    "Script",
]


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
-- KEYS[3], KEYS[4] - optional, both or none (no run record): the (task, date)'s
--   runs hash and the task's history index (see _records for their layout)
-- KEYS[#KEYS] - when #KEYS is odd (3 or 5): the task's paused key (_keys.paused_key)
-- ARGV[1] - the run's token (its task_id)
-- ARGV[2] - the lock's TTL in milliseconds
-- ARGV[3] - '1' to skip when the marker exists, '0' to ignore the marker
-- ARGV[4..6] - with the record keys: retention in ms, 'pid|host', date
-- return {1, fence, started ms} the lock is ours (also when it already held
--            this token: a retried acquire is idempotent, resets the TTL, never
--            stretches it, and hands back the first attempt's fence);
--        {2} the marker exists: already completed, nothing written;
--        {3, holder, pttl} another token holds the lock, with its TTL left in ms;
--        {4} the task is paused (aiotasks pause --task): nothing written
-- A paused task starts nowhere; a completed one stays completed (checked first,
-- so its dependents still count it done). A retried acquire whose first attempt
-- took the lock before the pause finds its own token and keeps it (below), so
-- the door never has a lock it can't give back. Both keys are asked about in
-- one EXISTS (a call less per run); only when one exists is it told which.
local marker = ARGV[3] == '1'
local paused = #KEYS % 2 == 1
if marker and paused then
    if redis.call('exists', KEYS[2], KEYS[#KEYS]) == 0 then
        marker, paused = false, false
    end
end
if marker and redis.call('exists', KEYS[2]) == 1 then
    return {2}
end
if paused and redis.call('exists', KEYS[#KEYS]) == 1 and redis.call('get', KEYS[1]) ~= ARGV[1] then
    return {4}
end
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    local holder = redis.call('get', KEYS[1])
    if holder ~= ARGV[1] then
        return {3, holder, redis.call('pttl', KEYS[1])}
    end
    redis.call('pexpire', KEYS[1], ARGV[2])
    if not KEYS[4] then
        return {1, 0, 0}
    end
    local fence, started = string.match(redis.call('hget', KEYS[3], ARGV[1]) or '', '^(%d+)|(%d+)|')
    return {1, tonumber(fence) or 0, tonumber(started) or 0}
end
if not KEYS[4] then
    return {1, 0, 0}
end
-- Every redis.call costs the server about a microsecond, a new key or member
-- more: a new date's run makes six (TIME, HGET, HSET, PEXPIRE, ZADD, PEXPIRE).
-- Lua's own work shows too: numbers stay strings (the start in ms is TIME's
-- seconds and the first three of its six microsecond digits), the arguments
-- come apart (no pattern splits them).
local time = redis.call('time')
local now = time[1] .. string.sub('00000' .. time[2], -6, -4)
-- The fence only grows: +1 per acquisition while the runs hash lives (it
-- outlives locks by the retention), and a new hash starts from the server's
-- clock in ms, above any fence handed out before it expired.
local fence = redis.call('hget', KEYS[3], 'f')
fence = fence and string.format('%d', fence + 1) or now
redis.call('hset', KEYS[3], 'f', fence, 'l', ARGV[1], ARGV[1], fence .. '|' .. now .. '|' .. ARGV[5])
redis.call('pexpire', KEYS[3], ARGV[4])
redis.call('zadd', KEYS[4], now, ARGV[6] .. ':' .. ARGV[1])
redis.call('pexpire', KEYS[4], ARGV[4])
-- About one acquisition in 16 (by the clock's microseconds) trims the index
-- to the retention: it holds the retention's runs and a few more (the TTL
-- above ends it retention after the task's last run).
if time[2] % 16 == 0 then
    redis.call('zremrangebyscore', KEYS[4], '-inf', now - ARGV[4])
end
return {1, fence, now}
""",
)

# Shared by FINISH and RELEASE: write a run's outcome into its record, once.
_WRITE_OUTCOME: Final = """
-- runs, index: the run's (task, date) runs hash and its task's history index;
-- token: the run's; outcome: 'ended|status|reason|attempts|error' where ended
-- (ms) is the run's start on the server's clock plus its time on the client's
-- monotonic clock, or '' for "now" (TIME); counters: JSON, or nil for none;
-- known: true when the caller held the lock until now and knows the record
-- exists without an outcome (it started within the retention, and an outcome
-- is only written by the call that gives the lock up): nothing to check.
-- Otherwise writes nothing when the record does not exist (never started, or
-- expired: never create a key without its TTL; the index lives at least as
-- long as the runs hash) or already has an outcome (a retried call, or the
-- seed's release after a finish). The index's '~s'/'~f' members, scored by
-- end time, are the task's last success (success: true) and last failure.
local function write_outcome(runs, index, token, outcome, counters, known, success)
    if not known then
        local found = redis.call('hmget', runs, token, token .. ':o')
        if not found[1] or found[2] then
            return
        end
    end
    local ended = string.match(outcome, '^%d*')
    if ended == '' then
        local time = redis.call('time')
        ended = time[1] .. string.sub('00000' .. time[2], -6, -4)
        outcome = ended .. outcome
    end
    if counters then
        redis.call('hset', runs, token .. ':o', outcome, token .. ':c', counters)
    else
        redis.call('hset', runs, token .. ':o', outcome)
    end
    redis.call('zadd', index, ended, success and '~s' or '~f')
end
"""

FINISH: Final = Script(
    "finish",
    _WRITE_OUTCOME
    + """
-- KEYS[1] - the lock key
-- KEYS[2] - the success-marker key
-- KEYS[3], KEYS[4] - optional, both or none: the runs hash, the history index
-- ARGV[1] - the run's token
-- ARGV[2] - the marker's TTL in seconds
-- ARGV[3] - the marker's value
-- ARGV[4], ARGV[5] - with the record keys: the outcome ('ended|success|...'),
--   '1' if the record is fresh (started well within the retention)
-- ARGV[6] - optional: the counters (JSON), when there are any
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
if KEYS[4] then
    local outcome = ARGV[4]
    if code == 0 then
        local ended, attempts = string.match(outcome, '^(%d*)|[^|]*|[^|]*|([^|]*)')
        outcome = (ended or '') .. '|failed|lock_lost|' .. (attempts or '1')
            .. '|lock lost before the run could be recorded: it expired or was taken'
    end
    write_outcome(KEYS[3], KEYS[4], ARGV[1], outcome, ARGV[6], code == 1 and ARGV[5] == '1', code ~= 0)
end
return code
""",
)

RELEASE: Final = Script(
    "release",
    _WRITE_OUTCOME
    + """
-- KEYS[1] - the lock key
-- KEYS[2], KEYS[3] - optional, both or none: the runs hash, the history index
-- ARGV[1] - the run's token
-- ARGV[2], ARGV[3] - with the record keys: the outcome
--   ('ended|status|reason|attempts|error'), '1' if the record is fresh
-- ARGV[4] - optional: the counters (JSON), when there are any
-- return 1 the lock was ours and is deleted;
--        0 another token holds it: lock untouched;
--        -1 there is no lock: it expired, or (for a retry) the earlier attempt
--           whose reply was lost deleted it
-- The record gets the outcome in every case (it is keyed by this run's own token).
local holder = redis.call('get', KEYS[1])
local code = -1
if holder == ARGV[1] then
    code = redis.call('del', KEYS[1])
elseif holder then
    code = 0
end
if KEYS[3] then
    write_outcome(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[4], code == 1 and ARGV[3] == '1',
        string.find(ARGV[2], '^%d*|success|') ~= nil)
end
return code
""",
)

MISSED: Final = Script(
    "missed",
    """
-- KEYS[1] - the lock key of a (task, slot)
-- KEYS[2] - its success-marker key
-- KEYS[3] - its runs hash
-- KEYS[4] - the task's history index
-- ARGV[1] - retention in ms
-- ARGV[2] - 'pid|host' of the scheduler that did not run the slot
-- ARGV[3] - the slot's run key
-- ARGV[4] - the record's error text (why it did not run)
-- ARGV[5] - optional: the record's status and token, 'missed' (the scheduler
--           woke too late) or 'paused' (the schedule was paused); default 'missed'
-- return 1 a record is written (token and status ARGV[5], no lock, no fence);
--        0 the slot ran, runs or was recorded already, somewhere: nothing
--          written (so every replica that did not run it writes one record)
if redis.call('exists', KEYS[2]) == 1 or redis.call('exists', KEYS[1]) == 1
        or redis.call('hexists', KEYS[3], 'l') == 1 then
    return 0
end
local status = ARGV[5] or 'missed'
local time = redis.call('time')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
redis.call('hset', KEYS[3], 'l', status, status, '0|' .. now .. '|' .. ARGV[2],
    status .. ':o', now .. '|' .. status .. '||0|' .. ARGV[4])
redis.call('pexpire', KEYS[3], ARGV[1])
redis.call('zadd', KEYS[4], now, ARGV[3] .. ':' .. status)
redis.call('pexpire', KEYS[4], ARGV[1])
return 1
""",
)

SCHEDULE: Final = Script(
    "schedule",
    """
-- KEYS[1] - a schedule's paused key (see _keys.schedule_keys)
-- KEYS[2] - its triggers list
-- return {who paused it ('host:pid|ms') or nil, pending trigger requests}
-- Read-only: what a scheduler reads at each slot, before it fires.
return {redis.call('get', KEYS[1]), redis.call('llen', KEYS[2])}
""",
)

PUSH: Final = Script(
    "push",
    """
-- KEYS[1] - a list: a schedule's triggers, or one request's replies
-- ARGV[1] - the entry (JSON)
-- ARGV[2] - the list's TTL in ms: it lives at least that long from now
-- ARGV[3] - 'l' to push at the head (a request: the oldest is popped from
--           the tail), 'r' at the tail (a reply: read from the head)
-- return the list's length
-- A retry after a lost reply may push a request twice: CLAIM lets only one
-- pop of a request's id run it; a reply pushed twice is read and ignored.
local length
if ARGV[3] == 'l' then
    length = redis.call('lpush', KEYS[1], ARGV[1])
else
    length = redis.call('rpush', KEYS[1], ARGV[1])
end
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('pexpire', KEYS[1], ARGV[2])
end
return length
""",
)

CLAIM: Final = Script(
    "claim",
    """
-- KEYS[1] - a trigger request's claim key
-- KEYS[2] - its reply list
-- ARGV[1] - this pop's token (random: a retried claim carries the same one)
-- ARGV[2] - the claim's TTL in ms (it outlives the request's expiry)
-- ARGV[3] - the 'taken' reply (JSON)
-- ARGV[4] - the reply list's TTL in ms
-- return 1 the request is this pop's to run: claimed, and 'taken' answered;
--        0 another pop of the same request id claimed it (the request was
--          pushed twice, by a retried push): nothing written, drop it
if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    if redis.call('get', KEYS[1]) ~= ARGV[1] then
        return 0
    end
    return 1
end
redis.call('rpush', KEYS[2], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[4])
return 1
""",
)

RENEW: Final = Script(
    "renew",
    """
-- KEYS[1] - the lock key
-- KEYS[2] - optional: the (task, date)'s cancel-request key (see CANCEL)
-- ARGV[1] - the run's token
-- ARGV[2] - the lock's TTL in milliseconds
-- return 1 the lock is ours and its TTL is reset to ARGV[2] (set, never added
--          to: a worker that dies leaves a key that frees within one TTL);
--        0 it is not ours (expired or taken): nothing written;
--        'host:pid|ms' the lock is ours (TTL reset as for 1) and that
--          requester asked to cancel this run: the holder stops its body
-- The request rides on the renewal the holder sends anyway: no extra round
-- trip, no polling. A request for another token (a run that has ended since)
-- is ignored; it expires with the lock it was written for.
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    if KEYS[2] then
        local by, token = string.match(redis.call('get', KEYS[2]) or '', '^(.*)|([^|]*)$')
        if token == ARGV[1] then
            return by
        end
    end
    return 1
end
return 0
""",
)

CANCEL: Final = Script(
    "cancel",
    """
-- KEYS[1] - the lock key of a (task, date)
-- KEYS[2] - its cancel-request key
-- ARGV[1] - the requester, 'host:pid'
-- ARGV[2] - the request's TTL in ms when the lock has none (a lock set by hand)
-- return {0} no lock: nothing runs, nothing written;
--        {1, holder's token, lock's TTL in ms} the request is written, as
--          'host:pid|ms|token' (ms: the server's clock), with the lock's TTL
--          left less a millisecond: it never outlives the lock it was written for;
--        {2, holder's token, lock's TTL in ms, 'host:pid|ms' of the earlier
--          requester} a request for this holder is pending: nothing written
-- Touches one task's keys: one hash slot on Redis Cluster.
local holder = redis.call('get', KEYS[1])
if not holder then
    return {0}
end
local pttl = redis.call('pttl', KEYS[1])
local by, token = string.match(redis.call('get', KEYS[2]) or '', '^(.*)|([^|]*)$')
if token == holder then
    return {2, holder, pttl, by}
end
local time = redis.call('time')
local now = time[1] .. string.sub('00000' .. time[2], -6, -4)
-- A millisecond less than the lock's TTL: before 7.2 the server reads its clock
-- again for SET's PX, and a millisecond may have begun since PTTL read it.
local px = ARGV[2]
if pttl > 0 then
    px = math.max(pttl - 1, 1)
end
redis.call('set', KEYS[2], ARGV[1] .. '|' .. now .. '|' .. holder, 'PX', px)
return {1, holder, pttl}
""",
)

CLEAR: Final = Script(
    "clear",
    """
-- KEYS[1] - a (task, date)'s success-marker key
-- KEYS[2] - optional: its runs hash (see _records)
-- return 1 the marker existed and is deleted; 0 there was none: nothing written
-- The runs hash's latest token ('l') then names no run ('cleared'), so the grid
-- shows the date pending (its next run sets 'l' again) rather than completed by
-- that run's record; history keeps the run. A hash that does not exist is not
-- created (never a key without its TTL).
if redis.call('del', KEYS[1]) == 0 then
    return 0
end
if KEYS[2] and redis.call('exists', KEYS[2]) == 1 then
    redis.call('hset', KEYS[2], 'l', 'cleared')
end
return 1
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
-- KEYS[1] - the first date's lock (routes the call to the task's slot on a cluster)
-- ARGV[1], ARGV[2], ARGV[3] - the task's locks', markers' and runs hashes' key
--           prefixes: a date's lock is ARGV[1] .. date (see _records)
-- ARGV[4..] - the dates
-- return per date, flat, 7 entries: marker exists, lock holder, lock TTL ms,
--        latest token (the runs hash's 'l'), that run's start, outcome and
--        counters fields (false where there is none)
-- Read-only. One task per call (on a cluster its keys share one slot). The
-- reader needs less than everything, so less is read and sent: the marker
-- only when it can change the cell (no holder, and the latest run did not
-- succeed: a success is shown completed with or without it), the counters
-- only when they hold who triggered or cancelled the run.
local locks, markers, records = ARGV[1], ARGV[2], ARGV[3]
local out, n = {}, 0
for i = 4, #ARGV do
    local date = ARGV[i]
    local holder = redis.call('get', locks .. date)
    local pttl = holder and redis.call('pttl', locks .. date) or -2
    local last = redis.call('hget', records .. date, 'l')
    local start, outcome, counters = false, false, false
    if last then
        local run = redis.call('hmget', records .. date, last, last .. ':o', last .. ':c')
        start, outcome, counters = run[1], run[2], run[3]
        if counters and not (string.find(counters, 'triggered_by', 1, true)
                or string.find(counters, 'cancelled_by', 1, true)) then
            counters = false
        end
    end
    local exists = 0
    if not holder and not (start and outcome and string.match(outcome, '^[^|]*|([^|]*)') == 'success') then
        exists = redis.call('exists', markers .. date)
    end
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = exists, holder, pttl, last
    out[n + 5], out[n + 6], out[n + 7] = start, outcome, counters
    n = n + 7
end
return out
""",
)

RUNS: Final = Script(
    "runs",
    """
-- KEYS[1] - one task's history index (ZSET of 'date:token' by start ms, and
--           '~s'/'~f' by the end ms of the last success/failure)
-- ARGV[1] - how many runs, newest first
-- ARGV[2] - the runs hashes' key prefix: a date's is ARGV[2] .. date
-- ARGV[3] - the locks' key prefix: a date's lock is ARGV[3] .. date
-- return {last success ms, last failure ms; then per run {member, holder of
--        its date's lock, its start, outcome and counters fields}}
-- Read-only. The hashes and locks are named, not passed: they share the
-- task's hash slot on a cluster, and are only known once the index is read.
local out = {redis.call('zscore', KEYS[1], '~s'), redis.call('zscore', KEYS[1], '~f')}
local wanted = tonumber(ARGV[1]) + 2
for _, member in ipairs(redis.call('zrevrange', KEYS[1], 0, wanted - 1)) do
    if #out >= wanted then
        break
    end
    local date, token = string.match(member, '^(.*):([^:]*)$')
    if date then
        local run = redis.call('hmget', ARGV[2] .. date, token, token .. ':o', token .. ':c')
        out[#out + 1] = {member, redis.call('get', ARGV[3] .. date), run[1], run[2], run[3]}
    end
end
return out
""",
)
