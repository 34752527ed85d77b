//! The `[bgp]` section: this balancer announces its VIPs to routers over BGP (active-active,
//! the routers spread flows with ECMP). lbd drives BIRD 2 (docs/bgp.md): it writes BIRD's
//! configuration from this section and installs one route per announced VIP address in a
//! kernel table of its own, which BIRD learns and exports to the peers.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx, parse_ip as ip};

/// A parsed, valid `[bgp]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpConfig {
    /// This balancer's AS.
    pub local_as: u32,
    /// BGP router id (an IPv4 address by convention, unique per speaker).
    pub router_id: Ipv4Addr,
    /// Hold time offered to the peers (3 s at least, RFC 4271).
    pub hold_time: Duration,
    /// Keepalive interval (at most a third of the hold time).
    pub keepalive: Duration,
    /// Bidirectional forwarding detection on every session, when set.
    pub bfd: Option<Bfd>,
    /// The IPv4 next hop announced (default: the session's own address).
    pub next_hop_v4: Option<IpAddr>,
    /// The IPv6 next hop announced (default: the session's own address).
    pub next_hop_v6: Option<IpAddr>,
    /// Standard communities (RFC 1997) added to every announcement.
    pub communities: Vec<(u16, u16)>,
    /// The VIPs (by name) whose addresses may be announced; `None`: every VIP, those added
    /// through the API too.
    pub announce: Option<Vec<String>>,
    /// On a clean stop: withdraw, then keep forwarding this long before stopping, so routers
    /// move the flows elsewhere first.
    pub drain: Duration,
    /// After lbd starts, it leaves its table as it found it this long (a restarted lbd keeps
    /// what it announced, a new node announces nothing), so that backends that register
    /// with every balancer reach this one before it takes flows from the others.
    pub announce_delay: Duration,
    /// The kernel routing table lbd owns: one route per announced address. Nothing else may
    /// use it (lbd removes what it did not put there).
    pub table: u32,
    /// Seconds between BIRD's attempts to open a session that is down.
    pub connect_retry: Duration,
    /// The BIRD binary lbd runs.
    pub bird: PathBuf,
    /// BIRD's control socket (lbd reads the sessions there).
    pub socket: PathBuf,
    /// Where lbd writes BIRD's configuration (mode 0600: it may hold TCP-MD5 keys).
    pub config_file: PathBuf,
    /// The routers.
    pub peers: Vec<Peer>,
}

/// Bidirectional forwarding detection (RFC 5880) timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bfd {
    /// Transmit and receive interval.
    pub interval: Duration,
    /// Missed packets that bring a session down.
    pub multiplier: u8,
}

impl Bfd {
    /// How long a dead peer goes unnoticed at most.
    pub fn detection(&self) -> Duration {
        self.interval * u32::from(self.multiplier)
    }
}

/// One BGP neighbour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub asn: u32,
    /// The local address of the session (default: chosen by the kernel's routing).
    pub source: Option<IpAddr>,
    /// TCP port (179).
    pub port: u16,
    /// A file holding the TCP-MD5 key (RFC 2385) of the session; read at start.
    pub password_file: Option<PathBuf>,
}

