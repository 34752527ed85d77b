//! The secured API for real: TLS with a CA the test makes itself (a client trusting another
//! CA is refused, and so is a client certificate from another CA), every scope against
//! every route (allowed, or 403 with nothing changed), the audit log in JSON, and
//! registration leases.

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::Method;
use lbd::auth::{Action, ROUTES, Route};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;

use super::lab::*;

const API: &str = "10.77.0.2:9100";

/// A small CA and what it signs, as PEM files.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    be1: (PathBuf, PathBuf),
    other_ca: PathBuf,
    /// A client certificate named `be1` but signed by the other CA.
    forged_be1: (PathBuf, PathBuf),
}

fn ca(dir: &Path, name: &str) -> (rcgen::Certificate, KeyPair, PathBuf) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.self_signed(&key).expect("self-signed CA");
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).expect("write CA");
    (cert, key, path)
}

fn leaf(
    dir: &Path,
    file: &str,
    cn: &str,
    ip: Option<IpAddr>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &(rcgen::Certificate, KeyPair, PathBuf),
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![cn.to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(ip) = ip {
        p.subject_alt_names.push(SanType::IpAddress(ip));
    }
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).expect("sign");
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

fn pki(dir: &Path) -> Pki {
    let lab_ca = ca(dir, "lab-ca");
    let other = ca(dir, "other-ca");
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    Pki {
        server: leaf(
            dir,
            "lbd",
            "lb1",
            Some("10.77.0.2".parse().expect("ip")),
            ExtendedKeyUsagePurpose::ServerAuth,
            &lab_ca,
        ),
        be1: leaf(dir, "be1", "be1", None, client.clone(), &lab_ca),
        forged_be1: leaf(dir, "forged-be1", "be1", None, client, &other),
        ca: lab_ca.2,
        other_ca: other.2,
    }
}

#[allow(deprecated)] // ring, as lbd
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One call over TLS from the current namespace: (status, body), or why TLS failed.
fn tls_call(
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA pem")).expect("CA");
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .expect("cert")
                    .map(|c| c.expect("pem"))
                    .collect(),
                PrivateKeyDer::from_pem_file(k).expect("key"),
            )
            .expect("client cert"),
        None => b.with_no_client_auth(),
    };
    let name = ServerName::try_from("10.77.0.2").expect("name").to_owned();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(API).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(request_text(method, path, body, token).as_bytes())
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    match s.read_to_end(&mut resp) {
        Ok(_) => {}
        // A server that closes without close_notify after a full answer is fine.
        Err(e) if !resp.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP answer")?;
    let payload = text.split_once("\r\n\r\n").map(|(_, p)| p).unwrap_or("");
    Ok((
        status,
        serde_json::from_str(payload).unwrap_or(Value::String(payload.into())),
    ))
}

const RO: &str = "read-only-token-0123456789";
const REG: &str = "registrant-token-0123456789";
const LISTED: &str = "listed-registrant-0123456789";

