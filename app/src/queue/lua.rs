//! Lua shared by the Redis scripts of both queue backends and of the order saga, so that one
//! clock and one job-hash bookkeeping serve every script.

use redis::Script;

/// The server's clock in milliseconds (Redis `TIME`): every instance uses one clock.
pub(crate) const NOW_MS: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Job-hash helpers (both queue backends keep the same job hash): append a history record
/// (any, or an attempt's end), read a numeric field, write a new job, create a job's
/// notification job (its backend then hands it to a stream or to the broker).
///
/// Every key a script touches is declared in its KEYS, also keys it creates: Redis Cluster
/// checks declared keys before a script runs (a slot being migrated answers `ASK` or
/// `TRYAGAIN`, and nothing happens), while an undeclared key missing from a migrating slot
/// would stop the script half-way with its first writes done.
pub(crate) const JOB_HASH: &str = r#"
local function push_history(jk, rec)
  local h = redis.call('HGET', jk, 'history')
  local list = {}
  if h and h ~= '' then list = cjson.decode(h) end
  table.insert(list, rec)
  redis.call('HSET', jk, 'history', cjson.encode(list))
end
local function hnum(jk, field, default)
  local v = redis.call('HGET', jk, field)
  if v and v ~= '' then return tonumber(v) end
  return default
end
-- Appends the history record of an attempt that ended now (`err` nil for none).
local function end_attempt(jk, attempt, consumer, now, outcome, err)
  push_history(jk, {attempt = attempt, consumer = consumer,
    started_ms = hnum(jk, 'started_ms', 0), finished_ms = now, outcome = outcome, error = err})
end
-- What a job's end needs to create its notification job: its notify queue ('' for none)
-- and how often it was replayed (the notification's id names the run).
local function notify_of(jk)
  return redis.call('HGET', jk, 'notify_queue') or '', tostring(hnum(jk, 'replays', 0))
end
-- The answer of a START that grants attempt `a` (both backends):
-- {'run', attempt, max_attempts, kind, payload, notify_queue, replays}.
local function run_reply(jk, a)
  local nq, replays = notify_of(jk)
  return {'run', tostring(a), tostring(hnum(jk, 'max_attempts', 1)),
    redis.call('HGET', jk, 'kind') or '', redis.call('HGET', jk, 'payload') or 'null', nq,
    replays}
end
-- Writes a new job's hash from the ENQUEUE arguments both backends share (ARGV: id, queue,
-- kind, payload, max_attempts, at_ms, after_ms, -, -, notify_queue, notify_max_attempts);
-- returns when the job is due.
local function new_job(jk, now)
  redis.call('HSET', jk, 'id', ARGV[1], 'queue', ARGV[2], 'kind', ARGV[3],
    'payload', ARGV[4], 'max_attempts', ARGV[5], 'attempts', 0,
    'created_ms', now, 'updated_ms', now, 'history', '[]',
    'notify_queue', ARGV[10], 'notify_max_attempts', ARGV[11])
  local after = tonumber(ARGV[7])
  if after > 0 then return now + after end
  return tonumber(ARGV[6])
end
-- When a job ends, create the hash of its notification job `nid` at key `nk` (once per run
-- of the job: `nid` extends the job's id with its replay count, so it keeps the job's
-- partition tag and `nk` shares the job's hash slot). The caller declares `nk` in KEYS, or
-- passes nil when the job notifies no queue. Returns the notify queue, or nil when there is
-- nothing to create (no notify queue, or this run's notification exists already).
local function new_notify(jk, now, nid, nk)
  if not nk then return nil end
  local nq = redis.call('HGET', jk, 'notify_queue')
  if not nq or nq == '' then return nil end
  if redis.call('EXISTS', nk) == 1 then return nil end
  local maxa = redis.call('HGET', jk, 'notify_max_attempts') or '8'
  redis.call('HSET', nk, 'id', nid, 'queue', nq, 'kind', 'notify',
    'payload', cjson.encode({job_id = redis.call('HGET', jk, 'id')}), 'state', 'queued',
    'attempts', 0, 'max_attempts', maxa, 'created_ms', now, 'updated_ms', now,
    'history', '[]')
  return nq
end
"#;

/// A script made of the given preludes followed by `body`.
pub(crate) fn script(preludes: &[&str], body: &str) -> Script {
    let mut src = preludes.concat();
    src.push('\n');
    src.push_str(body);
    Script::new(&src)
}
