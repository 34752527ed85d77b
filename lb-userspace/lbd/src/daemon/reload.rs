//! Reloading lbd.toml (`SIGHUP`, `POST /v1/reload`, `lbctl reload [--dry-run]`).
//!
//! The new file is parsed and checked whole first: a bad one is refused with
//! `FILE:LINE: field: reason` and lbd keeps running on what it has. Otherwise the difference
//! with the running state is computed ([`plan`]) and applied under the daemon's lock in one
//! reconcile: the programmer rewrites only what changed (a re-weighted VIP's table is swapped
//! atomically, other VIPs are not touched) and established flows keep their backends through
//! the connection table, so a reload drops no flow of a VIP it keeps.
//!
//! Ownership: the file owns its VIPs and their listed backends; the API and self-registration
//! own what they added. A reload adds, changes and removes only what the file owns; what the
//! API or a registration added stays unless `prune` is asked for. An object the new file lists
//! that the API or a registration had added passes to the file.
//!
//! Sections other than `[[vips]]` and `[health]` (VRRP, and BGP when it lands) are applied by
//! the components that run them: they follow [`super::Shared::subscribe_config`] and compare
//! their own section. Each one adds its lines to the diff in [`section_changes`], the one place
//! to extend for a new section.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use lb_config::{Config, ConfigError, VipConfig};
use serde::Serialize;
use tracing::info;

use super::{
    Inner, State, live_settings,
    model::{BackendRuntime, Source, VipRuntime},
    reconcile, runtime_from_config, sync_checkers,
};

/// What a reload does, or would do with `dry_run`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    pub file: PathBuf,
    pub dry_run: bool,
    /// Each change on one line, by section.
    pub changes: Vec<Change>,
    /// Settings that changed in the file but take effect only when lbd restarts.
    pub needs_restart: Vec<String>,
    /// Whether the changes were applied (false for a dry run or when nothing changed).
    pub applied: bool,
}

impl Report {
    /// The answer of `POST /v1/reload` (lb-api's type).
    pub fn wire(self) -> lb_api::types::ReloadReport {
        lb_api::types::ReloadReport {
            file: self.file.display().to_string(),
            dry_run: self.dry_run,
            changes: self
                .changes
                .into_iter()
                .map(|c| lb_api::types::ReloadChange {
                    section: c.section.to_string(),
                    change: c.change,
                })
                .collect(),
            needs_restart: self.needs_restart,
            applied: self.applied,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `vips`, `backends`, `health`, `dataplane`, `api`, `sweep`, `vrrp`, ...
    pub section: &'static str,
    pub change: String,
}

/// How a reload may fail; lbd goes on with the config it had.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("lbd was started without a config file to reload")]
    NoFile,
    /// The file is refused: `FILE:LINE: field: reason`.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A VIP of the file cannot join those the API added (same address, port and protocol).
    #[error("{0}")]
    Conflict(String),
    #[error("programming the data plane: {0:#}")]
    Program(anyhow::Error),
}

/// Options of one reload.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Show the difference, change nothing.
    pub dry_run: bool,
    /// Also remove the VIPs and backends the API or a registration added that the file does
    /// not list.
    pub prune: bool,
}

fn change(section: &'static str, change: impl Into<String>) -> Change {
    Change {
        section,
        change: change.into(),
    }
}

/// One step of the plan, applied to the model in order.
#[derive(Clone, Debug)]
enum Step {
    AddVip(VipConfig),
    RemoveVip(String),
    /// New settings for an existing VIP (the file's, or an API VIP's re-checked against the
    /// new global health); the flag says whether the file takes it over.
    UpdateVip(VipConfig, bool),
    AddBackend(String, lb_config::BackendConfig),
    RemoveBackend(String, IpAddr),
    /// The file's weight and MAC for a backend it lists (taken over when another source had
    /// added it).
    UpdateBackend(String, lb_config::BackendConfig),
}

