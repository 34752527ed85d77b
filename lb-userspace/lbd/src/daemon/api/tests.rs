//! docs/api.md's generated blocks are the OpenAPI document's: the endpoints, every schema,
//! and the error codes.

use std::path::PathBuf;

use lb_api::types::ErrorCode;

use super::openapi;

fn page() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md")
}

#[test]
fn docs_api_md_shows_the_document() {
    let doc = serde_json::to_value(openapi()).expect("the document is JSON");
    let errors = ::tests::openapi::error_table(
        ErrorCode::ALL
            .iter()
            .map(|c| (c.status(), c.to_string(), c.meaning())),
    );
    if let Err(e) = ::tests::openapi::check_page(&page(), &doc, &errors) {
        panic!("{e}");
    }
}

#[test]
fn every_operation_answers_errors_in_one_shape_and_names_the_token() {
    let doc = serde_json::to_value(openapi()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
    let mut n = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            n += 1;
            for status in ["401", "default"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
    assert!(n >= 17, "{n} operations");
}
