//! The state file: what a restarted daemon needs beyond its config (dynamic VIPs and
//! backends, admin states, last health verdicts, and the map-slot assignment).

use std::{net::IpAddr, path::Path};

use serde::{Deserialize, Deserializer, Serialize};

use super::model::Admin;
use lb_api::types::{AdminState, DrainedBy, Health, Source};
use lb_dataplane::ProgrammerState;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub programmer: ProgrammerState,
    /// VIPs added through the API, as the API was given them (config VIPs come from the
    /// config). Older lbds wrote every field out; both read the same.
    #[serde(default)]
    pub api_vips: Vec<lb_config::VipInput>,
    #[serde(default)]
    pub backends: Vec<BackendState>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "BackendStateWire", into = "BackendStateWire")]
pub struct BackendState {
    pub vip: String,
    pub address: IpAddr,
    pub weight: u32,
    pub declared_weight: Option<u32>,
    pub admin: Admin,
    pub source: Source,
    pub health: Health,
    /// The registrant's last self-check, so that a restart does not give new flows to a
    /// backend whose setup fails until it registers again.
    pub self_check: Option<lb_api::selfcheck::SelfCheck>,
}

/// `BackendState` as the file spells it: `admin` and `drained_by` side by side, as every
/// lbd since `drained_by` wrote them (so an older lbd still reads what this one writes).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BackendStateWire {
    vip: String,
    address: IpAddr,
    weight: u32,
    /// Added later: absent from older state files (then the next registration's weight
    /// applies, as it always did).
    #[serde(default)]
    declared_weight: Option<u32>,
    admin: AdminState,
    /// Added later: absent from older state files (a drain there reads as an operator's).
    #[serde(default)]
    drained_by: Option<DrainedBy>,
    source: Source,
    /// A verdict this lbd does not know reads as no verdict.
    #[serde(deserialize_with = "lenient_health")]
    health: Health,
    /// Added later: absent from older state files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    self_check: Option<lb_api::selfcheck::SelfCheck>,
}

fn lenient_health<'de, D: Deserializer<'de>>(d: D) -> Result<Health, D::Error> {
    Ok(String::deserialize(d)?.parse().unwrap_or(Health::Unknown))
}

impl From<BackendStateWire> for BackendState {
    fn from(w: BackendStateWire) -> Self {
        Self {
            vip: w.vip,
            address: w.address,
            weight: w.weight,
            declared_weight: w.declared_weight,
            admin: Admin::from_parts(w.admin, w.drained_by),
            source: w.source,
            health: w.health,
            self_check: w.self_check,
        }
    }
}

impl From<BackendState> for BackendStateWire {
    fn from(b: BackendState) -> Self {
        Self {
            vip: b.vip,
            address: b.address,
            weight: b.weight,
            declared_weight: b.declared_weight,
            admin: b.admin.state(),
            drained_by: b.admin.drained_by(),
            source: b.source,
            health: b.health,
            self_check: b.self_check,
        }
    }
}

pub fn load(path: &Path) -> Option<StateFile> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable state file");
            None
        }
    }
}

