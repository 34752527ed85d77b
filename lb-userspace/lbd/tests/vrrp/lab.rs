//! A VRRP lab: `client` (.10), `lb1` (.2) and `lb2` (.3) each running the real `lbd` with a
//! `[vrrp]` section (XDP attached to eth0), and `be1` (.11), all in namespaces this test makes.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tests::{netns::Lab, process::Process, topology::Topology};

/// be1's HTTP server; stops on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// The IPv6 router's addresses: a link-local virtual address first (RFC 5798 5.2.9), then the
/// global VIP clients use.
pub const VIP6_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x51);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100);
pub const VRID: u8 = 51;
/// Advertisement interval used by the lab, centiseconds.
pub const INTERVAL_CS: u16 = 25;
/// How long a test waits for any one thing to happen.
pub const BOUND: Duration = Duration::from_secs(20);

/// Dual stack with multicast adverts.
pub const DUAL: Options = Options {
    ipv6: true,
    unicast: false,
    source: false,
    extra: "",
};

/// Dual stack with unicast peers.
pub const UNICAST: Options = Options {
    ipv6: true,
    unicast: true,
    source: false,
    extra: "",
};

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "VRRP tests need root (namespaces, raw sockets, XDP): run `sudo cargo xtask test`"
    );
}

/// One balancer node's settings.
#[derive(Clone, Copy)]
pub struct Node {
    pub name: &'static str,
    pub priority: u8,
    pub preempt: bool,
    /// TCP health checks on be1:80 and `track_vips = ["web"]`.
    pub track: bool,
}

/// The usual pair: lb1 the preferred master, lb2 its backup, both preempting.
pub const LB1: Node = Node {
    name: "lb1",
    priority: 100,
    preempt: true,
    track: false,
};
pub const LB2: Node = Node {
    name: "lb2",
    priority: 90,
    preempt: true,
    track: false,
};

/// Lab-wide VRRP options.
#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Dual stack: an IPv6 virtual router (VIP6_LL, VIP6) beside the IPv4 one.
    pub ipv6: bool,
    /// Unicast peers (the other balancer's .2/.3 and fd77::2/3) instead of multicast.
    pub unicast: bool,
    /// `source` = the node's own IPv4 address, configured instead of followed.
    pub source: bool,
    /// More `[vrrp]` lines for both nodes (each ending in a newline).
    pub extra: &'static str,
}

/// One address family's router on a node, for checks written once for both.
pub struct Family {
    pub name: &'static str,
    /// The router's status ([`VrrpLab::vrrp`] or [`VrrpLab::vrrp6`]).
    pub status: fn(&VrrpLab, usize) -> serde_json::Value,
    /// Whether the node holds all of the family's VIPs.
    pub holds: fn(&VrrpLab, usize) -> bool,
    /// Whether the node holds none of them.
    pub lacks: fn(&VrrpLab, usize) -> bool,
}

pub const IPV4: Family = Family {
    name: "IPv4",
    status: VrrpLab::vrrp,
    holds: VrrpLab::has_vip,
    lacks: |l, i| !l.has_vip(i),
};

pub const IPV6: Family = Family {
    name: "IPv6",
    status: VrrpLab::vrrp6,
    holds: VrrpLab::has_vip6,
    lacks: VrrpLab::lacks_vip6,
};

pub struct VrrpLab {
    pub lab: Lab,
    pub nodes: Vec<Node>,
    pub opts: Options,
    pub lbd: Vec<Option<Process>>,
    /// keepalived instances started in place of lbd on a node.
    pub keepalived: Vec<Option<Process>>,
    /// be1's real MAC (the data plane rewrites frames to it).
    be1_mac: String,
    /// xdp_pass on the balancers' bridge ports (XDP_TX on veth needs a peer program).
    peers: Vec<lb_dataplane::Dataplane>,
}

impl VrrpLab {
    /// Creates the namespaces and writes both configs; no lbd runs yet.
    pub fn new(nodes: [Node; 2]) -> Self {
        Self::with(nodes, Options::default())
    }

