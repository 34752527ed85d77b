//! `app`: the backend service behind the VIP.
//!
//! An axum HTTP API (`http`) over a users resource stored with sqlx (`store`: SQLite or
//! PostgreSQL), read through a two-level cache (`cache`: moka L1, Redis L2, with protections
//! against penetration, breakdown and avalanche), self-registration with the balancer's
//! control planes (`registration`), Prometheus metrics (`metrics`) and an ordered graceful
//! shutdown (`server`).
//!
//! Plug-in points for other modules (the queue, tasks and orders):
//! - `state::AppState` has a `queue` slot (see its docs) shared by every handler;
//! - `http::router` merges extra routers given to it by `server::build_router`;
//! - `server` runs background services until the shutdown token is cancelled.

pub mod config;
pub mod orders;
pub mod queue;
pub mod tasks;
