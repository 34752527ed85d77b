//! Lua scripts of the RabbitMQ backend. The broker carries messages; the job record stays a
//! Redis hash with the same fields as on the Redis Streams backend, so `Queue::get`, the
//! tasks API and the saga read it the same way.
//!
//! Fences: the hash's `entry` names the one message that may run the job (a fresh id per
//! publish of a new attempt), `owner` names the delivery running it. A copy of an old message,
//! a duplicate from the outbox or a delivery that lost its job to a redelivery finds a
//! mismatch and changes nothing. A delivery of a job that is running waits while the pool
//! running it is alive (`{p}:alive:{consumer}`, refreshed by every pool, expiring after
//! `claim_idle_ms`) and takes it over once that pool is gone.
//!
//! Outbox: every state change that needs a message (enqueue, retry, dead letter, notify,
//! replay) adds the job id to the `outbox` sorted set in the same script; the id leaves it
//! once the broker confirmed that message. A publish lost with the broker is re-sent from
//! the outbox (see `produce::flush_outbox`), so Redis and the broker cannot drift apart for good.
//!
//! Running set: `{p}:running:{queue}` holds the ids of the queue's jobs in state `running`
//! (AMQP 0-9-1 does not report a queue's unacknowledged count). START adds the id in the
//! script that sets `running`; COMPLETE, FAIL (retry or dead) and `bury` (a reclaim that
//! used the last attempt) remove it in the script that leaves `running`. No other script
//! takes a job out of `running` (REPLAY starts from `dead`; the outbox and the dead-letter
//! purge never touch a running job), so the set is exact; STATS still drops ids whose hash
//! vanished (see there).

use std::sync::LazyLock;

use redis::Script;

use crate::queue::lua;

/// Helpers of this backend, prepended (after [`lua::NOW_MS`] and [`lua::JOB_HASH`]) to
/// every script.
const PRELUDE: &str = r#"
-- When a job ends, create its notification job (once per run of the job) and put it in
-- the outbox. Returns the notify job id and queue, or '', ''.
local function notify(jk, id, now, prefix, outbox, msg)
  local nid, nq, nk = new_notify(jk, id, now, prefix)
  if not nid then return '', '' end
  redis.call('HSET', nk, 'entry', msg)
  redis.call('ZADD', outbox, now, nid)
  return nid, nq
end
-- True while delivery `owner` of message `entry` runs the job; false for a stale copy.
local function runs(jk, entry, owner)
  return redis.call('HGET', jk, 'state') == 'running' and redis.call('HGET', jk, 'entry') == entry
    and redis.call('HGET', jk, 'owner') == owner
end
-- Only ever called on a running job: it leaves the running set here.
local function bury(jk, id, err, now, prefix, outbox, running, msg, nmsg)
  redis.call('SREM', running, id)
  redis.call('HSET', jk, 'state', 'dead', 'last_error', err, 'entry', msg, 'owner', '',
    'updated_ms', now, 'finished_ms', now)
  redis.call('PERSIST', jk)
  redis.call('ZADD', outbox, now, id)
  return notify(jk, id, now, prefix, outbox, nmsg)
end
"#;

/// KEYS: job, idempotency, outbox.
/// ARGV: id, queue, kind, payload, max_attempts, at_ms, after_ms, use_idem, idem_ttl_s,
///       notify_queue, notify_max_attempts, message id, job key prefix.
/// Returns {id, created, must_publish, entry, delay_ms}. A repeated key whose first job is
/// still in the outbox (its publish was never confirmed) is published again.
const ENQUEUE: &str = r#"
local now = now_ms()
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    if redis.call('ZSCORE', KEYS[3], existing) then
      local jk = ARGV[13] .. existing
      local st = redis.call('HGET', jk, 'state')
      if st == 'queued' or st == 'scheduled' then
        local wait = math.max(0, hnum(jk, 'run_at_ms', 0) - now)
        return {existing, 0, 1, redis.call('HGET', jk, 'entry') or '', wait}
      end
    end
    return {existing, 0, 0, '', 0}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[9])
end
local due = new_job(KEYS[1], now)
redis.call('HSET', KEYS[1], 'entry', ARGV[12])
redis.call('ZADD', KEYS[3], now, ARGV[1])
if due > now then
  redis.call('HSET', KEYS[1], 'state', 'scheduled', 'run_at_ms', due)
  return {ARGV[1], 1, 1, ARGV[12], due - now}
end
redis.call('HSET', KEYS[1], 'state', 'queued')
return {ARGV[1], 1, 1, ARGV[12], 0}
"#;

