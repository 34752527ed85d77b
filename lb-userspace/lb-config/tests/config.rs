//! Config parsing: the examples in the repo parse, and every kind of error names the file,
//! the line, the field and the reason.

use lb_config::Config;

fn err(text: &str) -> String {
    Config::parse(text, "bad.toml")
        .expect_err("must be rejected")
        .to_string()
}

const VIP: &str = "[[vips]]\nname = \"web\"\naddress = \"10.77.0.100\"\nport = 80\n";

#[test]
fn examples_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.vips.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn defaults() {
    let c = Config::parse(VIP, "ok.toml").expect("minimal config");
    let v = &c.vips[0];
    assert_eq!(v.algorithm, lb_common::Algorithm::Maglev);
    assert_eq!(v.mode, lb_common::ForwardMode::DsrL2);
    assert_eq!(v.table_size.get(), 65537);
    assert_eq!(v.proto, lb_common::IPPROTO_TCP);
    assert_eq!(v.health, lb_config::HealthConfig::default());
    assert_eq!(c.api.socket, std::path::PathBuf::from("/run/lbd/lbd.sock"));
    assert_eq!(c.dataplane.xdp_mode, lb_config::AttachMode::Auto);
    assert_eq!(
        c.dataplane.max_new_flows_per_cpu,
        lb_common::DEFAULT_MAX_NEW_FLOWS_PER_CPU
    );
}

#[test]
fn flood_guard_limit_is_set_or_turned_off() {
    for (value, want) in [
        ("0", 0),
        ("1", 1),
        ("250000", 250_000),
        ("125_000", 125_000),
    ] {
        let text = format!("[dataplane]\nmax_new_flows_per_cpu = {value}\n{VIP}");
        let c = Config::parse(&text, "ok.toml").expect("valid");
        assert_eq!(c.dataplane.max_new_flows_per_cpu, want, "{value}");
    }
}

#[test]
fn backend_mtu_is_checked_per_family() {
    // 1300 is fine for IPv4 VIPs (and for IPv6 ones in dsr-l2 mode, which add no header).
    let text = format!("[dataplane]\nbackend_mtu = 1300\n{VIP}");
    let c = Config::parse(&text, "ok.toml").expect("valid");
    assert_eq!(c.dataplane.backend_mtu, 1300);
    let c = Config::parse(VIP, "ok.toml").expect("valid");
    assert_eq!(c.dataplane.backend_mtu, 0, "unchecked by default");
}

#[test]
fn vip_health_overrides_the_global_section() {
    let text = format!(
        "[health]\nkind = \"http\"\npath = \"/readyz\"\nfall = 5\n{VIP}health = {{ fall = 2 }}\n"
    );
    let c = Config::parse(&text, "ok.toml").expect("valid");
    let h = &c.vips[0].health;
    assert_eq!((h.fall, h.rise), (2, 2));
    assert_eq!(
        h.kind,
        lb_config::CheckKind::Http {
            path: "/readyz".into(),
            expect_status: 200
        }
    );
}

