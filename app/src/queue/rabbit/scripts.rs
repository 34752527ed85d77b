//! Lua scripts of the RabbitMQ backend. The broker carries messages; the job record stays a
//! Redis hash with the same fields as on the Redis Streams backend, so `Queue::get`, the
//! tasks API and the saga read it the same way.
//!
//! Fences: the hash's `entry` names the one message that may run the job (a fresh id per
//! publish of a new attempt), `owner` names the delivery running it. A copy of an old message,
//! a duplicate from the outbox or a delivery that lost its job to a redelivery finds a
//! mismatch and changes nothing. A delivery of a job that is running waits while the pool
//! running it is alive (`{p}:alive:{consumer}`, refreshed by every pool, expiring after
//! `claim_idle_ms`) and takes it over once that pool is gone: START answers `held` with the
//! pool's name, the caller looks at the pool's key (a key of its own slot) and, when it is
//! gone, calls START again naming that pool as the one to take over from.
//!
//! Outbox: every state change that needs a message (enqueue, retry, dead letter, notify,
//! replay) adds the job id to the `outbox` sorted set in the same script; the id leaves it
//! once the broker confirmed that message (CONFIRMED, written in the background) or once that
//! message was delivered (START: a delivered message was in the broker), whichever comes
//! first. A publish lost with the broker is re-sent from the outbox (see
//! `produce::flush_outbox`), so Redis and the broker cannot drift apart for good.
//!
//! Partitions: the outbox and the running sets are kept per partition (`{p}:outbox:{t}`,
//! `{p}:running:{t}:{queue}`), in the slot of the jobs they hold, and every script declares
//! every key it touches (see `lua::JOB_HASH`); keys that come from data (outbox ids, running
//! ids) are read first and declared in a second script.
//!
//! Running set: `{p}:running:{t}:{queue}` holds the ids of the queue's jobs in state `running`
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
-- When a job ends, create its notification job `nid` (key `nk`, nil when the job notifies
-- no queue) and put it in the outbox. Returns the notify job id and queue, or '', ''.
local function notify(jk, now, outbox, nid, nk, msg)
  local nq = new_notify(jk, now, nid, nk)
  if not nq then return '', '' end
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
local function bury(jk, id, err, now, outbox, running, msg, nid, nk, nmsg)
  redis.call('SREM', running, id)
  redis.call('HSET', jk, 'state', 'dead', 'last_error', err, 'entry', msg, 'owner', '',
    'updated_ms', now, 'finished_ms', now)
  redis.call('PERSIST', jk)
  redis.call('ZADD', outbox, now, id)
  return notify(jk, now, outbox, nid, nk, nmsg)
end
"#;

/// Records a batch of new jobs of one partition (concurrent enqueues of one process,
/// coalesced: see `queue::batch`), in order, so an idempotency key repeated within the batch
/// finds the batch's first job.
/// KEYS per job: job, idempotency, outbox.
/// ARGV per job (ENQUEUE_ARGS): id, queue, kind, payload, max_attempts, at_ms, after_ms,
///       use_idem, idem_ttl_s, notify_queue, notify_max_attempts, message id.
/// Returns per job {id, created, must_publish, entry, delay_ms}. A repeated key whose first
/// job is still in the outbox (its publish was never confirmed) is published again; so is a
/// repeat of a call that did run (its answer was lost in a failover), which finds its own job.
const ENQUEUE: &str = r#"
local now = now_ms()
local function again(outbox, id, jk, created)
  if redis.call('ZSCORE', outbox, id) then
    local st = redis.call('HGET', jk, 'state')
    if st == 'queued' or st == 'scheduled' then
      local wait = math.max(0, hnum(jk, 'run_at_ms', 0) - now)
      return {id, created, 1, redis.call('HGET', jk, 'entry') or '', wait}
    end
  end
  return {id, created, 0, '', 0}
