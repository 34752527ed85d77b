//! Who is calling lbd's API and what they may do.
//!
//! The unix socket is an administrator's (its file mode guards it). On TCP a client is known
//! by its bearer token or its client certificate, and its scope decides, route by route
//! ([`ROUTES`]): `admin` everything, `read-only` every GET (a trace too, not a capture: it
//! shows packets' contents), `registrant` only registering (with its self-check report),
//! refreshing, draining and deregistering backends of its VIPs at its own address (or its
//! listed ones). Anything else is 403 before a handler runs, so a refused call changes nothing.

use std::{net::IpAddr, sync::Arc};

use anyhow::{Context, Result, bail};
use axum::{
    Json,
    body::Body,
    extract::Request,
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use lb_api::types::{ErrorBody, ErrorCode};
use lb_config::{AccessConfig, Scope};

use crate::{
    audit::{self, Who},
    tls::Peer,
};

/// The largest body the registrant check reads: a registration with the largest self-check
/// report lb-api accepts (its findings' texts JSON-escaped at worst) fits; anything larger is
/// not a registration.
const MAX_CHECKED_BODY: usize =
    1024 + lb_api::selfcheck::MAX_FINDINGS * (2 * 6 * lb_api::selfcheck::MAX_TEXT + 256);

/// One client of the TCP API, its token read from its file.
struct Client {
    name: String,
    scope: Scope,
    token: Option<Vec<u8>>,
    cert_name: Option<String>,
}

/// The clients and TLS settings in force (replaced whole by a reload).
pub struct Access {
    clients: Vec<Client>,
    /// The TLS acceptor of the TCP listener, when `[api.tls]` is set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub cfg: AccessConfig,
}

impl Access {
    /// Reads every token file and the TLS certificates: a missing or short token, or an
    /// unreadable certificate, is an error (at start-up lbd refuses to run, a reload is
    /// refused).
    pub fn load(cfg: &AccessConfig) -> Result<Self> {
        let mut clients = Vec::new();
        for c in &cfg.clients {
            let token = match &c.token_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!(
                            "client {}: reading its token from {}",
                            c.name,
                            path.display()
                        )
                    })?;
                    let token = text.lines().next().unwrap_or("").trim().to_string();
                    if token.len() < 16 {
                        bail!(
                            "client {}: the token in {} must be at least 16 characters",
                            c.name,
                            path.display()
                        );
                    }
                    Some(token.into_bytes())
                }
                None => None,
            };
            clients.push(Client {
                name: c.name.clone(),
                scope: c.scope.clone(),
                token,
                cert_name: c.cert_name.clone(),
            });
        }
        for (i, a) in clients.iter().enumerate() {
            for b in &clients[i + 1..] {
                if a.token.is_some() && a.token == b.token {
                    bail!(
                        "clients {} and {} have the same token: each client needs its own",
                        a.name,
                        b.name
                    );
                }
            }
        }
        let tls = cfg
            .tls
            .as_ref()
            .map(crate::tls::acceptor)
            .transpose()
            .context("api.tls")?;
        Ok(Self {
            clients,
            tls,
            cfg: cfg.clone(),
        })
    }

    /// The client whose token this is (every token is compared, in constant time).
    fn by_token(&self, given: &[u8]) -> Option<&Client> {
        let mut found = None;
        for c in &self.clients {
            if let Some(t) = &c.token
                && constant_time_eq(given, t)
            {
                found = Some(c);
            }
        }
        found
    }

    fn by_cert(&self, names: &[String]) -> Option<&Client> {
        self.clients.iter().find(|c| {
            c.cert_name
                .as_ref()
                .is_some_and(|want| names.iter().any(|n| n == want))
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The caller of one request, as the audit log names it.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
    /// `10.77.0.11:40312`, or `unix socket (uid 0)`.
    pub from: String,
    pub ip: Option<IpAddr>,
}

impl Principal {
    /// Whoever acts for lbd itself (a signal, a lease): an administrator.
    pub fn internal(name: &str) -> Self {
        Self {
            name: name.into(),
            scope: Scope::Admin,
            from: "lbd".into(),
            ip: None,
        }
    }

    pub fn is_registrant(&self) -> bool {
        matches!(self.scope, Scope::Registrant { .. })
    }

    fn who(&self) -> Who<'_> {
        Who {
            name: &self.name,
            scope: self.scope.name(),
            from: &self.from,
        }
    }
}

/// What a route does, for the scope check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reads state: admin and read-only.
    Read,
    /// `POST /v1/vips/{vip}/backends`: admin, and a registrant for its own backend.
    Register,
    /// `DELETE .../backends/{addr}`: admin, and a registrant for its own backend.
    Deregister,
    /// `POST .../drain`: admin, and a registrant for its own backend (its own drain).
    Drain,
    /// Every other change: admin only.
    Admin,
    /// `POST /v1/capture`: changes nothing, but shows packets' contents (clients' addresses
    /// and payloads): admin only, and audited like a change (who saw which packets). A trace
    /// reads only lbd's own maps and is `Read`.
    Inspect,
}