    /// Like [`Self::new`] with IPv6 and/or unicast peers.
    pub fn with(nodes: [Node; 2], opts: Options) -> Self {
        require_root();
        let topo = Topology::builder()
            .node("client", tests::Role::Client, 10)
            .balancer("lb1", 2, 100)
            .balancer("lb2", 3, 90)
            .node("be1", tests::Role::Backend, 11)
            .build()
            .expect("topology");
        let lab = Lab::create(&topo).expect("lab");
        let mut me = Self {
            lab,
            nodes: nodes.to_vec(),
            opts,
            lbd: vec![None, None],
            keepalived: vec![None, None],
            be1_mac: String::new(),
            peers: Vec::new(),
        };
        me.be1_mac = me
            .lab
            .host("be1")
            .expect("be1")
            .mac()
            .expect("be1 MAC")
            .to_string();
        for n in nodes {
            me.write_config(n);
        }
        me
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.lab.dir().join(name);
        std::fs::create_dir_all(&d).expect("node dir");
        d
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir(self.nodes[i].name).join("lbd.sock")
    }

    /// The other balancer's addresses (IPv4, IPv6) for unicast peering.
    fn peer_of(&self, name: &str) -> (Ipv4Addr, Ipv6Addr) {
        let other = if name == "lb1" { "lb2" } else { "lb1" };
        let h = self.lab.host(other).expect("peer host");
        (h.ipv4(), h.ipv6())
    }

    fn write_config(&self, n: Node) {
        let dir = self.dir(n.name);
        let (p4, p6) = self.peer_of(n.name);
        let mut addresses = format!("\"{VIP}/32\"");
        if self.opts.ipv6 {
            addresses.push_str(&format!(", \"{VIP6_LL}/64\", \"{VIP6}/128\""));
        }
        let mut peers = match (self.opts.unicast, self.opts.ipv6) {
            (false, _) => String::new(),
            (true, false) => format!("unicast_peers = [\"{p4}\"]\n"),
            (true, true) => format!("unicast_peers = [\"{p4}\", \"{p6}\"]\n"),
        };
        if self.opts.source {
            let own = self.lab.host(n.name).expect("host").ipv4();
            peers.push_str(&format!("source = \"{own}\"\n"));
        }
        let pins = self.lab.bpffs().expect("bpffs").join(n.name);
        let cfg = format!(
            "[dataplane]\ninterfaces = [\"eth0\"]\nxdp_mode = \"driver\"\npin_dir = \"{pins}\"\n\
             detach_on_exit = true\n\n\
             [api]\nsocket = \"{sock}\"\nstate_file = \"{state}\"\n\n\
             [health]\n{health}\n\n\
             [[vips]]\nname = \"web\"\naddress = \"{VIP}\"\nport = 80\n\n\
             [[vips.backends]]\naddress = \"10.77.0.11\"\nmac = \"{mac}\"\n\n\
             [vrrp]\ninterface = \"eth0\"\nvirtual_router_id = {VRID}\npriority = {prio}\n\
             advert_interval_cs = {INTERVAL_CS}\npreempt = {preempt}\naddresses = [{addresses}]\n\
             {peers}{track}{extra}",
            extra = self.opts.extra,
            health = if n.track {
                "kind = \"tcp\"\ninterval_ms = 200\ntimeout_ms = 200\nrise = 1\nfall = 1"
            } else {
                "kind = \"none\""
            },
            track = if n.track {
                "track_vips = [\"web\"]\n"
            } else {
                ""
            },
            pins = pins.display(),
            sock = dir.join("lbd.sock").display(),
            state = dir.join("state.json").display(),
            prio = n.priority,
            preempt = n.preempt,
            mac = self.be1_mac,
        );
        std::fs::write(dir.join("lbd.toml"), cfg).expect("config");
    }

    pub fn start(&mut self, i: usize) {
        let n = self.nodes[i];
        let host = self.lab.host(n.name).expect("host");
        let config = self.dir(n.name).join("lbd.toml");
        let lbd = tests::bins::workspace_bin("lbd");
        let mut p = host
            .spawn(
                "lbd",
                [
                    lbd.to_str().expect("utf-8 path"),
                    "--config",
                    config.to_str().expect("utf-8 path"),
                ],
            )
            .expect("spawn lbd");
        let sock = self.socket(i);
        p.wait_for("lbd API socket", Duration::from_secs(30), |_| {
            UnixStream::connect(&sock).is_ok()
        })
        .unwrap_or_else(|e| panic!("{} lbd did not come up: {e}\n{}", n.name, p.log()));
        self.lbd[i] = Some(p);
    }

