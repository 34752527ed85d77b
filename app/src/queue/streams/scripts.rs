//! Lua scripts of the Redis Streams backend: every state change of a job is one script, so a change and the stream
//! bookkeeping that goes with it (XACK, ZADD, XADD) happen atomically. Times come from
//! Redis `TIME`, so every instance uses one clock.
//!
//! Scripts reach keys derived from a job id (the job hash, a notify queue's stream) that
//! are not declared in KEYS: fine on one Redis server, not on Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

use crate::queue::lua;

/// Helpers of this backend, prepended (after [`lua::NOW_MS`] and [`lua::JOB_HASH`]) to
/// every script.
const PRELUDE: &str = r#"
-- When a job ends, enqueue its notification job (once per run of the job).
local function notify(jk, id, now, prefix)
  local nid, nq, nk = new_notify(jk, id, now, prefix)
  if not nid then return end
  local e = redis.call('XADD', prefix .. ':stream:' .. nq, '*', 'job', nid)
  redis.call('HSET', nk, 'entry', e)
end
-- Move a job to the dead-letter stream. The job hash stays (without expiry) until purged.
local function bury(jk, dlq, id, err, now, prefix)
  redis.call('HSET', jk, 'state', 'dead', 'last_error', err, 'entry', '',
    'updated_ms', now, 'finished_ms', now)
  redis.call('PERSIST', jk)
  redis.call('XADD', dlq, '*', 'job', id,
    'queue', redis.call('HGET', jk, 'queue') or '',
    'kind', redis.call('HGET', jk, 'kind') or '',
    'error', err, 'attempts', hnum(jk, 'attempts', 0), 'dead_ms', now,
    'history', redis.call('HGET', jk, 'history') or '[]')
  notify(jk, id, now, prefix)
end
"#;

/// KEYS: job, stream, delayed, idempotency.
/// ARGV: id, queue, kind, payload, max_attempts, at_ms, after_ms, use_idem, idem_ttl_s,
///       notify_queue, notify_max_attempts.
/// Returns {id, created}.
const ENQUEUE: &str = r#"
local now = now_ms()
if ARGV[8] == '1' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {existing, 0} end
  redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[9])
end
local due = new_job(KEYS[1], now)
if due > now then
  redis.call('HSET', KEYS[1], 'state', 'scheduled', 'run_at_ms', due, 'entry', '')
  redis.call('ZADD', KEYS[3], due, ARGV[1])
else
  local e = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
  redis.call('HSET', KEYS[1], 'state', 'queued', 'entry', e)
end
return {ARGV[1], 1}
"#;

/// KEYS: job, stream, dlq. ARGV: entry, group, consumer, prefix.
/// Returns {'run', attempt, max_attempts, kind, payload} | {'skip'} | {'dead'}.
const START: &str = r#"
local jk = KEYS[1]
local function drop()
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
local st = redis.call('HGET', jk, 'state')
if not st then drop() return {'skip'} end
local entry = redis.call('HGET', jk, 'entry')
if entry ~= ARGV[1] or (st ~= 'queued' and st ~= 'running') then drop() return {'skip'} end
local now = now_ms()
local attempts = hnum(jk, 'attempts', 0)
local maxa = hnum(jk, 'max_attempts', 1)
if st == 'running' then
  -- Reclaimed: the previous holder stopped heartbeating (killed, crashed or stuck).
  end_attempt(jk, attempts, redis.call('HGET', jk, 'consumer') or '', now, 'reclaimed',
    'worker lost')
  if attempts >= maxa then
    drop()
    local id = redis.call('HGET', jk, 'id')
    bury(jk, KEYS[3], id, 'worker lost during attempt ' .. attempts, now, ARGV[4])
    return {'dead'}
  end
end
attempts = redis.call('HINCRBY', jk, 'attempts', 1)
redis.call('HSET', jk, 'state', 'running', 'consumer', ARGV[3], 'started_ms', now,
  'updated_ms', now)
return {'run', tostring(attempts), tostring(maxa), redis.call('HGET', jk, 'kind') or '',
  redis.call('HGET', jk, 'payload') or 'null'}
"#;

/// KEYS: job, stream. ARGV: entry, group, result_json ('' for none), consumer, prefix, retention_s.
/// Returns 'ok' | 'stale'.
const COMPLETE: &str = r#"
local jk = KEYS[1]
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
local st = redis.call('HGET', jk, 'state')
if st ~= 'running' or redis.call('HGET', jk, 'entry') ~= ARGV[1] then return 'stale' end
local now = now_ms()
end_attempt(jk, hnum(jk, 'attempts', 0), ARGV[4], now, 'succeeded')
redis.call('HSET', jk, 'state', 'succeeded', 'entry', '', 'updated_ms', now,
  'finished_ms', now, 'progress', 100)
