//! `lbd`, the balancer's control-plane daemon, as a library: the daemon itself ([`daemon`]:
//! model, API, reconciliation with the maps, sweeps, metrics), health checks ([`health`]) and
//! the backends' MACs from the kernel's neighbour table ([`neighbours`]). The binary is
//! `src/main.rs`; the data plane, config, API contract and VRRP are crates of their own.
pub mod audit;
pub mod auth;
pub mod daemon;
pub mod health;
pub mod neighbours;
pub mod tls;