    /// Makes the VIP serve for real: be1 takes the VIP on `lo` (direct server return),
    /// answers HTTP on :80 until the returned guard drops; both balancers' bridge ports get
    /// xdp_pass.
    pub fn serve(&mut self) -> Server {
        use lb_dataplane::Dataplane;
        let be1 = self.lab.host("be1").expect("be1");
        for (k, v) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.eth0.arp_ignore", "1"),
            ("net.ipv4.conf.eth0.arp_announce", "2"),
        ] {
            be1.sysctl(k, v).expect("sysctl");
        }
        be1.exec(["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])
            .expect("VIP on be1's lo");
        for name in ["lb1", "lb2"] {
            let port = self
                .lab
                .bridge_port_of(name)
                .expect("a balancer's bridge port")
                .to_string();
            let dp = tests::setns::in_netns(self.lab.bridge_ns(), move || {
                Dataplane::attach_pass(&port).expect("attach xdp_pass to a bridge port")
            })
            .expect("bridge namespace");
            self.peers.push(dp);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = be1
            .spawn_thread(move || {
                let l = TcpListener::bind("0.0.0.0:80").expect("bind :80 on be1");
                l.set_nonblocking(true).expect("nonblocking");
                let _ = ready_tx.send(());
                while !flag.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                            let mut buf = [0u8; 512];
                            let _ = s.read(&mut buf);
                            let _ = s.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbe1",
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
            .expect("server thread");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("be1 listening");
        Server {
            stop,
            thread: Some(thread),
        }
    }

    /// SIGKILL (no goodbye) or SIGTERM (clean: priority-0 advert) node `i`; waits for exit.
    pub fn stop(&mut self, i: usize, signal: i32) {
        if let Some(mut p) = self.lbd[i].take() {
            p.signal(signal).expect("signal lbd");
            let st = p.wait_timeout(Duration::from_secs(10)).expect("wait");
            assert!(st.is_some(), "{} lbd did not exit", self.nodes[i].name);
        }
    }

    /// Node `i` fails as a whole: lbd SIGKILLed and its eth0 down (a SIGKILL alone would leave
    /// the VIPs and the XDP program serving on it).
    pub fn fail(&mut self, i: usize) {
        self.stop(i, libc::SIGKILL);
        let name = self.nodes[i].name;
        self.lab
            .host(name)
            .expect("host")
            .exec(["ip", "link", "set", "eth0", "down"])
            .unwrap_or_else(|e| panic!("{name} eth0 down: {e}"));
    }

    /// The body of `GET path` on node `i`'s API socket.
    pub fn get(&self, i: usize, path: &str) -> String {
        let mut s = UnixStream::connect(self.socket(i)).expect("connect to lbd");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: lbd\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("send");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        resp.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or(resp)
    }

    /// `GET /v1/vrrp` of node `i`: every instance.
    pub fn vrrp_all(&self, i: usize) -> serde_json::Value {
        let body = self.get(i, "/v1/vrrp");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /v1/vrrp answer {body:?}: {e}"))
    }

    fn instance(&self, i: usize, family: &str) -> serde_json::Value {
        let all = self.vrrp_all(i);
        all["instances"]
            .as_array()
            .and_then(|v| v.iter().find(|s| s["family"] == family).cloned())
            .unwrap_or_else(|| panic!("no {family} instance in {all}"))
    }

    /// Node `i`'s IPv4 router (`GET /v1/vrrp`, the `ipv4` instance).
    pub fn vrrp(&self, i: usize) -> serde_json::Value {
        self.instance(i, "ipv4")
    }

    /// Node `i`'s IPv6 router.
    pub fn vrrp6(&self, i: usize) -> serde_json::Value {
        self.instance(i, "ipv6")
    }

    pub fn state(&self, i: usize) -> String {
        self.vrrp(i)["state"].as_str().unwrap_or("?").to_string()
    }

    pub fn state6(&self, i: usize) -> String {
        self.vrrp6(i)["state"].as_str().unwrap_or("?").to_string()
    }

    /// Whether node `i`'s eth0 holds both IPv6 virtual addresses.
    pub fn has_vip6(&self, i: usize) -> bool {
        let host = self.lab.host(self.nodes[i].name).expect("host");
        let out = host
            .exec(["ip", "-o", "-6", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        out.contains(&format!("inet6 {VIP6}/128")) && out.contains(&format!("inet6 {VIP6_LL}/64"))
    }

    /// Whether node `i`'s eth0 holds neither IPv6 virtual address.
    pub fn lacks_vip6(&self, i: usize) -> bool {
        let host = self.lab.host(self.nodes[i].name).expect("host");
        let out = host
            .exec(["ip", "-o", "-6", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        !out.contains(&format!("inet6 {VIP6}/")) && !out.contains(&format!("inet6 {VIP6_LL}/"))
    }

    /// Whether node `i`'s eth0 holds the VIP.
    pub fn has_vip(&self, i: usize) -> bool {
        let host = self.lab.host(self.nodes[i].name).expect("host");
        let out = host
            .exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .expect("ip addr");
        out.contains(&format!("inet {VIP}/"))
    }

    pub fn log(&self, i: usize) -> String {
        self.lbd[i]
            .as_ref()
            .or(self.keepalived[i].as_ref())
            .map(|p| p.log())
            .unwrap_or_default()
    }

    /// Runs keepalived (VRRPv3, same VRID, interval and VIP) on node `i` in the foreground.
    pub fn start_keepalived(&mut self, i: usize) {
        self.start_keepalived_with(i, INTERVAL_CS);
    }

    /// Like [`Self::start_keepalived`] with another advert interval (centiseconds).
    pub fn start_keepalived_with(&mut self, i: usize, interval_cs: u16) {
        let n = self.nodes[i];
        let Some(bin) = tests::exec::which("keepalived") else {
            panic!("keepalived is missing: install the apt package `keepalived` (2.2.7 tested)");
        };
        let dir = self.dir(n.name);
        let conf = dir.join("keepalived.conf");
        let secs = f64::from(interval_cs) / 100.0;
        let host = self.lab.host(n.name).expect("host");
        let (p4, p6) = self.peer_of(n.name);
        let instance = |name: &str, vips: &str, src: String, peer: String| {
            let unicast = if self.opts.unicast {
                format!("  unicast_src_ip {src}\n  unicast_peer {{\n    {peer}\n  }}\n")
            } else {
                String::new()
            };
            format!(
                "vrrp_instance {name} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n\
                 priority {prio}\n  advert_int {secs}\n{nopreempt}{unicast}  virtual_ipaddress {{\n{vips}  }}\n}}\n",
                prio = n.priority,
                nopreempt = if n.preempt { "" } else { "  nopreempt\n" },
            )
        };
        let mut text = format!(
            "global_defs {{\n  router_id {name}\n  vrrp_version 3\n  vrrp_garp_master_delay 0\n}}\n",
            name = n.name
        );
        text.push_str(&instance(
            "VI_4",
            &format!("    {VIP}/32 dev eth0\n"),
            host.ipv4().to_string(),
            p4.to_string(),
        ));
        if self.opts.ipv6 {
            text.push_str(&instance(
                "VI_6",
                &format!("    {VIP6_LL}/64 dev eth0\n    {VIP6}/128 dev eth0\n"),
                host.ipv6().to_string(),
                p6.to_string(),
            ));
        }
        std::fs::write(&conf, text).expect("keepalived.conf");
        let path = |f: &str| dir.join(f).to_str().expect("utf-8 path").to_string();
        let p = host
            .spawn(
                "keepalived",
                [
                    bin.to_str().expect("utf-8 path").to_string(),
                    "-n".into(),
                    "-l".into(),
                    "-D".into(),
                    "-f".into(),
                    path("keepalived.conf"),
                    "-p".into(),
                    path("keepalived.pid"),
                    "-r".into(),
                    path("keepalived-vrrp.pid"),
                ],
            )
            .expect("spawn keepalived");
        self.keepalived[i] = Some(p);
    }

    /// Stops node `i`'s keepalived with `signal`; waits for it to exit.
    pub fn stop_keepalived(&mut self, i: usize, signal: i32) {
        if let Some(mut p) = self.keepalived[i].take() {
            p.signal(signal).expect("signal keepalived");
            let st = p.wait_timeout(Duration::from_secs(10)).expect("wait");
            assert!(st.is_some(), "keepalived did not exit");
        }
    }

    /// Waits (bounded) until `cond` holds; returns how long it took.
    pub fn wait(&self, what: &str, timeout: Duration, cond: impl Fn(&Self) -> bool) -> Duration {
        let t0 = Instant::now();
        loop {
            if cond(self) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < timeout,
                "timed out after {timeout:?} waiting for: {what}\nlb1: {}\nlb2: {}\n--- lb1 log\n{}\n--- lb2 log\n{}",
                self.try_vrrp(0),
                self.try_vrrp(1),
                self.log(0),
                self.log(1)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn try_vrrp(&self, i: usize) -> String {
        if self.lbd[i].is_none() {
            return "(not running)".into();
        }
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.vrrp_all(i).to_string()
        }))
        .unwrap_or_else(|_| "(no answer)".into())
    }

    /// Runs `lbctl vrrp` against node `i`; asserts it succeeds and returns (and prints) its table.
    pub fn lbctl_vrrp(&self, i: usize) -> String {
        let out = std::process::Command::new(tests::bins::workspace_bin("lbctl"))
            .arg("--socket")
            .arg(self.socket(i))
            .arg("vrrp")
            .output()
            .expect("run lbctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("lbctl vrrp on {}:\n{text}", self.nodes[i].name);
        assert!(out.status.success(), "{out:?}");
        text
    }

    /// Runs `f` on a fresh single-threaded tokio runtime inside the client's namespace (for
    /// crafted packets sent through our own raw sockets).
    pub fn block_on_client<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future,
        Fut::Output: Send,
    {
        self.lab
            .host("client")
            .expect("client")
            .in_netns(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(f())
            })
            .expect("client ns")
    }

    /// Calls `send`, which sends `n` packets both nodes must drop as `reason`, and waits until
    /// both nodes' `family` routers counted `n` more `reason` rejects.
    pub fn wait_rejects(&self, family: &Family, reason: &str, n: u64, send: impl FnOnce()) {
        let count = |i: usize| (family.status)(self, i)["counters"]["rejects"][reason].as_u64();
        let before: Vec<u64> = (0..2).map(|i| count(i).unwrap_or(0)).collect();
        send();
        for (i, b) in before.iter().enumerate() {
            self.wait(
                &format!("node {i} counts {n} more {} {reason} rejects", family.name),
                BOUND,
                |_| count(i) >= Some(b + n),
            );
        }
    }

    /// Like [`Self::wait_master`] for the IPv6 router (both IPv6 VIPs held, neither left).
    pub fn wait_master6(&self, m: usize, b: usize, timeout: Duration) -> Duration {
        self.wait_roles(&IPV6, m, b, timeout)
    }

    /// Waits until node `m` is master holding the VIP and node `b` is a backup without it.
    pub fn wait_master(&self, m: usize, b: usize, timeout: Duration) -> Duration {
        self.wait_roles(&IPV4, m, b, timeout)
    }

    fn wait_roles(&self, f: &Family, m: usize, b: usize, timeout: Duration) -> Duration {
        let what = format!(
            "{} {} master with the VIPs, {} backup without",
            self.nodes[m].name, f.name, self.nodes[b].name
        );
        self.wait(&what, timeout, |l| {
            // The backup must also have heard the master (it learns it from an advert).
            (f.status)(l, m)["state"] == "master" && (f.holds)(l, m) && {
                let sb = (f.status)(l, b);
                sb["state"] == "backup" && (f.lacks)(l, b) && !sb["master"].is_null()
            }
        })
    }
}