if ARGV[3] ~= '' then redis.call('HSET', jk, 'result', ARGV[3]) end
redis.call('HDEL', jk, 'last_error')
notify(jk, redis.call('HGET', jk, 'id'), now, ARGV[5])
redis.call('EXPIRE', jk, ARGV[6])
return 'ok'
"#;

/// KEYS: job, stream, delayed, dlq.
/// ARGV: entry, group, error, backoff_ms, permanent (0/1), consumer, prefix.
/// Returns {'retry', due_ms} | {'dead'} | {'stale'}.
const FAIL: &str = r#"
local jk = KEYS[1]
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
local st = redis.call('HGET', jk, 'state')
if st ~= 'running' or redis.call('HGET', jk, 'entry') ~= ARGV[1] then return {'stale'} end
local now = now_ms()
local attempts = hnum(jk, 'attempts', 0)
local maxa = hnum(jk, 'max_attempts', 1)
local id = redis.call('HGET', jk, 'id')
end_attempt(jk, attempts, ARGV[6], now, 'failed', ARGV[3])
if ARGV[5] == '0' and attempts < maxa then
  local due = now + tonumber(ARGV[4])
  redis.call('HSET', jk, 'state', 'failed', 'last_error', ARGV[3], 'entry', '',
    'run_at_ms', due, 'updated_ms', now)
  redis.call('ZADD', KEYS[3], due, id)
  return {'retry', tostring(due)}
end
bury(jk, KEYS[4], id, ARGV[3], now, ARGV[7])
return {'dead'}
"#;

/// Moves due jobs from the delayed set to the stream. ZREM decides who moves a job, inside
/// one script, so two instances never move one job twice.
/// KEYS: delayed, stream. ARGV: limit, job key prefix. Returns the number moved.
const MOVE_DUE: &str = r#"
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = 0
for _, id in ipairs(due) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local jk = ARGV[2] .. id
    local st = redis.call('HGET', jk, 'state')
    if st == 'scheduled' or st == 'failed' then
      local e = redis.call('XADD', KEYS[2], '*', 'job', id)
      redis.call('HSET', jk, 'state', 'queued', 'entry', e, 'updated_ms', now)
      moved = moved + 1
    end
  end
end
return moved
"#;

/// Resets the idle time of an entry this consumer still owns (a long job's heartbeat).
/// KEYS: stream. ARGV: group, consumer, entry. Returns 1 if still owned.
const HEARTBEAT: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"#;

/// KEYS: dlq. ARGV: dlq entry id, prefix. Returns the replayed job id or ''.
const REPLAY: &str = r#"
local r = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #r == 0 then return '' end
local f = r[1][2]
local id = nil
for i = 1, #f, 2 do if f[i] == 'job' then id = f[i + 1] end end
redis.call('XDEL', KEYS[1], ARGV[1])
if not id then return '' end
local jk = ARGV[2] .. ':job:' .. id
if redis.call('HGET', jk, 'state') ~= 'dead' then return '' end
local now = now_ms()
local q = redis.call('HGET', jk, 'queue')
local e = redis.call('XADD', ARGV[2] .. ':stream:' .. q, '*', 'job', id)
push_history(jk, {attempt = hnum(jk, 'attempts', 0), consumer = '', started_ms = now,
  finished_ms = now, outcome = 'replayed'})
redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'entry', e, 'updated_ms', now)
redis.call('HINCRBY', jk, 'replays', 1)
return id
"#;

/// KEYS: dlq. ARGV: prefix, batch. Deletes up to `batch` dead letters and their job hashes.
/// Returns the number removed (0 when the stream is empty).
const PURGE: &str = r#"
local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[2]))
for _, e in ipairs(r) do
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'job' then
      local jk = ARGV[1] .. ':job:' .. f[i + 1]
      if redis.call('HGET', jk, 'state') == 'dead' then redis.call('DEL', jk) end
    end
  end
  redis.call('XDEL', KEYS[1], e[1])
end
return #r
"#;

fn with_prelude(body: &str) -> Script {
    lua::script(&[lua::NOW_MS, lua::JOB_HASH, PRELUDE], body)
}

// Compiled once (redis-rs sends EVALSHA and loads a script on NOSCRIPT).
pub(super) static ENQUEUE_S: LazyLock<Script> = LazyLock::new(|| with_prelude(ENQUEUE));
pub(super) static START_S: LazyLock<Script> = LazyLock::new(|| with_prelude(START));
pub(super) static COMPLETE_S: LazyLock<Script> = LazyLock::new(|| with_prelude(COMPLETE));
pub(super) static FAIL_S: LazyLock<Script> = LazyLock::new(|| with_prelude(FAIL));
pub(super) static MOVE_DUE_S: LazyLock<Script> = LazyLock::new(|| with_prelude(MOVE_DUE));
pub(super) static HEARTBEAT_S: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT));
pub(super) static REPLAY_S: LazyLock<Script> = LazyLock::new(|| with_prelude(REPLAY));
pub(super) static PURGE_S: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE));