#[test]
fn every_error_names_line_field_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "[[vips]]\nname = \"web\"\naddress = \"10.77.0.300\"\n",
            "bad.toml:3: vips[0].address: \"10.77.0.300\" is not an IP address",
        ),
        (
            &format!("{VIP}algorithm = \"random\"\n"),
            "bad.toml:5: vips[0].algorithm: unknown algorithm \"random\"",
        ),
        (
            &format!("{VIP}mode = \"nat\"\n"),
            "bad.toml:5: vips[0].mode: unknown forwarding mode \"nat\"",
        ),
        (
            &format!("{VIP}protocol = \"sctp\"\n"),
            "bad.toml:5: vips[0].protocol: unknown protocol \"sctp\"",
        ),
        (
            &format!("{VIP}table_size = 65536\n"),
            "bad.toml:5: vips[0].table_size: ",
        ),
        (
            &format!("{VIP}[[vips.backends]]\naddress = \"fd77::1\"\n"),
            "bad.toml:6: vips[0].backends[0].address: backend and VIP must be the same IP family",
        ),
        (
            &format!("{VIP}[[vips.backends]]\naddress = \"10.77.0.11\"\nmac = \"zz:00\"\n"),
            "bad.toml:7: vips[0].backends[0].mac: ",
        ),
        (
            &format!("{VIP}[[vips.backends]]\naddress = \"10.77.0.11\"\nweight = 2000000\n"),
            "bad.toml:7: vips[0].backends[0].weight: at most 1000000",
        ),
        (
            &format!(
                "{VIP}[[vips.backends]]\naddress = \"10.77.0.11\"\n[[vips.backends]]\naddress = \"10.77.0.11\"\n"
            ),
            "bad.toml:8: vips[0].backends[1].address: duplicate backend",
        ),
        (
            &format!("{VIP}{VIP}"),
            "bad.toml:6: vips[1].name: duplicate VIP name \"web\"",
        ),
        (
            &format!("{VIP}mode = \"ipip\"\n"),
            "vips[0].mode: ipip mode needs dataplane.ipip_source_v4",
        ),
        (
            &format!("{VIP}colour = \"red\"\n"),
            "bad.toml:5: toml: unknown field `colour`",
        ),
        (
            "[[vips]]\nname = \"web\"\naddress = \"10.77.0.100\"\nport = 70000\n",
            "bad.toml:4: toml: ",
        ),
        (
            "[[vips]]\nname = \"a b\"\naddress = \"10.77.0.100\"\n",
            "bad.toml:2: vips[0].name: ",
        ),
        (
            "[dataplane]\nconn_table_size = 10\n",
            "bad.toml:2: dataplane.conn_table_size: must be at least 1024",
        ),
        (
            "[dataplane]\nipip_source_v4 = \"fd77::2\"\n",
            "bad.toml:2: dataplane.ipip_source_v4: must be an IPv4 address",
        ),
        (
            "[dataplane]\nmax_new_flows_per_cpu = -1\n",
            "bad.toml:2: dataplane.max_new_flows_per_cpu: -1 is out of range",
        ),
        (
            "[dataplane]\n\nmax_new_flows_per_cpu = 5000000000\n",
            "bad.toml:3: dataplane.max_new_flows_per_cpu: 5000000000 is out of range",
        ),
        (
            "[dataplane]\nbackend_mtu = 500\n",
            "bad.toml:2: dataplane.backend_mtu: 500 is out of range",
        ),
        (
            "[dataplane]\nbackend_mtu = \"1500\"\n",
            "bad.toml:2: dataplane.backend_mtu: \"1500\" is not a whole number",
        ),
        (
            "[dataplane]\nipip_source_v6 = \"fd77::2\"\n\nbackend_mtu = 1300\n[[vips]]\nname = \"web6\"\naddress = \"fd77::100\"\nport = 80\nmode = \"ipip\"\n",
            "bad.toml:4: dataplane.backend_mtu: 1300 leaves 1260 bytes inside IP6IP6 for VIP \"web6\"",
        ),
        (
            "[dataplane]\nmax_new_flows_per_cpu = \"lots\"\n",
            "bad.toml:2: dataplane.max_new_flows_per_cpu: \"lots\" is not a whole number",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with(want) || got.contains(want),
            "config:\n{text}\nwanted: {want}\n   got: {got}"
        );
    }
}

/// `[vrrp]` with one IPv4 VIP; line 6 is the first line after it.
const VRRP: &str = "[vrrp]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\naddresses = [\"10.77.0.100\"]\n";

#[test]
fn vrrp_announcement_refresh_is_off_by_default_and_checked() {
    let c = Config::parse(&format!("{VRRP}{VIP}"), "ok.toml").expect("valid");
    let v = c.vrrp.expect("vrrp section");
    assert_eq!(v.garp_master_refresh, None, "off by default, as keepalived");
    assert_eq!(v.garp_master_refresh_repeat, 1);
    let text = format!("{VRRP}garp_master_refresh_s = 30\ngarp_master_refresh_repeat = 2\n{VIP}");
    let v = Config::parse(&text, "ok.toml")
        .expect("valid")
        .vrrp
        .expect("vrrp section");
    assert_eq!(
        v.garp_master_refresh,
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(v.garp_master_refresh_repeat, 2);

    let cases = [
        (
            "garp_master_refresh_s = 86401\n",
            "bad.toml:6: vrrp.garp_master_refresh_s: 0 (no refresh) ..= 86400 seconds",
        ),
        ("garp_master_refresh_s = -1\n", "bad.toml:6: "),
        (
            "garp_master_refresh_repeat = 0\n",
            "bad.toml:6: vrrp.garp_master_refresh_repeat: 1..=20 announcements per VIP and refresh",
        ),
        (
            "garp_master_refresh_s = 10\ngarp_master_refresh_repeat = 21\n",
            "bad.toml:7: vrrp.garp_master_refresh_repeat: 1..=20",
        ),
    ];
    for (rest, want) in cases {
        let got = err(&format!("{VRRP}{rest}{VIP}"));
        assert!(
            got.starts_with(want),
            "{rest:?}\nwanted: {want}\n   got: {got}"
        );
    }
}

#[test]
fn a_missing_file_is_reported_with_its_path() {
    let e = Config::load(std::path::Path::new("/nonexistent/lb.toml")).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("/nonexistent/lb.toml:0: -: cannot read"),
        "{e}"
    );
}

