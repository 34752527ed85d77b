//! What can go wrong between `lbctl` and `lbd`.

use std::fmt;

use crate::types::ErrorCode;

/// One failure of an API call, worded so that `lbctl` can print it as-is on one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepted the connection: the most common case is that lbd is not running.
    #[error("cannot connect to lbd at {endpoint} (is lbd running?): {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// lbd answered with an error status and its `{"error", "code"}` body.
    #[error("lbd refused the request: {message} ({status} {code})")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// The answer was not what docs/api.md describes (wrong shape, not JSON, unexpected status).
    #[error("bad response from lbd ({status}): {reason}")]
    BadResponse { status: u16, reason: String },
    /// The TLS handshake failed (wrong CA, a certificate lbd refused, ...).
    #[error("TLS with lbd at {endpoint} failed: {source}")]
    Tls {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange itself failed after the connection was made.
    #[error("HTTP exchange with lbd at {endpoint} failed: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    /// lbd did not answer within the time limit.
    #[error("lbd at {endpoint} did not answer within {seconds} s")]
    Timeout { endpoint: String, seconds: f64 },
    /// `--url` could not be used.
    #[error("invalid lbd URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A request could not be built (e.g. a header value with a newline in it).
    #[error("cannot build the request: {0}")]
    Request(String),
}

impl ClientError {
    /// The API's error code when lbd answered with one (`not_found`, `unauthorized`, ...).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status when lbd answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::BadResponse { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    pub(crate) fn bad(status: u16, reason: impl fmt::Display) -> Self {
        ClientError::BadResponse {
            status,
            reason: reason.to_string(),
        }
    }
}