/// The broker confirmed the message `entry` of a job: it leaves the outbox. A job not due
/// yet stays, scored one minute past its due time: the broker moves a delay-queue message
/// into the work queue without a confirm, so if the job has not started by then the outbox
/// sends it again (a copy that does arrive later is a duplicate the fences drop).
/// KEYS: job, outbox. ARGV: id, entry.
const CONFIRMED: &str = r#"
if redis.call('HGET', KEYS[1], 'entry') == ARGV[2] then
  local due = hnum(KEYS[1], 'run_at_ms', 0)
  local st = redis.call('HGET', KEYS[1], 'state')
  if (st == 'scheduled' or st == 'failed') and due > now_ms() then
    redis.call('ZADD', KEYS[2], due + 60000, ARGV[1])
  else
    redis.call('ZREM', KEYS[2], ARGV[1])
  end
end
return 1
"#;

/// KEYS: job, outbox, running set. ARGV: entry, consumer (the pool), owner (this delivery),
/// prefix, dead message id, notify message id.
/// Returns {'run', attempt, max_attempts, kind, payload} | {'early', wait_ms} |
///         {'dead', notify_id, notify_queue} | {'busy'} | {'skip'}.
const START: &str = r#"
local jk = KEYS[1]
local st = redis.call('HGET', jk, 'state')
if not st or redis.call('HGET', jk, 'entry') ~= ARGV[1] then return {'skip'} end
local now = now_ms()
if st == 'scheduled' or st == 'failed' then
  local due = hnum(jk, 'run_at_ms', 0)
  if due > now then return {'early', tostring(due - now)} end
elseif st == 'running' then
  -- Its pool is alive (a duplicate copy, or a redelivery after the broker restarted under
  -- a job that still runs): hand the message back for later; the running attempt decides.
  local holder = redis.call('HGET', jk, 'consumer') or ''
  if redis.call('EXISTS', ARGV[4] .. ':alive:' .. holder) == 1 then return {'busy'} end
  -- The pool that ran it is gone (killed, crashed, stopped after its grace period).
  local attempts = hnum(jk, 'attempts', 0)
  end_attempt(jk, attempts, redis.call('HGET', jk, 'consumer') or '', now, 'reclaimed',
    'worker lost')
  if attempts >= hnum(jk, 'max_attempts', 1) then
    local id = redis.call('HGET', jk, 'id')
    local nid, nq = bury(jk, id, 'worker lost during attempt ' .. attempts, now, ARGV[4],
      KEYS[2], KEYS[3], ARGV[5], ARGV[6])
    return {'dead', nid, nq}
  end
elseif st ~= 'queued' then
  return {'skip'}
end
local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('HSET', jk, 'state', 'running', 'consumer', ARGV[2], 'owner', ARGV[3],
  'started_ms', now, 'updated_ms', now)
-- A reclaimed job re-run is in the set already (SADD is a no-op then).
redis.call('SADD', KEYS[3], redis.call('HGET', jk, 'id'))
return {'run', tostring(attempts), tostring(hnum(jk, 'max_attempts', 1)),
  redis.call('HGET', jk, 'kind') or '', redis.call('HGET', jk, 'payload') or 'null'}
"#;

/// KEYS: job, outbox, running set. ARGV: entry, owner, result ('' for none), retention_s,
/// prefix, notify message id. Returns {'ok', notify_id, notify_queue} | {'stale'}.
const COMPLETE: &str = r#"
local jk = KEYS[1]
if not runs(jk, ARGV[1], ARGV[2]) then return {'stale'} end
local now = now_ms()
end_attempt(jk, hnum(jk, 'attempts', 0), ARGV[2], now, 'succeeded')
redis.call('SREM', KEYS[3], redis.call('HGET', jk, 'id'))
redis.call('HSET', jk, 'state', 'succeeded', 'owner', '', 'updated_ms', now,
  'finished_ms', now, 'progress', 100)
if ARGV[3] ~= '' then redis.call('HSET', jk, 'result', ARGV[3]) end
redis.call('HDEL', jk, 'last_error')
local nid, nq = notify(jk, redis.call('HGET', jk, 'id'), now, ARGV[5], KEYS[2], ARGV[6])
redis.call('EXPIRE', jk, ARGV[4])
return {'ok', nid, nq}
"#;

