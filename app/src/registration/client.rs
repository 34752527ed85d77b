//! A client of one control plane's registration API (lbd):
//! `POST /v1/vips/{vip}/backends`, `POST .../backends/{address}/drain`,
//! `DELETE .../backends/{address}`, with `Authorization: Bearer <token>`.

use std::time::Duration;

use lb_api::selfcheck::{Forwarding, SelfCheck};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("control plane {url}: request failed: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("control plane {url}: {status}: {message} ({code})")]
    Rejected {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("bad control plane url `{0}`")]
    BadUrl(String),
}

impl RegistrationError {
    /// 404 on deregister means "already gone", which is what we wanted.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistrationError::Rejected { status: 404, .. })
    }
}

#[derive(Debug, Serialize)]
struct RegisterBody<'a> {
    address: &'a str,
    weight: u32,
    /// This host's check of its DSR setup (left out until the first one ran, and for an lbd
    /// that does not take it).
    #[serde(skip_serializing_if = "Option::is_none")]
    self_check: Option<&'a SelfCheck>,
}

/// What lbd answers a registration with (the backend as it stands). Fields an older lbd (or
/// another control plane) leaves out read as "active, no operator override".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Registered {
    /// "active" or "draining".
    #[serde(default)]
    pub admin: Option<String>,
    /// "operator" or "registrant" while draining.
    #[serde(default)]
    pub drained_by: Option<String>,
    /// The configured weight (an operator's `lbctl backend weight` shows here).
    #[serde(default)]
    pub weight: Option<u32>,
    /// How the VIP's packets reach this backend: what the self-check checks against.
    #[serde(default)]
    pub forwarding: Option<Forwarding>,
}

impl Registered {
    /// Drained by an operator: a re-registration does not undo that (`lbctl backend undrain` does).
    pub fn operator_drained(&self) -> bool {
        self.admin.as_deref() == Some("draining")
            && self.drained_by.as_deref() != Some("registrant")
    }
}

#[derive(Debug, Serialize)]
struct DrainBody {
    /// Our own drain (graceful shutdown): our next registration may undo it, unlike an
    /// operator's.
    by: &'static str,
}

#[derive(Debug, Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: String,
}

/// One control plane.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    base: String,
    token: String,
    http: reqwest::Client,
    /// Cleared when this lbd refused the `self_check` field (an older one): registrations
    /// then go without it.
    takes_self_check: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Path segments are names and IP addresses; escape anything else so a value can never
/// change the path's structure.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl ControlPlane {
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, RegistrationError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RegistrationError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|source| RegistrationError::Transport {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            base,
            token: token.to_string(),
            http,
            takes_self_check: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(), RegistrationError> {
        self.send_for(req).await.map(drop)
    }

    async fn send_for(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistrationError> {
        let url = self.base.clone();
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| RegistrationError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body: ErrorBody = resp.json().await.unwrap_or_default();
        Err(RegistrationError::Rejected {
            url,
            status: status.as_u16(),
            code: body.code,
            message: body.error,
        })
    }

    /// Registers, or re-registers (a heartbeat: it declares `weight` but never undoes an
    /// operator's drain, nor an operator's weight unless the declared weight changed).
    /// Returns the backend as the control plane holds it (an unreadable answer body reads
    /// as the defaults: the registration itself succeeded).
    pub async fn register(
        &self,
        vip: &str,
        address: &str,
        weight: u32,
        self_check: Option<&SelfCheck>,
    ) -> Result<Registered, RegistrationError> {
        use std::sync::atomic::Ordering::Relaxed;
        let url = format!("{}/v1/vips/{}/backends", self.base, seg(vip));
        let send = |self_check| {
            self.send_for(self.http.post(&url).json(&RegisterBody {
                address,
                weight,
                self_check,
            }))
        };
        let with = self_check.filter(|_| self.takes_self_check.load(Relaxed));
        let resp = match send(with).await {
            // An lbd from before self-checks refuses the unknown field: go on without.
            Err(RegistrationError::Rejected {
                status: 400 | 422,
                ref message,
                ..
            }) if with.is_some() && message.contains("self_check") => {
                tracing::warn!(
                    control_plane = %self.base,
                    "this lbd does not take self-check reports; registering without them"
                );
                self.takes_self_check.store(false, Relaxed);
                send(None).await?
            }
            r => r?,
        };
        Ok(resp.json().await.unwrap_or_default())
    }

    /// The VIP as lbd describes it (`GET /v1/vips/{vip}`).
    pub async fn vip(&self, vip: &str) -> Result<lb_api::types::Vip, RegistrationError> {
        let url = format!("{}/v1/vips/{}", self.base, seg(vip));
        let resp = self.send_for(self.http.get(url)).await?;
        resp.json()
            .await
            .map_err(|source| RegistrationError::Transport {
                url: self.base.clone(),
                source,
            })
    }

    /// Our own drain: weight 0 for new flows; existing flows continue.
    pub async fn drain(&self, vip: &str, address: &str) -> Result<(), RegistrationError> {
        let url = format!(
            "{}/v1/vips/{}/backends/{}/drain",
            self.base,
            seg(vip),
            seg(address)
        );
        self.send(self.http.post(url).json(&DrainBody { by: "registrant" }))
            .await
    }

    pub async fn deregister(&self, vip: &str, address: &str) -> Result<(), RegistrationError> {
        let url = format!(
            "{}/v1/vips/{}/backends/{}",
            self.base,
            seg(vip),
            seg(address)
        );
        match self.send(self.http.delete(url)).await {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Registered, seg};

    #[test]
    fn operator_drain_is_read_from_the_answer() {
        let read = |s: &str| serde_json::from_str::<Registered>(s).unwrap();
        assert!(!read(r#"{"address": "10.77.0.11", "weight": 70}"#).operator_drained());
        assert!(!read(r#"{"admin": "active", "drained_by": null}"#).operator_drained());
        assert!(read(r#"{"admin": "draining", "drained_by": "operator"}"#).operator_drained());
        assert!(!read(r#"{"admin": "draining", "drained_by": "registrant"}"#).operator_drained());
        // An lbd that does not say who drained: it was not us (we stop refreshing first).
        assert!(read(r#"{"admin": "draining"}"#).operator_drained());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("web"), "web");
        assert_eq!(seg("fd77::11"), "fd77::11");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
    }
}
