//! The `[vrrp]` section: the VRRPv3 virtual routers that move the VIPs between balancers. One
//! section runs one router per address family present in `addresses` (RFC 5798: an IPv6
//! virtual router is a separate instance from the IPv4 one; both use the same VRID, as two
//! keepalived `vrrp_instance` blocks would).

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Ctx};

/// A virtual address with the prefix length it is added with (`ip addr add ADDR/PREFIX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (32 / 128 when not written).
    pub prefix: u8,
}

impl std::fmt::Display for VirtualAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A parsed, valid `[vrrp]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    /// Interface the adverts go out of and the VIPs are added to.
    pub interface: String,
    /// Virtual router id, 1..=255 (same on every node of the group).
    pub vrid: u8,
    /// Priority 1..=255 (255: address owner, always master).
    pub priority: u8,
    /// Advertisement interval.
    pub interval: Centis,
    /// Whether this node takes mastership from a lower-priority master.
    pub preempt: bool,
    /// The virtual addresses, IPv4 and/or IPv6 (one router per family present).
    pub addresses: Vec<VirtualAddr>,
    /// Send adverts to these peers (unicast) instead of the multicast group, and accept
    /// adverts only from them; each family's router uses the peers of its family.
    pub unicast_peers: Vec<IpAddr>,
    /// The IPv4 router's primary address (advert source); default: the interface's first.
    pub source: Option<IpAddr>,
    /// The IPv6 router's primary address; default: the interface's link-local address (with
    /// global unicast peers: its first global address).
    pub source_v6: Option<IpAddr>,
    /// Enter the fault state when the XDP program is not attached.
    pub track_dataplane: bool,
    /// Enter the fault state when one of these VIPs (by name) has no healthy backend.
    pub track_vips: Vec<String>,
    /// Gratuitous ARPs / unsolicited neighbour advertisements sent per VIP in each burst
    /// (keepalived's `garp_master_repeat`): one can be lost, a switch may miss the first.
    pub garp_repeat: u8,
    /// A second burst this long after becoming master (keepalived's `garp_master_delay`),
    /// for neighbours that were busy or whose cache refreshed meanwhile; `None`: no second burst.
    pub garp_master_delay: Option<std::time::Duration>,
    /// While master, announce the VIPs again this often (keepalived's `garp_master_refresh`),
    /// for switches and neighbours whose entries age out; `None`: never (the default).
    pub garp_master_refresh: Option<std::time::Duration>,
    /// Announcements per VIP in each refresh (keepalived's `garp_master_refresh_repeat`).
    pub garp_master_refresh_repeat: u8,
}

/// `[vrrp]` as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    interface: Spanned<String>,
    virtual_router_id: Spanned<u32>,
    priority: Spanned<u32>,
    #[serde(default = "default_interval")]
    advert_interval_cs: Spanned<u32>,
    #[serde(default = "yes")]
    preempt: bool,
    addresses: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    unicast_peers: Vec<Spanned<String>>,
    source: Option<Spanned<String>>,
    source_v6: Option<Spanned<String>>,
    #[serde(default = "yes")]
    track_dataplane: bool,
    #[serde(default)]
    track_vips: Vec<Spanned<String>>,
    #[serde(default = "default_garp_repeat")]
    garp_repeat: Spanned<u32>,
    #[serde(default = "default_garp_delay")]
    garp_master_delay_s: Spanned<u32>,
    #[serde(default = "zero")]
    garp_master_refresh_s: Spanned<u32>,
    #[serde(default = "one")]
    garp_master_refresh_repeat: Spanned<u32>,
}

fn zero() -> Spanned<u32> {
    Spanned::new(0..0, 0)
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

fn default_garp_repeat() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

fn default_garp_delay() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

fn default_interval() -> Spanned<u32> {
    Spanned::new(0..0, 100)
}

fn yes() -> bool {
    true
}

fn ip(ctx: &Ctx, s: &Spanned<String>, field: &str) -> Result<IpAddr, ConfigError> {
    s.get_ref().parse().map_err(|_| {
        ctx.err(
            &s.span(),
            field,
            format!("{:?} is not an IP address", s.get_ref()),
        )
    })
}

fn virtual_addr(ctx: &Ctx, s: &Spanned<String>, field: &str) -> Result<VirtualAddr, ConfigError> {
    let text = s.get_ref();
    let (a, p) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text.as_str(), None),
    };
    let addr: IpAddr = a.parse().map_err(|_| {
        ctx.err(
            &s.span(),
            field,
            format!("{text:?} is not an address (want ADDR or ADDR/PREFIX)"),
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=max).contains(p))
            .ok_or_else(|| ctx.err(&s.span(), field, format!("prefix must be 1..={max}")))?,
    };
    Ok(VirtualAddr { addr, prefix })
}

/// Checks `[vrrp]`; `vip_names` are the configured VIP names `track_vips` may refer to.
pub(super) fn parse_vrrp(
    ctx: &Ctx,
    r: RawVrrp,
    vip_names: &[&str],
) -> Result<VrrpConfig, ConfigError> {
    let interface = r.interface.get_ref().clone();
    if interface.is_empty() || interface.len() > 15 {
        return Err(ctx.err(
            &r.interface.span(),
            "vrrp.interface",
            "an interface name of 1-15 characters",
        ));
    }
    let vrid = u8::try_from(*r.virtual_router_id.get_ref())
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ctx.err(
                &r.virtual_router_id.span(),
                "vrrp.virtual_router_id",
                "must be 1..=255",
            )
        })?;
    let priority = u8::try_from(*r.priority.get_ref())
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ctx.err(
                &r.priority.span(),
                "vrrp.priority",
                "must be 1..=255 (255: address owner; 0 is reserved for leaving)",
            )
        })?;
    let interval = u16::try_from(*r.advert_interval_cs.get_ref())
        .ok()
        .and_then(Centis::new)
        .ok_or_else(|| {
            ctx.err(
                &r.advert_interval_cs.span(),
                "vrrp.advert_interval_cs",
                format!(
                    "centiseconds, 1..={} (100 = 1 s, as keepalived's advert_int 1)",
                    Centis::MAX
                ),
            )
        })?;
    let mut addresses = Vec::new();
    for (i, a) in r.addresses.get_ref().iter().enumerate() {
        let field = format!("vrrp.addresses[{i}]");
        let v = virtual_addr(ctx, a, &field)?;
        if addresses.iter().any(|x: &VirtualAddr| x.addr == v.addr) {
            return Err(ctx.err(&a.span(), field, format!("duplicate address {}", v.addr)));
        }
        addresses.push(v);
    }
    let count = |v4: bool| addresses.iter().filter(|a| a.addr.is_ipv4() == v4).count();
    let (n4, n6) = (count(true), count(false));
    if addresses.is_empty() || n4 > 255 || n6 > 255 {
        return Err(ctx.err(
            &r.addresses.span(),
            "vrrp.addresses",
            "list 1 to 255 virtual addresses per IP family",
        ));
    }
    let has = |a: IpAddr| if a.is_ipv4() { n4 > 0 } else { n6 > 0 };
    let family_name = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    let mut unicast_peers = Vec::new();
    for (i, p) in r.unicast_peers.iter().enumerate() {
        let field = format!("vrrp.unicast_peers[{i}]");
        let a = ip(ctx, p, &field)?;
        if !has(a) {
            return Err(ctx.err(
                &p.span(),
                field,
                format!(
                    "an {} peer, but no {0} address to advertise",
                    family_name(a)
                ),
            ));
        }
        if a.is_multicast() || a.is_unspecified() {
            return Err(ctx.err(&p.span(), field, "must be a unicast address"));
        }
        unicast_peers.push(a);
    }
    if !unicast_peers.is_empty() {
        for v4 in [true, false] {
            if count(v4) > 0 && !unicast_peers.iter().any(|p| p.is_ipv4() == v4) {
                let fam = if v4 { "IPv4" } else { "IPv6" };
                return Err(ctx.err(
                    &r.addresses.span(),
                    "vrrp.unicast_peers",
                    format!("with unicast peers, the {fam} addresses need an {fam} peer too"),
                ));
            }
        }
    }
    let source_of = |s: &Option<Spanned<String>>, field: &str, v4: bool| match s {
        Some(s) => {
            let a = ip(ctx, s, field)?;
            if a.is_ipv4() != v4 {
                let fam = if v4 { "IPv4" } else { "IPv6" };
                return Err(ctx.err(&s.span(), field, format!("must be an {fam} address")));
            }
            if !has(a) {
                return Err(ctx.err(
                    &s.span(),
                    field,
                    format!("no {} address in vrrp.addresses", family_name(a)),
                ));
            }
            Ok(Some(a))
        }
        None => Ok(None),
    };
    let source = source_of(&r.source, "vrrp.source", true)?;
    let source_v6 = source_of(&r.source_v6, "vrrp.source_v6", false)?;
    let mut track_vips = Vec::new();
    for (i, t) in r.track_vips.iter().enumerate() {
        if !vip_names.contains(&t.get_ref().as_str()) {
            return Err(ctx.err(
                &t.span(),
                format!("vrrp.track_vips[{i}]"),
                format!("no VIP named {:?} in [[vips]]", t.get_ref()),
            ));
        }
        track_vips.push(t.get_ref().clone());
    }
    let garp_repeat = u8::try_from(*r.garp_repeat.get_ref())
        .ok()
        .filter(|n| (1..=20).contains(n))
        .ok_or_else(|| {
            ctx.err(
                &r.garp_repeat.span(),
                "vrrp.garp_repeat",
                "1..=20 announcements per VIP and burst",
            )
        })?;
    let delay = *r.garp_master_delay_s.get_ref();
    if delay > 3600 {
        return Err(ctx.err(
            &r.garp_master_delay_s.span(),
            "vrrp.garp_master_delay_s",
            "0 (no second burst) ..= 3600 seconds",
        ));
    }
    let garp_master_delay = (delay > 0).then(|| std::time::Duration::from_secs(u64::from(delay)));
    let refresh = *r.garp_master_refresh_s.get_ref();
    if refresh > 86_400 {
        return Err(ctx.err(
            &r.garp_master_refresh_s.span(),
            "vrrp.garp_master_refresh_s",
            "0 (no refresh) ..= 86400 seconds",
        ));
    }
    let garp_master_refresh =
        (refresh > 0).then(|| std::time::Duration::from_secs(u64::from(refresh)));
    let garp_master_refresh_repeat = u8::try_from(*r.garp_master_refresh_repeat.get_ref())
        .ok()
        .filter(|n| (1..=20).contains(n))
        .ok_or_else(|| {
            ctx.err(
                &r.garp_master_refresh_repeat.span(),
                "vrrp.garp_master_refresh_repeat",
                "1..=20 announcements per VIP and refresh",
            )
        })?;
    Ok(VrrpConfig {
        interface,
        vrid,
        priority,
        interval,
        preempt: r.preempt,
        addresses,
        unicast_peers,
        source,
        source_v6,
        track_dataplane: r.track_dataplane,
        track_vips,
        garp_repeat,
        garp_master_delay,
        garp_master_refresh,
        garp_master_refresh_repeat,
    })
}

/// An advertisement interval in centiseconds: 1..=4095 (12 bits on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Centis(u16);

impl Centis {
    /// The largest interval the 12-bit field holds (40.95 s).
    pub const MAX: u16 = 0x0fff;

    /// An interval of `cs` centiseconds; `None` when 0 or above [`Centis::MAX`].
    pub fn new(cs: u16) -> Option<Self> {
        (1..=Self::MAX).contains(&cs).then_some(Self(cs))
    }

    /// The value in centiseconds.
    pub fn get(self) -> u16 {
        self.0
    }

    /// The interval as a duration.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.0) * 10)
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    const BASE: &str = "[[vips]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n";

    fn parse(vrrp: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}[vrrp]\n{vrrp}"), "lbd.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn full_section_parses() {
        let c = parse(
            "interface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\n\
             advert_interval_cs = 10\npreempt = false\naddresses = [\"10.0.0.100/24\", \"10.0.0.101\"]\n\
             unicast_peers = [\"10.0.0.2\"]\nsource = \"10.0.0.1\"\ntrack_vips = [\"web\"]\n",
        )
        .unwrap();
        let v = c.vrrp.unwrap();
        assert_eq!((v.vrid, v.priority, v.interval.get()), (51, 100, 10));
        assert!(!v.preempt && v.track_dataplane);
        assert_eq!(v.addresses[0].to_string(), "10.0.0.100/24");
        assert_eq!(v.addresses[1].to_string(), "10.0.0.101/32");
        assert_eq!(v.track_vips, vec!["web".to_string()]);
    }

    #[test]
    fn announcement_bursts() {
        let base = "interface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\naddresses = [\"10.0.0.100\"]\n";
        let v = parse(base).unwrap().vrrp.unwrap();
        assert_eq!(v.garp_repeat, 5);
        assert_eq!(v.garp_master_delay, Some(std::time::Duration::from_secs(5)));
        let v = parse(&format!("{base}garp_repeat = 1\ngarp_master_delay_s = 0\n"))
            .unwrap()
            .vrrp
            .unwrap();
        assert_eq!((v.garp_repeat, v.garp_master_delay), (1, None));
        assert_eq!(v.garp_master_refresh, None, "no refresh by default");
        assert_eq!(v.garp_master_refresh_repeat, 1);
        let v = parse(&format!(
            "{base}garp_master_refresh_s = 60\ngarp_master_refresh_repeat = 3\n"
        ))
        .unwrap()
        .vrrp
        .unwrap();
        assert_eq!(
            (v.garp_master_refresh, v.garp_master_refresh_repeat),
            (Some(std::time::Duration::from_secs(60)), 3)
        );
        let e = parse(&format!("{base}garp_repeat = 0\n")).unwrap_err();
        assert!(e.contains("lbd.toml:10: vrrp.garp_repeat"), "{e}");
        let e = parse(&format!("{base}garp_master_delay_s = 7200\n")).unwrap_err();
        assert!(e.contains("vrrp.garp_master_delay_s"), "{e}");
    }

    #[test]
    fn both_families_in_one_section() {
        let c = parse(
            "interface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\n\
             addresses = [\"10.0.0.100\", \"fe80::51/64\", \"fd00::100\"]\n\
             unicast_peers = [\"10.0.0.2\", \"fd00::2\"]\nsource_v6 = \"fd00::1\"\n",
        )
        .unwrap();
        let v = c.vrrp.unwrap();
        assert_eq!(v.addresses[1].to_string(), "fe80::51/64");
        assert_eq!(v.addresses[2].to_string(), "fd00::100/128");
        assert_eq!(v.unicast_peers.len(), 2);
        assert_eq!(v.source, None);
        assert_eq!(v.source_v6, Some("fd00::1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_line_field_and_reason() {
        let head = "interface = \"eth0\"\nvirtual_router_id = 51\n";
        let err = |rest: &str| parse(&format!("{head}{rest}")).unwrap_err();
        assert_eq!(
            err("priority = 0\naddresses = [\"10.0.0.100\"]\n"),
            "lbd.toml:8: vrrp.priority: must be 1..=255 (255: address owner; 0 is reserved for leaving)"
        );
        let v4 = "priority = 9\naddresses = [\"10.0.0.100\"]\n";
        let dual = "priority = 9\naddresses = [\"10.0.0.100\", \"fd00::100\"]\n";
        let cases = [
            (
                "priority = 9\nadvert_interval_cs = 4096\naddresses = [\"10.0.0.100\"]\n"
                    .to_string(),
                ":9: vrrp.advert_interval_cs: centiseconds",
            ),
            (
                format!("{v4}unicast_peers = [\"fd00::2\"]\n"),
                "vrrp.unicast_peers[0]: an IPv6 peer, but no IPv6 address",
            ),
            (
                format!("{dual}unicast_peers = [\"10.0.0.2\"]\n"),
                "vrrp.unicast_peers: with unicast peers, the IPv6 addresses need an IPv6 peer",
            ),
            (
                format!("{dual}source = \"fe80::1\"\n"),
                "vrrp.source: must be an IPv4 address",
            ),
            (
                "priority = 9\naddresses = [\"10.0.0.1/33\"]\n".to_string(),
                "vrrp.addresses[0]: prefix must be 1..=32",
            ),
            (
                "priority = 9\naddresses = []\n".to_string(),
                "vrrp.addresses: list 1 to 255",
            ),
            (
                format!("{v4}track_vips = [\"nope\"]\n"),
                "vrrp.track_vips[0]: no VIP named \"nope\"",
            ),
        ];
        for (rest, want) in cases {
            let e = err(&rest);
            assert!(e.contains(want), "{rest:?}: {e}");
        }
        let e = parse("interface = \"eth0\"\nvirtual_router_id = 256\npriority = 9\naddresses = [\"10.0.0.1\"]\n")
            .unwrap_err();
        assert!(
            e.contains(":7: vrrp.virtual_router_id: must be 1..=255"),
            "{e}"
        );
    }
}
