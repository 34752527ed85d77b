//! Schemathesis against the real lbd: its TCP listener in the namespace lab (two healthy
//! backends, a VRRP router), driven from lb1's namespace with the lab's bearer token and
//! `tests/schemathesis/lbd.toml`. Every operation but shutdown and the capture stream; see
//! docs/api.md.

use std::time::Duration;

use tests::schemathesis::{Run, Schemathesis};

use crate::lab::{ControlLab, TOKEN};

/// Cases per operation and phase: about 600 cases, well under a minute here.
const MAX_EXAMPLES: u32 = 20;

/// The run's hard bound (the run itself ends when its cases are done).
const RUN_LIMIT: Duration = Duration::from_secs(300);

const VRRP: &str = "[vrrp]\ninterface = \"eth0\"\nvirtual_router_id = 61\npriority = 100\n\
                    advert_interval_cs = 100\naddresses = [\"10.77.0.200/32\"]\n";

#[test]
fn schemathesis_finds_lbd_as_its_openapi_document_says() {
    let st = Schemathesis::find().unwrap_or_else(|e| panic!("{e}"));
    let cl = ControlLab::with_extra_config(2, VRRP);
    let lb = cl.lab.host("lb1").expect("lb1");
    let reports = cl.lab.dir().join("schemathesis");
    std::fs::create_dir_all(&reports).expect("reports dir");
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemathesis/lbd.toml");
    let run = Run {
        schema_url: "http://10.77.0.2:9100/v1/openapi.json",
        config: &config,
        max_examples: MAX_EXAMPLES,
        reports: &reports,
    };
    let mut cmd = lb.command(st.command_line(&run));
    cmd.env("LBD_TOKEN", TOKEN);
    let report = tests::schemathesis::finish(&mut cmd, &reports, RUN_LIMIT, "lbd")
        .unwrap_or_else(|e| panic!("{e}\nlbd log:\n{}", cl.lbd_log()));
    eprintln!("{}", report.summary("lbd"));

    // Every documented operation was tested (but shutdown, and the document itself, which
    // schemathesis reads rather than tests), and refused a request without the token (the
    // document puts every operation behind it).
    let doc = lbd::daemon::api::openapi();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("DELETE", &item.delete),
        ] {
            // The capture is a stream schemathesis cannot read (tests/schemathesis/lbd.toml).
            let untested = ["/v1/shutdown", "/v1/openapi.json", "/v1/capture"];
            if op.is_some() && !untested.contains(&path.as_str()) {
                documented.push(format!("{method} {path}"));
            }
        }
    }
    for op in &documented {
        assert!(
            report.operations.contains(op),
            "{op} was not tested: {:?}",
            report.operations
        );
        assert!(
            report.auth_enforced.contains(op),
            "{op}: no passing ignored_auth check: {:?}",
            report.auth_enforced
        );
    }
    assert!(
        report.cases > 100,
        "a run this size makes hundreds of cases: {}",
        report.summary("lbd")
    );
    assert!(report.checks.contains_key("response_schema_conformance"));
    // The lab is still whole: lbd kept serving through the run.
    let (st, _) = cl.api("GET", "/v1/status", None);
    assert_eq!(st, 200, "lbd still answers:\n{}", cl.lbd_log());
}
