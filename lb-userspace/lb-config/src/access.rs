//! Who may use lbd's TCP API, and how it is secured: TLS (with optional client certificates),
//! scoped clients (`admin`, `read-only`, `registrant`) and registration leases. The secrets
//! themselves (token files, keys) are read by lbd at start and at every reload.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx, valid_name};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// TLS on the TCP listener; without it the listener speaks plain HTTP (fit only for a
    /// loopback address: lbd warns otherwise).
    pub tls: Option<TlsConfig>,
    pub clients: Vec<ClientConfig>,
    /// A registered backend that has not registered again for this long is removed (as
    /// Consul's `deregister_critical_service_after`); `None`: never. Backends of the file
    /// and of the API never expire.
    pub registration_lease: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain of the server, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates: with it, clients may (or with
    /// `require_client_cert` must) present one, and `cert_name` identifies them.
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
}

/// One client of the TCP API, known by a token or a client certificate (or both: either
/// works).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Shown in the audit log as who made a change.
    pub name: String,
    pub scope: Scope,
    /// File whose first line is the bearer token (at least 16 characters).
    pub token_file: Option<PathBuf>,
    /// A client certificate signed by `tls.client_ca` whose common name or a DNS name is
    /// this.
    pub cert_name: Option<String>,
}

/// What a client may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything, as the unix socket.
    Admin,
    /// Every GET; nothing that changes state.
    ReadOnly,
    /// Register, refresh, drain (its own drain) and deregister backends of `vips` only, and
    /// only backends at `addresses` (empty: the address the client connects from).
    Registrant {
        vips: Vec<String>,
        addresses: Vec<IpAddr>,
    },
}

impl Scope {
    pub fn name(&self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::ReadOnly => "read-only",
            Scope::Registrant { .. } => "registrant",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    client_ca: Option<String>,
    #[serde(default)]
    require_client_cert: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    name: Spanned<String>,
    scope: Spanned<String>,
    token_file: Option<String>,
    cert_name: Option<Spanned<String>>,
    #[serde(default)]
    vips: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    addresses: Option<Spanned<Vec<String>>>,
}

/// Longest lease accepted (a day); shorter than a refresh makes no sense either, but the
/// refresh period is the registrant's to choose.
const MAX_LEASE_S: u64 = 86_400;

pub(super) fn parse_access(
    ctx: &Ctx,
    listen: Option<&Spanned<String>>,
    legacy_token: Option<&str>,
    tls: Option<RawTls>,
    clients: Vec<RawClient>,
    lease_s: Option<&Spanned<u64>>,
) -> Result<AccessConfig, ConfigError> {
    let tls = match tls {
        None => None,
        Some(t) => {
            let need = |v: Option<Spanned<String>>, name: &str| {
                v.map(|s| PathBuf::from(s.into_inner())).ok_or_else(|| {
                    ctx.err(
                        &(0..0),
                        format!("api.tls.{name}"),
                        "[api.tls] needs both cert and key (PEM files)",
                    )
                })
            };
            let require = t.require_client_cert.as_ref().map(|r| *r.get_ref());
            if let (Some(true), None, Some(r)) = (require, &t.client_ca, &t.require_client_cert) {
                return Err(ctx.err(
                    &r.span(),
                    "api.tls.require_client_cert",
                    "needs api.tls.client_ca (the CA that signs client certificates)",
                ));
            }
            Some(TlsConfig {
                cert: need(t.cert, "cert")?,
                key: need(t.key, "key")?,
                client_ca: t.client_ca.map(PathBuf::from),
                require_client_cert: require.unwrap_or(false),
            })
        }
    };
    let mut out = Vec::new();
    if let Some(path) = legacy_token {
        // The one all-powerful token of older configs: an admin client.
        out.push(ClientConfig {
            name: "token_file".into(),
            scope: Scope::Admin,
            token_file: Some(PathBuf::from(path)),
            cert_name: None,
        });
    }
    let mut names: BTreeSet<String> = out.iter().map(|c| c.name.clone()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        let f = |n: &str| format!("api.clients[{i}].{n}");
        let name = c.name.get_ref().clone();
        if !valid_name(&name) {
            return Err(ctx.err(
                &c.name.span(),
                f("name"),
                "1-64 characters of a-z, 0-9, '-', '_'",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ctx.err(
                &c.name.span(),
                f("name"),
                format!("duplicate client name {name:?}"),
            ));
        }
        let cert_name = c.cert_name.as_ref().map(|s| s.get_ref().clone());
        if c.token_file.is_none() && cert_name.is_none() {
            return Err(ctx.err(
                &c.name.span(),
                f("token_file"),
                "a client needs a token_file or a cert_name (or both)",
            ));
        }
        if let Some(s) = &c.cert_name
            && tls.as_ref().and_then(|t| t.client_ca.as_ref()).is_none()
        {
            return Err(ctx.err(
                &s.span(),
                f("cert_name"),
                "client certificates need api.tls.client_ca",
            ));
        }
        let scope = match c.scope.get_ref().as_str() {
            "admin" => Scope::Admin,
            "read-only" => Scope::ReadOnly,
            "registrant" => {
                let vips = c
                    .vips
                    .as_ref()
                    .map(|v| v.get_ref().clone())
                    .unwrap_or_default();
                if vips.is_empty() {
                    return Err(ctx.err(
                        &c.scope.span(),
                        f("vips"),
                        "a registrant needs the VIPs it may register with",
                    ));
                }
                let mut addresses = Vec::new();
                if let Some(a) = &c.addresses {
                    for s in a.get_ref() {
                        addresses.push(s.parse::<IpAddr>().map_err(|_| {
                            ctx.err(
                                &a.span(),
                                f("addresses"),
                                format!("{s:?} is not an IP address"),
                            )
                        })?);
                    }
                }
                Scope::Registrant { vips, addresses }
            }
            other => {
                return Err(ctx.err(
                    &c.scope.span(),
                    f("scope"),
                    format!("unknown scope {other:?} (admin, read-only, registrant)"),
                ));
            }
        };
        if !matches!(scope, Scope::Registrant { .. }) {
            let spans = [
                c.vips.as_ref().map(|v| ("vips", v.span())),
                c.addresses.as_ref().map(|v| ("addresses", v.span())),
            ];
            if let Some((field, span)) = spans.into_iter().flatten().next() {
                return Err(ctx.err(&span, f(field), "limits registrants only"));
            }
        }
        out.push(ClientConfig {
            name,
            scope,
            token_file: c.token_file.map(PathBuf::from),
            cert_name,
        });
    }
    if let Some(l) = listen
        && out.is_empty()
    {
        return Err(ctx.err(
            &l.span(),
            "api.clients",
            "a TCP listener needs at least one client: [[api.clients]] with a token_file or cert_name (or api.token_file)",
        ));
    }
    let registration_lease = match lease_s {
        None => None,
        Some(s) if *s.get_ref() == 0 => None,
        Some(s) if *s.get_ref() > MAX_LEASE_S => {
            return Err(ctx.err(
                &s.span(),
                "api.registration_lease_s",
                format!("at most {MAX_LEASE_S} s (0: registrations never expire)"),
            ));
        }
        Some(s) => Some(Duration::from_secs(*s.get_ref())),
    };
    Ok(AccessConfig {
        tls,
        clients: out,
        registration_lease,
    })
}
