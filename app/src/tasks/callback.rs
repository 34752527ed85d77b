//! Signed callbacks. When a task with a `callback_url` ends, the queue enqueues a `notify`
//! job on the `callbacks` queue (atomically with the task's last state change). Its handler
//! POSTs the task's outcome; a failed delivery (error or non-2xx) is retried with the
//! queue's backoff, and after the last attempt the delivery is a dead letter.
//!
//! The body is signed: `X-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::target::{Guard, Policy};
use super::{Envelope, TaskSettings, TaskView};
use crate::queue::{Handler, HandlerFuture, JobContext, JobError, QueueError};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-signature-256";

/// `sha256=<lowercase hex of HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header in constant time (what a receiver does).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Only absolute http URLs with a host: the HTTP client is built without TLS (the receivers
/// sit on the private backend network), so an https URL could never be delivered.
pub fn validate_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("callback_url: {e}"))?;
    if u.scheme() != "http" || u.host_str().is_none() {
        return Err(
            "callback_url must be an http:// URL with a host (https is not supported)".into(),
        );
    }
    Ok(())
}

/// A URL whose host is an address the policy refuses (a name is checked when it is
/// resolved, at delivery).
pub fn check_literal(url: &str, policy: &Policy) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("callback_url: {e}"))?;
    let ip = match u.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        _ => return Ok(()),
    };
    match policy.refuses(ip) {
        Some(r) => Err(format!("callback_url refused: {r}")),
        None => Ok(()),
    }
}

/// The `notify` handler of the `callbacks` queue.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    secret: Vec<u8>,
    policy: Arc<Policy>,
}

impl Deliverer {
    pub fn new(settings: &TaskSettings, policy: Arc<Policy>) -> Result<Self, QueueError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.callback_timeout_ms))
            .dns_resolver(Arc::new(Guard(policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("app-callbacks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| QueueError::config("tasks", format!("http client: {e}")))?;
        Ok(Self {
            client,
            secret: settings.callback_secret.as_bytes().to_vec(),
            policy,
        })
    }

    async fn deliver(self, ctx: JobContext) -> Result<crate::queue::JobOutput, JobError> {
        let task_id = ctx
            .payload
            .get("job_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| JobError::permanent("notify payload without job_id"))?
            .to_string();
        let job = ctx
            .queue
            .get(&task_id)
            .await?
            .ok_or_else(|| JobError::permanent(format!("task {task_id} no longer exists")))?;
        let env: Envelope = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(format!("task payload: {e}")))?;
        let Some(url) = env.callback_url else {
            return Err(JobError::permanent("task has no callback_url"));
        };
        // Settings may have changed since the task was submitted: checked again, and a
        // refused target is final (no retries).
        check_literal(&url, &self.policy).map_err(JobError::permanent)?;
        let view = TaskView::from_job(job);
        let body = serde_json::to_vec(&json!({
            "task_id": view.id,
            "kind": view.kind,
            "state": view.state,
            "attempts": view.attempts,
            "result": view.result,
            "error": view.error,
            "finished_ms": view.updated_ms,
        }))
        .map_err(|e| JobError::permanent(e.to_string()))?;
        let resp = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, &body))
            .header("x-task-id", &view.id)
            .header("x-delivery-attempt", ctx.attempt.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let text = format!("{e:?}");
                if text.contains("refused: ") && text.contains("callback host") {
                    JobError::permanent(format!("callback POST refused: {e}: {text}"))
                } else {
                    JobError::retry(format!("callback POST failed: {e}"))
                }
            })?;
        let status = resp.status();
        if status.is_success() {
            Ok(Some(json!({ "url": url, "status": status.as_u16() })))
        } else {
            Err(JobError::retry(format!("callback answered {status}")))
        }
    }
}

impl Handler for Deliverer {
    fn handle(&self, ctx: JobContext) -> HandlerFuture {
        Box::pin(self.clone().deliver(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        // RFC 4231 test case 2.
        let s = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            s,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"other body", &s));
        assert!(!verify(b"other", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"x", "md5=00"));
    }

    #[test]
    fn urls() {
        assert!(validate_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(validate_url("ftp://x/").is_err());
        assert!(validate_url("https://x/").is_err());
        assert!(validate_url("not a url").is_err());
    }
}