/// The difference between the running model and `new`, and the steps that apply it.
fn plan(
    old: &Config,
    new: &Config,
    vips: &std::collections::BTreeMap<String, VipRuntime>,
    prune: bool,
) -> Result<(Vec<Change>, Vec<Step>), ReloadError> {
    let mut changes = Vec::new();
    let mut steps = Vec::new();
    let listed: BTreeSet<&str> = new.vips.iter().map(|v| v.name.as_str()).collect();
    for (name, v) in vips {
        if listed.contains(name.as_str()) {
            continue;
        }
        match v.source {
            Source::Config => {
                changes.push(change("vips", format!("remove VIP {name} (its flows end)")));
                steps.push(Step::RemoveVip(name.clone()));
            }
            _ if prune => {
                changes.push(change(
                    "vips",
                    format!("remove VIP {name} (source {}; --prune)", v.source.name()),
                ));
                steps.push(Step::RemoveVip(name.clone()));
            }
            _ => {
                // An API VIP takes the global health defaults: follow them.
                let env = new.vip_env();
                let cfg = v.input.check(&env).map_err(|e| {
                    ReloadError::Conflict(format!(
                        "VIP {name} (added by the API) no longer passes the checks with this file: {e}"
                    ))
                })?;
                if cfg.health != v.cfg.health {
                    changes.push(change(
                        "health",
                        format!("VIP {name} (api): health checks follow the new [health]"),
                    ));
                    steps.push(Step::UpdateVip(cfg, false));
                }
            }
        }
    }
    for want in &new.vips {
        // A file VIP may not take the key of a VIP it does not replace.
        let others = vips
            .values()
            .filter(|v| v.cfg.name != want.name && !steps_remove(&steps, &v.cfg.name))
            .map(|v| &v.cfg);
        for o in others {
            if (o.address, o.port, o.proto) == (want.address, want.port, want.proto) {
                return Err(ReloadError::Conflict(format!(
                    "VIP {} of the file has the address, port and protocol of VIP {} (added by the API); delete that one first or reload with --prune",
                    want.name, o.name
                )));
            }
        }
        match vips.get(&want.name) {
            None => {
                changes.push(change(
                    "vips",
                    format!(
                        "add VIP {} {}:{}/{} with {} backends",
                        want.name,
                        want.address,
                        want.port,
                        lb_config::protocol_name(want.proto),
                        want.backends.len()
                    ),
                ));
                steps.push(Step::AddVip(want.clone()));
            }
            Some(have) => {
                let takeover = have.source != Source::Config;
                if takeover {
                    changes.push(change(
                        "vips",
                        format!(
                            "VIP {} passes to the file (source was {})",
                            want.name,
                            have.source.name()
                        ),
                    ));
                }
                let settings = vip_setting_changes(&have.cfg, want);
                for c in &settings {
                    changes.push(change(
                        if c.starts_with("health") {
                            "health"
                        } else {
                            "vips"
                        },
                        format!("VIP {}: {c}", want.name),
                    ));
                }
                if takeover || !settings.is_empty() {
                    steps.push(Step::UpdateVip(want.clone(), takeover));
                }
                backend_steps(have, want, prune, &mut changes, &mut steps);
            }
        }
    }
    changes.extend(section_changes(old, new));
    Ok((changes, steps))
}

fn steps_remove(steps: &[Step], name: &str) -> bool {
    steps
        .iter()
        .any(|s| matches!(s, Step::RemoveVip(n) if n == name))
}

/// What differs between two settings of one VIP, one line each.
fn vip_setting_changes(a: &VipConfig, b: &VipConfig) -> Vec<String> {
    let mut out = Vec::new();
    if (a.address, a.port, a.proto) != (b.address, b.port, b.proto) {
        out.push(format!(
            "address {}:{}/{} -> {}:{}/{} (flows to the old one end)",
            a.address,
            a.port,
            lb_config::protocol_name(a.proto),
            b.address,
            b.port,
            lb_config::protocol_name(b.proto)
        ));
    }
    if a.algorithm != b.algorithm {
        out.push(format!(
            "algorithm {} -> {}",
            lb_config::algorithm_name(a.algorithm),
            lb_config::algorithm_name(b.algorithm)
        ));
    }
    if a.mode != b.mode {
        out.push(format!(
            "mode {} -> {}",
            lb_config::mode_name(a.mode),
            lb_config::mode_name(b.mode)
        ));
    }
    if a.table_size != b.table_size {
        out.push(format!(
            "table_size {} -> {}",
            a.table_size.get(),
            b.table_size.get()
        ));
    }
    if a.health != b.health {
        out.push(format!("health {:?} -> {:?}", a.health, b.health));
    }
    if a.second_chance != b.second_chance {
        out.push(format!(
            "second_chance {:?} -> {:?}",
            a.second_chance, b.second_chance
        ));
    }
    out
}

