//! The fixture: the real object loaded into the kernel, maps filled through the same
//! `Programmer` the control plane uses, packets run through BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use lb_common::{Algorithm, ForwardMode, IPPROTO_TCP, Settings};
use lb_dataplane::maglev::TableSize;
use lb_dataplane::packet::Frame;
use lb_dataplane::{
    BackendSpec, BackendState, Dataplane, LoadOptions, Programmer, RunOutput, VipSpec, XdpAction,
};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The MAC the fixture gives a backend: 02:be:<last four bytes of its address>.
pub fn mac_of(addr: IpAddr) -> [u8; 6] {
    let o = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let n = o.len();
    [0x02, 0xbe, o[n - 4], o[n - 3], o[n - 2], o[n - 1]]
}

pub fn backend(addr: &str, weight: u32) -> BackendSpec {
    let a = ip(addr);
    BackendSpec {
        addr: a,
        mac: mac_of(a),
        weight,
        state: BackendState::Active,
    }
}

pub fn vip(
    name: &str,
    addr: &str,
    port: u16,
    algorithm: Algorithm,
    mode: ForwardMode,
    backends: Vec<BackendSpec>,
) -> VipSpec {
    VipSpec {
        name: name.into(),
        addr: ip(addr),
        port,
        proto: IPPROTO_TCP,
        algorithm,
        mode,
        table_size: TableSize::DEFAULT,
        backends,
        second_chance: Default::default(),
    }
}

pub const IPIP_SRC_V4: &str = "10.77.0.2";
pub const IPIP_SRC_V6: &str = "fd77::2";

pub struct Fixture {
    pub dp: Dataplane,
    pub prog: Programmer,
}

/// Fails (never skips) when the test cannot use BPF.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the data-plane tests load XDP programs: run them as root (`sudo cargo xtask test dataplane`)"
    );
}

impl Fixture {
    pub fn new(vips: &[VipSpec]) -> Self {
        Self::with_options(
            vips,
            LoadOptions {
                decap: true,
                conn_table_size: 65536,
                ..LoadOptions::default()
            },
        )
    }

    pub fn with_options(vips: &[VipSpec], opts: LoadOptions) -> Self {
        require_root();
        let mut dp =
            Dataplane::load(opts).expect("load the XDP object (did `cargo xtask build-ebpf` run?)");
        let mut maps = dp.take_maps().expect("maps");
        maps.set_settings(&base_settings()).expect("settings");
        let mut prog = Programmer::new(maps);
        prog.apply(vips).expect("program the maps");
        Self { dp, prog }
    }

    pub fn run(&self, packet: &[u8]) -> RunOutput {
        self.dp
            .run(lb_common::names::PROG_BALANCER, packet)
            .expect("BPF_PROG_TEST_RUN")
    }

    pub fn run_frame(&self, f: &Frame) -> RunOutput {
        self.run(&f.build())
    }

    pub fn decap(&self, packet: &[u8]) -> RunOutput {
        self.dp
            .run(lb_common::names::PROG_DECAP, packet)
            .expect("BPF_PROG_TEST_RUN (decap)")
    }

    /// The backend address a forwarded frame went to, from its destination MAC.
    pub fn backend_of(&self, out: &RunOutput, candidates: &[IpAddr]) -> IpAddr {
        assert_eq!(out.action, XdpAction::Tx, "expected a forwarded packet");
        let mac: [u8; 6] = out.packet[0..6].try_into().expect("6 bytes");
        *candidates
            .iter()
            .find(|a| mac_of(**a) == mac)
            .unwrap_or_else(|| panic!("destination MAC {mac:02x?} is no backend's"))
    }

    pub fn reason(&self, r: lb_common::Reason) -> u64 {
        self.prog.maps().reason(r).expect("read REASONS")
    }
}

/// Pins the calling thread to CPU 0, so per-CPU state (the round-robin cursor) is one sequence.
pub fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; we pass its real size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity");
    }
}

impl Fixture {
    /// The backend the VIP's active table holds at `hash % len` (Maglev and ip-hash).
    pub fn table_choice(&self, vip_name: &str, hash: u32) -> IpAddr {
        let meta = self.prog.vip_meta(vip_name).expect("vip is programmed");
        let pos = hash % meta.table_len;
        let id = self
            .prog
            .maps()
            .table_entry(meta.id, meta.slot, pos)
            .expect("table entry");
        self.prog
            .backend_ids()
            .find(|(v, _, bid)| *v == vip_name && *bid == id)
            .map(|(_, addr, _)| addr)
            .unwrap_or_else(|| panic!("table entry {id} names no backend of {vip_name}"))
    }
}

/// The settings every fixture starts with: the IPIP source addresses, no backend MTU, the
/// flood guard off.
fn base_settings() -> Settings {
    Settings {
        ipip_src_v4: lb_common::user::addr_words(ip(IPIP_SRC_V4))[0],
        ipip_src_v6: lb_common::user::addr_words(ip(IPIP_SRC_V6)),
        ..Default::default()
    }
}

impl Fixture {
    /// Rewrites the settings with the flood guard's limit (0: off), the rest as `with_options`.
    pub fn set_flood_limit(&mut self, max_new_flows_per_cpu: u32) {
        self.set_settings(Settings {
            max_new_flows_per_cpu,
            ..base_settings()
        });
    }

    /// Rewrites the settings with a backend MTU (0: unchecked), the rest as `with_options`.
    pub fn set_backend_mtu(&mut self, backend_mtu: u32) {
        self.set_settings(Settings {
            backend_mtu,
            ..base_settings()
        });
    }

    fn set_settings(&mut self, s: Settings) {
        self.prog.maps_mut().set_settings(&s).expect("settings");
    }
}
