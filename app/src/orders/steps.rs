//! The saga's steps and compensations. Each is one Lua script guarded by the order's state:
//! it acts only when the order is in the state the step expects, so a redelivered step job
//! changes nothing, and it appends to the history in the same atomic step.
//!
//! reserve_stock: pending -> stock_reserved   (or -> cancelling when out of stock)
//! take_payment:  stock_reserved -> paid      (or -> releasing when declined)
//! confirm:       paid -> confirmed
//! release_stock: releasing -> cancelling     (refund if charged, give the stock back)
//! cancel_order:  cancelling -> cancelled

use std::sync::LazyLock;

use redis::Script;

use crate::queue::lua;

const PRELUDE: &str = r#"
local function hist(key, rec)
  rec.at_ms = now_ms()
  redis.call('RPUSH', key, cjson.encode(rec))
end
local function set_state(order, state)
  redis.call('HSET', order, 'state', state, 'updated_ms', now_ms())
end
"#;

/// KEYS: order, history, idempotency. ARGV: id, sku, quantity, amount_cents, use_idem, ttl.
/// Returns {id, created}.
const CREATE: &str = r#"
if ARGV[5] == '1' then
  local e = redis.call('GET', KEYS[3])
  if e then return {e, 0} end
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[6])
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'sku', ARGV[2], 'quantity', ARGV[3],
  'amount_cents', ARGV[4], 'state', 'pending', 'created_ms', now, 'updated_ms', now)
hist(KEYS[2], {step = 'create_order', status = 'done'})
return {ARGV[1], 1}
"#;

/// KEYS: order, history, stock, held. ARGV: order id. Returns the order's state.
const RESERVE: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'pending' then return st or '' end
local qty = tonumber(redis.call('HGET', KEYS[1], 'quantity'))
local avail = tonumber(redis.call('GET', KEYS[3]) or '0')
if avail < qty then
  redis.call('HSET', KEYS[1], 'reason', 'out of stock')
  set_state(KEYS[1], 'cancelling')
  hist(KEYS[2], {step = 'reserve_stock', status = 'failed',
    reason = 'out of stock: ' .. avail .. ' available, ' .. qty .. ' wanted'})
  return 'cancelling'
end
redis.call('DECRBY', KEYS[3], qty)
redis.call('HSET', KEYS[4], ARGV[1], qty)
set_state(KEYS[1], 'stock_reserved')
hist(KEYS[2], {step = 'reserve_stock', status = 'done', quantity = qty})
return 'stock_reserved'
"#;

/// KEYS: order, history, payment decision, charges. ARGV: order id, roll, ttl.
/// The first roll for an order is kept, so a rerun cannot turn a decline into a charge.
const PAY: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'stock_reserved' then return st or '' end
redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EX', ARGV[3])
local decision = redis.call('GET', KEYS[3])
if decision == 'approved' then
  local amount = redis.call('HGET', KEYS[1], 'amount_cents')
  redis.call('HSET', KEYS[4], ARGV[1], amount)
  set_state(KEYS[1], 'paid')
  hist(KEYS[2], {step = 'take_payment', status = 'done', amount_cents = tonumber(amount)})
  return 'paid'
end
redis.call('HSET', KEYS[1], 'reason', 'payment declined')
set_state(KEYS[1], 'releasing')
hist(KEYS[2], {step = 'take_payment', status = 'failed', reason = 'payment declined'})
return 'releasing'
"#;

/// KEYS: order, history.
const CONFIRM: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'paid' then return st or '' end
set_state(KEYS[1], 'confirmed')
hist(KEYS[2], {step = 'confirm', status = 'done'})
return 'confirmed'
"#;

/// KEYS: order, history, stock, held, charges. ARGV: order id.
const RELEASE: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'releasing' then return st or '' end
if redis.call('HDEL', KEYS[5], ARGV[1]) == 1 then
  hist(KEYS[2], {step = 'refund_payment', status = 'compensated'})
end
local q = redis.call('HGET', KEYS[4], ARGV[1])
if q then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('INCRBY', KEYS[3], q)
  hist(KEYS[2], {step = 'release_stock', status = 'compensated', quantity = tonumber(q)})
end
set_state(KEYS[1], 'cancelling')
return 'cancelling'
"#;

/// KEYS: order, history.
const CANCEL: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'cancelling' then return st or '' end
set_state(KEYS[1], 'cancelled')
hist(KEYS[2], {step = 'cancel_order', status = 'compensated'})
return 'cancelled'
"#;

/// A forward step failed for good (out of attempts): start compensating what was done.
/// KEYS: order, history. ARGV: step, error.
const GIVE_UP: &str = r#"
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'pending' and st ~= 'stock_reserved' and st ~= 'paid' then return st or '' end
local next = 'releasing'
if st == 'pending' then next = 'cancelling' end
redis.call('HSET', KEYS[1], 'reason', ARGV[1] .. ' failed: ' .. ARGV[2])
set_state(KEYS[1], next)
hist(KEYS[2], {step = ARGV[1], status = 'failed', reason = ARGV[2]})
return next
"#;

fn script(body: &str) -> Script {
    lua::script(&[lua::NOW_MS, PRELUDE], body)
}

pub static CREATE_S: LazyLock<Script> = LazyLock::new(|| script(CREATE));
pub static RESERVE_S: LazyLock<Script> = LazyLock::new(|| script(RESERVE));
pub static PAY_S: LazyLock<Script> = LazyLock::new(|| script(PAY));
pub static CONFIRM_S: LazyLock<Script> = LazyLock::new(|| script(CONFIRM));
pub static RELEASE_S: LazyLock<Script> = LazyLock::new(|| script(RELEASE));
pub static CANCEL_S: LazyLock<Script> = LazyLock::new(|| script(CANCEL));
pub static GIVE_UP_S: LazyLock<Script> = LazyLock::new(|| script(GIVE_UP));