end
local function enqueue(k, a)
  if redis.call('EXISTS', k[1]) == 1 then return again(k[3], a[1], k[1], 1) end
  if a[8] == '1' then
    local existing = redis.call('GET', k[2])
    if existing then
      -- The first job of this key is in this partition (the key chose it). Its hash is read
      -- without being declared: if the slot is being migrated and the hash has moved, the
      -- read fails before this script wrote anything, and the caller repeats it.
      local prefix = string.sub(k[1], 1, #k[1] - #a[1])
      return again(k[3], existing, prefix .. existing, 0)
    end
    redis.call('SET', k[2], a[1], 'EX', a[9])
  end
  local due = due_of(now, a)
  redis.call('ZADD', k[3], now, a[1])
  if due > now then
    new_job(k[1], now, a, {'entry', a[12], 'state', 'scheduled', 'run_at_ms', due})
    return {a[1], 1, 1, a[12], due - now}
  end
  new_job(k[1], now, a, {'entry', a[12], 'state', 'queued'})
  return {a[1], 1, 1, a[12], 0}
end
local out = {}
for j = 0, #KEYS / 3 - 1 do
  out[j + 1] = enqueue({KEYS[3 * j + 1], KEYS[3 * j + 2], KEYS[3 * j + 3]},
    {unpack(ARGV, 12 * j + 1, 12 * j + 12)})
end
return out
"#;

/// The ENQUEUE arguments per job.
pub(super) const ENQUEUE_ARGS: usize = 12;

/// The broker confirmed the messages `entry` of a batch of jobs of one partition: they leave
/// the outbox. A job not due yet stays, scored one minute past its due time: the broker
/// moves a delay-queue message into the work queue without a confirm, so if the job has not
/// started by then the outbox sends it again (a copy that does arrive later is a duplicate
/// the fences drop).
/// KEYS per job: job, outbox. ARGV per job: id, entry. Returns 1 per job.
const CONFIRMED: &str = r#"
local now = now_ms()
local out = {}
for i = 1, #KEYS, 2 do
  local jk, outbox, id = KEYS[i], KEYS[i + 1], ARGV[i]
  local h = redis.call('HMGET', jk, 'entry', 'run_at_ms', 'state')
  if h[1] == ARGV[i + 1] then
    local due, st = tonumber(h[2]) or 0, h[3]
    if (st == 'scheduled' or st == 'failed') and due > now then
      redis.call('ZADD', outbox, due + 60000, id)
    else
      redis.call('ZREM', outbox, id)
    end
  end
  table.insert(out, 1)
end
return out
"#;

/// Starts a batch of deliveries of one partition (this process's concurrent STARTs,
/// coalesced: see `queue::batch`).
/// KEYS per delivery: job, outbox, running set. ARGV per delivery: entry, consumer (the
/// pool), owner (this delivery), the pool to take the job over from ('' for none).
/// Returns per delivery {'run', attempt, max_attempts, kind, payload, notify_queue, replays} |
///         {'early', wait_ms} | {'held', pool}: it runs in that pool, which may be gone (the
///         caller looks, and calls again naming it) | {'lost', notify_queue, replays}: taken
///         over with no attempt left, nothing changed (the caller runs BURY_LOST) | {'skip'}.
const START: &str = r#"
local now = now_ms()
local function start(jk, outbox, running, entry, consumer, owner, from)
  local st = redis.call('HGET', jk, 'state')
  if not st or redis.call('HGET', jk, 'entry') ~= entry then return {'skip'} end
  local attempts = hnum(jk, 'attempts', 0)
  if st == 'scheduled' or st == 'failed' then
    local due = hnum(jk, 'run_at_ms', 0)
    if due > now then return {'early', tostring(due - now)} end
  elseif st == 'running' then
    -- A repeat by this very delivery (its answer was lost in a failover).
    if redis.call('HGET', jk, 'owner') == owner then return run_reply(jk, attempts) end
    -- A duplicate copy, or a redelivery after the broker restarted under a job that still
    -- runs: the caller hands it back while that pool lives; the running attempt decides.
    local holder = redis.call('HGET', jk, 'consumer') or ''
    if holder ~= from then return {'held', holder} end
    -- The pool that ran it is gone (killed, crashed, stopped after its grace period).
    if attempts >= hnum(jk, 'max_attempts', 1) then return {'lost', notify_of(jk)} end
    end_attempt(jk, attempts, holder, now, 'reclaimed', 'worker lost')
  elseif st ~= 'queued' then
    return {'skip'}
  end
  attempts = redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('HSET', jk, 'state', 'running', 'consumer', consumer, 'owner', owner,
    'started_ms', now, 'updated_ms', now)
  -- A reclaimed job re-run is in the set already (SADD is a no-op then).
  local id = redis.call('HGET', jk, 'id')
  redis.call('SADD', running, id)
  -- Its message `entry` reached the broker (it was delivered): whether or not its CONFIRMED
  -- was written yet, nothing is left for the outbox to send.
  redis.call('ZREM', outbox, id)
  return run_reply(jk, attempts)
end
local out = {}
for j = 0, #KEYS / 3 - 1 do
  out[j + 1] = start(KEYS[3 * j + 1], KEYS[3 * j + 2], KEYS[3 * j + 3], ARGV[4 * j + 1],
    ARGV[4 * j + 2], ARGV[4 * j + 3], ARGV[4 * j + 4])
end
return out
"#;

/// A job whose pool vanished during its last attempt goes dead.
/// KEYS: job, outbox, running set[, notify job]. ARGV: entry, the vanished pool, dead
/// message id, notify id, notify message id.
/// Returns {'dead', notify_id, notify_queue} | {'stale'}.
const BURY_LOST: &str = r#"
local jk = KEYS[1]
if redis.call('HGET', jk, 'state') ~= 'running' or redis.call('HGET', jk, 'entry') ~= ARGV[1]
  or redis.call('HGET', jk, 'consumer') ~= ARGV[2]
  or hnum(jk, 'attempts', 0) < hnum(jk, 'max_attempts', 1) then
  return {'stale'}
end
local now = now_ms()
local attempts = hnum(jk, 'attempts', 0)
end_attempt(jk, attempts, ARGV[2], now, 'reclaimed', 'worker lost')
local nid, nq = bury(jk, redis.call('HGET', jk, 'id'), 'worker lost during attempt ' .. attempts,
  now, KEYS[2], KEYS[3], ARGV[3], ARGV[4], KEYS[4], ARGV[5])
return {'dead', nid, nq}
"#;

/// Completes a batch of jobs of one partition (this process's concurrent completions,
/// coalesced: see `queue::batch`); each delivery is acknowledged to the broker only after
/// this call answered.
/// ARGV: retention_s, then per job COMPLETE_ARGS: entry, owner, result ('' for none),
/// notify id, notify message id, notify keys (0 or 1).
/// KEYS per job: job, outbox, running set[, notify job].
/// Returns per job {'ok', notify_id, notify_queue} | {'stale'}.
const COMPLETE: &str = r#"
local now = now_ms()
local function complete(jk, outbox, running, entry, owner, result, nid, nk, nmsg)
  local h = redis.call('HMGET', jk, 'state', 'entry', 'owner', 'attempts', 'started_ms',
    'history', 'id', 'last_error')
  if h[1] ~= 'running' or h[2] ~= entry or h[3] ~= owner then return {'stale'} end
  local hist = history_with(h[6], {attempt = tonumber(h[4]) or 0, consumer = owner,
    started_ms = tonumber(h[5]) or 0, finished_ms = now, outcome = 'succeeded'})
  redis.call('SREM', running, h[7])
  redis.call('HSET', jk, 'state', 'succeeded', 'owner', '', 'updated_ms', now,
    'finished_ms', now, 'progress', 100, 'history', hist)
  if result ~= '' then redis.call('HSET', jk, 'result', result) end
  if h[8] then redis.call('HDEL', jk, 'last_error') end
  local nid2, nq = notify(jk, now, outbox, nid, nk, nmsg)
  redis.call('EXPIRE', jk, ARGV[1])
  return {'ok', nid2, nq}
end
local out = {}
local k = 1
for i = 2, #ARGV, 6 do
  local nk = nil
  if ARGV[i + 5] == '1' then nk = KEYS[k + 3] end
  table.insert(out, complete(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[i], ARGV[i + 1],
    ARGV[i + 2], ARGV[i + 3], nk, ARGV[i + 4]))
  k = k + 3 + tonumber(ARGV[i + 5])
end
return out
"#;

/// KEYS: job, outbox, running set[, notify job]. ARGV: entry, owner, error, backoff_ms,
/// permanent (0/1), next message id, notify id, notify message id.
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
  redis.call('HSET', jk, 'state', 'failed', 'last_error', ARGV[3], 'entry', ARGV[6],
    'owner', '', 'run_at_ms', now + delay, 'updated_ms', now)
  redis.call('SREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], now, id)
  return {'retry', tostring(delay)}
end
local nid, nq = bury(jk, id, ARGV[3], now, KEYS[2], KEYS[3], ARGV[6], ARGV[7], KEYS[4],
  ARGV[8])
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

/// Outbox entries older than ARGV[1] ms (by the Redis clock), oldest first; changes nothing.
/// KEYS: outbox. ARGV: age_ms, limit.
const OUTBOX_DUE: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]), 'LIMIT', 0,
  tonumber(ARGV[2]))