#[test]
fn access_and_observation_settings_are_checked_with_their_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[health]\nunknown_weight_percent = 150\n",
            "bad.toml:2: health.unknown_weight_percent: 150 is not a percentage",
        ),
        (
            &format!("{VIP}health = {{ unknown_weight_percent = 101 }}\n"),
            "bad.toml:5: vips[0].health.unknown_weight_percent: 101 is not a percentage",
        ),
        (
            "[api]\nlisten = \"10.0.0.1:9100\"\n",
            "bad.toml:2: api.clients: a TCP listener needs at least one client",
        ),
        (
            "[api]\n[[api.clients]]\nname = \"be\"\nscope = \"registrant\"\ntoken_file = \"/t\"\n",
            "bad.toml:4: api.clients[0].vips: a registrant needs the VIPs",
        ),
        (
            "[api]\n[[api.clients]]\nname = \"ro\"\nscope = \"reader\"\ntoken_file = \"/t\"\n",
            "bad.toml:4: api.clients[0].scope: unknown scope \"reader\"",
        ),
        (
            "[api]\n[[api.clients]]\nname = \"be\"\nscope = \"registrant\"\ncert_name = \"be1\"\nvips = [\"web\"]\n",
            "bad.toml:5: api.clients[0].cert_name: client certificates need api.tls.client_ca",
        ),
        (
            "[api]\nregistration_lease_s = 100000\n",
            "bad.toml:2: api.registration_lease_s: at most 86400 s",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(
            got.starts_with(want),
            "config:\n{text}\nwanted: {want}\n   got: {got}"
        );
    }
    let c = Config::parse(
        "[api]\nlisten = \"10.0.0.1:9100\"\nregistration_lease_s = 30\n\
         [api.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_ca = \"/ca.pem\"\n\
         [[api.clients]]\nname = \"be\"\nscope = \"registrant\"\ncert_name = \"be1\"\nvips = [\"web\"]\naddresses = [\"10.0.0.11\"]\n",
        "ok.toml",
    )
    .expect("valid");
    let a = &c.api.access;
    assert_eq!(
        a.registration_lease,
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(a.clients[0].scope.name(), "registrant");
    assert!(a.tls.as_ref().is_some_and(|t| !t.require_client_cert));
}

#[test]
fn second_chance_is_per_vip_and_checked() {
    use std::time::Duration;

    use lb_dataplane::SecondChance;
    let dp = "[dataplane]\nipip_source_v4 = \"10.77.0.2\"\n";
    let ipip = format!("{dp}{VIP}mode = \"ipip\"\n");
    let on = |extra: &str| {
        Config::parse(&format!("{ipip}{extra}"), "ok.toml")
            .expect("valid")
            .vips[0]
            .second_chance
    };
    assert_eq!(on(""), SecondChance::Off);
    assert_eq!(
        on("second_chance = true\n"),
        SecondChance::On {
            window: Duration::from_secs(60)
        }
    );
    assert_eq!(
        on("second_chance = true\nsecond_chance_window_s = 5\n"),
        SecondChance::On {
            window: Duration::from_secs(5)
        }
    );
    for (text, want) in [
        (
            format!("{VIP}second_chance = true\n"),
            "bad.toml:5: vips[0].second_chance: needs mode = \"ipip\"",
        ),
        (
            format!("{ipip}algorithm = \"least-connections\"\nsecond_chance = true\n"),
            "bad.toml:9: vips[0].second_chance: needs algorithm maglev or ip-hash",
        ),
        (
            format!("{ipip}second_chance = true\nsecond_chance_window_s = 0\n"),
            "bad.toml:9: vips[0].second_chance_window_s: 1 to 3600 seconds",
        ),
        (
            format!("{ipip}second_chance_window_s = 30\n"),
            "bad.toml:8: vips[0].second_chance_window_s: set only with second_chance = true",
        ),
    ] {
        let got = err(&text);
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
}
