//! One check path for VIPs from the file, the API and the state file: an `ipip` VIP without
//! an outer source is refused over the API (422, the file's `field: reason`) and left out of
//! the state file on restart; API VIPs take the global `[health]`, not the first VIP's.

use std::time::Duration;

use super::lab::*;

const IPIP_REFUSAL: &str =
    "mode: ipip mode needs dataplane.ipip_source_v4 (the outer source address)";

#[test]
fn vips_from_the_api_and_the_state_file_get_the_files_checks() {
    let mut cl = ControlLab::build(&LabOptions {
        backends: 2,
        // The first VIP has its own health: an API VIP must not inherit it.
        web_extra: "health = { fall = 7, rise = 3 }\n",
        ..LabOptions::default()
    });
    let (st, e) = cl.api(
        "POST",
        "/v1/vips",
        Some(r#"{"name": "tun", "address": "10.77.0.110", "port": 80, "mode": "ipip"}"#),
    );
    assert_eq!((st, e["error"].as_str()), (422, Some(IPIP_REFUSAL)), "{e}");
    let (st, e) = cl.api(
        "POST",
        "/v1/vips",
        Some(r#"{"name": "x", "address": "10.77.0.111", "health": {"rise": 0}}"#),
    );
    assert_eq!(
        (st, e["error"].as_str()),
        (422, Some("health.rise: must be 1-100")),
        "{e}"
    );
    let (st, e) = cl.api(
        "POST",
        "/v1/vips",
        Some(r#"{"name": "web2", "address": "10.77.0.100", "port": 80}"#),
    );
    assert_eq!(st, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.starts_with("address: ")),
        "{e}"
    );

    let (st, v) = cl.api(
        "POST",
        "/v1/vips",
        Some(r#"{"name": "api1", "address": "10.77.0.112", "port": 80}"#),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["source"], "api");
    assert_eq!(
        (
            v["health"]["rise"].as_u64(),
            v["health"]["fall"].as_u64(),
            v["health"]["kind"].as_str()
        ),
        (Some(RISE as u64), Some(FALL as u64), Some("http")),
        "an API VIP takes the global [health]: {v}"
    );
    let (st, v) = cl.api(
        "POST",
        "/v1/vips",
        Some(r#"{"name": "api2", "address": "10.77.0.113", "port": 80, "health": {"fall": 4}}"#),
    );
    assert_eq!(
        (
            st,
            v["health"]["fall"].as_u64(),
            v["health"]["rise"].as_u64()
        ),
        (201, Some(4), Some(RISE as u64)),
        "{v}"
    );

    // The state file: an ipip VIP slipped into it (as an older lbd accepted them) is left
    // out on restart with the same reason; the others come back.
    let mut lbd = cl.lbd.take().expect("lbd");
    lbd.signal(libc::SIGKILL).expect("kill lbd");
    let _ = lbd.wait_timeout(Duration::from_secs(5));
    let state_path = cl.lab.dir().join("lbd-state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state file")).expect("JSON");
    state["api_vips"].as_array_mut().expect("api_vips").push(
        serde_json::json!({"name": "tun", "address": "10.77.0.110", "port": 80,
            "protocol": "tcp", "algorithm": "maglev", "mode": "ipip", "table_size": 65537}),
    );
    std::fs::write(
        &state_path,
        serde_json::to_vec_pretty(&state).expect("JSON"),
    )
    .expect("write");
    cl.start_lbd();
    assert_eq!(cl.api("GET", "/v1/vips/api1", None).0, 200);
    assert_eq!(cl.api("GET", "/v1/vips/api2", None).1["health"]["fall"], 4);
    assert_eq!(
        cl.api("GET", "/v1/vips/tun", None).0,
        404,
        "the ipip VIP is left out"
    );
    let log = cl.lbd_log();
    assert!(
        log.contains("state file: VIP left out") && log.contains(IPIP_REFUSAL),
        "the restart says which VIP and why:\n{log}"
    );
}
