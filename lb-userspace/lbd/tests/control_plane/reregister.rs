//! A backend's periodic re-registration (what `app` does every `refresh_ms`) against the real
//! lbd: a heartbeat that never undoes an operator's drain, nor an operator's weight while the
//! declared weight stays the same; state that survives an lbd restart.

use serde_json::Value;

use super::{client_gets, counts, lab::*, maps};

const ADDR: &str = "10.77.0.12";

/// `POST /v1/vips/web/backends` as the app's registrar sends it.
fn register(cl: &ControlLab, weight: u32) -> (u16, Value) {
    cl.api(
        "POST",
        "/v1/vips/web/backends",
        Some(&format!(r#"{{"address": "{ADDR}", "weight": {weight}}}"#)),
    )
}

fn backend(cl: &ControlLab) -> Value {
    cl.backend_view("web", ADDR)
}

/// (admin, drained_by, weight, declared_weight) of a backend answer.
fn admin_of(b: &Value) -> (String, Value, u64, Value) {
    (
        b["admin"].as_str().unwrap_or("?").to_string(),
        b["drained_by"].clone(),
        b["weight"].as_u64().unwrap_or(u64::MAX),
        b["declared_weight"].clone(),
    )
}

#[test]
fn an_operator_drain_and_weight_survive_reregistration_and_restart() {
    let mut cl = ControlLab::new(2);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let table = || maps::table_backends(&pins, VIP, 80);
    let both = vec!["10.77.0.11".to_string(), ADDR.into()];

    // The config's backend becomes a dynamic one (over the unix socket, an administrator's
    // add: `api`; a registrant's token makes it `registered`, see `access`).
    assert_eq!(
        cl.api("DELETE", &format!("/v1/vips/web/backends/{ADDR}"), None)
            .0,
        200
    );
    let (st, b) = register(&cl, 70);
    assert_eq!((st, b["source"].as_str()), (201, Some("api")), "{b}");
    assert_eq!(admin_of(&b), ("active".into(), Value::Null, 70, 70.into()));
    cl.wait_healthy(2);
    assert_eq!(table(), both);

    // The operator drains it and lowers its weight.
    let (st, b) = cl.api("POST", &format!("/v1/vips/web/backends/{ADDR}/drain"), None);
    assert_eq!(
        (st, b["drained_by"].as_str()),
        (200, Some("operator")),
        "{b}"
    );
    let (st, b) = cl.api(
        "POST",
        &format!("/v1/vips/web/backends/{ADDR}/weight"),
        Some(r#"{"weight": 10}"#),
    );
    assert_eq!((st, b["weight"].as_u64()), (200, Some(10)), "{b}");

    // Refreshes with the same declared weight: heartbeats.
    for _ in 0..3 {
        let (st, b) = register(&cl, 70);
        assert_eq!(st, 200, "{b}");
        assert_eq!(
            admin_of(&b),
            ("draining".into(), "operator".into(), 10, 70.into()),
            "the answer says the backend is still drained, at the operator's weight"
        );
        assert_eq!(b["effective_weight"].as_u64(), Some(0), "{b}");
    }
    assert_eq!(
        table(),
        vec!["10.77.0.11".to_string()],
        "still out of the table"
    );
    let seen = counts(&client_gets(&cl, 20));
    assert_eq!(
        seen,
        [("be1".to_string(), 20)].into(),
        "no new flow went to the drained backend"
    );

    // `lbctl backend add` on it says it is still draining and how to undrain.
    let (ok, out) = cl.lbctl(&["backend", "add", "web", ADDR, "--weight", "70"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("re-registered backend")
            && out.contains("draining (operator)")
            && out.contains("still draining")
            && out.contains(&format!("lbctl backend undrain web {ADDR}"))
            && out.contains("weight 10 set by an operator is kept"),
        "{out}"
    );

    for cmd in [&["backend", "list", "web"][..], &["health"]] {
        let (ok, out) = cl.lbctl(cmd);
        assert!(ok && out.contains("draining (operator)"), "{cmd:?}: {out}");
    }

    // An lbd restart (state file) keeps both overrides, and so does the next refresh.
    let mut lbd = cl.lbd.take().expect("lbd");
    lbd.signal(libc::SIGKILL).expect("SIGKILL lbd");
    let _ = lbd.wait_timeout(std::time::Duration::from_secs(5));
    cl.start_lbd();
    cl.wait_healthy(2);
    assert_eq!(
        admin_of(&backend(&cl)),
        ("draining".into(), "operator".into(), 10, 70.into()),
        "after the restart"
    );
    let (st, b) = register(&cl, 70);
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        admin_of(&b),
        ("draining".into(), "operator".into(), 10, 70.into())
    );
    assert_eq!(table(), vec!["10.77.0.11".to_string()]);

    // Only the operator undrains.
    let (ok, out) = cl.lbctl(&["backend", "undrain", "web", ADDR]);
    assert!(ok, "{out}");
    assert_eq!(admin_of(&backend(&cl)).0, "active");
    assert_eq!(table(), both);

    // The file lists ADDR: the restart gave it back to the file (as a reload takes over a
    // backend the file lists), and the file owns a listed backend's weight, so every balancer
    // of a BGP tier builds the same table (docs/bgp.md): a registration declaring a new weight
    // is a heartbeat; the operator's weight stays until `lbctl backend weight` changes it.
    let (st, b) = register(&cl, 40);
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["source"].as_str(), Some("config"), "{b}");
    assert_eq!(admin_of(&b), ("active".into(), Value::Null, 10, 70.into()));
    let (st, b) = cl.api(
        "POST",
        &format!("/v1/vips/web/backends/{ADDR}/weight"),
        Some(r#"{"weight": 40}"#),
    );
    assert_eq!((st, b["weight"].as_u64()), (200, Some(40)), "{b}");
}

#[test]
fn the_backends_own_drain_and_deregistration_still_work() {
    let cl = ControlLab::new(2);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let table = || maps::table_backends(&pins, VIP, 80);
    assert_eq!(
        cl.api("DELETE", &format!("/v1/vips/web/backends/{ADDR}"), None)
            .0,
        200
    );
    assert_eq!(register(&cl, 70).0, 201);
    cl.wait_healthy(2);

    // The app's graceful shutdown drains as the registrant; if it dies before deregistering,
    // its next registration (the restarted app) makes it active again.
    let drain =
        |body: Option<&str>| cl.api("POST", &format!("/v1/vips/web/backends/{ADDR}/drain"), body);
    let (st, b) = drain(Some(r#"{"by": "registrant"}"#));
    assert_eq!(
        (st, b["drained_by"].as_str()),
        (200, Some("registrant")),
        "{b}"
    );
    assert_eq!(table(), vec!["10.77.0.11".to_string()]);
    let (st, b) = register(&cl, 70);
    assert_eq!(st, 200, "{b}");
    assert_eq!(admin_of(&b), ("active".into(), Value::Null, 70, 70.into()));
    assert_eq!(table().len(), 2);

    // The registrant's drain never downgrades an operator's.
    drain(None);
    let (_, b) = drain(Some(r#"{"by": "registrant"}"#));
    assert_eq!(b["drained_by"].as_str(), Some("operator"), "{b}");
    assert_eq!(drain(Some(r#"{"by": "someone"}"#)).0, 400);

    // Deregistration (the end of the app's shutdown) forgets everything: the next
    // registration creates a fresh, active backend.
    assert_eq!(
        cl.api("DELETE", &format!("/v1/vips/web/backends/{ADDR}"), None)
            .0,
        200
    );
    assert_eq!(table(), vec!["10.77.0.11".to_string()]);
    let (st, b) = register(&cl, 70);
    assert_eq!(st, 201, "{b}");
    assert_eq!(admin_of(&b), ("active".into(), Value::Null, 70, 70.into()));
    cl.wait_healthy(2);
    assert_eq!(table().len(), 2);
    let seen = counts(&client_gets(&cl, 40));
    assert!(
        seen.get("be2").copied().unwrap_or(0) > 0 && !seen.keys().any(|k| k.starts_with("ERR")),
        "the re-registered backend takes new flows: {seen:?}"
    );
}
