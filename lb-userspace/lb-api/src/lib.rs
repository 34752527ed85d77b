//! The lbd API contract (docs/api.md): request and answer types ([`types`], [`vrrp`],
//! [`diag`], [`selfcheck`], [`bgp`]), with their OpenAPI schemas, and the typed client ([`Client`])
//! over HTTP/1.1 on the unix socket or TCP. lbd serves these types and generates its OpenAPI document from them; lbctl, the
//! tests and lbd's state file read them.

pub mod bgp;
mod client;
pub mod diag;
mod error;
pub mod schema;
pub mod selfcheck;
mod transport;
pub mod types;
pub mod vrrp;
pub mod web;
mod whole;

pub use client::{CaptureStream, Client, Fetched};
pub use error::ClientError;
pub use transport::{DEFAULT_SOCKET, Endpoint, Tls, TlsFiles};
