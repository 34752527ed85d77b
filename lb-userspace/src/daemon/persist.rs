//! The state file: what a restarted daemon needs beyond its config (dynamic VIPs and
//! backends, admin states, last health verdicts, and the map-slot assignment).

use std::{net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use super::model::{Admin, DrainedBy, Source};
use crate::{dataplane::ProgrammerState, health::Health};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    pub programmer: ProgrammerState,
    /// VIPs added through the API (config VIPs come from the config).
    #[serde(default)]
    pub api_vips: Vec<ApiVip>,
    #[serde(default)]
    pub backends: Vec<BackendState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiVip {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub algorithm: String,
    pub mode: String,
    pub table_size: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendState {
    pub vip: String,
    pub address: IpAddr,
    pub weight: u32,
    /// Added later: absent from older state files (then the next registration's weight
    /// applies, as it always did).
    #[serde(default)]
    pub declared_weight: Option<u32>,
    pub admin: Admin,
    /// Added later: absent from older state files (a drain there reads as an operator's).
    #[serde(default)]
    pub drained_by: Option<DrainedBy>,
    pub source: Source,
    pub health: Health,
}

impl BackendState {
    /// Who drained it; a drain saved by an lbd from before `drained_by` reads as an
    /// operator's (the sticky reading: `lbctl backend undrain` ends it).
    pub fn drain_origin(&self) -> Option<DrainedBy> {
        match self.admin {
            Admin::Draining => Some(self.drained_by.unwrap_or(DrainedBy::Operator)),
            Admin::Active => None,
        }
    }
}

impl<'de> Deserialize<'de> for Health {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            _ => Health::Unknown,
        })
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

    /// A state file as the lbd before `declared_weight`/`drained_by` wrote it.
    const OLD_FORMAT: &str = r#"{
  "programmer": {"layout": 7,
    "vips": [{"name": "web", "addr": "10.77.0.100", "port": 80, "proto": 6, "id": 0}],
    "backends": [{"vip": "web", "addr": "10.77.0.11", "id": 1},
                 {"vip": "web", "addr": "10.77.0.12", "id": 2}],
    "generations": [[1, 1], [2, 1]]},
  "api_vips": [],
  "backends": [
    {"vip": "web", "address": "10.77.0.11", "weight": 70, "admin": "active",
     "source": "registered", "health": "healthy"},
    {"vip": "web", "address": "10.77.0.12", "weight": 100, "admin": "draining",
     "source": "config", "health": "unknown"}
  ]
}"#;

    #[test]
    fn an_old_state_file_still_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lbd-state.json");
        std::fs::write(&path, OLD_FORMAT).expect("write");
        let s = load(&path).expect("the old format loads");
        assert_eq!(s.programmer.backends.len(), 2);
        let [a, b] = &s.backends[..] else {
            panic!("two backends: {:?}", s.backends)
        };
        assert_eq!(
            (a.weight, a.declared_weight, a.drained_by),
            (70, None, None)
        );
        assert_eq!(a.drain_origin(), None);
        assert_eq!(b.drained_by, None);
        assert_eq!(
            b.drain_origin(),
            Some(DrainedBy::Operator),
            "an old drain sticks"
        );
    }

    #[test]
    fn new_fields_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut s: StateFile = serde_json::from_str(OLD_FORMAT).expect("parse");
        s.backends[0].declared_weight = Some(70);
        s.backends[1].drained_by = Some(DrainedBy::Registrant);
        save(&path, &s).expect("save");
        let back = load(&path).expect("load");
        assert_eq!(back.backends[0].declared_weight, Some(70));
        assert_eq!(back.backends[1].drain_origin(), Some(DrainedBy::Registrant));
    }
}
