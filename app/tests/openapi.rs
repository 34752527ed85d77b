//! The app's OpenAPI document: docs/api.md's tables are generated from it, a running app
//! serves exactly `app openapi`'s, and Schemathesis finds a real app (SQLite, a test
//! redis-server, its queue, tasks and orders) as the document says.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use app::api::ErrorCode;
use serde_json::Value;
use support::app::{base, client, sqlite_url, test_config};
use tests::schemathesis::{Run, Schemathesis};

/// Cases per operation and phase: about a thousand cases, under a minute here.
const MAX_EXAMPLES: u32 = 20;

/// The run's hard bound (the run itself ends when its cases are done).
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn docs_api_md_shows_the_document() {
    let doc = serde_json::to_value(app::wiring::openapi()).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let errors = tests::openapi::error_table(
        ErrorCode::ALL
            .iter()
            .map(|c| (c.status().as_u16(), c.to_string(), c.meaning())),
    );
    if let Err(e) = tests::openapi::check_page(&repo().join("app/docs/api.md"), &doc, &errors) {
        panic!("{e}");
    }
}

#[test]
fn every_error_answer_is_the_one_shape() {
    let doc = serde_json::to_value(app::wiring::openapi()).expect("JSON");
    let mut n = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            for (status, answer) in op["responses"].as_object().expect("responses") {
                let is_error = status == "default" || status.starts_with('4');
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                if is_error {
                    n += 1;
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert!(n > 30, "{n} error answers");
}

/// The app's admin token in the schemathesis run.
const ADMIN_TOKEN: &str = "schemathesis-admin-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_app_as_its_document_says() {
    let st = Schemathesis::find().unwrap_or_else(|e| panic!("{e}"));
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = test_config(&sqlite_url(dir.path()), &redis.url());
    // The production shape: no drill routes (they are not in the document).
    cfg.http.debug_routes = false;
    // The admin routes (dead letters, stock changes) are tested with the admin token
    // (tests/schemathesis/app.toml sends it).
    cfg.http.admin_token = Some(ADMIN_TOKEN.to_string());
    let app = app::server::start_with(cfg, app::wiring::extensions)
        .await
        .expect("start the app with its queue");
    let base = base(&app);

    let served: Value = client()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("the served document is JSON");
    let printed = serde_json::to_value(app::wiring::openapi()).expect("JSON");
    assert_eq!(served, printed, "the served document is `app openapi`'s");

    let reports = dir.path().join("schemathesis");
    std::fs::create_dir_all(&reports).expect("reports dir");
    let config = repo().join("tests/schemathesis/app.toml");
    let schema_url = format!("{base}/openapi.json");
    let run = Run {
        schema_url: &schema_url,
        config: &config,
        max_examples: MAX_EXAMPLES,
        reports: &reports,
    };
    let args = st.command_line(&run);
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    cmd.env("APP_ADMIN_TOKEN", ADMIN_TOKEN);
    let report = tokio::task::spawn_blocking(move || {
        tests::schemathesis::finish(&mut cmd, &reports, RUN_LIMIT, "app")
    })
    .await
    .expect("the schemathesis thread")
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", report.summary("app"));
    for (path, item) in printed["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let op = format!("{} {path}", method.to_uppercase());
            assert!(
                report.operations.contains(&op),
                "{op} was not tested: {:?}",
                report.operations
            );
        }
    }
    assert!(report.cases > 100, "{}", report.summary("app"));
    assert!(report.checks.contains_key("response_schema_conformance"));
    app.stop().await.expect("the app stops");
}