impl Peer {
    /// The name of the session in BIRD and in lbd's status: `peer_` and the address with
    /// its dots and colons as underscores.
    pub fn name(&self) -> String {
        let a: String = self
            .address
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("peer_{a}")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    local_as: Spanned<i64>,
    router_id: Spanned<String>,
    hold_time_s: Option<Spanned<i64>>,
    keepalive_s: Option<Spanned<i64>>,
    bfd: Option<RawBfd>,
    next_hop_v4: Option<Spanned<String>>,
    next_hop_v6: Option<Spanned<String>>,
    #[serde(default)]
    communities: Vec<Spanned<String>>,
    announce: Option<Vec<Spanned<String>>>,
    drain_s: Option<Spanned<i64>>,
    announce_delay_s: Option<Spanned<i64>>,
    table: Option<Spanned<i64>>,
    connect_retry_s: Option<Spanned<i64>>,
    bird: Option<String>,
    socket: Option<String>,
    config_file: Option<String>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBfd {
    interval_ms: Option<Spanned<i64>>,
    multiplier: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: Spanned<String>,
    #[serde(rename = "as")]
    asn: Spanned<i64>,
    source: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    password_file: Option<String>,
}

/// An integer in `range` or an error naming the field.
fn int(
    ctx: &Ctx,
    v: &Spanned<i64>,
    field: &str,
    range: std::ops::RangeInclusive<i64>,
    what: &str,
) -> Result<i64, ConfigError> {
    let n = *v.get_ref();
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(ctx.err(
            &v.span(),
            field,
            format!(
                "{n} is out of range: {what}, {}..={}",
                range.start(),
                range.end()
            ),
        ))
    }
}

fn asn(ctx: &Ctx, v: &Spanned<i64>, field: &str) -> Result<u32, ConfigError> {
    let n = int(ctx, v, field, 1..=u32::MAX as i64, "an AS number")?;
    // AS_TRANS stands in for 4-byte AS numbers on old speakers (RFC 6793): never a real AS.
    if n == 23456 {
        return Err(ctx.err(
            &v.span(),
            field,
            "23456 is AS_TRANS (RFC 6793), not a usable AS",
        ));
    }
    Ok(n as u32)
}

fn unicast(ctx: &Ctx, s: &Spanned<String>, field: &str) -> Result<IpAddr, ConfigError> {
    let a = ip(ctx, s, field)?;
    if a.is_multicast() || a.is_unspecified() || a.is_loopback() {
        return Err(ctx.err(&s.span(), field, format!("{a} is not a unicast address")));
    }
    Ok(a)
}

fn family(ctx: &Ctx, s: &Spanned<String>, field: &str, v4: bool) -> Result<IpAddr, ConfigError> {
    let a = unicast(ctx, s, field)?;
    if a.is_ipv4() != v4 {
        let fam = if v4 { "IPv4" } else { "IPv6" };
        return Err(ctx.err(&s.span(), field, format!("must be an {fam} address")));
    }
    Ok(a)
}

/// Checks `[bgp]`; `vip_names` are the configured VIPs `announce` may name; `state_dir`
/// holds lbd's state file (the default place of BIRD's socket and configuration).
pub(super) fn parse_bgp(
    ctx: &Ctx,
    r: RawBgp,
    vip_names: &[&str],
    state_dir: &std::path::Path,
) -> Result<BgpConfig, ConfigError> {
    let local_as = asn(ctx, &r.local_as, "bgp.local_as")?;
    let router_id = match ip(ctx, &r.router_id, "bgp.router_id")? {
        IpAddr::V4(a) if !a.is_unspecified() => a,
        _ => {
            return Err(ctx.err(
                &r.router_id.span(),
                "bgp.router_id",
                "a non-zero IPv4 address (the BGP identifier is 32 bits)",
            ));
        }
    };
    let hold = match &r.hold_time_s {
        Some(v) => int(ctx, v, "bgp.hold_time_s", 3..=65535, "seconds (RFC 4271)")?,
        None => 9,
    };
    let keepalive = match &r.keepalive_s {
        Some(v) => {
            let k = int(ctx, v, "bgp.keepalive_s", 1..=21845, "seconds")?;
            if k * 3 > hold {
                return Err(ctx.err(
                    &v.span(),
                    "bgp.keepalive_s",
                    format!("{k} s is more than a third of the hold time ({hold} s)"),
                ));
            }
            k
        }
        None => (hold / 3).max(1),
    };
    let bfd = match &r.bfd {
        Some(b) => {
            let interval = match &b.interval_ms {
                Some(v) => int(ctx, v, "bgp.bfd.interval_ms", 10..=10_000, "milliseconds")?,
                None => 100,
            };
            let multiplier = match &b.multiplier {
                Some(v) => int(ctx, v, "bgp.bfd.multiplier", 2..=255, "missed packets")?,
                None => 3,
            };
            Some(Bfd {
                interval: Duration::from_millis(interval as u64),
                multiplier: multiplier as u8,
            })
        }
        None => None,
    };
    let next_hop_v4 = r
        .next_hop_v4
        .as_ref()
        .map(|s| family(ctx, s, "bgp.next_hop_v4", true))
        .transpose()?;
    let next_hop_v6 = r
        .next_hop_v6
        .as_ref()
        .map(|s| family(ctx, s, "bgp.next_hop_v6", false))
        .transpose()?;
    let mut communities = Vec::new();
    for (i, c) in r.communities.iter().enumerate() {
        let field = format!("bgp.communities[{i}]");
        let parsed = c
            .get_ref()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)));
        match parsed {
            Some(pair) => communities.push(pair),
            None => {
                return Err(ctx.err(
                    &c.span(),
                    field,
                    format!(
                        "{:?} is not a community: ASN:VALUE, each 0-65535 (RFC 1997)",
                        c.get_ref()
                    ),
                ));
            }
        }
    }
    let announce = match &r.announce {
        Some(list) => {
            let mut names = Vec::new();
            for (i, n) in list.iter().enumerate() {
                let field = format!("bgp.announce[{i}]");
                if !vip_names.contains(&n.get_ref().as_str()) {
                    return Err(ctx.err(
                        &n.span(),
                        field,
                        format!("no VIP named {:?} in [[vips]]", n.get_ref()),
                    ));
                }
                if names.contains(n.get_ref()) {
                    return Err(ctx.err(&n.span(), field, "listed twice"));
                }
                names.push(n.get_ref().clone());
            }
            Some(names)
        }
        None => None,
    };
    let drain = match &r.drain_s {
        Some(v) => int(ctx, v, "bgp.drain_s", 0..=3600, "seconds")?,
        None => 5,
    };
    let announce_delay = match &r.announce_delay_s {
        Some(v) => int(ctx, v, "bgp.announce_delay_s", 0..=3600, "seconds")?,
        None => 0,
    };
    let table = match &r.table {
        Some(v) => {
            let t = int(
                ctx,
                v,
                "bgp.table",
                1..=u32::MAX as i64,
                "a kernel table id",
            )?;
            // 253-255 are the kernel's default, main and local tables.
            if (253..=255).contains(&t) {
                return Err(ctx.err(
                    &v.span(),
                    "bgp.table",
                    format!("{t} is one of the kernel's own tables (default, main, local)"),
                ));
            }
            t as u32
        }
        None => 201,
    };
    let connect_retry = match &r.connect_retry_s {
        Some(v) => int(ctx, v, "bgp.connect_retry_s", 1..=3600, "seconds")?,
        None => 5,
    };
    if r.peers.is_empty() {
        return Err(ctx.err(
            &r.local_as.span(),
            "bgp.peers",
            "at least one [[bgp.peers]] (the routers to announce to)",
        ));
    }
    let mut peers: Vec<Peer> = Vec::new();
    for (i, p) in r.peers.iter().enumerate() {
        let f = |n: &str| format!("bgp.peers[{i}].{n}");
        let address = unicast(ctx, &p.address, &f("address"))?;
        if peers.iter().any(|q| q.address == address) {
            return Err(ctx.err(
                &p.address.span(),
                f("address"),
                format!("{address} is listed twice"),
            ));
        }
        let peer_as = asn(ctx, &p.asn, &f("as"))?;
        let source = p
            .source
            .as_ref()
            .map(|s| family(ctx, s, &f("source"), address.is_ipv4()))
            .transpose()?;
        let port = match &p.port {
            Some(v) => int(ctx, v, &f("port"), 1..=65535, "a TCP port")? as u16,
            None => 179,
        };
        peers.push(Peer {
            address,
            asn: peer_as,
            source,
            port,
            password_file: p.password_file.as_ref().map(PathBuf::from),
        });
    }
    Ok(BgpConfig {
        local_as,
        router_id,
        hold_time: Duration::from_secs(hold as u64),
        keepalive: Duration::from_secs(keepalive as u64),
        bfd,
        next_hop_v4,
        next_hop_v6,
        communities,
        announce,
        drain: Duration::from_secs(drain as u64),
        announce_delay: Duration::from_secs(announce_delay as u64),
        table,
        connect_retry: Duration::from_secs(connect_retry as u64),
        bird: r
            .bird
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/bird")),
        socket: r
            .socket
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("bird.ctl")),
        config_file: r
            .config_file
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("bird.conf")),
        peers,
    })
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = "[[vips]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n";
    const PEER: &str = "[[bgp.peers]]\naddress = \"10.0.0.1\"\nas = 65000\n";

    fn parse(bgp: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}[bgp]\n{bgp}"), "lbd.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn full_section_parses() {
        let c = parse(&format!(
            "local_as = 65001\nrouter_id = \"10.0.0.2\"\nhold_time_s = 3\nkeepalive_s = 1\n\
             next_hop_v4 = \"10.0.0.2\"\ncommunities = [\"65001:100\"]\nannounce = [\"web\"]\n\
             drain_s = 2\ntable = 300\n[bgp.bfd]\ninterval_ms = 50\nmultiplier = 4\n{PEER}\
             source = \"10.0.0.2\"\npassword_file = \"/etc/lbd/md5\"\n"
        ))
        .unwrap();
        let b = c.bgp.unwrap();
        assert_eq!((b.local_as, b.table), (65001, 300));
        assert_eq!(b.hold_time.as_secs(), 3);
        assert_eq!(
            b.bfd.unwrap().detection(),
            std::time::Duration::from_millis(200)
        );
        assert_eq!(b.communities, vec![(65001, 100)]);
        assert_eq!(b.announce, Some(vec!["web".to_string()]));
        assert_eq!(b.peers[0].name(), "peer_10_0_0_1");
        assert_eq!(b.peers[0].port, 179);
        assert!(b.socket.ends_with("bird.ctl"));
    }

    #[test]
    fn defaults() {
        let b = parse(&format!(
            "local_as = 65001\nrouter_id = \"10.0.0.2\"\n{PEER}"
        ))
        .unwrap()
        .bgp
        .unwrap();
        assert_eq!((b.hold_time.as_secs(), b.keepalive.as_secs()), (9, 3));
        assert_eq!((b.table, b.drain.as_secs()), (201, 5));
        assert!(b.bfd.is_none() && b.announce.is_none());
    }

    #[test]
    fn errors_name_the_line_field_and_reason() {
        let head = "local_as = 65001\nrouter_id = \"10.0.0.2\"\n";
        let cases = [
            (
                format!("local_as = 0\nrouter_id = \"10.0.0.2\"\n{PEER}"),
                "lbd.toml:6: bgp.local_as: 0 is out of range",
            ),
            (
                format!("local_as = 23456\nrouter_id = \"10.0.0.2\"\n{PEER}"),
                "bgp.local_as: 23456 is AS_TRANS",
            ),
            (
                format!("local_as = 1\nrouter_id = \"fd00::1\"\n{PEER}"),
                "lbd.toml:7: bgp.router_id: a non-zero IPv4 address",
            ),
            (
                format!("{head}hold_time_s = 2\n{PEER}"),
                "lbd.toml:8: bgp.hold_time_s: 2 is out of range",
            ),
            (
                format!("{head}hold_time_s = 3\nkeepalive_s = 2\n{PEER}"),
                "bgp.keepalive_s: 2 s is more than a third of the hold time (3 s)",
            ),
            (
                format!("{head}communities = [\"65001\"]\n{PEER}"),
                "bgp.communities[0]: \"65001\" is not a community",
            ),
            (
                format!("{head}announce = [\"nope\"]\n{PEER}"),
                "bgp.announce[0]: no VIP named \"nope\"",
            ),
            (
                format!("{head}table = 254\n{PEER}"),
                "bgp.table: 254 is one of the kernel's own tables",
            ),
            (
                format!("{head}next_hop_v6 = \"10.0.0.2\"\n{PEER}"),
                "bgp.next_hop_v6: must be an IPv6 address",
            ),
            (head.to_string(), "bgp.peers: at least one [[bgp.peers]]"),
            (
                format!("{head}{PEER}{PEER}"),
                "lbd.toml:12: bgp.peers[1].address: 10.0.0.1 is listed twice",
            ),
            (
                format!("{head}[[bgp.peers]]\naddress = \"224.0.0.5\"\nas = 1\n"),
                "bgp.peers[0].address: 224.0.0.5 is not a unicast address",
            ),
            (
                format!("{head}{PEER}source = \"fd00::2\"\n"),
                "bgp.peers[0].source: must be an IPv4 address",
            ),
            (
                format!("{head}[bgp.bfd]\nmultiplier = 1\n{PEER}"),
                "bgp.bfd.multiplier: 1 is out of range",
            ),
        ];
        for (rest, want) in cases {
            let e = parse(&rest).unwrap_err();
            assert!(e.contains(want), "{rest:?}: {e}");
        }
    }
}