fn backend_steps(
    have: &VipRuntime,
    want: &VipConfig,
    prune: bool,
    changes: &mut Vec<Change>,
    steps: &mut Vec<Step>,
) {
    let name = &want.name;
    let listed: BTreeSet<IpAddr> = want.backends.iter().map(|b| b.address).collect();
    for (addr, b) in &have.backends {
        if listed.contains(addr) {
            continue;
        }
        if b.source == Source::Config || prune {
            let why = if b.source == Source::Config {
                "its flows re-hash".to_string()
            } else {
                format!("source {}; --prune", b.source.name())
            };
            changes.push(change("backends", format!("remove {name}/{addr} ({why})")));
            steps.push(Step::RemoveBackend(name.clone(), *addr));
        }
    }
    for wb in &want.backends {
        let addr = wb.address;
        match have.backends.get(&addr) {
            None => {
                changes.push(change(
                    "backends",
                    format!("add {name}/{addr} weight {}", wb.weight),
                ));
                steps.push(Step::AddBackend(name.clone(), wb.clone()));
            }
            Some(b) => {
                let mut what = Vec::new();
                if b.source != Source::Config {
                    what.push(format!("passes to the file (was {})", b.source.name()));
                }
                if b.weight != wb.weight {
                    what.push(format!("weight {} -> {}", b.weight, wb.weight));
                }
                if b.static_mac != wb.mac.map(|m| m.0) {
                    what.push("static MAC changed".to_string());
                }
                if !what.is_empty() {
                    changes.push(change(
                        "backends",
                        format!("{name}/{addr}: {}", what.join(", ")),
                    ));
                    steps.push(Step::UpdateBackend(name.clone(), wb.clone()));
                }
            }
        }
    }
}

/// The sections beside `[[vips]]`: applied live unless listed by [`restart_needed`].
/// A new section (e.g. `[bgp]`) adds its lines here and applies itself by following
/// `Shared::subscribe_config`.
fn section_changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    if old.health != new.health {
        out.push(change(
            "health",
            format!("[health] defaults {:?} -> {:?}", old.health, new.health),
        ));
    }
    let (a, b) = (&old.dataplane, &new.dataplane);
    if (a.ipip_source_v4, a.ipip_source_v6) != (b.ipip_source_v4, b.ipip_source_v6) {
        out.push(change(
            "dataplane",
            format!(
                "ipip sources {:?}/{:?} -> {:?}/{:?}",
                a.ipip_source_v4, a.ipip_source_v6, b.ipip_source_v4, b.ipip_source_v6
            ),
        ));
    }
    if a.backend_mtu != b.backend_mtu {
        out.push(change(
            "dataplane",
            format!("backend_mtu {} -> {}", a.backend_mtu, b.backend_mtu),
        ));
    }
    if a.max_new_flows_per_cpu != b.max_new_flows_per_cpu {
        out.push(change(
            "dataplane",
            format!(
                "max_new_flows_per_cpu {} -> {}",
                a.max_new_flows_per_cpu, b.max_new_flows_per_cpu
            ),
        ));
    }
    if a.detach_on_exit != b.detach_on_exit {
        out.push(change(
            "dataplane",
            format!(
                "detach_on_exit {} -> {}",
                a.detach_on_exit, b.detach_on_exit
            ),
        ));
    }
    if old.sweep != new.sweep {
        out.push(change(
            "sweep",
            format!("{:?} -> {:?}", old.sweep, new.sweep),
        ));
    }
    if old.api.access != new.api.access {
        out.push(change(
            "api",
            "clients, tokens, TLS or leases changed (token and certificate files are read again)",
        ));
    }
    if old.vrrp != new.vrrp {
        let what = match (&old.vrrp, &new.vrrp) {
            (None, Some(_)) => "[vrrp] added: the routers start".to_string(),
            (Some(_), None) => {
                "[vrrp] removed: the routers stop (a master hands over at once)".to_string()
            }
            _ => "settings changed: the routers restart with them (a master hands over and may take the VIPs back)".to_string(),
        };
        out.push(change("vrrp", what));
    }
    out
}

/// Settings read only at start-up.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let (a, b) = (&old.dataplane, &new.dataplane);
    let mut field = |name: &str, differs: bool| {
        if differs {
            out.push(name.to_string());
        }
    };
    field("dataplane.interfaces", a.interfaces != b.interfaces);
    field("dataplane.xdp_mode", a.xdp_mode != b.xdp_mode);
    field("dataplane.pin_dir", a.pin_dir != b.pin_dir);
    field(
        "dataplane.conn_table_size",
        a.conn_table_size != b.conn_table_size,
    );
    field("api.socket", old.api.socket != new.api.socket);
    field("api.listen", old.api.listen != new.api.listen);
    field("api.state_file", old.api.state_file != new.api.state_file);
    // The announcer owns BIRD's configuration and sessions for lbd's life.
    field("bgp", old.bgp != new.bgp);
    out
}

