//! The `app` binary's log end to end: one access line per request (method, URI, status,
//! latency, the request id the client got back), the request id on the error line a
//! request caused, and every buffered line written out by the time the process exits
//! (`app::logs` buffers lines and writes them from a thread of its own).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `app serve` (text or JSON lines to `log`), sends `/ping` with and without a request
/// id, a panicking admin route and an unknown path, stops it with SIGTERM, and returns the
/// log and the ids the answers carried.
async fn run(format: &str, dir: &std::path::Path) -> (String, String) {
    let redis = support::RedisServer::start();
    let port = support::free_port();
    let config = dir.join("app.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:{port}"
[database]
url = "sqlite://{db}"
[redis]
url = "{redis}"
[http]
debug_routes = true
admin_token = "{admin}"
[shutdown]
drain_delay_ms = 0
"#,
            db = dir.join("app.db").display(),
            redis = redis.url(),
            admin = support::app::ADMIN_TOKEN,
        ),
    )
    .unwrap();
    let log = dir.join(format!("app-{format}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("APP_LOG", "info")
        .env("APP_LOG_FORMAT", format)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        // The deliberate panic's message and backtrace.
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("spawn app binary");
    let mut guard = support::ChildGuard::new("app", child);
    let base = format!("http://127.0.0.1:{port}");
    let c = support::app::client();
    let up = support::wait_until_async(Duration::from_secs(60), Duration::from_millis(50), || {
        let c = c.clone();
        let url = format!("{base}/readyz");
        async move { matches!(c.get(url).send().await, Ok(r) if r.status() == 200) }
    })
    .await;
    assert!(up, "app did not become ready; log:\n{}", read(&log));

    let r = c
        .get(format!("{base}/ping"))
        .header("x-request-id", "given-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "given-id-1");
    let r = c.get(format!("{base}/ping")).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r = c
        .get(format!("{base}/debug/panic"))
        .header("x-request-id", "panic-id-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let r = c.get(format!("{base}/no/such/path")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    guard.signal(libc::SIGTERM);
    let status = guard
        .wait_exit(Duration::from_secs(60))
        .expect("app exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    (read(&log), generated)
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The one line of `log` that contains every one of `parts`.
fn line_with<'a>(log: &'a str, parts: &[&str]) -> &'a str {
    let found: Vec<&str> = log
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want exactly one line with {parts:?}; log:\n{log}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_carry_the_request_and_all_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, generated) = run("text", dir.path()).await;
    let ping = line_with(&log, &["app::access", "request_id=given-id-1"]);
    for part in [
        "INFO",
        "method=GET",
        "uri=/ping",
        "status=200",
        "latency_us=",
    ] {
        assert!(ping.contains(part), "{part} missing from {ping}");
    }
    line_with(
        &log,
        &[
            "app::access",
            "status=200",
            &format!("request_id={generated}"),
        ],
    );
    line_with(
        &log,
        &[
            "app::access",
            "uri=/debug/panic",
            "status=500",
            "request_id=panic-id-2",
        ],
    );
    line_with(
        &log,
        &["ERROR", "handler panicked", "request_id=panic-id-2"],
    );
    line_with(&log, &["app::access", "uri=/no/such/path", "status=404"]);
    // Written at exit, after the last request: the buffer was flushed by the guard.
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("shutdown complete"), "last line: {last}");
    // The timestamp: RFC 3339 UTC with microseconds.
    let ts = ping.split_whitespace().next().unwrap();
    assert!(
        ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "timestamp {ts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_same_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = run("json", dir.path()).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|v| v["fields"]["request_id"] == "given-id-1")
        .unwrap_or_else(|| panic!("no access line for given-id-1; log:\n{log}"));
    assert_eq!(access["target"], "app::access");
    assert_eq!(access["fields"]["method"], "GET");
    assert_eq!(access["fields"]["uri"], "/ping");
    assert_eq!(access["fields"]["status"], 200);
    assert!(access["fields"]["latency_us"].is_u64());
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "ERROR" && v["fields"]["request_id"] == "panic-id-2"),
        "the panic's error line has no request id; log:\n{log}"
    );
}
