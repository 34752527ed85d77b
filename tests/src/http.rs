//! A small HTTP/1.1 client over `std::net::TcpStream`: enough for the app's JSON API, with
//! keep-alive, and no dependency on `curl` (a socket must be created inside the client's
//! namespace, which a Rust closure can do and a child process cannot share). Used by the
//! end-to-end tests, the chaos tests and the soak.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The header every request carries so the answering backend can be found in its log.
pub const REQUEST_ID: &str = "x-request-id";

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or an error quoting it.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            anyhow::anyhow!(
                "status {} with a body that is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// A request; `id` goes into `x-request-id`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// A JSON body.
    pub body: Option<&'a str>,
    /// Sent as `x-request-id`.
    pub id: &'a str,
    /// Ask the server to close the connection after the answer.
    pub close: bool,
    /// Sent as `Idempotency-Key` when set.
    pub idempotency_key: Option<&'a str>,
    /// Sent as `Authorization: Bearer` when set (the app's admin routes need it).
    pub bearer: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// `GET path`.
    pub fn get(path: &'a str, id: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            body: None,
            id,
            close: false,
            idempotency_key: None,
            bearer: None,
        }
    }

    /// `PUT` of a JSON body.
    pub fn put(path: &'a str, body: &'a str, id: &'a str) -> Self {
        Self {
            method: "PUT",
            body: Some(body),
            ..Self::get(path, id)
        }
    }

    /// `POST` of a JSON body.
    pub fn post(path: &'a str, body: &'a str, id: &'a str) -> Self {
        Self {
            method: "POST",
            body: Some(body),
            ..Self::get(path, id)
        }
    }

    /// The same request with `Connection: close`.
    pub fn closing(self) -> Self {
        Self {
            close: true,
            ..self
        }
    }

    /// The same request with `Authorization: Bearer TOKEN`.
    pub fn authorized(self, token: &'a str) -> Self {
        Self {
            bearer: Some(token),
            ..self
        }
    }

    /// The same request with an `Idempotency-Key`.
    pub fn idempotent(self, key: &'a str) -> Self {
        Self {
            idempotency_key: Some(key),
            ..self
        }
    }
}

/// One client connection (keep-alive unless a request says `close`).
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects to `addr`. Call it on a thread inside the client's namespace (the socket stays
    /// in the namespace it was created in, whichever thread uses it later).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// The connection's local address (its client port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }

    /// Sends `req` and reads the whole answer.
    pub fn send(&mut self, req: &Request<'_>) -> io::Result<Response> {
        let host = self.reader.get_ref().peer_addr()?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\n{REQUEST_ID}: {}\r\n",
            req.method, req.path, req.id
        );
        if req.close {
            head.push_str("Connection: close\r\n");
        }
        if let Some(key) = req.idempotency_key {
            head.push_str(&format!("Idempotency-Key: {key}\r\n"));
        }
        if let Some(token) = req.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = req.body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(req.body.unwrap_or(""));
        self.reader.get_mut().write_all(head.as_bytes())?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let status_line = self.line()?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            resp.body = self.chunked()?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad content-length {len:?}")))?;
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body)?;
        } else {
            self.reader.read_to_end(&mut resp.body)?;
        }
        Ok(resp)
    }

    fn chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers end with an empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..])?;
            self.line()?;
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the answer ended",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One request on a new connection (closed afterwards).
pub fn once(addr: SocketAddr, req: &Request<'_>, timeout: Duration) -> io::Result<Response> {
    Conn::connect(addr, timeout)?.send(&req.closing())
}