/// Reads the file again and applies it (or with `dry_run` only says what would change).
pub async fn reload(shared: &State, opts: Options) -> Result<Report, ReloadError> {
    let path = shared.config_path().ok_or(ReloadError::NoFile)?;
    let new = Config::load(&path)?;
    // The access files (tokens, certificates) are read before anything changes: a missing
    // one refuses the reload like a bad line would.
    let access = crate::auth::Access::load(&new.api.access).map_err(|e| {
        ReloadError::Config(ConfigError {
            file: path.display().to_string(),
            line: 0,
            field: "api".into(),
            reason: format!("{e:#}"),
        })
    })?;
    let old = shared.current();
    let mut inner = shared.inner.lock().await;
    let (changes, steps) = plan(&old, &new, &inner.vips, opts.prune)?;
    let mut report = Report {
        file: path.clone(),
        dry_run: opts.dry_run,
        changes,
        needs_restart: restart_needed(&old, &new),
        applied: false,
    };
    if opts.dry_run {
        return Ok(report);
    }
    let before = inner.vips.clone();
    apply(&mut inner, steps);
    let settings = live_settings(&inner.settings, &new);
    let result = inner
        .prog
        .maps_mut()
        .set_settings(&settings)
        .map_err(anyhow::Error::from)
        .and_then(|()| reconcile(shared, &mut inner));
    if let Err(e) = result {
        inner.vips = before;
        // Best effort back to the old maps; the error is what the caller sees.
        let _ = reconcile(shared, &mut inner);
        return Err(ReloadError::Program(e));
    }
    inner.settings = settings;
    sync_checkers(shared, &mut inner);
    drop(inner);
    shared.set_access(access);
    shared.publish_config(Arc::new(new));
    report.applied = true;
    info!(
        file = %path.display(),
        changes = report.changes.len(),
        needs_restart = ?report.needs_restart,
        "config reloaded"
    );
    for c in &report.changes {
        info!(section = c.section, "reload: {}", c.change);
    }
    Ok(report)
}

/// Applies the steps to the model (the maps follow at the next reconcile).
fn apply(inner: &mut Inner, steps: Vec<Step>) {
    let now = Instant::now();
    for step in steps {
        match step {
            Step::AddVip(cfg) => {
                let rt = runtime_from_config(&cfg, cfg.to_input(), Source::Config, now);
                inner.vips.insert(cfg.name.clone(), rt);
            }
            Step::RemoveVip(name) => {
                inner.vips.remove(&name);
                inner.checkers.retain(|(vip, _), h| {
                    let keep = vip != &name;
                    if !keep {
                        h.abort();
                    }
                    keep
                });
            }
            Step::UpdateVip(cfg, takeover) => {
                let Some(v) = inner.vips.get_mut(&cfg.name) else {
                    continue;
                };
                let health_changed = v.cfg.health != cfg.health;
                if takeover {
                    v.source = Source::Config;
                    v.input = cfg.to_input();
                }
                for b in v.backends.values_mut() {
                    b.machine.set_thresholds(cfg.health.rise, cfg.health.fall);
                }
                // Backends stay as they are: their own steps follow.
                let backends = std::mem::take(&mut v.cfg.backends);
                v.cfg = VipConfig {
                    backends,
                    ..cfg.clone()
                };
                if health_changed {
                    // New probes (interval, kind, port): the checkers start again.
                    inner.checkers.retain(|(vip, _), h| {
                        let keep = vip != &cfg.name;
                        if !keep {
                            h.abort();
                        }
                        keep
                    });
                }
            }
            Step::AddBackend(vip, b) => {
                if let Some(v) = inner.vips.get_mut(&vip) {
                    let rt = BackendRuntime::new(
                        b.weight,
                        Source::Config,
                        b.mac.map(|m| m.0),
                        &v.cfg.health,
                        now,
                    );
                    v.backends.insert(b.address, rt);
                    v.cfg.backends.push(b);
                }
            }
            Step::RemoveBackend(vip, addr) => {
                if let Some(v) = inner.vips.get_mut(&vip) {
                    v.backends.remove(&addr);
                    v.cfg.backends.retain(|b| b.address != addr);
                }
                if let Some(h) = inner.checkers.remove(&(vip, addr)) {
                    h.abort();
                }
            }
            Step::UpdateBackend(vip, wb) => {
                if let Some(v) = inner.vips.get_mut(&vip) {
                    if let Some(b) = v.backends.get_mut(&wb.address) {
                        b.source = Source::Config;
                        b.weight = wb.weight;
                        b.declared_weight = None;
                        b.lease = None;
                        let mac = wb.mac.map(|m| m.0);
                        if b.static_mac != mac {
                            b.static_mac = mac;
                            if let Some(m) = mac {
                                b.mac = Ok(m);
                            }
                        }
                    }
                    v.cfg.backends.retain(|b| b.address != wb.address);
                    v.cfg.backends.push(wb);
                }
            }
        }
    }
}

