//! A small lab for the control plane: client, lb1 running the real `lbd`, and backends serving
//! HTTP on the VIP (direct server return), all in network namespaces this test creates.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_dataplane::Dataplane;
use tests::{netns::Lab, process::Process, topology::Topology};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const INTERVAL_MS: u64 = 200;
pub const RISE: u32 = 2;
pub const FALL: u32 = 2;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "control-plane tests need root (namespaces, XDP): run `sudo cargo xtask test`"
    );
}

/// An HTTP server on 0.0.0.0:80 in a backend's namespace answering with its name. Stopping it
/// closes the listener (new connections are refused); open connections keep working.
pub struct BackendServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn serve_conn(mut s: TcpStream, name: String) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(buf.len());
        buf.drain(..end);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{name}",
            name.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

impl BackendServer {
    pub fn start(lab: &Lab, host: &str) -> Self {
        Self::start_on(lab, host, 80)
    }

    /// The server on another port of 0.0.0.0.
    pub fn start_on(lab: &Lab, host: &str, port: u16) -> Self {
        let h = lab.host(host).expect("backend host");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = host.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = h
            .spawn_thread(move || {
                let l = TcpListener::bind(("0.0.0.0", port))
                    .expect("bind the port in the backend namespace");
                l.set_nonblocking(true).expect("nonblocking");
                let _ = ready_tx.send(());
                while !flag.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let n = name.clone();
                            std::thread::spawn(move || serve_conn(s, n));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
            .expect("server thread");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server listening");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a lab's `lbd.toml` and start-up look like beyond the defaults.
#[allow(dead_code)] // each user (tests, bench) takes what it needs
pub struct LabOptions<'a> {
    pub backends: u8,
    pub interval_ms: u64,
    pub lb_sysctls: &'a [(&'a str, &'a str)],
    /// Lines added to `[api]`.
    pub api_extra: &'a str,
    /// Lines added to `[health]`.
    pub health_extra: &'a str,
    /// Lines added to the `web` VIP (before its backends).
    pub web_extra: &'a str,
    /// Appended to the file (more VIPs, `[[api.clients]]`, `[api.tls]`).
    pub tail: &'a str,
    pub log_json: bool,
    /// How many backends must be healthy before the lab is handed over (default: all).
    pub healthy: Option<usize>,
}

impl Default for LabOptions<'_> {
    fn default() -> Self {
        Self {
            backends: 2,
            interval_ms: INTERVAL_MS,
            lb_sysctls: &[],
            api_extra: "",
            health_extra: "",
            web_extra: "",
            tail: "",
            log_json: false,
            healthy: None,
        }
    }
}

#[allow(dead_code)] // each user (tests, bench) takes what it needs
pub struct ControlLab {
    pub lab: Lab,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub lbd: Option<Process>,
    pub servers: Vec<Option<BackendServer>>,
    /// `lbd --log-json`.
    pub log_json: bool,
    /// Keeps xdp_pass attached to the balancer's bridge port (XDP_TX on veth needs it).
    _peer: Dataplane,
}

impl ControlLab {
    pub fn new(backends: u8) -> Self {
        Self::with_interval(backends, INTERVAL_MS)
    }

    pub fn with_interval(backends: u8, interval_ms: u64) -> Self {
        Self::with_options(backends, interval_ms, &[])
    }

    /// `lb_sysctls` are set in lb1's namespace before `lbd` starts (e.g. neighbour timers).
    pub fn with_options(backends: u8, interval_ms: u64, lb_sysctls: &[(&str, &str)]) -> Self {
        Self::build(&LabOptions {
            backends,
            interval_ms,
            lb_sysctls,
            ..LabOptions::default()
        })
    }

    /// `extra` is appended to lbd's config (whole TOML tables, e.g. a `[vrrp]` section).
    pub fn with_extra_config(backends: u8, extra: &str) -> Self {
        Self::build(&LabOptions {
            backends,
            tail: extra,
            ..LabOptions::default()
        })
    }

    pub fn build(o: &LabOptions) -> Self {
        let (backends, interval_ms, lb_sysctls) = (o.backends, o.interval_ms, o.lb_sysctls);
        require_root();
        let topo = Topology::small(backends).expect("topology");
        let lab = Lab::create(&topo).expect("lab");
        for (k, v) in lb_sysctls {
            lab.host("lb1")
                .expect("lb1")
                .sysctl(k, v)
                .unwrap_or_else(|e| panic!("sysctl {k}={v} on lb1: {e}"));
        }
        let vip = VIP.to_string();
        for i in 1..=backends {
            let h = lab.host(&format!("be{i}")).expect("backend");
            for (k, v) in [
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
                ("net.ipv4.conf.eth0.arp_ignore", "1"),
                ("net.ipv4.conf.eth0.arp_announce", "2"),
            ] {
                h.sysctl(k, v).expect("sysctl");
            }
            h.exec(["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"])
                .expect("VIP on lo");
        }
        let lb = lab.host("lb1").expect("lb1");
        lb.exec(["ip", "addr", "add", &format!("{vip}/32"), "dev", "eth0"])
            .expect("VIP on lb1");
        let port = lb.bridge_port().expect("bridge port").to_string();
        let peer = tests::setns::in_netns(lab.bridge_ns(), move || {
            Dataplane::attach_pass(&port).expect("attach xdp_pass to the bridge port")
        })
        .expect("bridge namespace");
        let servers = (1..=backends)
            .map(|i| Some(BackendServer::start(&lab, &format!("be{i}"))))
            .collect();
        let dir = lab.dir().to_path_buf();
        let pins = lab.bpffs().expect("bpffs").join("lb1");
        std::fs::write(dir.join("token"), TOKEN).expect("token");
        let socket = dir.join("lbd.sock");
        let mut cfg = format!(
            "[dataplane]\ninterfaces = [\"eth0\"]\nxdp_mode = \"driver\"\npin_dir = \"{}\"\n\n\
             [api]\nsocket = \"{}\"\nlisten = \"10.77.0.2:9100\"\ntoken_file = \"{}\"\nstate_file = \"{}\"\n{}\n\
             [health]\nkind = \"http\"\npath = \"/\"\ninterval_ms = {interval_ms}\ntimeout_ms = {interval_ms}\nrise = {RISE}\nfall = {FALL}\n{}\n\
             [sweep]\ninterval_ms = 500\n\n\
             [[vips]]\nname = \"web\"\naddress = \"{vip}\"\nport = 80\n{}",
            pins.display(),
            socket.display(),
            dir.join("token").display(),
            dir.join("lbd-state.json").display(),
            o.api_extra,
            o.health_extra,
            o.web_extra,
        );
        for i in 1..=backends {
            cfg.push_str(&format!(
                "\n[[vips.backends]]\naddress = \"10.77.0.{}\"\nweight = 100\n",
                10 + i
            ));
        }
        cfg.push('\n');
        cfg.push_str(o.tail);
        let config = dir.join("lbd.toml");
        std::fs::write(&config, cfg).expect("config");
        let mut me = Self {
            lab,
            config,
            socket,
            lbd: None,
            servers,
            log_json: o.log_json,
            _peer: peer,
        };
        me.start_lbd();
        me.wait_healthy(o.healthy.unwrap_or(backends as usize));
        me
    }

    pub fn start_lbd(&mut self) {
        let lb = self.lab.host("lb1").expect("lb1");
        let lbd = tests::bins::workspace_bin("lbd");
        let mut args = vec![
            lbd.to_str().expect("utf-8 path"),
            "--config",
            self.config.to_str().expect("utf-8 path"),
        ];
        if self.log_json {
            args.push("--log-json");
        }
        let mut p = lb.spawn("lbd", args).expect("spawn lbd");
        let sock = self.socket.clone();
        p.wait_for("lbd API socket", Duration::from_secs(20), |_| {
            UnixStream::connect(&sock).is_ok()
        })
        .unwrap_or_else(|e| panic!("lbd did not come up: {e}\n{}", p.log()));
        self.lbd = Some(p);
    }

    /// The real `lbctl` over the unix socket: (success, stdout and stderr).
    pub fn lbctl(&self, args: &[&str]) -> (bool, String) {
        let out = self.lbctl_output(args);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// One API call over the unix socket: (status, body).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let mut s = UnixStream::connect(&self.socket).expect("connect to lbd");
        http(&mut s, method, path, body, None)
    }

    /// The API's view of backend `addr` of VIP `vip` (`Null` when it is not there).
    pub fn backend_view(&self, vip: &str, addr: &str) -> serde_json::Value {
        let (st, list) = self.api("GET", &format!("/v1/vips/{vip}/backends"), None);
        assert_eq!(st, 200, "{list}");
        list.as_array()
            .and_then(|a| a.iter().find(|b| b["address"] == addr))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn wait_healthy(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, h) = self.api("GET", "/v1/health", None);
            let healthy = h
                .as_array()
                .map(|a| a.iter().filter(|b| b["health"] == "healthy").count())
                .unwrap_or(0);
            if healthy == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "backends not healthy in time: {h}\nlbd log:\n{}",
                self.lbd_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs the real lbctl against this lab's lbd (its unix socket): its exit status and
    /// stdout and stderr apart.
    pub fn lbctl_output(&self, args: &[&str]) -> std::process::Output {
        self.lbctl_command(args)
            .output()
            .expect("run lbctl (built by `cargo xtask test control-plane`)")
    }

    /// The lbctl command line for `args`, to spawn (e.g. a capture running beside traffic).
    pub fn lbctl_command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(tests::bins::workspace_bin("lbctl"));
        c.arg("--socket").arg(&self.socket).args(args);
        c
    }

    pub fn lbd_log(&self) -> String {
        self.lbd.as_ref().map(|p| p.log()).unwrap_or_default()
    }
}

/// One HTTP/1.1 request with a JSON body (or none), `Connection: close`.
pub fn request_text(method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> String {
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: lbd\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Minimal HTTP/1.1 over any stream, `Connection: close`.
pub fn http<S: Read + Write>(
    s: &mut S,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    s.write_all(request_text(method, path, body, token).as_bytes())
        .expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    (
        status,
        serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
    )
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// From the client: opens a new connection to the VIP, sends one request, returns the
/// backend's name (or the error).
pub fn get_once(timeout: Duration) -> Result<String, String> {
    let addr = SocketAddr::new(IpAddr::V4(VIP), 80);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    request(&mut s)
}

/// One request on an open connection.
pub fn request(s: &mut TcpStream) -> Result<String, String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return Ok(body[..len].to_string());
            }
        }
    }
}
