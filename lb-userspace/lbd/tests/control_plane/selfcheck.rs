//! Backends that check their own DSR setup, end to end: the real `app` on be1 registers with
//! the real lbd for two VIPs (`dsr`: dsr-l2 on port 8080, `tun`: ipip on port 8081, be1 and be2
//! decapsulating with `xdp_decap` attached by the real lbctl). Each prerequisite is broken in
//! turn on be1 (the VIP off lo, arp_ignore 0, rp_filter 1 with ipip, the decap program
//! detached): the finding reaches lbd with the next check, lbd gives be1 no new flows (every
//! new connection is answered by be2), and the fix brings be1 back.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_dataplane::Dataplane;
use serde_json::Value;
use tests::{netns::Lab, process::Process, topology::Topology};

use crate::lab::{BackendServer, TOKEN, http, request, require_root};

const DSR_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const TUN_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
const BE1: &str = "10.77.0.11";
const BE2: &str = "10.77.0.12";
/// The app's self-check and registration period here (60 s and 30 s by default).
const PERIOD_MS: u64 = 1000;

struct SelfCheckLab {
    lab: Lab,
    socket: PathBuf,
    decap_pins: PathBuf,
    lbd: Process,
    apps: Vec<Process>,
    _servers: Vec<BackendServer>,
    _peer: Dataplane,
}

fn vip_of(name: &str) -> (Ipv4Addr, u16) {
    match name {
        "dsr" => (DSR_VIP, 8080),
        _ => (TUN_VIP, 8081),
    }
}

impl SelfCheckLab {
    fn new() -> Self {
        require_root();
        let lab = Lab::create(&Topology::small(2).expect("topology")).expect("lab");
        let dir = lab.dir().to_path_buf();
        let bpffs = lab.bpffs().expect("bpffs");
        for be in ["be1", "be2"] {
            let h = lab.host(be).expect("backend");
            for scope in ["all", "eth0"] {
                h.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1")
                    .expect("sysctl");
                h.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2")
                    .expect("sysctl");
            }
            for vip in [DSR_VIP, TUN_VIP] {
                h.exec(["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"])
                    .expect("VIP on lo");
            }
        }
        let lb = lab.host("lb1").expect("lb1");
        for vip in [DSR_VIP, TUN_VIP] {
            lb.exec(["ip", "addr", "add", &format!("{vip}/32"), "dev", "eth0"])
                .expect("VIP on lb1");
        }
        // The client reaches the VIPs through lb1 whatever a backend says in ARP (breaking
        // arp_ignore on be1 must not steal the client's traffic in this test).
        let lb_mac = lb.mac().expect("lb1 MAC").to_string();
        let client = lab.host("client").expect("client");
        for vip in [DSR_VIP, TUN_VIP] {
            client
                .exec([
                    "ip",
                    "neigh",
                    "replace",
                    &vip.to_string(),
                    "lladdr",
                    &lb_mac,
                    "nud",
                    "permanent",
                    "dev",
                    "eth0",
                ])
                .expect("client neighbour entry for the VIP");
        }
        let port = lb.bridge_port().expect("bridge port").to_string();
        let peer = tests::setns::in_netns(lab.bridge_ns(), move || {
            Dataplane::attach_pass(&port).expect("attach xdp_pass to the bridge port")
        })
        .expect("bridge namespace");
        let servers = vec![
            BackendServer::start_on(&lab, "be2", 8080),
            BackendServer::start_on(&lab, "be2", 8081),
        ];
        std::fs::write(dir.join("token"), TOKEN).expect("token");
        let socket = dir.join("lbd.sock");
        let cfg = format!(
            "[dataplane]\ninterfaces = [\"eth0\"]\nxdp_mode = \"driver\"\npin_dir = \"{}\"\n\
             ipip_source_v4 = \"10.77.0.2\"\nbackend_mtu = 1500\n\n\
             [api]\nsocket = \"{}\"\nlisten = \"10.77.0.2:9100\"\ntoken_file = \"{}\"\nstate_file = \"{}\"\n\n\
             [health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 200\ntimeout_ms = 200\nrise = 2\nfall = 2\n\n\
             [[vips]]\nname = \"dsr\"\naddress = \"{DSR_VIP}\"\nport = 8080\nmode = \"dsr-l2\"\n\
             [[vips.backends]]\naddress = \"{BE2}\"\nweight = 100\n\n\
             [[vips]]\nname = \"tun\"\naddress = \"{TUN_VIP}\"\nport = 8081\nmode = \"ipip\"\n\
             [[vips.backends]]\naddress = \"{BE2}\"\nweight = 100\n",
            bpffs.join("lb1").display(),
            socket.display(),
            dir.join("token").display(),
            dir.join("lbd-state.json").display()
        );
        let config = dir.join("lbd.toml");
        std::fs::write(&config, cfg).expect("config");
        let lbd = tests::bins::workspace_bin("lbd");
        let mut lbd = lb
            .spawn(
                "lbd",
                [
                    lbd.to_str().expect("utf-8"),
                    "--config",
                    config.to_str().expect("utf-8"),
                ],
            )
            .expect("spawn lbd");
        let sock = socket.clone();
        lbd.wait_for("lbd API socket", Duration::from_secs(20), |_| {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        })
        .unwrap_or_else(|e| panic!("lbd did not come up: {e}\n{}", lbd.log()));
        let mut me = Self {
            socket,
            decap_pins: bpffs.join("be1-decap"),
            lbd,
            apps: Vec::new(),
            _servers: servers,
            _peer: peer,
            lab,
        };
        me.attach_decap("be2", BE2);
        me.attach_decap("be1", BE1);
        for vip in ["dsr", "tun"] {
            let app = me.start_app(vip);
            me.apps.push(app);
        }
        me
    }