/// Where lbd reads its config from, for reloads.
pub fn remember_path(shared: &State, path: &Path) {
    shared.set_config_path(path.to_path_buf());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "lbd.toml").expect("valid")
    }

    const BASE: &str = "[[vips]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n\
        [[vips.backends]]\naddress = \"10.0.0.11\"\n[[vips.backends]]\naddress = \"10.0.0.12\"\n\
        [[vips]]\nname = \"dns\"\naddress = \"10.0.0.101\"\nport = 53\nprotocol = \"udp\"\n";

    fn model(c: &Config) -> std::collections::BTreeMap<String, VipRuntime> {
        let now = Instant::now();
        c.vips
            .iter()
            .map(|v| {
                let rt = runtime_from_config(v, v.to_input(), Source::Config, now);
                (v.name.clone(), rt)
            })
            .collect()
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{}: {}", c.section, c.change))
            .collect()
    }

    #[test]
    fn weights_vips_and_ownership() {
        let old = config(BASE);
        let mut m = model(&old);
        // A registered backend and an API VIP: the file does not list them.
        let web = m.get_mut("web").unwrap();
        let health = web.cfg.health.clone();
        web.backends.insert(
            "10.0.0.13".parse().unwrap(),
            BackendRuntime::new(100, Source::Registered, None, &health, Instant::now()),
        );
        let api = old.vips[1].clone();
        let api = VipConfig {
            name: "api1".into(),
            port: 54,
            ..api
        };
        m.insert(
            "api1".into(),
            runtime_from_config(&api, api.to_input(), Source::Api, Instant::now()),
        );
        let new = config(
            "[[vips]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n\
             [[vips.backends]]\naddress = \"10.0.0.11\"\nweight = 50\n\
             [[vips]]\nname = \"ssh\"\naddress = \"10.0.0.102\"\nport = 22\n",
        );
        let (changes, _) = plan(&old, &new, &m, false).unwrap();
        assert_eq!(
            lines(&changes),
            [
                "vips: remove VIP dns (its flows end)",
                "backends: remove web/10.0.0.12 (its flows re-hash)",
                "backends: web/10.0.0.11: weight 100 -> 50",
                "vips: add VIP ssh 10.0.0.102:22/tcp with 0 backends",
            ]
        );
        let (changes, _) = plan(&old, &new, &m, true).unwrap();
        let l = lines(&changes);
        assert!(l.contains(&"vips: remove VIP api1 (source api; --prune)".to_string()));
        assert!(
            l.contains(&"backends: remove web/10.0.0.13 (source registered; --prune)".to_string())
        );
    }

    #[test]
    fn a_file_vip_may_not_take_an_api_vips_key() {
        let old = config(BASE);
        let mut m = model(&old);
        let api = VipConfig {
            name: "api1".into(),
            port: 22,
            address: "10.0.0.102".parse().unwrap(),
            ..old.vips[1].clone()
        };
        m.insert(
            "api1".into(),
            runtime_from_config(&api, api.to_input(), Source::Api, Instant::now()),
        );
        let new = config(&format!(
            "{BASE}[[vips]]\nname = \"ssh\"\naddress = \"10.0.0.102\"\nport = 22\nprotocol = \"udp\"\n"
        ));
        assert!(matches!(
            plan(&old, &new, &m, false),
            Err(ReloadError::Conflict(_))
        ));
        assert!(
            plan(&old, &new, &m, true).is_ok(),
            "--prune removes it first"
        );
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let c = config(BASE);
        let (changes, steps) = plan(&c, &c, &model(&c), false).unwrap();
        assert!(changes.is_empty() && steps.is_empty(), "{changes:?}");
        let moved = config(&BASE.replace(
            "[[vips]]\nname = \"dns\"",
            "[dataplane]\ninterfaces = [\"eth1\"]\n[[vips]]\nname = \"dns\"",
        ));
        assert!(moved.vips.len() == 2 || moved.vips.is_empty());
    }
}