/// Writes atomically (temp file + rename) so a crash never leaves half a file.
pub fn save(path: &Path, state: &StateFile) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROGRAMMER: &str = r#""programmer": {"layout": 7,
    "vips": [{"name": "web", "addr": "10.77.0.100", "port": 80, "proto": 6, "id": 0}],
    "backends": [{"vip": "web", "addr": "10.77.0.11", "id": 1},
                 {"vip": "web", "addr": "10.77.0.12", "id": 2},
                 {"vip": "web", "addr": "10.77.0.13", "id": 3}],
    "generations": [[1, 1], [2, 1], [3, 1]]}"#;

    /// The backends as the lbd before `declared_weight`/`drained_by` wrote them.
    const OLD_BACKENDS: &str = r#"[
    {"vip": "web", "address": "10.77.0.11", "weight": 70, "admin": "active",
     "source": "registered", "health": "healthy"},
    {"vip": "web", "address": "10.77.0.12", "weight": 100, "admin": "draining",
     "source": "config", "health": "unknown"}
  ]"#;

    /// The backends as the lbd with `drained_by` beside `admin` wrote them; this lbd writes
    /// the same shape (so the lbd before it can still read the file).
    const CURRENT_BACKENDS: &str = r#"[
    {"vip": "web", "address": "10.77.0.11", "weight": 70, "declared_weight": 70,
     "admin": "active", "drained_by": null, "source": "registered", "health": "healthy"},
    {"vip": "web", "address": "10.77.0.12", "weight": 100, "declared_weight": null,
     "admin": "draining", "drained_by": "operator", "source": "config", "health": "unknown"},
    {"vip": "web", "address": "10.77.0.13", "weight": 40, "declared_weight": 40,
     "admin": "draining", "drained_by": "registrant", "source": "registered",
     "health": "unhealthy"}
  ]"#;

    fn file(backends: &str) -> String {
        format!(r#"{{ {PROGRAMMER}, "api_vips": [], "backends": {backends} }}"#)
    }

    fn load_text(text: &str) -> StateFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lbd-state.json");
        std::fs::write(&path, text).expect("write");
        load(&path).expect("the state file loads")
    }

    fn admins(s: &StateFile) -> Vec<(String, Option<u32>, Admin)> {
        s.backends
            .iter()
            .map(|b| (b.address.to_string(), b.declared_weight, b.admin))
            .collect()
    }

    fn row(addr: &str, declared: Option<u32>, admin: Admin) -> (String, Option<u32>, Admin) {
        (addr.to_string(), declared, admin)
    }

    #[test]
    fn a_state_file_from_before_drained_by_still_loads() {
        let s = load_text(&file(OLD_BACKENDS));
        assert_eq!(s.programmer.backends.len(), 3);
        assert_eq!(
            admins(&s),
            [
                row("10.77.0.11", None, Admin::Active),
                // An old drain sticks: it reads as an operator's.
                row("10.77.0.12", None, Admin::Draining(DrainedBy::Operator)),
            ]
        );
        assert_eq!(s.backends[0].weight, 70);
        assert_eq!(s.backends[0].health, Health::Healthy);
    }

    #[test]
    fn a_state_file_with_drained_by_loads() {
        let s = load_text(&file(CURRENT_BACKENDS));
        assert_eq!(
            admins(&s),
            [
                row("10.77.0.11", Some(70), Admin::Active),
                row("10.77.0.12", None, Admin::Draining(DrainedBy::Operator)),
                row(
                    "10.77.0.13",
                    Some(40),
                    Admin::Draining(DrainedBy::Registrant)
                ),
            ]
        );
        assert_eq!(s.backends[2].source, Source::Registered);
        assert_eq!(s.backends[2].health, Health::Unhealthy);
    }

    #[test]
    fn api_vips_of_an_older_lbd_load_as_the_api_takes_them() {
        let s = load_text(&format!(
            r#"{{ {PROGRAMMER}, "backends": [], "api_vips": [{{"name": "dns",
                "address": "10.77.0.101", "port": 53, "protocol": "udp", "algorithm": "wrr",
                "mode": "ipip", "table_size": 251}}] }}"#
        ));
        let v = &s.api_vips[0];
        assert_eq!(v.protocol.as_deref(), Some("udp"));
        assert_eq!(v.algorithm.as_deref(), Some("wrr"));
        assert_eq!(v.mode.as_deref(), Some("ipip"));
        assert_eq!(v.table_size, Some(251));
    }

    #[test]
    fn a_drained_by_beside_active_is_ignored() {
        let s = load_text(&file(
            r#"[{"vip": "web", "address": "10.77.0.11", "weight": 70, "admin": "active",
                 "drained_by": "operator", "source": "api", "health": "healthy"}]"#,
        ));
        assert_eq!(s.backends[0].admin, Admin::Active);
    }

    #[test]
    fn what_is_saved_is_the_current_shape_and_loads_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let s = load_text(&file(CURRENT_BACKENDS));
        save(&path, &s).expect("save");
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        let expected: serde_json::Value =
            serde_json::from_str(CURRENT_BACKENDS).expect("literal JSON");
        assert_eq!(written["backends"], expected);
        let back = load(&path).expect("load");
        assert_eq!(back.backends, s.backends);

        // An old file comes back in the current shape: its drain now says who.
        let old = load_text(&file(OLD_BACKENDS));
        save(&path, &old).expect("save");
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        assert_eq!(written["backends"][1]["admin"], "draining");
        assert_eq!(written["backends"][1]["drained_by"], "operator");
        assert_eq!(
            written["backends"][0]["drained_by"],
            serde_json::Value::Null
        );
        assert_eq!(load(&path).expect("load").backends, old.backends);
    }
}