"#;

/// Takes the given outbox ids for sending again, with what is needed to publish them: ids
/// whose job is gone, running or succeeded leave the outbox; the others are pushed back (so
/// a slow confirm is not re-sent again at once) and returned.
/// KEYS: outbox, job 1..n. ARGV: id 1..n.
/// Returns a flat list: id, queue, kind, state, entry, wait_ms, attempts (7 per job).
const OUTBOX_TAKE: &str = r#"
local now = now_ms()
local out = {}
for i, id in ipairs(ARGV) do
  local jk = KEYS[i + 1]
  local st = redis.call('HGET', jk, 'state')
  if not st or st == 'running' or st == 'succeeded' then
    redis.call('ZREM', KEYS[1], id)
  elseif redis.call('ZSCORE', KEYS[1], id) then
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

/// The size of a running set, after dropping the given members whose job hash is gone or
/// not `running`. The scripts above keep the set exact, but a job hash can still vanish
/// under it without a script: a `DEL` by hand, `FLUSHDB` of part of the data, eviction under
/// an `allkeys-*` maxmemory policy. Such an id would count as pending for ever, so every
/// stats call (the sampler: every 5 s) checks members: the caller reads the whole set while
/// it holds at most 1,000 ids (it normally holds about the sum of the pools' prefetch), else
/// a random 1,000, so repeated calls still converge on a huge set, and declares their keys
/// here. Dropping an id is safe: a running job's id is in the set by construction, so a
/// member whose hash does not say `running` can only be such a leftover.
/// KEYS: running set, job 1..n. ARGV: id 1..n. Returns the count.
const STATS: &str = r#"
for i, id in ipairs(ARGV) do
  if redis.call('HGET', KEYS[i + 1], 'state') ~= 'running' then
    redis.call('SREM', KEYS[1], id)
  end