    fn lbctl_in(&self, host: &str, args: &[&str]) {
        let lbctl = tests::bins::workspace_bin("lbctl");
        let mut all = vec![lbctl.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        self.lab
            .host(host)
            .expect("host")
            .exec(all)
            .unwrap_or_else(|e| panic!("lbctl {args:?} on {host}: {e}"));
    }

    fn attach_decap(&self, host: &str, addr: &str) {
        let pins = self
            .lab
            .bpffs()
            .expect("bpffs")
            .join(format!("{host}-decap"));
        self.lbctl_in(
            host,
            &[
                "xdp",
                "attach",
                "--program",
                "decap",
                "--iface",
                "eth0",
                "--pin-dir",
                pins.to_str().expect("utf-8"),
                "--decap-address",
                addr,
            ],
        );
    }

    fn start_app(&self, vip: &str) -> Process {
        let dir = self.lab.dir();
        let (_, port) = vip_of(vip);
        let cfg = format!(
            "listen = \"0.0.0.0:{port}\"\ninstance_id = \"be1-{vip}\"\n\
             [database]\nurl = \"sqlite://{}\"\n\
             [redis]\nurl = \"redis://127.0.0.1:1/\"\n\
             [queue]\nworkers_in_serve = false\n\
             [shutdown]\ndrain_delay_ms = 0\n\
             [registration]\ncontrol_planes = [\"http://10.77.0.2:9100\"]\nvip = \"{vip}\"\n\
             address = \"{BE1}\"\ntoken_file = \"{}\"\nrefresh_ms = {PERIOD_MS}\n\
             self_check_interval_ms = {PERIOD_MS}\nretry_initial_ms = 200\nretry_max_ms = 1000\n",
            dir.join(format!("be1-{vip}.db")).display(),
            dir.join("token").display(),
        );
        let path = dir.join(format!("be1-{vip}.toml"));
        std::fs::write(&path, cfg).expect("app config");
        let app = tests::bins::workspace_bin("app");
        self.lab
            .host("be1")
            .expect("be1")
            .spawn(
                &format!("app-{vip}"),
                [
                    app.to_str().expect("utf-8"),
                    "serve",
                    "--config",
                    path.to_str().expect("utf-8"),
                ],
            )
            .expect("spawn app")
    }

    fn api(&self, path: &str) -> Value {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).expect("connect to lbd");
        let (status, v) = http(&mut s, "GET", path, None, None);
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    /// be1's backend in `vip` as lbd's API shows it (`Null` until it registered).
    fn be1(&self, vip: &str) -> Value {
        self.api(&format!("/v1/vips/{vip}/backends"))
            .as_array()
            .and_then(|a| a.iter().find(|b| b["address"] == BE1))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn logs(&self) -> String {
        let mut s = format!("lbd:\n{}", self.lbd.log());
        for a in &self.apps {
            s.push_str(&format!("\napp:\n{}", a.log()));
        }
        s
    }

    /// Polls `cond` on be1's view every 100 ms, at most `limit`; returns the time it took.
    fn wait_be1(
        &self,
        vip: &str,
        what: &str,
        limit: Duration,
        cond: impl Fn(&Value) -> bool,
    ) -> Duration {
        let began = Instant::now();
        loop {
            let v = self.be1(vip);
            if cond(&v) {
                return began.elapsed();
            }
            assert!(
                began.elapsed() < limit,
                "{vip}: {what} did not happen within {limit:?}: {v:#}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Who answered `n` new connections to the VIP: be2's server says "be2", the app on be1
    /// says something else.
    fn answers(&self, vip: &str, n: usize) -> (usize, usize) {
        let (addr, port) = vip_of(vip);
        let to = SocketAddr::new(IpAddr::V4(addr), port);
        let got: Vec<Result<String, String>> = self
            .lab
            .host("client")
            .expect("client")
            .in_netns(move || {
                (0..n)
                    .map(|_| {
                        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                            .map_err(|e| format!("connect: {e}"))?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))
                            .map_err(|e| e.to_string())?;
                        request(&mut s)
                    })
                    .collect()
            })
            .expect("client namespace");
        let failed: Vec<&String> = got.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{vip}: {} of {n} new connections failed: {failed:?}\n{}",
            failed.len(),
            self.logs()
        );
        let be2 = got.iter().filter(|r| r.as_deref() == Ok("be2")).count();
        (n - be2, be2)
    }
}

fn finding<'a>(b: &'a Value, check: &str) -> Option<&'a Value> {
    b["self_check"]["findings"]
        .as_array()?
        .iter()
        .find(|f| f["check"] == check)
}

