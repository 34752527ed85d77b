//! `app`: the backend service behind the VIP.
//!
//! An axum HTTP API (`http`) over a users resource stored with sqlx (`store`: SQLite or
//! PostgreSQL), read through a two-level cache (`cache`: moka L1, Redis L2, with protections
//! against penetration, breakdown and avalanche), self-registration with the balancer's
//! control planes (`registration`) carrying the host's check of its own DSR setup
//! (`hostcheck`, also `app check-host`), Prometheus metrics (`metrics`) and an ordered
//! graceful shutdown (`server`).
//!
//! The job queue (`queue`: Redis Streams or RabbitMQ behind one transport seam), async tasks
//! (`tasks`) and the order saga (`orders`) run on it. `wiring` is the composition root that
//! connects them to the configuration and the server: `server::start_with` takes an
//! extension builder that gets the `state::AppState` (config, metrics registry, shutdown
//! token) and returns `server::Extensions` (routes merged under the app's middleware by
//! `http::router_with`, shutdown hooks run after in-flight requests).
//!
//! Every route answers errors in one shape and is in one OpenAPI document (`GET
//! /openapi.json`, `app openapi`): `api` holds the shape, the extractors and the document's
//! conventions; each module's handlers carry their `#[utoipa::path]` (app/docs/api.md).
//!
//! The top-level modules form no cycle (`cargo xtask test lint` checks it): `config`
//! reads the settings types of `queue`, `tasks` and `orders`; `tasks` and `orders` use
//! `queue` and `api`; `api` uses only `queue`; `queue` uses none of them; only `wiring`
//! knows them all.
//!
//! Redis is reached through the `app_redis` crate (`app/redis`) in any of three modes (one
//! server, a Sentinel set, a Redis Cluster), chosen by the form of `redis.url`; the cache and
//! the queue both use it.

pub mod alloc;
pub mod api;
pub mod cache;
pub mod config;
pub mod hostcheck;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod orders;
pub mod queue;
pub mod registration;
pub mod server;
pub mod state;
pub mod store;
pub mod tasks;
pub mod wiring;
