//! The app's admin routes behind a bearer token: everything that changes state beyond users
//! (dead-letter list, replay and purge, stock changes) and the debug routes. Without
//! `http.admin_token` or `http.admin_token_file` they are refused (403): no admin action is
//! open by default.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, is_admin};
use crate::config::HttpConfig;

/// Shortest token accepted (a guessable token protects nothing).
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin token in force (`None`: admin routes are off).
#[derive(Clone)]
pub struct AdminToken(Option<Arc<[u8]>>);

impl AdminToken {
    /// `http.admin_token_file` (its first line) wins over `http.admin_token`.
    pub fn load(cfg: &HttpConfig) -> anyhow::Result<Self> {
        let token = match (&cfg.admin_token_file, &cfg.admin_token) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("http.admin_token_file {path}: {e}"))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            ),
            (None, Some(t)) => Some(t.trim().to_string()),
            (None, None) => None,
        };
        if let Some(t) = &token
            && t.len() < MIN_TOKEN_LEN
        {
            anyhow::bail!("http.admin_token: at least {MIN_TOKEN_LEN} characters");
        }
        Ok(Self(token.map(|t| Arc::from(t.into_bytes()))))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn guard(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    if !is_admin(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let Some(want) = &token.0 else {
        return ApiError::Forbidden(
            "admin routes are off: set http.admin_token_file (or http.admin_token)".into(),
        )
        .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.trim().as_bytes(), want) => {
            tracing::info!(target: "audit", method = %req.method(), path = %req.uri().path(), request_id = %crate::api::request_id(), "admin route");
            next.run(req).await
        }
        _ => ApiError::Unauthorized("admin route: missing or wrong bearer token".into())
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn admin_routes() {
        assert!(is_admin(&Method::DELETE, "/dlq/tasks"));
        assert!(is_admin(&Method::GET, "/dlq/tasks"));
        assert!(is_admin(&Method::PUT, "/orders/stock/pen"));
        assert!(!is_admin(&Method::GET, "/orders/stock/pen"));
        assert!(!is_admin(&Method::POST, "/orders"));
        assert!(!is_admin(&Method::POST, "/users"));
        assert!(!is_admin(&Method::GET, "/dlqx"));
    }
}