end
return redis.call('SCARD', KEYS[1])
"#;

fn script(body: &str) -> Script {
    lua::script(&[lua::NOW_MS, lua::JOB_HASH, PRELUDE], body)
}

pub(super) static ENQUEUE_S: LazyLock<Script> = LazyLock::new(|| script(ENQUEUE));
pub(super) static CONFIRMED_S: LazyLock<Script> = LazyLock::new(|| script(CONFIRMED));
pub(super) static START_S: LazyLock<Script> = LazyLock::new(|| script(START));
pub(super) static BURY_LOST_S: LazyLock<Script> = LazyLock::new(|| script(BURY_LOST));
pub(super) static COMPLETE_S: LazyLock<Script> = LazyLock::new(|| script(COMPLETE));
pub(super) static FAIL_S: LazyLock<Script> = LazyLock::new(|| script(FAIL));
pub(super) static REPLAY_S: LazyLock<Script> = LazyLock::new(|| script(REPLAY));
pub(super) static OUTBOX_DUE_S: LazyLock<Script> = LazyLock::new(|| script(OUTBOX_DUE));
pub(super) static OUTBOX_TAKE_S: LazyLock<Script> = LazyLock::new(|| script(OUTBOX_TAKE));
pub(super) static STATS_S: LazyLock<Script> = LazyLock::new(|| script(STATS));