impl Action {
    pub fn changes(self) -> bool {
        self != Action::Read
    }
}

/// One route of the API and what it does. The router (`daemon::api`) serves exactly these
/// (a test checks both ways), so a new route must be classified here to be reachable by
/// anyone but an administrator.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub action: Action,
}

macro_rules! routes {
    ($($m:ident $p:literal => $a:ident),* $(,)?) => {
        &[$(Route { method: Method::$m, path: $p, action: Action::$a }),*]
    };
}

pub const ROUTES: &[Route] = routes![
    GET "/v1/status" => Read,
    GET "/v1/vips" => Read,
    POST "/v1/vips" => Admin,
    GET "/v1/vips/{vip}" => Read,
    DELETE "/v1/vips/{vip}" => Admin,
    GET "/v1/vips/{vip}/backends" => Read,
    POST "/v1/vips/{vip}/backends" => Register,
    DELETE "/v1/vips/{vip}/backends/{addr}" => Deregister,
    POST "/v1/vips/{vip}/backends/{addr}/weight" => Admin,
    POST "/v1/vips/{vip}/backends/{addr}/drain" => Drain,
    POST "/v1/vips/{vip}/backends/{addr}/undrain" => Admin,
    GET "/v1/health" => Read,
    GET "/v1/stats" => Read,
    GET "/v1/vrrp" => Read,
    GET "/v1/bgp" => Read,
    GET "/v1/events" => Read,
    GET "/v1/vips/{vip}/trace" => Read,
    POST "/v1/capture" => Inspect,
    POST "/v1/reload" => Admin,
    POST "/v1/shutdown" => Admin,
    GET "/metrics" => Read,
    GET "/v1/openapi.json" => Read,
];

/// The route `path` matches, with its `{vip}` and `{addr}` segments.
pub fn classify<'a>(
    method: &Method,
    path: &'a str,
) -> Option<(&'static Route, Option<&'a str>, Option<&'a str>)> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES.iter().find_map(|r| {
        if r.method != method {
            return None;
        }
        let want: Vec<&str> = r.path.split('/').collect();
        if want.len() != segs.len() {
            return None;
        }
        let (mut vip, mut addr) = (None, None);
        for (w, s) in want.iter().zip(&segs) {
            match *w {
                "{vip}" => vip = Some(*s),
                "{addr}" => addr = Some(*s),
                w if w == *s => {}
                _ => return None,
            }
        }
        Some((r, vip, addr))
    })
}

/// Whether `p` may do `action` (on backend `addr` of `vip`); the reason when not.
pub fn permit(
    p: &Principal,
    action: Action,
    vip: Option<&str>,
    addr: Option<IpAddr>,
) -> Result<(), String> {
    match (&p.scope, action) {
        (Scope::Admin, _) | (Scope::ReadOnly, Action::Read) => Ok(()),
        (Scope::ReadOnly, Action::Inspect) => Err(format!(
            "client {} is read-only; a capture shows packet contents and needs the admin scope",
            p.name
        )),
        (Scope::ReadOnly, _) => Err(format!("client {} is read-only", p.name)),
        (Scope::Registrant { .. }, Action::Read | Action::Admin | Action::Inspect) => Err(format!(
            "client {} may only register, drain and deregister its own backends",
            p.name
        )),
        (Scope::Registrant { vips, addresses }, _) => {
            let vip = vip.unwrap_or("");
            if !vips.iter().any(|v| v == vip) {
                return Err(format!("client {} may not register with VIP {vip}", p.name));
            }
            let Some(addr) = addr else {
                return Err("no backend address given".into());
            };
            let own = if addresses.is_empty() {
                p.ip.map(canonical) == Some(canonical(addr))
            } else {
                addresses.iter().any(|a| canonical(*a) == canonical(addr))
            };
            if own {
                Ok(())
            } else if addresses.is_empty() {
                Err(format!(
                    "client {} may only register its own address ({}), not {addr}",
                    p.name,
                    p.ip.map(|i| i.to_string()).unwrap_or_default()
                ))
            } else {
                Err(format!(
                    "client {} may not register {addr} (not in its addresses)",
                    p.name
                ))
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 peers) as IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
        code,
    };
    (status, Json(body)).into_response()
}

/// The principal of a request: the unix socket's administrator, or a TCP client by token
/// or certificate.
fn identify(access: &Access, req: &Request) -> Result<Principal, &'static str> {
    let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    let Some(addr) = peer.addr else {
        let from = match peer.uid {
            Some(uid) => format!("unix socket (uid {uid})"),
            None => "unix socket".into(),
        };
        return Ok(Principal {
            name: "unix".into(),
            scope: Scope::Admin,
            from,
            ip: None,
        });
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let client = match bearer {
        Some(t) => access.by_token(t.trim().as_bytes()),
        None => access.by_cert(&peer.cert_names),
    };
    match client {
        Some(c) => Ok(Principal {
            name: c.name.clone(),
            scope: c.scope.clone(),
            from: addr.to_string(),
            ip: Some(addr.ip()),
        }),
        None if bearer.is_some() => Err("wrong bearer token"),
        None => Err("missing bearer token (or a client certificate lbd knows)"),
    }
}

/// The address a registration names (its JSON body's `address`).
fn body_address(body: &[u8]) -> Option<IpAddr> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("address")?
        .as_str()?
        .parse()
        .ok()
}

