//! Client side of the `lbd` JSON API (docs/api.md): the transport (HTTP/1.1 over the unix
//! socket or TCP), typed requests and answers, and the human output of `lbctl`.

mod api;
mod error;
pub mod format;
pub mod rates;
pub mod table;
mod transport;
pub mod types;

pub use api::{Client, Fetched};
pub use error::ClientError;
pub use transport::{DEFAULT_SOCKET, Endpoint};
