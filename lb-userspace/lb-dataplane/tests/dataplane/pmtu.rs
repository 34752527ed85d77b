//! Path-MTU discovery through the `ipip` tunnel, with real kernels on both ends: a client in
//! its own namespace uploads over TCP to a VIP whose backend path has no room for the
//! tunnel's header on full-size segments. The balancer answers those with ICMP
//! "fragmentation needed" / "packet too big", the client's kernel lowers its path MTU to the
//! VIP and the upload completes. Without the answer the full-size segments would vanish and
//! the upload would stall.

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use aya::programs::XdpMode;
use lb_common::{Algorithm, ForwardMode, Reason, Settings, names};
use lb_dataplane::{
    BackendSpec, BackendState, Dataplane, DataplaneError, LoadOptions, Programmer, VipSpec,
};
use tests::{netns::Lab, topology::Topology};

use crate::fixture::{ip, require_root};

const VIP4: &str = "10.77.0.100";
const VIP6: &str = "fd77::100";
const PORT: u16 = 80;
/// The path towards the backends carries what the clients' links carry: 1500 bytes, so a
/// full-size client segment plus the outer header does not fit.
const BACKEND_MTU: u32 = 1500;
const UPLOAD: usize = 256 * 1024;

/// The lab: client, lb1 (balancer, XDP attached in driver mode), be1 (decap, VIP on `lo`,
/// a server that answers with the number of bytes it read).
struct PmtuLab {
    lab: Lab,
    _balancer: Dataplane,
    _decap: Dataplane,
    _bridge_port: Dataplane,
    prog: Programmer,
}

fn vip(name: &str, addr: &str, backend: IpAddr, mac: [u8; 6]) -> VipSpec {
    VipSpec {
        name: name.into(),
        addr: ip(addr),
        port: PORT,
        proto: lb_common::IPPROTO_TCP,
        algorithm: Algorithm::Maglev,
        mode: ForwardMode::Ipip,
        table_size: lb_dataplane::maglev::TableSize::DEFAULT,
        backends: vec![BackendSpec {
            addr: backend,
            mac,
            weight: 1,
            state: BackendState::Active,
        }],
        second_chance: Default::default(),
    }
}

impl PmtuLab {
    fn new() -> Self {
        require_root();
        let topo = Topology::small(1).expect("topology");
        let lab = Lab::create(&topo).expect("lab");
        let (lb, be) = (lab.host("lb1").expect("lb1"), lab.host("be1").expect("be1"));
        let be_mac = be.mac().expect("be1 MAC").0;
        let (be4, be6) = (IpAddr::V4(be.ipv4()), IpAddr::V6(be.ipv6()));

        // The backend: VIPs on lo, no ARP answers for them, decap on eth0.
        for (k, v) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.eth0.arp_ignore", "1"),
            ("net.ipv4.conf.eth0.arp_announce", "2"),
        ] {
            be.sysctl(k, v).expect("sysctl");
        }
        add_vips(be, "lo", &[]);
        let decap = be
            .in_netns(|| {
                let mut dp = Dataplane::load(LoadOptions {
                    balancer: false,
                    decap: true,
                    conn_table_size: 1024,
                    ..LoadOptions::default()
                })?;
                let mut maps = dp.take_maps()?;
                maps.add_decap_address(be4)?;
                maps.add_decap_address(be6)?;
                dp.attach(names::PROG_DECAP, "eth0", XdpMode::Driver)?;
                Ok::<_, DataplaneError>(dp)
            })
            .expect("be1 namespace")
            .expect("attach xdp_decap on be1");

        // The balancer owns the VIPs on its segment (answers ARP/ND for them).
        // No duplicate address detection: the address must answer neighbour solicitations now.
        add_vips(lb, "eth0", &["nodad"]);
        let (lb4, lb6) = (IpAddr::V4(lb.ipv4()), IpAddr::V6(lb.ipv6()));
        let (balancer, prog) = lb
            .in_netns(|| -> Result<(Dataplane, Programmer), String> {
                let mut dp = Dataplane::load(LoadOptions {
                    conn_table_size: 4096,
                    ..LoadOptions::default()
                })
                .map_err(|e| e.to_string())?;
                let mut maps = dp.take_maps().map_err(|e| e.to_string())?;
                maps.set_settings(&Settings {
                    ipip_src_v4: lb_common::user::addr_words(lb4)[0],
                    ipip_src_v6: lb_common::user::addr_words(lb6),
                    backend_mtu: BACKEND_MTU,
                    ..Default::default()
                })
                .map_err(|e| e.to_string())?;
                let mut prog = Programmer::new(maps);
                prog.apply(&[
                    vip("web", VIP4, be4, be_mac),
                    vip("web6", VIP6, be6, be_mac),
                ])
                .map_err(|e| e.to_string())?;
                dp.attach(names::PROG_BALANCER, "eth0", XdpMode::Driver)
                    .map_err(|e| e.to_string())?;
                Ok((dp, prog))
            })
            .expect("lb1 namespace")
            .expect("load, program and attach xdp_balancer on lb1");
        let port = lab.bridge_port_of("lb1").expect("bridge port").to_string();
        let bridge_port =
            tests::setns::in_netns(lab.bridge_ns(), move || Dataplane::attach_pass(&port))
                .expect("bridge namespace")
                .expect("xdp_pass on lb1's bridge port (XDP_TX on veth needs it)");