/// The middleware of both listeners: identifies the caller, checks the route against its
/// scope (403 before any handler), passes the principal on and writes the audit line of
/// every change.
pub async fn guard(access: Arc<Access>, req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = classify(&method, &path);
    let action = route.map(|(r, _, _)| r.action).unwrap_or(Action::Admin);
    let principal = match identify(&access, &req) {
        Ok(p) => p,
        Err(why) => {
            let resp = error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, why);
            if action.changes() {
                let from = req
                    .extensions()
                    .get::<Peer>()
                    .and_then(|p| p.addr)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let who = Who {
                    name: "-",
                    scope: "-",
                    from: &from,
                };
                audit::refused(&who, &method, &path, resp.status(), "unauthenticated");
            }
            return resp;
        }
    };
    let vip = route.and_then(|(_, v, _)| v).map(str::to_string);
    let mut addr = route
        .and_then(|(_, _, a)| a)
        .and_then(|a| a.parse::<IpAddr>().ok());
    let mut req = req;
    if action == Action::Register && principal.is_registrant() {
        // The address is in the body: read it (bounded) and put it back.
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_CHECKED_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "body too large",
                );
            }
        };
        addr = body_address(&bytes);
        req = Request::from_parts(parts, Body::from(bytes));
    }
    if let Err(reason) = permit(&principal, action, vip.as_deref(), addr) {
        let resp = error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, reason.clone());
        audit::refused(&principal.who(), &method, &path, resp.status(), &reason);
        return resp;
    }
    req.extensions_mut().insert(principal.clone());
    let resp = next.run(req).await;
    if action.changes() {
        audit::change(&principal.who(), &method, &path, addr, resp.status());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registrant(addresses: &[&str]) -> Principal {
        Principal {
            name: "be".into(),
            scope: Scope::Registrant {
                vips: vec!["web".into()],
                addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            },
            from: "10.0.0.11:4000".into(),
            ip: Some("::ffff:10.0.0.11".parse().unwrap()),
        }
    }

    #[test]
    fn routes_are_classified() {
        let (r, vip, addr) =
            classify(&Method::POST, "/v1/vips/web/backends/fd00::1/drain").unwrap();
        assert_eq!(
            (r.action, vip, addr),
            (Action::Drain, Some("web"), Some("fd00::1"))
        );
        assert!(classify(&Method::GET, "/v1/nothing").is_none());
        assert!(classify(&Method::PUT, "/v1/vips").is_none());
    }

    #[test]
    fn a_registrant_registers_its_own_address_on_its_vips() {
        let own = registrant(&[]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(permit(&own, Action::Register, Some("web"), ip("10.0.0.11")).is_ok());
        assert!(permit(&own, Action::Register, Some("web"), ip("10.0.0.12")).is_err());
        assert!(permit(&own, Action::Register, Some("api"), ip("10.0.0.11")).is_err());
        assert!(permit(&own, Action::Read, None, None).is_err());
        assert!(permit(&own, Action::Admin, Some("web"), ip("10.0.0.11")).is_err());
        assert!(permit(&own, Action::Inspect, None, None).is_err());
        let listed = registrant(&["10.0.0.12"]);
        assert!(permit(&listed, Action::Deregister, Some("web"), ip("10.0.0.12")).is_ok());
        assert!(permit(&listed, Action::Drain, Some("web"), ip("10.0.0.11")).is_err());
    }
}
