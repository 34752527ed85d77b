//! Lua scripts of the Redis Streams backend: every state change of a job is one script, so a
//! change and the stream bookkeeping that goes with it (XACK, ZADD, XADD) happen atomically.
//! Times come from Redis `TIME`, so every instance uses one clock.
//!
//! Every script works inside one partition and declares every key it touches (see
//! [`lua::JOB_HASH`]): the job, its queue's stream, schedule and dead letters, and, when the
//! job ends, its notification job and the stream of the notification's queue in the same
//! partition. A script whose keys come from data (due ids, dead letters) is called with them
//! after a read.

use std::sync::LazyLock;

use redis::Script;

use crate::queue::lua;

/// Helpers of this backend, prepended (after [`lua::NOW_MS`] and [`lua::JOB_HASH`]) to
/// every script.
const PRELUDE: &str = r#"
-- When a job ends, enqueue its notification job `nid` (key `nk`) on stream `ns` (both nil
-- when the job notifies no queue).
local function notify(jk, now, nid, nk, ns)
  if not new_notify(jk, now, nid, nk) then return end
  local e = redis.call('XADD', ns, '*', 'job', nid)
  redis.call('HSET', nk, 'entry', e)
end
-- Move a job to the dead-letter stream. The job hash stays (without expiry) until purged.
local function bury(jk, dlq, err, now, nid, nk, ns)
  redis.call('HSET', jk, 'state', 'dead', 'last_error', err, 'entry', '',
    'updated_ms', now, 'finished_ms', now)
  redis.call('PERSIST', jk)
  redis.call('XADD', dlq, '*', 'job', redis.call('HGET', jk, 'id'),
    'queue', redis.call('HGET', jk, 'queue') or '',
    'kind', redis.call('HGET', jk, 'kind') or '',
    'error', err, 'attempts', hnum(jk, 'attempts', 0), 'dead_ms', now,
    'history', redis.call('HGET', jk, 'history') or '[]')
  notify(jk, now, nid, nk, ns)
end
-- The consumer of a delivery: its `owner` is the consumer's name, '#', then a suffix (the
-- job hash keeps no separate consumer field).
local function consumer_of(owner)
  if not owner then return '' end
  return string.match(owner, '^([^#]*)')
end
-- Acknowledge and delete a stream entry.
local function drop(stream, group, entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end
-- Starts delivery `owner` of `entry` (job hash `jk`) read from `stream` (START, COMPLETE);
-- the answers are START's.
local function start_entry(stream, group, consumer, now, jk, entry, owner)
  local h = redis.call('HMGET', jk, 'state', 'entry', 'attempts', 'owner', 'max_attempts',
    'kind', 'payload', 'notify_queue', 'replays')
  local st = h[1]
  if not st or h[2] ~= entry or (st ~= 'queued' and st ~= 'running') then
    drop(stream, group, entry)
    return {'skip'}
  end
  local attempts, maxa = tonumber(h[3]) or 0, tonumber(h[5]) or 1
  local nq, replays = h[8] or '', tostring(tonumber(h[9]) or 0)
  if st == 'running' and h[4] ~= owner then
    -- Reclaimed: the previous holder stopped heartbeating (killed, crashed or stuck).
    if attempts >= maxa then return {'lost', nq, replays} end
    end_attempt(jk, attempts, consumer_of(h[4]), now, 'reclaimed', 'worker lost')
  end
  if st ~= 'running' or h[4] ~= owner then
    attempts = attempts + 1
    redis.call('HSET', jk, 'attempts', attempts, 'state', 'running', 'owner', owner,
      'started_ms', now, 'updated_ms', now)
  end
  return {'run', tostring(attempts), tostring(maxa), h[6] or '', h[7] or 'null', nq, replays}
end
"#;

/// Enqueues a batch of jobs of one partition (concurrent enqueues of one process, coalesced:
/// see `queue::batch`), in order, so an idempotency key repeated within the batch finds the
/// first job of the batch.
/// KEYS per job: job, stream, delayed, idempotency.
/// ARGV per job (ENQUEUE_ARGS): id, queue, kind, payload, max_attempts, at_ms, after_ms,
///       use_idem, idem_ttl_s, notify_queue, notify_max_attempts.
/// Returns {id, created} per job. A repeat of a call that did run (its answer was lost in a
/// failover) finds its own jobs and changes nothing.
const ENQUEUE: &str = r#"
local now = now_ms()
-- Job j's KEYS start after `kb`, its ARGV after `ab` (no per-job tables: they were a good
-- part of the Lua time per job). The hash is written once, with only the fields that have a
-- value (no `attempts` 0, `history` or empty notify fields: every reader defaults them).
local function enqueue(kb, ab)
  local jk, id = KEYS[kb + 1], ARGV[ab + 1]
  if redis.call('EXISTS', jk) == 1 then return {id, 1} end
  if ARGV[ab + 8] == '1' then
    local existing = redis.call('GET', KEYS[kb + 4])
    if existing then return {existing, 0} end
    redis.call('SET', KEYS[kb + 4], id, 'EX', ARGV[ab + 9])
  end
  local due, after = tonumber(ARGV[ab + 6]), tonumber(ARGV[ab + 7])
  if after > 0 then due = now + after end
  local st, f, v = 'queued', 'entry', nil
  if due > now then
    st, f, v = 'scheduled', 'run_at_ms', due
  else
    -- The entry first, so that the hash is written once.
    v = redis.call('XADD', KEYS[kb + 2], '*', 'job', id)
  end
  if ARGV[ab + 10] == '' then
    redis.call('HSET', jk, 'id', id, 'queue', ARGV[ab + 2], 'kind', ARGV[ab + 3],
      'payload', ARGV[ab + 4], 'max_attempts', ARGV[ab + 5], 'created_ms', now,
      'updated_ms', now, 'state', st, f, v)
  else
    redis.call('HSET', jk, 'id', id, 'queue', ARGV[ab + 2], 'kind', ARGV[ab + 3],
      'payload', ARGV[ab + 4], 'max_attempts', ARGV[ab + 5], 'created_ms', now,
      'updated_ms', now, 'state', st, f, v, 'notify_queue', ARGV[ab + 10],
      'notify_max_attempts', ARGV[ab + 11])
  end
  if st == 'scheduled' then redis.call('ZADD', KEYS[kb + 3], due, id) end
  return {id, 1}
