//! The order saga (design seed chapter 5): `POST /orders` creates a pending order and emits
//! its first step; workers reserve stock, take a (simulated) payment and confirm. When a step
//! fails for good, compensations run in reverse: refund, release the stock, cancel.
//!
//! State lives in Redis next to the queue: the order hash, its history list, stock counters
//! and the reservations per SKU. See `steps` for the state machine.

mod api;
mod saga;
mod steps;

use std::collections::{BTreeMap, HashMap};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::queue::{Queue, QueueError, Registry};

pub use api::{api, routes};

/// Queue of the saga's step jobs.
pub const ORDERS_QUEUE: &str = "orders";

/// `[orders]` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OrderSettings {
    /// Probability (0-1) that the simulated payment declines an order.
    pub payment_failure_rate: f64,
    /// Attempts of a compensation job (they must eventually succeed; a dead one can be replayed).
    pub compensation_max_attempts: u32,
    /// Stock set at start for SKUs that have none yet.
    pub initial_stock: BTreeMap<String, u64>,
}

impl Default for OrderSettings {
    fn default() -> Self {
        Self {
            payment_failure_rate: 0.1,
            compensation_max_attempts: 20,
            initial_stock: BTreeMap::new(),
        }
    }
}

impl OrderSettings {
    pub fn validate(&self) -> Result<(), QueueError> {
        if !(0.0..=1.0).contains(&self.payment_failure_rate) {
            return Err(QueueError::config(
                "orders.payment_failure_rate",
                "must be between 0 and 1",
            ));
        }
        if self.compensation_max_attempts == 0 {
            return Err(QueueError::config(
                "orders.compensation_max_attempts",
                "must be at least 1",
            ));
        }
        for sku in self.initial_stock.keys() {
            validate_sku(sku).map_err(|e| QueueError::config("orders.initial_stock", e))?;
        }
        Ok(())
    }
}

/// Where an order is in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Pending,
    StockReserved,
    Paid,
    Confirmed,
    /// Compensating: refund and give the stock back.
    Releasing,
    /// Compensating: cancel the order.
    Cancelling,
    Cancelled,
}

impl OrderState {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "stock_reserved" => Self::StockReserved,
            "paid" => Self::Paid,
            "confirmed" => Self::Confirmed,
            "releasing" => Self::Releasing,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Confirmed | Self::Cancelled)
    }

    /// The step job that moves an order on from this state.
    pub(crate) fn next_step(self) -> Option<&'static str> {
        match self {
            Self::Pending => Some("reserve_stock"),
            Self::StockReserved => Some("take_payment"),
            Self::Paid => Some("confirm"),
            Self::Releasing => Some("release_stock"),
            Self::Cancelling => Some("cancel_order"),
            Self::Confirmed | Self::Cancelled => None,
        }
    }
}

/// A new order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
    /// What the payment charges, at most 10^12 (Redis keeps it as a number).
    #[schema(maximum = 1_000_000_000_000u64)]
    pub amount_cents: u64,
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub id: String,
    pub sku: String,
    pub quantity: u32,
    pub amount_cents: u64,
    pub state: OrderState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Steps and compensations in the order they happened.
    pub history: Vec<serde_json::Value>,
}

/// Stock of one SKU.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StockView {
    pub sku: String,
    pub available: i64,
    /// Units held by orders (reserved or confirmed).
    pub held: i64,
}

/// The largest stock count or amount the saga takes: far inside the signed 64-bit integers
/// and the 2^53 exact integers Redis scripts count with.
pub const MAX_UNITS: u64 = 1_000_000_000_000;

pub fn validate_sku(sku: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&sku.len())
        && sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "sku {sku:?} must be 1-64 characters of [A-Za-z0-9._-]"
        ))
    }
}

/// Redis keys of the saga. An order lives in the hash slot of its SKU (the SKU is the hash
/// tag of every key below), so each step's script, which changes the order and the SKU's
/// stock together, touches one slot in a cluster; an order id carries its SKU
/// (`{uuid}.{sku}`) so that its keys follow from it. Orders of one SKU compete for one stock
/// counter anyway, so they share a master.
pub(crate) struct OrderKeys<'a>(pub &'a Queue);

impl OrderKeys<'_> {
    /// `id` must come from [`sku_of`] checks (the saga and the API check first).
    pub fn order(&self, id: &str) -> String {
        let sku = sku_of(id).unwrap_or("-");
        self.0.keys().scoped(&format!("order:{{{sku}}}:{id}"))
    }
    pub fn history(&self, id: &str) -> String {
        format!("{}:history", self.order(id))
    }
    pub fn idempotency(&self, sku: &str, key: &str) -> String {
        self.0.keys().scoped(&format!("order-idem:{{{sku}}}:{key}"))
    }
    pub fn stock(&self, sku: &str) -> String {
        self.0.keys().scoped(&format!("stock:{{{sku}}}"))
    }
    pub fn held(&self, sku: &str) -> String {
        self.0.keys().scoped(&format!("stock:{{{sku}}}:held"))
    }
    pub fn payment(&self, id: &str) -> String {
        let sku = sku_of(id).unwrap_or("-");
        self.0.keys().scoped(&format!("payment:{{{sku}}}:{id}"))
    }
    pub fn charges(&self, sku: &str) -> String {
        charges_key(self.0, sku)
    }
}

