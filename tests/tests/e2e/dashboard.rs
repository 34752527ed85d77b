//! Issue 16: lbd's web dashboard in headless Chromium, from the client's namespace against
//! lb1's API listener with the lab's admin token. The page loads under its CSP with no console
//! error, lists the lab's backends, shows a backend turning unhealthy when its app is killed
//! (and healthy again), and its drain, weight and undrain (each confirmed in a dialog) show up
//! in `lbctl backend list`, in the pinned maps and in lbd's audit log. Screenshots go to
//! `target/screenshots/` (docs/dashboard.md shows one).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use tests::http::Request;
use tests::pinned;

use crate::E2e;
use crate::api::call;
use crate::browser::{Browser, screenshots};
use crate::load::{Load, Spec};

const KILLED: &str = "be2";
const DRAINED: &str = "be3";
const LB: &str = "lb1";
/// The backend whose queues page is tested.
const APP: &str = "be1";

/// Health checks run every second and two failures make a backend unhealthy: the page shows
/// it within a few seconds; this bounds the wait.
const CHECK_WINDOW: Duration = Duration::from_secs(20);

fn row(vip: &str, addr: &str) -> String {
    format!("#backends tr[data-vip=\"{vip}\"][data-address=\"{addr}\"]")
}

#[test]
fn lbd_dashboard_shows_the_lab_and_drains_through_the_api() -> Result<()> {
    let e = E2e::start("dashboard")?;
    let lb = e.system.lab().host(LB)?;
    let url = format!("http://{}:9100/", lb.ipv4());
    let token = e.system.token()?;
    let mut b = Browser::start(e.client(), &e.system.lab().dir().join("browser.log"))?;

    let (status, csp) = b.open(&url)?;
    ensure!(status == 200, "GET {url}: HTTP {status}");
    let csp = csp.unwrap_or_default();
    ensure!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "the dashboard's Content-Security-Policy is not strict: {csp:?}"
    );
    b.wait_text("#login h2", "Connect", Duration::from_secs(10))?;
    b.screenshot(&screenshots().join("lbd-dashboard-login.png"))?;
    b.fill("#token", &token)?;
    b.click("#login-form button[type=submit]")?;
    b.wait_text("#live", "^live$", Duration::from_secs(15))
        .context("the page did not go live with the lab's token")?;

    // Every backend of the lab, healthy; the VIP; lb1 VRRP master.
    for be in e.system.backends() {
        let addr = e.addr_of(&be)?.to_string();
        b.wait_text(
            &format!("{} td.health", row(&e.vip_name, &addr)),
            "^healthy$",
            Duration::from_secs(20),
        )
        .with_context(|| format!("{be} ({addr}) is not listed healthy"))?;
    }
    b.wait_text(
        &format!("#vips tr[data-vip=\"{}\"] td.algorithm", e.vip_name),
        "maglev|ip-hash|weighted-round-robin|least-connections",
        Duration::from_secs(5),
    )?;
    b.wait_text("#vrrp td.state", "^master$", Duration::from_secs(10))?;
    // Traffic through the VIP (bounded: 2 workers, 15 s at most): the rates and charts move.
    let mut spec = Spec::new("dash");
    spec.workers = 2;
    spec.pace = Duration::from_millis(20);
    spec.max_time = Duration::from_secs(15);
    let load = Load::start(e.client(), e.vip, spec)?;
    load.wait_more(300, Duration::from_secs(20))?;
    // Counters arrive: two snapshots make a rate.
    b.wait_text(
        &format!("#vips tr[data-vip=\"{}\"] td.pps", e.vip_name),
        "^[1-9]",
        Duration::from_secs(10),
    )
    .context("the VIP's packets/s never moved under load")?;
    b.screenshot(&screenshots().join("lbd-dashboard.png"))?;
    load.finish()?;

    // A backend's app dies: the page shows it unhealthy within the check window.
    let killed = e.addr_of(KILLED)?.to_string();
    e.system.signal_daemon(KILLED, "app", libc::SIGKILL)?;
    let shown = b
        .wait_text(
            &format!("{} td.health", row(&e.vip_name, &killed)),
            "^unhealthy$",
            CHECK_WINDOW,
        )
        .with_context(|| format!("{KILLED} never showed unhealthy after its app was killed"));
    let check = b.texts(&format!("{} td.last-check", row(&e.vip_name, &killed)));
    b.screenshot(&screenshots().join("lbd-dashboard-unhealthy.png"))?;
    e.system.provision(KILLED)?;
    shown?;
    let check = check?;
    ensure!(
        check.iter().any(|c| c.starts_with("failed")),
        "the last check of {KILLED} does not show the failure: {check:?}"
    );
    b.wait_text(
        &format!("{} td.health", row(&e.vip_name, &killed)),
        "^healthy$",
        Duration::from_secs(30),
    )
    .with_context(|| format!("{KILLED} did not come back healthy after its app restarted"))?;

    // Drain from the page (confirmed): lbctl, the pinned maps and the audit log see it.
    let drained = e.addr_of(DRAINED)?.to_string();
    let r = row(&e.vip_name, &drained);
    let pins = e.system.bpffs().join(LB);
    let vip = e.vip;
    let in_table = || -> Result<BTreeMap<String, u32>> {
        Ok(pinned::table_counts(&pins, vip.ip(), vip.port(), 6)?)
    };
    ensure!(
        in_table()?.contains_key(&drained),
        "{DRAINED} is not in the VIP's table before the drain: {:?}",
        in_table()?
    );
    b.click(&format!("{r} button.drain"))?;
    b.wait_text("#confirm-text", "^Drain ", Duration::from_secs(5))?;
    b.screenshot(&screenshots().join("lbd-dashboard-confirm.png"))?;
    b.click("#confirm-ok")?;
    b.wait_text(
        &format!("{r} td.admin"),
        "^draining \\(operator\\)$",
        Duration::from_secs(10),
    )?;
    let listed = backend_on(&e, &drained)?;
    ensure!(
        listed["admin"] == "draining" && listed["drained_by"] == "operator",
        "lbctl backend list after the page's drain: {listed}"
    );
    e.wait_until(
        "the drained backend to leave the VIP's table in the pinned maps",
        Duration::from_secs(10),
        || Ok(!in_table()?.contains_key(&drained)),
    )?;

    // Weight, then undrain, from the page.
    b.click(&format!("{r} button.set-weight"))?;
    b.wait_text("#confirm-text", "weight", Duration::from_secs(5))?;
    b.fill("#weight-input", "250")?;
    b.click("#confirm-ok")?;
    b.wait_text(
        &format!("{r} td.weight"),
        " / 250 / ",
        Duration::from_secs(10),
    )?;
    ensure!(
        backend_on(&e, &drained)?["weight"] == 250,
        "lbctl does not show the page's weight"
    );
    b.click(&format!("{r} button.drain"))?;
    b.wait_text("#confirm-text", "^Undrain ", Duration::from_secs(5))?;
    b.click("#confirm-ok")?;
    b.wait_text(
        &format!("{r} td.admin"),
        "^active$",
        Duration::from_secs(10),
    )?;
    e.wait_until(
        "the undrained backend to return to the VIP's table in the pinned maps",
        Duration::from_secs(10),
        || Ok(in_table()?.contains_key(&drained)),
    )?;
    let audit = e.system.log_tail(LB, "lbd", 100_000);
    for action in ["drain", "weight", "undrain"] {
        let path = format!("/backends/{drained}/{action}");
        ensure!(
            audit
                .lines()
                .any(|l| l.contains("audit") && l.contains(&path)),
            "no audit line for the page's {action} ({path}) in lb1's log\n{}",
            e.logs(&[(LB, "lbd")])
        );
    }

    app_dashboard(&e, &mut b, &token)?;

    let errors = b.errors()?;
    ensure!(
        errors.is_empty(),
        "the dashboards logged errors in the browser: {errors:#?}"
    );
    e.say(&format!(
        "dashboard: {} backends listed, {KILLED} shown unhealthy, drain/weight/undrain of \
         {DRAINED} seen by lbctl, the pinned maps and the audit log; app's dead letter \
         browsed and replayed; screenshots in {}",
        e.system.backends().len(),
        screenshots().display()
    ));
    Ok(())
}

