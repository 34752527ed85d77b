//! Typed calls of the lbd API: one method per endpoint of docs/api.md.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use hyper::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ClientError;
use super::transport::{Endpoint, exchange, open};
use super::types::{
    Backend, Deleted, ErrorBody, HealthEntry, NewBackend, NewVip, Reload, ReloadReport, SetWeight,
    Shutdown, ShuttingDown, Stats, Status, Vip,
};

/// A typed answer together with the JSON it was read from (what `--json` prints) and its status.
#[derive(Clone, Debug)]
pub struct Fetched<T> {
    pub value: T,
    pub raw: serde_json::Value,
    pub status: u16,
}

/// The lbd API client. Each call opens its own connection.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self { endpoint, timeout }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub async fn status(&self) -> Result<Fetched<Status>, ClientError> {
        self.get("/v1/status").await
    }

    pub async fn vips(&self) -> Result<Fetched<Vec<Vip>>, ClientError> {
        self.get("/v1/vips").await
    }

    pub async fn vip(&self, vip: &str) -> Result<Fetched<Vip>, ClientError> {
        self.get(&format!("/v1/vips/{}", segment(vip))).await
    }

    pub async fn add_vip(&self, vip: &NewVip) -> Result<Fetched<Vip>, ClientError> {
        self.call(Method::POST, "/v1/vips", Some(vip)).await
    }

    pub async fn delete_vip(&self, vip: &str) -> Result<Fetched<Deleted>, ClientError> {
        let path = format!("/v1/vips/{}", segment(vip));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    pub async fn backends(&self, vip: &str) -> Result<Fetched<Vec<Backend>>, ClientError> {
        self.get(&format!("/v1/vips/{}/backends", segment(vip)))
            .await
    }

    /// Adds or re-registers a backend: status 201 when new, 200 when it existed.
    pub async fn add_backend(
        &self,
        vip: &str,
        backend: &NewBackend,
    ) -> Result<Fetched<Backend>, ClientError> {
        let path = format!("/v1/vips/{}/backends", segment(vip));
        self.call(Method::POST, &path, Some(backend)).await
    }

    pub async fn delete_backend(
        &self,
        vip: &str,
        address: IpAddr,
    ) -> Result<Fetched<Deleted>, ClientError> {
        let path = backend_path(vip, address, "");
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    pub async fn set_weight(
        &self,
        vip: &str,
        address: IpAddr,
        weight: u32,
    ) -> Result<Fetched<Backend>, ClientError> {
        let path = backend_path(vip, address, "/weight");
        self.call(Method::POST, &path, Some(&SetWeight { weight }))
            .await
    }

    pub async fn drain(&self, vip: &str, address: IpAddr) -> Result<Fetched<Backend>, ClientError> {
        let path = backend_path(vip, address, "/drain");
        self.call(Method::POST, &path, None::<&()>).await
    }

    pub async fn undrain(
        &self,
        vip: &str,
        address: IpAddr,
    ) -> Result<Fetched<Backend>, ClientError> {
        let path = backend_path(vip, address, "/undrain");
        self.call(Method::POST, &path, None::<&()>).await
    }

    pub async fn health(&self) -> Result<Fetched<Vec<HealthEntry>>, ClientError> {
        self.get("/v1/health").await
    }

    pub async fn stats(&self) -> Result<Fetched<Stats>, ClientError> {
        self.get("/v1/stats").await
    }

    /// `GET /v1/vrrp`: every VRRP router's state and counters (one per address family).
    pub async fn vrrp(&self) -> Result<Fetched<crate::vrrp::Overview>, ClientError> {
        self.get("/v1/vrrp").await
    }

    /// `GET /v1/bgp`: sessions and announced prefixes (404 without `[bgp]`).
    pub async fn bgp(&self) -> Result<Fetched<crate::bgp::Overview>, ClientError> {
        self.get("/v1/bgp").await
    }

    /// Asks lbd to exit (and with `detach` to remove the XDP program and its pins).
    pub async fn shutdown(&self, detach: bool) -> Result<Fetched<ShuttingDown>, ClientError> {
        self.call(Method::POST, "/v1/shutdown", Some(&Shutdown { detach }))
            .await
    }

    /// Re-reads lbd.toml: shows the difference, and applies it unless `dry_run`; `prune`
    /// also removes what the API or registrations added that the file does not list.
    pub async fn reload(
        &self,
        dry_run: bool,
        prune: bool,
    ) -> Result<Fetched<ReloadReport>, ClientError> {
        self.call(Method::POST, "/v1/reload", Some(&Reload { dry_run, prune }))
            .await
    }

    /// `GET /v1/vips/{vip}/trace`: where a flow of the VIP goes, and why.
    pub async fn trace(
        &self,
        vip: &str,
        q: &crate::diag::TraceQuery,
    ) -> Result<Fetched<crate::diag::Trace>, ClientError> {
        let mut path = format!(
            "/v1/vips/{}/trace?client={}",
            segment(vip),
            segment(&q.client.to_string())
        );
        for (k, v) in [
            ("protocol", q.protocol.clone()),
            ("port", q.port.map(|p| p.to_string())),
            ("first", q.first.clone()),
        ] {
            if let Some(v) = v {
                let _ = write!(path, "&{k}={}", segment(&v));
            }
        }
        self.get(&path).await
    }

    /// `POST /v1/capture`: starts a capture; its events come from the returned stream until
    /// its `End` (or until the stream is dropped, which stops the capture). The client's
    /// timeout bounds the wait for the first line only.
    pub async fn capture(
        &self,
        req: &crate::diag::CaptureRequest,
    ) -> Result<CaptureStream, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Request(e.to_string()))?;
        let timeout = |_| ClientError::Timeout {
            endpoint: self.endpoint.to_string(),
            seconds: self.timeout.as_secs_f64(),
        };
        let opened = tokio::time::timeout(
            self.timeout,
            open(&self.endpoint, Method::POST, "/v1/capture", Some(body)),
        )
        .await
        .map_err(timeout)??;
        if !(200..300).contains(&opened.status) {
            let status = opened.status;
            let body = opened.rest().await;
            return Err(interpret::<serde_json::Value>(status, &body)
                .err()
                .unwrap_or_else(|| ClientError::bad(status, "error status")));
        }
        Ok(CaptureStream { inner: opened })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Fetched<T>, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Fetched<T>, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Request(e.to_string()))?;
        let exchange = exchange(&self.endpoint, method, path, body);
        let raw = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                endpoint: self.endpoint.to_string(),
                seconds: self.timeout.as_secs_f64(),
            })??;
        interpret(raw.status, &raw.body)
    }
}