/// KEYS: job, outbox, running set. ARGV: entry, owner, error, backoff_ms, permanent (0/1),
/// prefix, next message id, notify message id.
/// Returns {'retry', delay_ms} | {'dead', notify_id, notify_queue} | {'stale'}.
const FAIL: &str = r#"
local jk = KEYS[1]
if not runs(jk, ARGV[1], ARGV[2]) then return {'stale'} end
local now = now_ms()
local attempts = hnum(jk, 'attempts', 0)
local id = redis.call('HGET', jk, 'id')
end_attempt(jk, attempts, ARGV[2], now, 'failed', ARGV[3])
if ARGV[5] == '0' and attempts < hnum(jk, 'max_attempts', 1) then
  local delay = tonumber(ARGV[4])
  redis.call('HSET', jk, 'state', 'failed', 'last_error', ARGV[3], 'entry', ARGV[7],
    'owner', '', 'run_at_ms', now + delay, 'updated_ms', now)
  redis.call('SREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], now, id)
  return {'retry', tostring(delay)}
end
local nid, nq = bury(jk, id, ARGV[3], now, ARGV[6], KEYS[2], KEYS[3], ARGV[7], ARGV[8])
return {'dead', nid, nq}
"#;

/// Puts a dead job back with a fresh attempt budget.
/// KEYS: job, outbox. ARGV: dead-letter message entry, next message id.
/// Returns the job id, or '' when the dead letter is stale (the job moved on).
const REPLAY: &str = r#"
local jk = KEYS[1]
if redis.call('HGET', jk, 'state') ~= 'dead' or redis.call('HGET', jk, 'entry') ~= ARGV[1] then
  return ''
end
local now = now_ms()
push_history(jk, {attempt = hnum(jk, 'attempts', 0), consumer = '', started_ms = now,
  finished_ms = now, outcome = 'replayed'})
redis.call('HINCRBY', jk, 'replays', 1)
redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'entry', ARGV[2], 'updated_ms', now)
redis.call('HDEL', jk, 'run_at_ms', 'finished_ms')
local id = redis.call('HGET', jk, 'id')
redis.call('ZADD', KEYS[2], now, id)
return id
"#;

/// Outbox entries older than ARGV[1] ms, with what is needed to publish them again.
/// KEYS: outbox. ARGV: age_ms, limit, job key prefix.
/// Returns a flat list: id, queue, kind, state, entry, wait_ms, attempts (7 per job).
const OUTBOX: &str = r#"
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0,
  tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local jk = ARGV[3] .. id
  local st = redis.call('HGET', jk, 'state')
  if not st or st == 'running' or st == 'succeeded' then
    redis.call('ZREM', KEYS[1], id)
  else
    -- Pushed back so that a slow confirm is not re-sent again at once.
    redis.call('ZADD', KEYS[1], now, id)
    local wait = math.max(0, hnum(jk, 'run_at_ms', 0) - now)
    for _, v in ipairs({id, redis.call('HGET', jk, 'queue') or '', redis.call('HGET', jk, 'kind') or '',
      st, redis.call('HGET', jk, 'entry') or '', tostring(wait),
      tostring(hnum(jk, 'attempts', 0))}) do
      table.insert(out, v)
    end
  end
end
return out
"#;

/// The size of a running set, after dropping ids whose job hash is gone or not `running`.
/// The scripts above keep the set exact, but a job hash can still vanish under it without
/// a script: a `DEL` by hand, `FLUSHDB` of part of the data, eviction under an `allkeys-*`
/// maxmemory policy. Such an id would count as pending for ever, so every stats call
/// (the sampler: every 5 s) checks the members. The work is bounded: the whole set while
/// it holds at most ARGV[2] ids (it normally holds about the sum of the pools' prefetch),
/// else a random sample of that many, so repeated calls still converge on a huge set.
/// Dropping an id is safe: a running job's id is in the set by construction, so a member
/// whose hash does not say `running` can only be such a leftover.
/// KEYS: running set. ARGV: job key prefix, most ids checked. Returns the count.
const STATS: &str = r#"
local n = redis.call('SCARD', KEYS[1])
if n == 0 then return 0 end
local limit = tonumber(ARGV[2])
local ids
if n <= limit then
  ids = redis.call('SMEMBERS', KEYS[1])
else
  ids = redis.call('SRANDMEMBER', KEYS[1], limit)
end
for _, id in ipairs(ids) do
  if redis.call('HGET', ARGV[1] .. id, 'state') ~= 'running' then
    redis.call('SREM', KEYS[1], id)
    n = n - 1
  end
end
return n
"#;

fn script(body: &str) -> Script {
    lua::script(&[lua::NOW_MS, lua::JOB_HASH, PRELUDE], body)
}

pub(super) static ENQUEUE_S: LazyLock<Script> = LazyLock::new(|| script(ENQUEUE));
pub(super) static CONFIRMED_S: LazyLock<Script> = LazyLock::new(|| script(CONFIRMED));
pub(super) static START_S: LazyLock<Script> = LazyLock::new(|| script(START));
pub(super) static COMPLETE_S: LazyLock<Script> = LazyLock::new(|| script(COMPLETE));
pub(super) static FAIL_S: LazyLock<Script> = LazyLock::new(|| script(FAIL));
pub(super) static REPLAY_S: LazyLock<Script> = LazyLock::new(|| script(REPLAY));
pub(super) static OUTBOX_S: LazyLock<Script> = LazyLock::new(|| script(OUTBOX));
pub(super) static STATS_S: LazyLock<Script> = LazyLock::new(|| script(STATS));
