//! One health probe: a TCP connect, or an HTTP GET with an expected status.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use lb_config::CheckKind;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency: Duration,
    pub error: Option<String>,
}

/// Probes `addr:port` once, within `timeout`.
pub async fn probe(addr: IpAddr, port: u16, kind: &CheckKind, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, run(SocketAddr::new(addr, port), kind)).await;
    let latency = start.elapsed();
    match outcome {
        Ok(Ok(())) => ProbeResult {
            ok: true,
            latency,
            error: None,
        },
        Ok(Err(e)) => ProbeResult {
            ok: false,
            latency,
            error: Some(e),
        },
        Err(_) => ProbeResult {
            ok: false,
            latency,
            error: Some(format!("timed out after {} ms", timeout.as_millis())),
        },
    }
}

async fn run(target: SocketAddr, kind: &CheckKind) -> Result<(), String> {
    match kind {
        CheckKind::None => Ok(()),
        CheckKind::Tcp => TcpStream::connect(target)
            .await
            .map(drop)
            .map_err(|e| format!("connect {target}: {e}")),
        CheckKind::Http {
            path,
            expect_status,
        } => http(target, path, *expect_status).await,
    }
}

/// A minimal HTTP/1.1 GET: only the status line matters.
async fn http(target: SocketAddr, path: &str, expect: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let host = match target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbd-health\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if r == 0 {
            return Err("connection closed before a status line".into());
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if status == expect {
        Ok(())
    } else {
        Err(format!("HTTP {status}, expected {expect}"))
    }
}