/// The hash of the charged orders of one SKU (order id -> amount in cents).
pub fn charges_key(queue: &Queue, sku: &str) -> String {
    queue.keys().scoped(&format!("charges:{{{sku}}}"))
}

/// The SKU an order id carries (`{32 hex digits}.{sku}`), if it is one of ours.
pub fn sku_of(id: &str) -> Option<&str> {
    let (uuid, sku) = id.split_once('.')?;
    let hex = uuid.len() == 32 && uuid.chars().all(|c| c.is_ascii_hexdigit());
    (hex && validate_sku(sku).is_ok()).then_some(sku)
}

/// Creates and reads orders, manages stock, and provides the saga's handlers.
#[derive(Clone)]
pub struct OrderService {
    queue: Queue,
    settings: OrderSettings,
}

impl OrderService {
    pub fn new(queue: Queue, settings: OrderSettings) -> Result<Self, QueueError> {
        settings.validate()?;
        Ok(Self { queue, settings })
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Sets the configured initial stock of SKUs that have none yet.
    pub async fn seed_stock(&self) -> Result<(), QueueError> {
        let mut conn = self.queue.connection();
        for (sku, n) in &self.settings.initial_stock {
            let _: bool = conn.set_nx(OrderKeys(&self.queue).stock(sku), *n).await?;
        }
        Ok(())
    }

    /// Creates a pending order and emits its first step. With an idempotency key seen before,
    /// returns the first order (created = false).
    pub async fn create(
        &self,
        req: OrderRequest,
        idempotency_key: Option<String>,
    ) -> Result<(String, bool), QueueError> {
        validate_sku(&req.sku).map_err(QueueError::Invalid)?;
        if req.quantity == 0 || req.quantity > 1_000_000 {
            return Err(QueueError::Invalid("quantity must be 1-1000000".into()));
        }
        if req.amount_cents > MAX_UNITS {
            return Err(QueueError::Invalid(format!(
                "amount_cents must be at most {MAX_UNITS}"
            )));
        }
        if let Some(k) = &idempotency_key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(QueueError::Invalid(
                "idempotency key must be 1-200 characters".into(),
            ));
        }
        let keys = OrderKeys(&self.queue);
        let id = format!("{}.{}", uuid::Uuid::new_v4().simple(), req.sku);
        let idem = idempotency_key.unwrap_or_default();
        let mut conn = self.queue.connection();
        let (id, created): (String, i64) = steps::CREATE_S
            .key(keys.order(&id))
            .key(keys.history(&id))
            .key(keys.idempotency(&req.sku, &idem))
            .arg(&id)
            .arg(&req.sku)
            .arg(req.quantity)
            .arg(req.amount_cents)
            .arg(if idem.is_empty() { "0" } else { "1" })
            .arg(self.queue.settings().idempotency_ttl_s)
            .invoke_async(&mut conn)
            .await?;
        // The "order created" event. On a repeated request this is a no-op (same key), and
        // it also repairs an order whose first attempt died between the two calls.
        saga::emit(&self.queue, &self.settings, &id, OrderState::Pending).await?;
        Ok((id, created == 1))
    }

    pub async fn get(&self, id: &str) -> Result<Option<OrderView>, QueueError> {
        if sku_of(id).is_none() {
            return Ok(None);
        }
        let keys = OrderKeys(&self.queue);
        let mut conn = self.queue.connection();
        let (h, hist): (HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(keys.order(id))
            .lrange(keys.history(id), 0, -1)
            .query_async(&mut conn)
            .await?;
        if h.is_empty() {
            return Ok(None);
        }
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let state = h
            .get("state")
            .and_then(|s| OrderState::parse(s))
            .ok_or_else(|| QueueError::Decode(format!("order {id} has no valid state")))?;
        Ok(Some(OrderView {
            id: id.to_string(),
            sku: h.get("sku").cloned().unwrap_or_default(),
            quantity: n("quantity") as u32,
            amount_cents: n("amount_cents"),
            state,
            reason: h.get("reason").cloned(),
            created_ms: n("created_ms"),
            updated_ms: n("updated_ms"),
            history: hist
                .iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect(),
        }))
    }

    pub async fn stock(&self, sku: &str) -> Result<StockView, QueueError> {
        validate_sku(sku).map_err(QueueError::Invalid)?;
        let keys = OrderKeys(&self.queue);
        let mut conn = self.queue.connection();
        let (available, held): (Option<i64>, HashMap<String, i64>) = redis::pipe()
            .get(keys.stock(sku))
            .hgetall(keys.held(sku))
            .query_async(&mut conn)
            .await?;
        Ok(StockView {
            sku: sku.to_string(),
            available: available.unwrap_or(0),
            held: held.values().sum(),
        })
    }

    /// Sets the available units of a SKU (units held by orders are not touched).
    pub async fn set_stock(&self, sku: &str, available: u64) -> Result<StockView, QueueError> {
        validate_sku(sku).map_err(QueueError::Invalid)?;
        // The saga's scripts count stock with Redis integers (signed 64 bits).
        if available > MAX_UNITS {
            return Err(QueueError::Invalid(format!(
                "available must be at most {MAX_UNITS}"
            )));
        }
        let mut conn = self.queue.connection();
        let _: () = conn
            .set(OrderKeys(&self.queue).stock(sku), available)
            .await?;
        self.stock(sku).await
    }

    /// The saga's step handlers (queue `orders`).
    pub fn registry(&self) -> Registry {
        saga::registry(self.settings.clone())
    }
}
