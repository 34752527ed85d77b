//! The lab's Prometheus (issue 16): the server the services host runs scrapes every lbd and
//! app, sees the lab's backends through lbd's metrics, runs every query of the Grafana
//! dashboard, fires `LbBackendDown` (rules of `prometheus/rules`) when a backend's app is
//! killed and clears it once it is back, and fires `LbDataplaneDetached` when a balancer's
//! XDP link is detached. Every question goes over Prometheus's HTTP API from the client host.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tests::http::{Conn, Request};
use tests::topology::Service;

use crate::E2e;

const VICTIM: &str = "be3";
/// Prometheus's port on the services host (vagrant/provision/services.sh).
const PORT: u16 = 9090;

#[test]
fn prometheus_sees_the_lab_and_alerts_on_a_killed_backend() -> Result<()> {
    let e = E2e::start("prometheus")?;
    let prom = prometheus_addr(&e)?;
    let balancers = e.system.balancers();
    let backends = e.system.backends();

    // Every lbd and every app is a target that answers.
    let logs = || e.logs(&[("svc", "prometheus")]);
    e.wait_until(
        "Prometheus to scrape every lbd and app",
        Duration::from_secs(60),
        || {
            let up = query(&e, prom, "up == 1")?;
            let jobs: Vec<&str> = up
                .iter()
                .filter_map(|s| s["metric"]["job"].as_str())
                .collect();
            Ok(
                jobs.iter().filter(|j| **j == "lbd").count() == balancers.len()
                    && jobs.iter().filter(|j| **j == "app").count() == backends.len(),
            )
        },
    )
    .with_context(logs)?;

    // Each lbd's backend series name every backend, by its IPv4 and its IPv6 address.
    let mut want = BTreeSet::new();
    for b in &backends {
        let host = e.system.lab().host(b)?;
        want.insert(host.ipv4().to_string());
        want.insert(host.ipv6().to_string());
    }
    // (Prometheus's newest sample may be a scrape older than lbctl's answer: bounded wait.)
    for lb in &balancers {
        let instance = format!("{}:9100", e.addr_of(lb)?);
        let promql = format!("lb_backend_up{{job=\"lbd\",instance=\"{instance}\"}} == 1");
        let mut seen = BTreeSet::new();
        e.wait_until(
            &format!("Prometheus to see every backend of {lb} healthy"),
            Duration::from_secs(30),
            || {
                seen = query(&e, prom, &promql)?
                    .iter()
                    .filter_map(|s| s["metric"]["backend"].as_str().map(str::to_string))
                    .collect();
                Ok(seen == want)
            },
        )
        .with_context(|| format!("healthy backends of {lb}: {seen:?}, the lab has {want:?}"))?;
    }
    dashboard_queries_run(&e, prom)?;
    let victim = e.addr_of(VICTIM)?.to_string();
    ensure!(
        firing(&e, prom, "LbBackendDown", &victim)?.is_empty(),
        "LbBackendDown fires for {victim} before anything happened"
    );
    e.say(&format!(
        "Prometheus at {prom} scrapes {} lbd and {} app; every backend healthy",
        balancers.len(),
        backends.len()
    ));

    // Kill the victim's app: each lbd's checks mark it down, the alert fires after its `for`,
    // once per balancer (each checks on its own, so they may fire a scrape apart).
    e.system.signal_daemon(VICTIM, "app", libc::SIGKILL)?;
    let every: BTreeSet<String> = balancers
        .iter()
        .map(|lb| Ok(format!("{}:9100", e.addr_of(lb)?)))
        .collect::<Result<_>>()?;
    let mut instances = BTreeSet::new();
    let took = e
        .wait_until(
            &format!("LbBackendDown to fire for {VICTIM} ({victim}) on every balancer"),
            Duration::from_secs(90),
            || {
                instances = firing(&e, prom, "LbBackendDown", &victim)?
                    .iter()
                    .filter_map(|a| a["labels"]["instance"].as_str().map(str::to_string))
                    .collect();
                Ok(instances == every)
            },
        )
        .with_context(|| format!("firing on {instances:?}\n{}", logs()))?;
    e.say(&format!(
        "LbBackendDown firing for {victim} on {} balancers {:.1} s after the kill",
        instances.len(),
        took.as_secs_f64()
    ));

    // Restore it: the alert resolves.
    e.system.provision(VICTIM)?;
    e.system.wait_healthy(
        &balancers[0],
        e.system.vip_backends(),
        Duration::from_secs(60),
    )?;
    e.wait_until(
        &format!("LbBackendDown to clear for {VICTIM}"),
        Duration::from_secs(60),
        || Ok(firing(&e, prom, "LbBackendDown", &victim)?.is_empty()),
    )
    .with_context(logs)?;

    // Someone removes the XDP program from the backup balancer's interface: lbd's
    // `lbd_dataplane_attached` asks the kernel, and LbDataplaneDetached fires. (Last: lbd
    // does not re-attach by itself, the lab goes with the test.)
    let lb = balancers.last().context("the lab has no balancer")?;
    let instance = format!("{}:9100", e.addr_of(lb)?);
    detach_xdp(&e, lb)?;
    e.wait_until(
        &format!("LbDataplaneDetached to fire for {lb}"),
        Duration::from_secs(60),
        || {
            let alerts = api(&e, prom, "/api/v1/alerts")?;
            Ok(alerts["alerts"].as_array().into_iter().flatten().any(|a| {
                a["state"] == "firing"
                    && a["labels"]["alertname"] == "LbDataplaneDetached"
                    && a["labels"]["instance"] == instance.as_str()
                    && a["labels"]["interface"] == "eth0"
            }))
        },
    )
    .with_context(logs)?;
    e.say(&format!(
        "LbDataplaneDetached firing for {lb} after its XDP link was detached"
    ));
    Ok(())
}

