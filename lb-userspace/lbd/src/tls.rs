//! The TCP listener of the API: plain HTTP or TLS (rustls), with optional client
//! certificates. Each connection's peer (address, verified certificate names) goes into its
//! requests for `auth`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_config::TlsConfig;
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, warn};

/// What a connection brings to each of its requests (set by the listener).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The TCP peer; `None` on the unix socket.
    pub addr: Option<SocketAddr>,
    /// Common name and DNS names of a verified client certificate.
    pub cert_names: Vec<String>,
    /// On the unix socket: the caller's uid (SO_PEERCRED), when known.
    pub uid: Option<u32>,
}

/// A TLS handshake that takes longer is dropped (a slow or silent client holds nothing).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// ring: it builds with the C compiler alone (aws-lc-rs, rustls' default, wants cmake and
/// much longer builds). rustls deprecates it for lacking post-quantum key exchange, which an
/// API on the balancers' own network can do without for now.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(certs)
}

/// The acceptor for `[api.tls]`: the server's certificate and key, and with `client_ca` a
/// verifier of client certificates (optional unless `require_client_cert`).
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor> {
    let chain = certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .with_context(|| format!("reading the private key from {}", cfg.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if cfg.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .context("the certificate and key do not go together")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Common name and DNS names of a (verified) client certificate.
pub fn cert_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                out.push(d.to_string());
            }
        }
    }
    out
}

/// Serves `router` on `listener` until the task is dropped; `acceptor` gives the TLS
/// acceptor in force for each new connection (`None`: plain HTTP).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    acceptor: impl Fn() -> Option<tokio_rustls::TlsAcceptor> + Send + 'static,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "API listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        let tls = acceptor();
        tokio::spawn(async move {
            match tls {
                None => connection(TokioIo::new(stream), router, peer(addr, Vec::new())).await,
                Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let names = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| cert_names(c))
                            .unwrap_or_default();
                        connection(TokioIo::new(s), router, peer(addr, names)).await
                    }
                    Ok(Err(e)) => debug!(%addr, error = %e, "API: TLS handshake failed"),
                    Err(_) => debug!(%addr, "API: TLS handshake timed out"),
                },
            }
        });
    }
}

/// Serves `router` on the unix socket; each caller's uid (SO_PEERCRED) goes to the audit log.
pub async fn serve_unix(listener: tokio::net::UnixListener, router: Router) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "API socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = Peer {
            addr: None,
            cert_names: Vec::new(),
            uid: stream.peer_cred().ok().map(|c| c.uid()),
        };
        tokio::spawn(connection(TokioIo::new(stream), router.clone(), peer));
    }
}

fn peer(addr: SocketAddr, cert_names: Vec<String>) -> Peer {
    Peer {
        addr: Some(addr),
        cert_names,
        uid: None,
    }
}

async fn connection<I>(io: TokioIo<I>, router: Router, peer: Peer)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await
    {
        debug!(error = %e, "API connection ended with an error");
    }
}
