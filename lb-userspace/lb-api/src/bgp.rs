//! What `GET /v1/bgp` answers: the BGP sessions of this balancer's speaker and the VIP
//! addresses it announces (docs/bgp.md).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::IpAddress;

/// A session's state as BGP names it (RFC 4271 section 8), plus `down` while the speaker does
/// not answer at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = BgpSessionState)]
pub enum SessionState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
    /// The speaker is not running or its control socket does not answer.
    Down,
}

impl SessionState {
    /// Lower-case name for tables, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connect => "connect",
            Self::Active => "active",
            Self::OpenSent => "opensent",
            Self::OpenConfirm => "openconfirm",
            Self::Established => "established",
            Self::Down => "down",
        }
    }

    /// Number used in the `lbd_bgp_session_state` metric (RFC 4271 order; 0: down).
    pub fn code(self) -> u8 {
        match self {
            Self::Down => 0,
            Self::Idle => 1,
            Self::Connect => 2,
            Self::Active => 3,
            Self::OpenSent => 4,
            Self::OpenConfirm => 5,
            Self::Established => 6,
        }
    }

    /// Reads BIRD's spelling (`Established`, `OpenSent`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "idle" => Self::Idle,
            "connect" => Self::Connect,
            "active" => Self::Active,
            "opensent" => Self::OpenSent,
            "openconfirm" => Self::OpenConfirm,
            "established" => Self::Established,
            "down" => Self::Down,
            _ => return None,
        })
    }
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// One BGP session (one configured peer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = BgpSession)]
pub struct Session {
    /// The session's name in the speaker (`peer_10_77_0_1`).
    pub name: String,
    #[schema(value_type = IpAddress)]
    pub peer: IpAddr,
    pub peer_as: u32,
    pub state: SessionState,
    /// Since when the session is in this state, as the speaker tells it (its local time).
    #[serde(default)]
    pub since: Option<String>,
    /// Routes this balancer exports to the peer.
    pub exported: u64,
    /// Whether BFD watches the session and sees the peer up.
    #[serde(default)]
    pub bfd_up: Option<bool>,
    /// The speaker's last error on this session.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One VIP address this balancer may announce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = BgpPrefix)]
pub struct Prefix {
    /// `10.77.0.100/32`, `fd77::100/128`.
    pub prefix: String,
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    /// The VIPs at this address.
    pub vips: Vec<String>,
    /// In lbd's kernel table, so the speaker announces it.
    pub announced: bool,
    /// Why it is withdrawn (`None` while announced).
    #[serde(default)]
    pub reason: Option<String>,
    /// Times it was announced and withdrawn since lbd started.
    pub announcements: u64,
    pub withdrawals: u64,
}

/// The speaker process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = BgpSpeaker)]
pub struct Speaker {
    /// `bird`.
    pub kind: String,
    /// Its version, when it answers.
    #[serde(default)]
    pub version: Option<String>,
    pub running: bool,
    /// Whether lbd found it running at start (an earlier lbd started it) instead of starting it.
    pub adopted: bool,
    /// Times lbd (re)started it.
    pub starts: u64,
    /// The last problem talking to it.
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /v1/bgp`: this balancer's speaker, its sessions and the VIP addresses it announces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = BgpOverview)]
pub struct Overview {
    pub local_as: u32,
    pub router_id: String,
    pub hold_time_s: u64,
    /// BFD detection time, when BFD is on.
    #[serde(default)]
    pub bfd_detection_ms: Option<u64>,
    /// The kernel table lbd announces through.
    pub table: u32,
    /// Set once a clean stop withdrew everything (draining).
    pub stopping: bool,
    pub speaker: Speaker,
    pub sessions: Vec<Session>,
    pub prefixes: Vec<Prefix>,
}

impl Overview {
    /// Sessions that are up.
    pub fn established(&self) -> usize {
        self.sessions
            .iter()
            .filter(|s| s.state == SessionState::Established)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_birds_spelling() {
        assert_eq!(
            SessionState::parse("Established"),
            Some(SessionState::Established)
        );
        assert_eq!(
            SessionState::parse("OpenSent"),
            Some(SessionState::OpenSent)
        );
        assert_eq!(SessionState::parse("bogus"), None);
        let json = serde_json::to_string(&SessionState::OpenConfirm).unwrap();
        assert_eq!(json, "\"openconfirm\"");
    }
}
