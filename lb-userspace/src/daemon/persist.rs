//! The state file: what a restarted daemon needs beyond its config (dynamic VIPs and
//! backends, admin states, last health verdicts, and the map-slot assignment).

use std::{net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use super::model::{Admin, Source};
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
    pub admin: Admin,
    pub source: Source,
    pub health: Health,
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
