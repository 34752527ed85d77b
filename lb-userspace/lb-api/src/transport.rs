//! One HTTP/1.1 exchange with lbd over its unix socket or over TCP, using hyper's
//! connection-level client: lbctl makes a handful of calls, so a fresh connection per call
//! keeps things simple and never leaves a half-used connection behind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::ClientError;

/// Where lbd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";

/// Answers larger than this are refused rather than buffered: no real answer comes close.
const MAX_BODY: usize = 64 << 20;

/// A bearer token; its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// TLS towards lbd (`https://`): the CA that signed lbd's certificate, and optionally this
/// client's certificate for mutual TLS.
#[derive(Clone)]
pub struct Tls(Arc<rustls::ClientConfig>);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Tls {}

/// The files of [`Tls`]: PEM, as lbd's `[api.tls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that signed lbd's certificate.
    pub ca: Option<PathBuf>,
    /// This client's certificate chain and key (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn pem_certs(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

impl Tls {
    pub fn from_files(files: &TlsFiles) -> Result<Self, ClientError> {
        use rustls_pki_types::pem::PemObject;
        let bad = |reason: String| ClientError::Request(format!("TLS: {reason}"));
        let ca = files.ca.as_deref().ok_or_else(|| {
            bad("https needs the CA that signed lbd's certificate (--cacert)".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(ca).map_err(bad)? {
            roots
                .add(c)
                .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
        }
        #[allow(deprecated)] // ring: see lbd's tls module
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let chain = pem_certs(cert).map_err(bad)?;
                let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(format!("client certificate: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(bad(
                    "a client certificate needs both --cert and --key".into()
                ));
            }
        };
        Ok(Self(Arc::new(config)))
    }
}

/// How to reach lbd. A token only exists for TCP: the unix socket is protected by its file mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp {
        /// Host name or address, without IPv6 brackets (what `connect` wants).
        host: String,
        port: u16,
        token: Option<Token>,
        /// `https://`: TLS with these settings.
        tls: Option<Tls>,
    },
}

impl Endpoint {
    /// Parses `http://HOST:PORT` (a trailing `/` is allowed); `https://` needs
    /// [`Endpoint::from_url_tls`].
    pub fn from_url(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        Self::from_url_tls(url, token, None)
    }

    /// Parses `http://HOST:PORT` or `https://HOST:PORT`, the latter with `tls`.
    pub fn from_url_tls(
        url: &str,
        token: Option<String>,
        tls: Option<&TlsFiles>,
    ) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(&format!("not a URL ({e})")))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(invalid(&format!(
                    "scheme {other} is not supported, use http:// or https://"
                )));
            }
            None => return Err(invalid("expected http://HOST:PORT or https://HOST:PORT")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid("expected http://HOST:PORT without a path"));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .map(Token);
        let tls = match (secure, tls) {
            (true, Some(files)) => Some(Tls::from_files(files)?),
            (true, None) => Some(Tls::from_files(&TlsFiles::default())?),
            (false, _) => None,
        };
        Ok(Endpoint::Tcp {
            host,
            port,
            token,
            tls,
        })
    }

    /// The value of the `Host` header.
    fn authority(&self) -> String {
        match self {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port, .. } => format!("{host}:{port}"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { tls: Some(_), .. } => write!(f, "https://{}", self.authority()),
            Endpoint::Tcp { .. } => write!(f, "http://{}", self.authority()),
        }
    }
}

/// Status and body of an answer, before any interpretation.
pub(crate) struct RawResponse {
    pub status: u16,
    pub body: Bytes,
}

/// Sends one request and reads the whole answer.
pub(crate) async fn exchange(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<RawResponse, ClientError> {
    let mut open = open(endpoint, method, path, body).await?;
    let status = open.status;
    let body = Limited::new(&mut open.body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| ClientError::bad(status, format!("cannot read the answer: {e}")))?
        .to_bytes();
    Ok(RawResponse { status, body })
}

/// An answer whose body is still coming (a stream of lines, such as a capture's).
pub(crate) struct Streaming {
    pub status: u16,
    body: Incoming,
    buf: Vec<u8>,
    /// Drives the connection; stopped when the answer is dropped.
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Streaming {
    /// The next line of the body (without its newline), `None` at its end. A last line
    /// without a newline is returned too.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        loop {
            if let Some(at) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).take(at).collect();
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_BODY {
                return Err(ClientError::bad(self.status, "a line longer than 64 MiB"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(ClientError::bad(
                        self.status,
                        format!("the answer broke off: {e}"),
                    ));
                }
                None if self.buf.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buf))),
            }
        }
    }

    /// The rest of the body (for an error answer).
    pub async fn rest(mut self) -> Bytes {
        let mut out = std::mem::take(&mut self.buf);
        while let Some(Ok(frame)) = self.body.frame().await {
            if let Ok(data) = frame.into_data() {
                out.extend_from_slice(&data);
            }
            if out.len() > MAX_BODY {
                break;
            }
        }
        Bytes::from(out)
    }
}

/// Sends one request; the answer's body is read by the caller.
pub(crate) async fn open(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Streaming, ClientError> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, endpoint.authority());
    if body.is_some() {
        req = req.header(CONTENT_TYPE, "application/json");
    }
    if let Endpoint::Tcp {
        token: Some(Token(token)),
        ..
    } = endpoint
    {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ClientError::Request("the token contains characters a header cannot carry".into())
        })?;
        req = req.header(AUTHORIZATION, value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Request(e.to_string()))?;

    let connect_err = |source| ClientError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    match endpoint {
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).await.map_err(connect_err)?;
            send(endpoint, stream, req).await
        }
        Endpoint::Tcp {
            host, port, tls, ..
        } => {
            let stream = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_err)?;
            match tls {
                None => send(endpoint, stream, req).await,
                Some(Tls(config)) => {
                    let name =
                        rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                            ClientError::Request(format!("TLS server name {host}: {e}"))
                        })?;
                    let stream = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(name, stream)
                        .await
                        .map_err(|source| ClientError::Tls {
                            endpoint: endpoint.to_string(),
                            source,
                        })?;
                    send(endpoint, stream, req).await
                }
            }
        }
    }
}

async fn send<S>(
    endpoint: &Endpoint,
    stream: S,
    req: Request<Full<Bytes>>,
) -> Result<Streaming, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |source| ClientError::Http {
        endpoint: endpoint.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    // The connection task only drives I/O; its own error surfaces through `send_request`.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(http_err(e));
        }
    };
    Ok(Streaming {
        status: resp.status().as_u16(),
        body: resp.into_body(),
        buf: Vec::new(),
        driver,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::from_url("http://127.0.0.1:9000", Some("t\n".into())).unwrap();
        assert_eq!(e.to_string(), "http://127.0.0.1:9000");
        assert!(matches!(e, Endpoint::Tcp { token: Some(Token(ref t)), .. } if t == "t"));
        let e = Endpoint::from_url("http://[::1]:9000/", None).unwrap();
        assert!(
            matches!(e, Endpoint::Tcp { ref host, port: 9000, token: None, tls: None } if host == "::1")
        );
        assert_eq!(e.to_string(), "http://[::1]:9000");
        for bad in [
            "https://h:1", // no CA given
            "ftp://h:1",
            "h:1",
            "http://h:1/v1",
            "http://:1",
            "not a url",
        ] {
            assert!(Endpoint::from_url(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_is_not_printed() {
        let e = Endpoint::from_url("http://h:1", Some("secret".into())).unwrap();
        assert!(!format!("{e:?}").contains("secret"));
    }
}