/// `lbctl backend list` on lb1: the row of `addr` on the lab's VIP.
fn backend_on(e: &E2e, addr: &str) -> Result<serde_json::Value> {
    let list = e
        .system
        .lbctl_json(LB, ["backend", "list", e.vip_name.as_str()])?;
    list.as_array()
        .into_iter()
        .flatten()
        .find(|b| b["address"] == addr)
        .cloned()
        .with_context(|| format!("{addr} not in lbctl backend list: {list}"))
}

/// The app's queues page on be1 (its own address, the VIP's port): a task that fails for good
/// shows up as a dead letter of `tasks`, is browsed with the admin token and replayed from the
/// page (confirmed), and runs again.
fn app_dashboard(e: &E2e, b: &mut Browser, token: &str) -> Result<()> {
    let app = SocketAddr::new(e.addr_of(APP)?, e.vip.port());
    let body = r#"{"kind": "fail", "input": {"permanent": true}, "max_attempts": 1}"#;
    let r = call(e, app, Request::post("/tasks", body, "dashboard-dead-task"))?;
    ensure!(
        r.status == 202,
        "POST /tasks on {APP}: {} {}",
        r.status,
        r.text()
    );
    let task = r.json()?["id"]
        .as_str()
        .context("POST /tasks answered no id")?
        .to_string();

    let url = format!("http://{app}/ui/");
    let (status, csp) = b.open(&url)?;
    ensure!(status == 200, "GET {url}: HTTP {status}");
    ensure!(
        csp.is_some_and(|c| c.contains("script-src 'self'")),
        "the app's page has no strict Content-Security-Policy"
    );
    let queue = "#queues tr[data-queue=\"tasks\"]";
    b.wait_text("#live", "^live$", Duration::from_secs(15))?;
    b.wait_text(
        &format!("{queue} td.dead"),
        "^[1-9]",
        Duration::from_secs(20),
    )
    .with_context(|| format!("task {task} never showed as a dead letter of `tasks`"))?;
    b.wait_text(
        &format!("{queue} td.jobs-rate"),
        "^\\d",
        Duration::from_secs(10),
    )?;
    b.click(&format!("{queue} button.browse"))?;
    b.fill("#token", token)?;
    b.click("#token-form button[type=submit]")?;
    let letter = format!("#letters tr[data-job=\"{task}\"]");
    b.wait_text(
        &format!("{letter} td.kind"),
        "^fail$",
        Duration::from_secs(10),
    )
    .with_context(|| format!("task {task} is not among the dead letters the page lists"))?;
    b.screenshot(&screenshots().join("app-queues.png"))?;
    let task_path = format!("/tasks/{task}");
    let updated = || -> Result<u64> {
        let r = call(e, app, Request::get(&task_path, "dashboard-task"))?;
        Ok(r.json()?["updated_ms"].as_u64().unwrap_or(0))
    };
    let dead_at = updated()?;
    b.click(&format!("{letter} button.replay"))?;
    b.wait_text("#confirm-text", &task, Duration::from_secs(5))?;
    b.click("#confirm-ok")?;
    b.wait_text("#toast", "^replayed 1 on tasks", Duration::from_secs(10))?;
    // Replayed: it runs again (and, failing for good, dies again).
    crate::poll(
        &format!("task {task} to run again after the page replayed it"),
        Duration::from_secs(20),
        || Ok(updated()? > dead_at),
    )?;
    Ok(())
}