end
local out = {}
for j = 0, #KEYS / 4 - 1 do
  out[j + 1] = enqueue(4 * j, 11 * j)
end
return out
"#;

/// The ENQUEUE arguments per job.
pub(super) const ENQUEUE_ARGS: usize = 11;

/// Starts a batch of entries of one stream, the entries one XREADGROUP (or XAUTOCLAIM)
/// returned: one script call, one clock reading and one hash read per job.
/// KEYS: stream, job 1..n. ARGV: group, consumer, then per job: entry, owner (unique per
/// delivery).
/// Returns per job {'run', attempt, max_attempts, kind, payload, notify_queue, replays} |
/// {'skip'} | {'lost', notify_queue, replays}: the entry was reclaimed from a vanished
/// worker and the job has no attempt left; nothing changed, the caller buries it with
/// BURY_LOST. A repeat by the same deliveries (the answer was lost) gets the same answers.
const START: &str = r#"
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local now = now_ms()
local out = {}
for i = 2, #KEYS do
  out[i - 1] = start_entry(stream, group, consumer, now, KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
end
return out
"#;

/// A reclaimed job whose worker vanished during its last attempt goes dead.
/// KEYS: job, stream, dlq[, notify job, notify stream]. ARGV: entry, group, notify id.
/// Returns 'dead' | 'stale'.
const BURY_LOST: &str = r#"
local jk = KEYS[1]
if redis.call('HGET', jk, 'state') ~= 'running' or redis.call('HGET', jk, 'entry') ~= ARGV[1]
  or hnum(jk, 'attempts', 0) < hnum(jk, 'max_attempts', 1) then
  return 'stale'
end
local now = now_ms()
local attempts = hnum(jk, 'attempts', 0)
end_attempt(jk, attempts, consumer_of(redis.call('HGET', jk, 'owner')), now, 'reclaimed',
  'worker lost')
drop(KEYS[2], ARGV[2], ARGV[1])
bury(jk, KEYS[3], 'worker lost during attempt ' .. attempts, now, ARGV[3], KEYS[4], KEYS[5])
return 'dead'
"#;

/// Completes a batch of jobs of one partition (completions of one pool, coalesced: see
/// `queue::batch`), then reads and starts the pool's next entries, as BullMQ's
/// moveToFinished fetches the next job: one call per worker cycle instead of three
/// (XREADGROUP, START, COMPLETE). Per job the success record and the acknowledgement come
/// first, so an entry is never acknowledged without its job's record (a crash before the
/// call loses nothing: the entries stay pending and are reclaimed, the jobs run again); the
/// entries read afterwards are pending for this consumer like any XREADGROUP's, so a crash
/// before their handlers ran has them reclaimed too.
/// ARGV: group, consumer, retention_s, nonce (unique per call), reads (m), then per read
/// READ_ARGS: index in KEYS of a stream of the batch, count, job hash prefix of its
/// partition; then per job COMPLETE_ARGS: entry, result_json ('' for none), notify id (''
/// for none), notify keys (0 or 2).
/// KEYS per job: job, stream[, notify job, notify stream].
/// Returns {{'ok' | 'stale' per job}, {per started entry: KEYS index of its stream, entry,
/// job id, owner, then START's answer, or 'read' when its job hash could not be read here
/// (a slot being migrated: the caller STARTs it with the key declared)}}.
/// The read never blocks (XREADGROUP inside a script cannot); the caller's fetch loop blocks
/// when this returned fewer entries than it asked for. The job hashes of the entries read are
/// not declared (their ids are known only once read); they share the stream's hash slot.
const COMPLETE: &str = r#"
local group, consumer, retention, nonce = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local reads = tonumber(ARGV[5])
local now = now_ms()
local acks = {}
-- The successful attempt is recorded as plain fields, not appended to `history`: the
-- reader (`JobRecord::from_hash`) adds it as the history's last record {attempt: attempts,
-- consumer: succeeded_by, started_ms, finished_ms, outcome: succeeded}, and `progress` 100
-- and the cleared `entry` are implied by the state. So no history is read, encoded or
-- rewritten here (that was most of this script's Lua time), and the hash stays small.
local function complete(jk, stream, entry, result, nid, nk, ns)
  local a = acks[stream]
  if not a then a = {}; acks[stream] = a end
  a[#a + 1] = entry
  local h = redis.call('HMGET', jk, 'state', 'entry', 'last_error')
  if h[1] ~= 'running' or h[2] ~= entry then return 'stale' end
  if result ~= '' then
    redis.call('HSET', jk, 'state', 'succeeded', 'updated_ms', now, 'finished_ms', now,
      'succeeded_by', consumer, 'result', result)
  else
    redis.call('HSET', jk, 'state', 'succeeded', 'updated_ms', now, 'finished_ms', now,
      'succeeded_by', consumer)
  end
  if h[3] then redis.call('HDEL', jk, 'last_error') end
  notify(jk, now, nid, nk, ns)
  redis.call('EXPIRE', jk, retention)
  return 'ok'
end
local out = {}
local k = 1
for i = 6 + 3 * reads, #ARGV, 4 do
  local nk, ns = nil, nil
  if ARGV[i + 3] == '2' then nk, ns = KEYS[k + 2], KEYS[k + 3] end
  table.insert(out, complete(KEYS[k], KEYS[k + 1], ARGV[i], ARGV[i + 1], ARGV[i + 2], nk, ns))
  k = k + 2 + tonumber(ARGV[i + 3])
end
for stream, entries in pairs(acks) do
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
end
local started = {}
local owners = consumer .. '#' .. nonce .. '.'
for r = 0, reads - 1 do
  local si = tonumber(ARGV[6 + 3 * r])
  local stream, prefix = KEYS[si], ARGV[8 + 3 * r]
  local got = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[7 + 3 * r],
    'STREAMS', stream, '>')
  if type(got) == 'table' and got[1] then
    for _, e in ipairs(got[1][2]) do
      local f, id = e[2], ''
      if f[1] == 'job' then id = f[2] else
        for j = 1, #f, 2 do if f[j] == 'job' then id = f[j + 1] end end
      end
      local owner = owners .. (#started + 1)
      local ok, rep = pcall(start_entry, stream, group, consumer, now, prefix .. id, e[1], owner)
      if not ok or type(rep) ~= 'table' then rep = {'read'} end
      table.insert(started, {si, e[1], id, owner, unpack(rep)})
    end
  end
end
return {out, started}
"#;

/// KEYS: job, stream, delayed, dlq[, notify job, notify stream].
/// ARGV: entry, group, error, backoff_ms, permanent (0/1), consumer, notify id.
/// Returns {'retry', due_ms} | {'dead'} | {'stale'}.
const FAIL: &str = r#"
local jk = KEYS[1]
drop(KEYS[2], ARGV[2], ARGV[1])
local st = redis.call('HGET', jk, 'state')
if st ~= 'running' or redis.call('HGET', jk, 'entry') ~= ARGV[1] then return {'stale'} end
local now = now_ms()
local attempts = hnum(jk, 'attempts', 0)
local maxa = hnum(jk, 'max_attempts', 1)
end_attempt(jk, attempts, ARGV[6], now, 'failed', ARGV[3])
if ARGV[5] == '0' and attempts < maxa then
  local due = now + tonumber(ARGV[4])
  redis.call('HSET', jk, 'state', 'failed', 'last_error', ARGV[3], 'entry', '',
    'run_at_ms', due, 'updated_ms', now)
  redis.call('ZADD', KEYS[3], due, redis.call('HGET', jk, 'id'))
  return {'retry', tostring(due)}
end
bury(jk, KEYS[4], ARGV[3], now, ARGV[7], KEYS[5], KEYS[6])
return {'dead'}
"#;

/// Moves the given jobs that are due from the delayed set to the stream. The caller read
/// the earliest ids (ZRANGE) and declares their keys; ZREM decides who moves a job, so two
/// instances never move one job twice.
/// KEYS: delayed, stream, job 1..n. ARGV: id 1..n. Returns the number moved.
const MOVE_DUE: &str = r#"
local now = now_ms()
local moved = 0
for i, id in ipairs(ARGV) do
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now and redis.call('ZREM', KEYS[1], id) == 1 then
    local jk = KEYS[i + 2]
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

/// KEYS: dlq, job, stream of the job's queue. ARGV: dlq entry id, job id.
/// Returns the replayed job id or '' (no such dead letter, or its job moved on).
const REPLAY: &str = r#"
local r = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #r == 0 then return '' end
redis.call('XDEL', KEYS[1], ARGV[1])
local f = r[1][2]
local id = nil
for i = 1, #f, 2 do if f[i] == 'job' then id = f[i + 1] end end
if id ~= ARGV[2] then return '' end
local jk = KEYS[2]
if redis.call('HGET', jk, 'state') ~= 'dead' then return '' end
local now = now_ms()
local e = redis.call('XADD', KEYS[3], '*', 'job', id)
push_history(jk, {attempt = hnum(jk, 'attempts', 0), consumer = '', started_ms = now,
  finished_ms = now, outcome = 'replayed'})
redis.call('HSET', jk, 'state', 'queued', 'attempts', 0, 'entry', e, 'updated_ms', now)
redis.call('HINCRBY', jk, 'replays', 1)
return id
"#;

/// Deletes the given dead letters and their job hashes (those still dead).
/// KEYS: dlq, job 1..n. ARGV: entry 1..n. Returns the number of entries removed.
const PURGE: &str = r#"
local n = 0
for i, entry in ipairs(ARGV) do
  local jk = KEYS[i + 1]
  if redis.call('HGET', jk, 'state') == 'dead' then redis.call('DEL', jk) end
  n = n + redis.call('XDEL', KEYS[1], entry)
end
return n
"#;

fn with_prelude(body: &str) -> Script {
    lua::script(&[lua::NOW_MS, lua::JOB_HASH, PRELUDE], body)
}

// Compiled once (redis-rs sends EVALSHA and loads a script on NOSCRIPT).
pub(super) static ENQUEUE_S: LazyLock<Script> = LazyLock::new(|| with_prelude(ENQUEUE));
pub(super) static START_S: LazyLock<Script> = LazyLock::new(|| with_prelude(START));
pub(super) static BURY_LOST_S: LazyLock<Script> = LazyLock::new(|| with_prelude(BURY_LOST));
pub(super) static COMPLETE_S: LazyLock<Script> = LazyLock::new(|| with_prelude(COMPLETE));
pub(super) static FAIL_S: LazyLock<Script> = LazyLock::new(|| with_prelude(FAIL));
pub(super) static MOVE_DUE_S: LazyLock<Script> = LazyLock::new(|| with_prelude(MOVE_DUE));
pub(super) static HEARTBEAT_S: LazyLock<Script> = LazyLock::new(|| Script::new(HEARTBEAT));
pub(super) static REPLAY_S: LazyLock<Script> = LazyLock::new(|| with_prelude(REPLAY));
pub(super) static PURGE_S: LazyLock<Script> = LazyLock::new(|| Script::new(PURGE));
