//! BIRD's configuration, written from `[bgp]`: the speaker learns lbd's kernel table and
//! exports exactly those routes to the routers; it imports nothing.

use std::{fmt::Write, net::IpAddr};

use lb_config::{BgpConfig, BgpPeer};

/// BIRD's protocol that learns lbd's IPv4 routes (the export filters match on it).
pub const KERNEL_V4: &str = "lbd_v4";
/// The same for IPv6.
pub const KERNEL_V6: &str = "lbd_v6";

/// Why the configuration cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("bgp.peers: {peer}: reading the TCP-MD5 key from {path}: {source}")]
    Key {
        peer: IpAddr,
        path: String,
        source: std::io::Error,
    },
    #[error("bgp.peers: {peer}: the TCP-MD5 key in {path} {reason}")]
    BadKey {
        peer: IpAddr,
        path: String,
        reason: &'static str,
    },
}

/// A peer's key, checked: 1-80 bytes (RFC 2385 keys fit a TCP option), printable, and no
/// quote or backslash (it goes inside a BIRD string).
fn read_key(peer: &BgpPeer) -> Result<Option<String>, ConfError> {
    let Some(path) = &peer.password_file else {
        return Ok(None);
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfError::Key {
        peer: peer.address,
        path: shown.clone(),
        source,
    })?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    let bad = |reason| ConfError::BadKey {
        peer: peer.address,
        path: shown.clone(),
        reason,
    };
    if key.is_empty() || key.len() > 80 {
        return Err(bad("must be 1 to 80 characters"));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    {
        return Err(bad(
            "may hold printable ASCII only, without quotes or backslashes",
        ));
    }
    Ok(Some(key))
}

/// The text of BIRD's configuration for `cfg`.
pub fn render(cfg: &BgpConfig) -> Result<String, ConfError> {
    let mut s = String::new();
    let table = cfg.table;
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "# Written by lbd from the [bgp] section of its configuration at every start: edit \
         lbd.toml, not this file.\nlog stderr all;\ntimeformat protocol iso long;\nrouter id {};\n\nprotocol device {{ }}\n",
        cfg.router_id
    );
    for (name, channel, len) in [(KERNEL_V4, "ipv4", 32), (KERNEL_V6, "ipv6", 128)] {
        // `learn`: routes lbd added (not BIRD's own) are imported; BIRD also hears of each
        // change at once over netlink, the scan only catches up on a lost message.
        let _ = writeln!(
            s,
            "# lbd's kernel table {table}: one route per VIP address it announces.\n\
             protocol kernel {name} {{\n  kernel table {table};\n  learn;\n  scan time 10;\n  \
             {channel} {{ import filter {{ if net.len = {len} then accept; reject; }}; export none; }};\n}}\n"
        );
    }
    if let Some(b) = cfg.bfd {
        let _ = writeln!(
            s,
            "protocol bfd {{\n  interface \"*\" {{ interval {} ms; multiplier {}; }};\n}}\n",
            b.interval.as_millis(),
            b.multiplier
        );
    }
    let communities: String = cfg
        .communities
        .iter()
        .map(|(a, b)| format!(" bgp_community.add(({a},{b}));"))
        .collect();
    for (kernel, channel) in [(KERNEL_V4, "v4"), (KERNEL_V6, "v6")] {
        let _ = writeln!(
            s,
            "filter lbd_export_{channel} {{\n  if proto = \"{kernel}\" then {{{communities} accept; }}\n  reject;\n}}\n"
        );
    }
    for p in &cfg.peers {
        let v4 = p.address.is_ipv4();
        let (channel, export, next_hop) = if v4 {
            ("ipv4", "lbd_export_v4", cfg.next_hop_v4)
        } else {
            ("ipv6", "lbd_export_v6", cfg.next_hop_v6)
        };
        let local = p
            .source
            .map(|a| format!("local {a} as {};", cfg.local_as))
            .unwrap_or_else(|| format!("local as {};", cfg.local_as));
        let next_hop = next_hop
            .map(|a| format!("next hop address {a};"))
            .unwrap_or_else(|| "next hop self;".to_string());
        let _ = write!(
            s,
            "protocol bgp {} {{\n  {local}\n  neighbor {} port {} as {};\n  hold time {};\n  \
             keepalive time {};\n  connect delay time 1;\n  connect retry time {};\n  \
             error wait time 1, 30;\n",
            p.name(),
            p.address,
            p.port,
            p.asn,
            cfg.hold_time.as_secs(),
            cfg.keepalive.as_secs(),
            cfg.connect_retry.as_secs()
        );
        // A balancer that dies must leave the routers' tables at once: no peer may keep its
        // routes as stale ones waiting for it to come back (RFC 4724).
        s.push_str("  graceful restart off;\n  long lived graceful restart off;\n");
        if cfg.bfd.is_some() {
            s.push_str("  bfd on;\n");
        }
        if let Some(key) = read_key(p)? {
            let _ = writeln!(s, "  password \"{key}\";");
        }
        let _ = writeln!(
            s,
            "  {channel} {{ import none; export filter {export}; {next_hop} }};\n}}\n"
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_config::Config;

    fn cfg(extra: &str) -> BgpConfig {
        let text = format!(
            "[[vips]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n\
             [bgp]\nlocal_as = 65001\nrouter_id = \"10.0.0.2\"\nhold_time_s = 3\n\
             communities = [\"65001:7\"]\n{extra}\
             [[bgp.peers]]\naddress = \"10.0.0.1\"\nas = 65000\n\
             [[bgp.peers]]\naddress = \"fd00::1\"\nas = 65000\nsource = \"fd00::2\"\n"
        );
        Config::parse(&text, "lbd.toml").unwrap().bgp.unwrap()
    }

    #[test]
    fn one_session_per_peer_exporting_only_lbds_table() {
        let text = render(&cfg("")).unwrap();
        assert!(text.contains("router id 10.0.0.2;"), "{text}");
        assert!(text.contains("kernel table 201;"), "{text}");
        assert!(text.contains(
            "protocol bgp peer_10_0_0_1 {\n  local as 65001;\n  neighbor 10.0.0.1 port 179 as 65000;\n  hold time 3;\n  keepalive time 1;"
        ), "{text}");
        assert!(text.contains("local fd00::2 as 65001;"), "{text}");
        assert!(
            text.contains("ipv4 { import none; export filter lbd_export_v4; next hop self; };"),
            "{text}"
        );
        assert!(
            text.contains("ipv6 { import none; export filter lbd_export_v6; next hop self; };"),
            "{text}"
        );
        assert!(
            text.contains("if proto = \"lbd_v4\" then { bgp_community.add((65001,7)); accept; }"),
            "{text}"
        );
        assert!(text.contains("graceful restart off;"), "{text}");
        assert!(!text.contains("bfd"), "no BFD unless asked: {text}");
    }

    #[test]
    fn bfd_and_next_hop() {
        let text = render(&cfg(
            "next_hop_v4 = \"10.0.0.9\"\n[bgp.bfd]\ninterval_ms = 50\nmultiplier = 4\n",
        ))
        .unwrap();
        assert!(
            text.contains("interface \"*\" { interval 50 ms; multiplier 4; };"),
            "{text}"
        );
        assert_eq!(text.matches("  bfd on;").count(), 2, "{text}");
        assert!(text.contains("next hop address 10.0.0.9;"), "{text}");
    }

    #[test]
    fn keys_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("lb-bgp-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        let mut c = cfg("");
        c.peers[0].password_file = Some(key.clone());
        std::fs::write(&key, "s3cret-key\n").unwrap();
        assert!(render(&c).unwrap().contains("  password \"s3cret-key\";"));
        std::fs::write(&key, "has\"quote\n").unwrap();
        let e = render(&c).unwrap_err().to_string();
        assert!(e.contains("without quotes"), "{e}");
        std::fs::remove_file(&key).unwrap();
        let e = render(&c).unwrap_err().to_string();
        assert!(e.contains("reading the TCP-MD5 key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