        // Counts what each connection sends; bounded: it serves the test's few connections
        // and ends with the lab (its namespace goes away).
        be.spawn_thread(|| {
            // One dual-stack listener (net.ipv6.bindv6only is 0): IPv4 arrives v4-mapped.
            let l = TcpListener::bind(("::", PORT)).expect("bind [::]:80 on be1");
            std::thread::spawn(move || {
                for conn in l.incoming().take(16).flatten() {
                    std::thread::spawn(move || count_and_answer(conn));
                }
            });
        })
        .expect("server thread")
        .join()
        .expect("server started");
        Self {
            lab,
            _balancer: balancer,
            _decap: decap,
            _bridge_port: bridge_port,
            prog,
        }
    }

    fn upload(&self, vip: &str) -> Result<usize, String> {
        let addr = SocketAddr::new(ip(vip), PORT);
        let client = self.lab.host("client").expect("client");
        client
            .in_netns(move || -> Result<usize, String> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                // Generous bounds: PMTU discovery takes one round trip; a stall is the failure.
                s.set_write_timeout(Some(Duration::from_secs(20))).ok();
                s.set_read_timeout(Some(Duration::from_secs(20))).ok();
                s.write_all(&vec![0x5a; UPLOAD])
                    .map_err(|e| format!("upload to {addr}: {e}"))?;
                s.shutdown(Shutdown::Write).ok();
                let mut answer = String::new();
                s.read_to_string(&mut answer)
                    .map_err(|e| format!("answer from {addr} (stalled upload?): {e}"))?;
                answer
                    .trim()
                    .parse()
                    .map_err(|_| format!("answer {answer:?} from {addr}"))
            })
            .expect("client namespace")
    }

    /// The path MTU the client's kernel holds for `vip` (`ip route get`), if it learnt one.
    fn learnt_mtu(&self, vip: &str) -> Option<u32> {
        let client = self.lab.host("client").expect("client");
        let out = client
            .exec(["ip", "route", "get", vip])
            .expect("ip route get");
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "mtu")
            .and_then(|w| w[1].parse().ok())
    }
}

/// Puts both VIPs on `dev` of `host` (`extra` goes after the IPv6 address).
fn add_vips(host: &tests::netns::Host, dev: &str, extra: &[&str]) {
    for (family, addr) in [("-4", format!("{VIP4}/32")), ("-6", format!("{VIP6}/128"))] {
        let mut args = vec!["ip", family, "addr", "add", addr.as_str(), "dev", dev];
        if family == "-6" {
            args.extend_from_slice(extra);
        }
        host.exec(args)
            .unwrap_or_else(|e| panic!("{addr} on {} {dev}: {e}", host.name()));
    }
}

fn count_and_answer(mut conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0usize;
    while let Ok(k) = conn.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += k;
    }
    let _ = conn.write_all(format!("{n}\n").as_bytes());
}

#[test]
fn uploads_through_ipip_learn_the_path_mtu_from_the_balancer() {
    let lab = PmtuLab::new();
    for (vip, overhead) in [(VIP4, 20u32), (VIP6, 40)] {
        let before = lab.prog.maps().reason(Reason::TxTooBig).expect("counter");
        let got = lab.upload(vip).unwrap_or_else(|e| {
            panic!(
                "{vip}: {e}; tx_too_big went {before} -> {}",
                lab.prog.maps().reason(Reason::TxTooBig).unwrap_or(0)
            )
        });
        assert_eq!(got, UPLOAD, "{vip}: every byte arrived");
        let answered = lab.prog.maps().reason(Reason::TxTooBig).expect("counter") - before;
        assert!(
            answered >= 1,
            "{vip}: the balancer answered the full-size segments"
        );
        assert_eq!(
            lab.learnt_mtu(vip),
            Some(BACKEND_MTU - overhead),
            "{vip}: the client's kernel took the MTU from the balancer's answer"
        );
        // The second upload starts at the learnt MTU: nothing more to answer.
        let again = lab.prog.maps().reason(Reason::TxTooBig).expect("counter");
        assert_eq!(lab.upload(vip), Ok(UPLOAD), "{vip}: second upload");
        assert_eq!(
            lab.prog.maps().reason(Reason::TxTooBig).expect("counter"),
            again,
            "{vip}: no answer needed once the path MTU is known"
        );
    }
}
