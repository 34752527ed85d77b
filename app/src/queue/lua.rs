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
-- Appends `rec` to the history without decoding it: the history grows with every attempt,
-- and a decode + encode of the whole array per step made each step cost more than the last.
-- `h` is the history text when the caller read it already (nil: read it here).
local function history_with(h, rec)
  local e = cjson.encode(rec)
  if not h or h == '' or h == '[]' or h == '{}' then return '[' .. e .. ']' end
  return string.sub(h, 1, -2) .. ',' .. e .. ']'
end
local function push_history(jk, rec, h)
  if h == nil then h = redis.call('HGET', jk, 'history') end
  redis.call('HSET', jk, 'history', history_with(h, rec))
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
  local h = redis.call('HMGET', jk, 'notify_queue', 'replays', 'max_attempts', 'kind', 'payload')
  return {'run', tostring(a), tostring(tonumber(h[3]) or 1), h[4] or '', h[5] or 'null',
    h[1] or '', tostring(tonumber(h[2]) or 0)}
end
-- When a new job is due, from the ENQUEUE arguments both backends share (`a`: id, queue,
-- kind, payload, max_attempts, at_ms, after_ms, -, -, notify_queue, notify_max_attempts).
local function due_of(now, a)
  local after = tonumber(a[7])
  if after > 0 then return now + after end
  return tonumber(a[6])
end
-- Writes a new job's hash from those arguments, with the backend's fields `extra` (state,
-- entry, ...) in the same HSET.
local function new_job(jk, now, a, extra)
  redis.call('HSET', jk, 'id', a[1], 'queue', a[2], 'kind', a[3],
    'payload', a[4], 'max_attempts', a[5], 'attempts', 0,
    'created_ms', now, 'updated_ms', now, 'history', '[]',
    'notify_queue', a[10], 'notify_max_attempts', a[11], unpack(extra))
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