/// The events of a running capture, one JSON line each.
pub struct CaptureStream {
    inner: crate::transport::Streaming,
}

impl CaptureStream {
    /// The next event with the JSON line it was read from; `None` when the stream ended.
    pub async fn next(
        &mut self,
    ) -> Result<Option<(crate::diag::CaptureEvent, serde_json::Value)>, ClientError> {
        loop {
            let Some(line) = self.inner.next_line().await? else {
                return Ok(None);
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let status = self.inner.status;
            let raw: serde_json::Value = serde_json::from_slice(&line).map_err(|e| {
                ClientError::bad(status, format!("not JSON ({e}): {}", snippet(&line)))
            })?;
            let event = crate::diag::CaptureEvent::deserialize(&raw).map_err(|e| {
                ClientError::bad(
                    status,
                    format!("unexpected event ({e}): {}", snippet(&line)),
                )
            })?;
            return Ok(Some((event, raw)));
        }
    }
}

/// Turns status and body into the typed answer or the API's error.
fn interpret<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<Fetched<T>, ClientError> {
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => ClientError::Api {
                status,
                code: e.code,
                message: e.error,
            },
            Err(_) => ClientError::bad(
                status,
                format!("error without the JSON error body: {}", snippet(body)),
            ),
        });
    }
    let raw: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ClientError::bad(status, format!("not JSON ({e}): {}", snippet(body))))?
    };
    let value = T::deserialize(&raw).map_err(|e| {
        ClientError::bad(
            status,
            format!(
                "unexpected shape ({e}): {}",
                snippet(raw.to_string().as_bytes())
            ),
        )
    })?;
    Ok(Fetched { value, raw, status })
}

/// The start of a body, on one line, for error messages.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 160;
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX {
        format!("{}...", line.chars().take(MAX).collect::<String>())
    } else if line.is_empty() {
        "(empty body)".to_string()
    } else {
        line
    }
}

fn backend_path(vip: &str, address: IpAddr, action: &str) -> String {
    format!("/v1/vips/{}/backends/{address}{action}", segment(vip))
}

/// Percent-encodes one path segment so that any VIP name stays a single segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("web-1"), "web-1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        let v6: IpAddr = "fd00::11".parse().unwrap();
        assert_eq!(
            backend_path("web", v6, "/drain"),
            "/v1/vips/web/backends/fd00::11/drain"
        );
    }

    #[test]
    fn errors_are_interpreted() {
        let e =
            interpret::<Deleted>(404, br#"{"error":"no VIP x","code":"not_found"}"#).unwrap_err();
        assert_eq!(e.code(), Some(crate::types::ErrorCode::NotFound));
        assert_eq!(e.status(), Some(404));
        assert!(e.to_string().contains("no VIP x"));
        let e = interpret::<Deleted>(502, b"<html>bad gateway</html>").unwrap_err();
        assert!(
            matches!(e, ClientError::BadResponse { status: 502, .. }),
            "{e}"
        );
        let e = interpret::<Deleted>(200, b"{\"gone\": 1}").unwrap_err();
        assert!(e.to_string().contains("unexpected shape"), "{e}");
        let ok = interpret::<serde_json::Value>(202, b"").unwrap();
        assert_eq!(ok.raw, serde_json::Value::Null);
        // A code this client does not know is not the API's error shape.
        let e = interpret::<Deleted>(418, br#"{"error":"tea","code":"teapot"}"#).unwrap_err();
        assert!(
            matches!(e, ClientError::BadResponse { status: 418, .. }),
            "{e}"
        );
    }
}