/// The request for one route: `vip`/`addr` fill its path, and a body that would be accepted.
fn request(r: &Route, vip: &str, addr: &str) -> (String, String, Option<String>) {
    let mut path = r.path.replace("{vip}", vip).replace("{addr}", addr);
    if r.path.ends_with("/trace") {
        path.push_str("?client=10.77.0.50:40000");
    }
    if r.path == "/v1/events" {
        // One snapshot, then the stream ends.
        path.push_str("?count=1");
    }
    let body = match (r.method.as_str(), r.path) {
        ("POST", "/v1/vips") => Some(format!(
            r#"{{"name": "{vip}", "address": "10.77.0.106", "port": 82}}"#
        )),
        ("POST", "/v1/vips/{vip}/backends") => Some(format!(r#"{{"address": "{addr}"}}"#)),
        ("POST", p) if p.ends_with("/weight") => Some(r#"{"weight": 7}"#.into()),
        ("POST", "/v1/reload") => Some(r#"{"dry_run": true}"#.into()),
        // Short: the answer is a stream that ends with the capture.
        ("POST", "/v1/capture") => Some(r#"{"count": 1, "duration_s": 0.5}"#.into()),
        _ => None,
    };
    (r.method.to_string(), path, body)
}

/// The model without what moves by itself (checks, latencies, MACs, counters).
fn snapshot(cl: &ControlLab) -> Vec<String> {
    let (_, vips) = cl.api("GET", "/v1/vips", None);
    let mut out = Vec::new();
    for v in vips.as_array().cloned().unwrap_or_default() {
        for b in v["backends"].as_array().cloned().unwrap_or_default() {
            out.push(format!(
                "{} {} w{} {} {}",
                v["name"], b["address"], b["weight"], b["admin"], b["source"]
            ));
        }
        out.push(format!("{} {}:{}", v["name"], v["address"], v["port"]));
    }
    out.sort();
    out
}

fn audit_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect()
}

#[test]
fn tls_scopes_audit_and_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pki(dir.path());
    let token = |name: &str, t: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, t).expect("token file");
        f.display().to_string()
    };
    let tail = format!(
        "\n[api.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\
         [[api.clients]]\nname = \"ro\"\nscope = \"read-only\"\ntoken_file = \"{}\"\n\
         [[api.clients]]\nname = \"reg\"\nscope = \"registrant\"\ntoken_file = \"{}\"\nvips = [\"web\"]\n\
         [[api.clients]]\nname = \"listed\"\nscope = \"registrant\"\ntoken_file = \"{}\"\nvips = [\"web\"]\naddresses = [\"10.77.0.21\"]\n\
         [[api.clients]]\nname = \"be1\"\nscope = \"registrant\"\ncert_name = \"be1\"\nvips = [\"web\"]\n",
        p.server.0.display(),
        p.server.1.display(),
        p.ca.display(),
        token("ro", RO),
        token("reg", REG),
        token("listed", LISTED),
    );
    let cl = ControlLab::build(&LabOptions {
        backends: 2,
        api_extra: "registration_lease_s = 3\n",
        tail: &tail,
        log_json: true,
        ..LabOptions::default()
    });
    let client = cl.lab.host("client").expect("client");
    let be1 = cl.lab.host("be1").expect("be1");
    let from_client = |f: Box<dyn FnOnce() -> Result<(u16, Value), String> + Send>| {
        client.in_netns(f).expect("client ns")
    };

    // TLS: the lab's CA works; another CA, or a client certificate from it, is refused.
    let ca = p.ca.clone();
    let ok = from_client(Box::new(move || {
        tls_call(&ca, None, Some(RO), "GET", "/v1/status", None)
    }));
    assert_eq!(ok.as_ref().map(|r| r.0), Ok(200), "{ok:?}");
    let other = p.other_ca.clone();
    let wrong = from_client(Box::new(move || {
        tls_call(&other, None, Some(RO), "GET", "/v1/status", None)
    }));
    assert!(
        wrong.is_err(),
        "a client trusting another CA must not get through: {wrong:?}"
    );
    let (ca, forged) = (p.ca.clone(), p.forged_be1.clone());
    let forged = be1
        .in_netns(move || {
            tls_call(
                &ca,
                Some(&forged),
                None,
                "POST",
                "/v1/vips/web/backends",
                Some(r#"{"address": "10.77.0.11"}"#),
            )
        })
        .expect("be1 ns");
    assert!(
        forged.is_err() || forged.as_ref().is_ok_and(|r| r.0 == 401),
        "a client certificate from another CA is refused: {forged:?}"
    );
    let plain = client
        .in_netns(|| {
            let mut s = TcpStream::connect(API).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            http(&mut s, "GET", "/v1/status", None, Some(RO)).0
        })
        .expect("client ns");
    assert_ne!(plain, 200, "plain HTTP on the TLS port gets nothing");
    // The real lbctl: the right CA, the wrong CA.
    let lbctl = |ca: &Path, extra: &[&str], args: &[&str]| {
        let mut c = std::process::Command::new(tests::bins::workspace_bin("lbctl"));
        c.args(["--url", &format!("https://{API}"), "--cacert"])
            .arg(ca)
            .args(extra)
            .args(args)
            .env_remove("LBCTL_SOCKET");
        c
    };
    let run = |host: &tests::netns::Host, mut c: std::process::Command| {
        host.in_netns(move || c.output().expect("lbctl"))
            .expect("netns")
    };
    let mut c = lbctl(&p.ca, &[], &["status"]);
    c.env("LBCTL_TOKEN", RO);
    let out = run(client, c);
    assert!(out.status.success(), "lbctl over TLS: {out:?}");
    let mut c = lbctl(&p.other_ca, &[], &["status"]);
    c.env("LBCTL_TOKEN", RO);
    let out = run(client, c);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("TLS"),
        "wrong CA: {err}"
    );
    // Mutual TLS: be1's certificate registers be1, and may do nothing else.
    let (cert, key) = (p.be1.0.display().to_string(), p.be1.1.display().to_string());
    let out = run(
        be1,
        lbctl(
            &p.ca,
            &["--cert", &cert, "--key", &key],
            &["backend", "add", "web", "10.77.0.11"],
        ),
    );
    assert!(
        out.status.success(),
        "be1 registers itself with its certificate: {out:?}"
    );
    let out = run(
        be1,
        lbctl(&p.ca, &["--cert", &cert, "--key", &key], &["status"]),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("403"),
        "a registrant cannot read: {err}"
    );

    // Every scope against every route. Refused calls change nothing.
    let before = snapshot(&cl);
    type Caller = (&'static str, &'static str, &'static str);
    // (client, where it calls from, the backend address it names)
    let refused_callers: [Caller; 3] = [
        ("ro", "client", "10.77.0.12"),
        ("reg", "client", "10.77.0.12"),
        ("be1", "be1", "10.77.0.12"),
    ];
    for (who, host, addr) in refused_callers {
        for r in ROUTES {
            let (method, path, body) = request(r, "web", addr);
            let (ca, cert) = (p.ca.clone(), p.be1.clone());
            let tok = match who {
                "ro" => Some(RO),
                "reg" => Some(REG),
                _ => None,
            };
            let res = cl
                .lab
                .host(host)
                .expect("host")
                .in_netns(move || {
                    let cert = (tok.is_none()).then_some(&cert);
                    tls_call(&ca, cert, tok, &method, &path, body.as_deref())
                })
                .expect("netns")
                .unwrap_or_else(|e| panic!("{who} {} {}: TLS failed: {e}", r.method, r.path));
            let allowed = who == "ro" && r.action == Action::Read;
            if allowed {
                assert_ne!(res.0, 403, "{who} may {} {}: {res:?}", r.method, r.path);
            } else {
                assert_eq!(
                    (res.0, res.1["code"].as_str()),
                    (403, Some("forbidden")),
                    "{who} may not {} {}: {res:?}",
                    r.method,
                    r.path
                );
            }
        }
    }
    assert_eq!(snapshot(&cl), before, "refused calls changed nothing");

    // A registrant with listed addresses: register, drain, deregister that address only.
    let listed = |method: &'static str, path: &'static str, body: Option<&'static str>| {
        let ca = p.ca.clone();
        client
            .in_netns(move || tls_call(&ca, None, Some(LISTED), method, path, body))
            .expect("netns")
            .expect("TLS")
    };
    // Its registration carries its self-check report (issue 20) through the same scope check.
    let (st, b) = listed(
        "POST",
        "/v1/vips/web/backends",
        Some(
            r#"{"address": "10.77.0.21", "self_check": {"vip": "10.77.0.100", "mode": "dsr-l2",
                "checked_at_unix_ms": 1, "findings": [{"check": "vip_local", "status": "fail",
                "detail": "10.77.0.100 is on no local interface"}]}}"#,
        ),
    );
    assert_eq!((st, b["source"].as_str()), (201, Some("registered")), "{b}");
    assert_eq!(
        (
            b["self_check"]["findings"][0]["check"].as_str(),
            b["forwarding"]["mode"].as_str()
        ),
        (Some("vip_local"), Some("dsr-l2")),
        "the report is kept and the answer says how packets arrive: {b}"
    );
    let (st, b) = listed("POST", "/v1/vips/web/backends/10.77.0.21/drain", None);
    assert_eq!(
        (st, b["drained_by"].as_str()),
        (200, Some("registrant")),
        "{b}"
    );
    assert_eq!(
        listed("DELETE", "/v1/vips/web/backends/10.77.0.21", None).0,
        200
    );
    assert_eq!(
        listed(
            "POST",
            "/v1/vips/web/backends",
            Some(r#"{"address": "10.77.0.22"}"#)
        )
        .0,
        403
    );

    // Lease: registered again, never refreshed: gone after 3 s; the file's backends stay.
    let registered_at = Instant::now();
    assert_eq!(
        listed(
            "POST",
            "/v1/vips/web/backends",
            Some(r#"{"address": "10.77.0.21"}"#)
        )
        .0,
        201
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cl.backend_view("web", "10.77.0.21").is_null() {
        assert!(
            Instant::now() < deadline,
            "the lease never expired\n{}",
            cl.lbd_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "lease of 3 s: removed {:.1} s after the registration",
        registered_at.elapsed().as_secs_f64()
    );
    for a in ["10.77.0.11", "10.77.0.12"] {
        assert_eq!(
            cl.backend_view("web", a)["source"],
            "config",
            "the file's backends never expire"
        );
    }

    // The audit log: who, from where, what, result, as JSON.
    let log = cl.lbd_log();
    let audit = audit_lines(&log);
    let find = |pred: &dyn Fn(&Value) -> bool, what: &str| {
        assert!(
            audit.iter().any(pred),
            "no audit line for {what}:\n{audit:#?}"
        );
    };
    find(
        &|v| {
            v["fields"]["who"] == "ro"
                && v["fields"]["result"] == "refused"
                && v["fields"]["status"] == 403
        },
        "a refused change",
    );
    find(
        &|v| {
            v["fields"]["who"] == "listed"
                && v["fields"]["path"] == "/v1/vips/web/backends"
                && v["fields"]["address"] == "10.77.0.21"
                && v["fields"]["result"] == "ok"
                && v["fields"]["from"]
                    .as_str()
                    .is_some_and(|f| f.starts_with(&client.ipv4().to_string()))
        },
        "a registration",
    );
    find(
        &|v| {
            v["fields"]["who"] == "lease"
                && v["fields"]["what"]
                    .as_str()
                    .is_some_and(|w| w.contains("10.77.0.21"))
        },
        "the lease expiry",
    );

    // The administrator: every route allowed, on a VIP of its own; shutdown last.
    let rank = |r: &Route| match (r.method.clone(), r.path) {
        (Method::POST, "/v1/vips") => 0,
        (Method::POST, "/v1/vips/{vip}/backends") => 1,
        (Method::DELETE, "/v1/vips/{vip}/backends/{addr}") => 3,
        (Method::DELETE, _) => 4,
        (_, "/v1/shutdown") => 5,
        _ => 2,
    };
    let mut admin: Vec<&Route> = ROUTES.iter().collect();
    admin.sort_by_key(|r| rank(r));
    for r in admin {
        let (method, path, body) = request(r, "tmp", "10.77.0.31");
        let ca = p.ca.clone();
        let res = client
            .in_netns(move || tls_call(&ca, None, Some(TOKEN), &method, &path, body.as_deref()))
            .expect("netns")
            .unwrap_or_else(|e| panic!("admin {} {}: {e}", r.method, r.path));
        assert!(
            res.0 != 401 && res.0 != 403 && !res.1.to_string().contains("no such endpoint"),
            "admin may {} {} (and lbd serves it): {res:?}",
            r.method,
            r.path
        );
        // This lab runs neither [vrrp] nor [bgp]: those answer 404 (allowed, and served).
        if !matches!(r.path, "/v1/vrrp" | "/v1/bgp") {
            assert!(
                res.0 < 300,
                "admin {} {}: {res:?}\n{}",
                r.method,
                r.path,
                cl.lbd_log()
            );
        }
    }
    let audit = audit_lines(&cl.lbd_log());
    assert!(
        audit.iter().any(|v| v["fields"]["who"] == "token_file"
            && v["fields"]["path"] == "/v1/vips"
            && v["fields"]["method"] == "POST"
            && v["fields"]["result"] == "ok"),
        "no audit line for an admin change:\n{audit:#?}"
    );
    assert!(
        audit.iter().any(|v| v["fields"]["who"] == "token_file"
            && v["fields"]["path"] == "/v1/capture"
            && v["fields"]["result"] == "ok"),
        "a capture (it shows packets) is audited:\n{audit:#?}"
    );
}
