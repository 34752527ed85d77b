//! The lbd API contract (docs/api.md): request and answer types ([`types`], [`vrrp`]) and the
//! typed client ([`Client`]) over HTTP/1.1 on the unix socket or TCP. lbd serves these types,
//! lbctl and the tests read them.

pub mod bgp;
mod client;
mod error;
mod transport;
pub mod types;
pub mod vrrp;

pub use client::{Client, Fetched};
pub use error::ClientError;
pub use transport::{DEFAULT_SOCKET, Endpoint};