/// Detaches the XDP link of `lb`'s eth0 (`ip link set xdp off` cannot: lbd attaches through
/// a pinned BPF link, which only `bpftool link detach` ends).
fn detach_xdp(e: &E2e, lb: &str) -> Result<()> {
    let host = e.system.lab().host(lb)?;
    let link: Value =
        serde_json::from_str(&host.exec(["ip", "-j", "-d", "link", "show", "eth0"])?)?;
    // One program: `xdp.prog`; several modes at once: `xdp.attached[].prog`.
    let xdp = &link[0]["xdp"];
    let prog = xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
        .with_context(|| format!("no XDP program on {lb}'s eth0: {link}"))?;
    let links: Value = serde_json::from_str(&tests::exec::run(
        std::process::Command::new("bpftool").args(["-j", "link", "show"]),
    )?)?;
    let id = links
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["prog_id"].as_u64() == Some(prog))
        .and_then(|l| l["id"].as_u64())
        .with_context(|| format!("no BPF link holds program {prog} of {lb}"))?;
    tests::exec::run(std::process::Command::new("bpftool").args([
        "link",
        "detach",
        "id",
        &id.to_string(),
    ]))?;
    Ok(())
}

/// Every query of the Grafana dashboard (prometheus/grafana/lb-xdp.json; Grafana itself is
/// not installable here) is valid PromQL for the lab's Prometheus, and the healthy-backends
/// panel shows every backend of each VIP.
fn dashboard_queries_run(e: &E2e, prom: SocketAddr) -> Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prometheus/grafana/lb-xdp.json");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let mut n = 0;
    for panel in dash["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().context("a target without expr")?;
            query(e, prom, expr).with_context(|| {
                format!("dashboard panel {:?}: {expr}", panel["title"].as_str())
            })?;
            n += 1;
        }
    }
    ensure!(n >= 10, "only {n} dashboard queries in {}", path.display());
    let backends = e.system.backends().len() as f64;
    e.wait_until(
        "the dashboard's healthy-backends panel to count every backend",
        Duration::from_secs(30),
        || {
            let v = query(e, prom, "min by (vip) (lb:vip_healthy_backends:count)")?;
            Ok(v.len() == 2
                && v.iter().all(|s| {
                    s["value"][1].as_str().and_then(|x| x.parse::<f64>().ok()) == Some(backends)
                }))
        },
    )?;
    e.say(&format!("{n} dashboard queries answered"));
    Ok(())
}

/// Where the topology's Prometheus listens.
fn prometheus_addr(e: &E2e) -> Result<SocketAddr> {
    let node = e
        .system
        .lab()
        .topology()
        .nodes()
        .iter()
        .find(|n| n.services().contains(&Service::Prometheus))
        .context("vagrant/topology.json runs no `prometheus` service")?;
    Ok(SocketAddr::new(IpAddr::V4(node.ipv4()), PORT))
}

/// `GET path` on Prometheus from the client host; the `data` of a successful answer.
fn api(e: &E2e, prom: SocketAddr, path: &str) -> Result<Value> {
    let path = path.to_string();
    let resp = e
        .client()
        .in_netns(move || -> Result<tests::http::Response> {
            let mut c = Conn::connect(prom, Duration::from_secs(5))
                .with_context(|| format!("connecting to Prometheus at {prom}"))?;
            Ok(c.send(&Request::get(&path, "prometheus-e2e").closing())?)
        })??;
    let body = resp.json()?;
    if resp.status != 200 || body["status"] != "success" {
        bail!("Prometheus answered {}: {}", resp.status, resp.text());
    }
    Ok(body["data"].clone())
}

/// The instant vector of `promql`.
fn query(e: &E2e, prom: SocketAddr, promql: &str) -> Result<Vec<Value>> {
    let data = api(e, prom, &format!("/api/v1/query?query={}", encode(promql)))?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// Alerts `name` firing now for backend `backend`.
fn firing(e: &E2e, prom: SocketAddr, name: &str, backend: &str) -> Result<Vec<Value>> {
    let data = api(e, prom, "/api/v1/alerts")?;
    Ok(data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["state"] == "firing"
                && a["labels"]["alertname"] == name
                && a["labels"]["backend"] == backend
        })
        .cloned()
        .collect())
}

/// Percent-encoding of a query parameter's value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