fn passes(b: &Value) -> bool {
    b["self_check"]["findings"]
        .as_array()
        .is_some_and(|f| !f.is_empty() && f.iter().all(|f| f["status"] != "fail"))
        && b["health"] == "healthy"
        && b["effective_weight"].as_u64().is_some_and(|w| w > 0)
}

/// A change made on be1.
enum Action {
    /// A command in be1's namespace.
    Run(&'static [&'static str]),
    /// `arp_ignore` for `all` and `eth0` (the kernel applies the larger).
    ArpIgnore(&'static str),
    DetachDecap,
    AttachDecap,
}

struct Case {
    vip: &'static str,
    check: &'static str,
    broken: Action,
    fixed: Action,
}

#[test]
fn a_backend_that_breaks_its_own_setup_gets_no_new_flows_until_fixed() {
    let lab = SelfCheckLab::new();
    let limit = Duration::from_secs(30);
    for vip in ["dsr", "tun"] {
        lab.wait_be1(vip, "a passing self-check and health", limit, passes);
        let b = lab.be1(vip);
        assert_eq!(
            b["self_check"]["mode"],
            if vip == "dsr" { "dsr-l2" } else { "ipip" },
            "{b:#}"
        );
        let (from_be1, _) = lab.answers(vip, 40);
        assert!(
            from_be1 > 0,
            "{vip}: be1 gets new flows before anything breaks"
        );
    }
    let cases = [
        Case {
            vip: "dsr",
            check: "vip_local",
            broken: Action::Run(&["ip", "addr", "del", "10.77.0.100/32", "dev", "lo"]),
            fixed: Action::Run(&["ip", "addr", "add", "10.77.0.100/32", "dev", "lo"]),
        },
        Case {
            vip: "dsr",
            check: "arp_ignore",
            broken: Action::ArpIgnore("0"),
            fixed: Action::ArpIgnore("1"),
        },
        Case {
            vip: "tun",
            check: "rp_filter",
            broken: Action::Run(&["sysctl", "-w", "net.ipv4.conf.all.rp_filter=1"]),
            fixed: Action::Run(&["sysctl", "-w", "net.ipv4.conf.all.rp_filter=0"]),
        },
        Case {
            vip: "tun",
            check: "decap",
            broken: Action::DetachDecap,
            fixed: Action::AttachDecap,
        },
    ];
    let be1 = lab.lab.host("be1").expect("be1");
    let run = |a: &Action| match a {
        Action::Run(args) => {
            be1.exec(*args).expect("a command on be1");
        }
        Action::ArpIgnore(v) => {
            for scope in ["all", "eth0"] {
                be1.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), v)
                    .expect("sysctl");
            }
        }
        Action::DetachDecap => lab.lbctl_in(
            "be1",
            &[
                "xdp",
                "detach",
                "--pin-dir",
                lab.decap_pins.to_str().expect("utf-8"),
            ],
        ),
        Action::AttachDecap => lab.attach_decap("be1", BE1),
    };
    for c in &cases {
        run(&c.broken);
        let took = lab.wait_be1(c.vip, &format!("the {} finding", c.check), limit, |b| {
            finding(b, c.check).is_some_and(|f| f["status"] == "fail")
        });
        eprintln!(
            "{} broken on be1: lbd had the finding after {:.1} s (check and registration every {:.1} s)",
            c.check,
            took.as_secs_f64(),
            PERIOD_MS as f64 / 1000.0
        );
        let b = lab.be1(c.vip);
        assert_eq!(b["effective_weight"], 0, "{b:#}");
        let why = b["no_new_flows"].as_str().unwrap_or_default();
        assert!(
            why.contains("self-check failed") && why.contains(c.check),
            "{b:#}"
        );
        assert!(
            finding(&b, c.check).is_some_and(|f| f["fix"].as_str().is_some_and(|x| !x.is_empty())),
            "a failing finding carries its fix: {b:#}"
        );
        let (_, m) = {
            let mut s = std::os::unix::net::UnixStream::connect(&lab.socket).expect("lbd");
            http(&mut s, "GET", "/metrics", None, None)
        };
        let metrics = m.as_str().unwrap_or_default().to_string();
        let blocked = format!(
            "lb_backend_self_check_blocked{{vip=\"{}\",backend=\"{BE1}\"}} 1",
            c.vip
        );
        assert!(metrics.contains(&blocked), "{blocked} not in the metrics");
        let (from_be1, from_be2) = lab.answers(c.vip, 30);
        assert_eq!(
            (from_be1, from_be2),
            (0, 30),
            "{}: new connections while be1's self-check fails",
            c.check
        );
        run(&c.fixed);
        let took = lab.wait_be1(c.vip, &format!("{} fixed", c.check), limit, passes);
        eprintln!(
            "{} fixed on be1: lbd had the passing report after {:.1} s",
            c.check,
            took.as_secs_f64()
        );
        let (from_be1, _) = lab.answers(c.vip, 40);
        assert!(
            from_be1 > 0,
            "{}: be1 gets new flows again once fixed",
            c.check
        );
    }
    // `lbctl health` and `lbctl backend list` show the summary column.
    let out = std::process::Command::new(tests::bins::workspace_bin("lbctl"))
        .arg("--socket")
        .arg(&lab.socket)
        .args(["backend", "list", "tun"])
        .output()
        .expect("lbctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SELF-CHECK"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(BE1))
        .unwrap_or_else(|| panic!("no row for be1: {text}"));
    assert!(
        row.trim_end().ends_with("ok") || row.contains("warning"),
        "{row}"
    );
}
