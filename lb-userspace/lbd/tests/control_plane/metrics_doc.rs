//! docs/metrics.md lists every metric lbd has: a real lbd's `/metrics` (after traffic, so the
//! data plane's counters carry samples, and with a VRRP router) and the names lbd's source
//! defines are compared with the page's `## lbd` table (`tests::metrics_doc`).

use std::path::Path;

use super::*;

/// A virtual router of its own, so the `lbd_vrrp_*` families carry samples (and labels).
const VRRP: &str = "[vrrp]\ninterface = \"eth0\"\nvirtual_router_id = 62\npriority = 100\n\
                    advert_interval_cs = 100\naddresses = [\"10.77.0.201/32\"]\n";

#[test]
fn docs_metrics_md_lists_every_lbd_metric() {
    let cl = ControlLab::with_extra_config(2, VRRP);
    let seen = counts(&client_gets(&cl, 10));
    assert!(
        seen.keys().all(|k| k.starts_with("be")),
        "traffic through the VIP: {seen:?}"
    );
    let (st, m) = cl.api("GET", "/metrics", None);
    assert_eq!(st, 200, "{m}");
    let text = m.as_str().unwrap_or_default();
    // The kernel's own view of the attachment lbd made.
    assert!(
        text.contains("lbd_dataplane_attached{interface=\"eth0\"} 1"),
        "{text}"
    );

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let page = repo.join("docs/metrics.md");
    let documented = tests::metrics_doc::documented(&page, "lbd").unwrap_or_else(|e| panic!("{e}"));
    let exposed = tests::metrics_doc::exposed(text);
    let source = tests::metrics_doc::in_source(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &["lb_", "lbd_"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        exposed.get("lbd_vrrp_state").is_some_and(|e| e.sampled),
        "the VRRP router's families are exposed: {text}"
    );
    assert!(
        exposed.len() >= 15 && source.len() >= exposed.len(),
        "{} families exposed, {} names in the source",
        exposed.len(),
        source.len()
    );
    let problems = tests::metrics_doc::compare(&documented, &exposed, &source);
    assert!(
        problems.is_empty(),
        "{} disagrees with lbd:\n  {}",
        page.display(),
        problems.join("\n  ")
    );
}
