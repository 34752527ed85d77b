//! The XDP data plane seen from userspace: the object (embedded at build time), loading,
//! pinning and attaching its programs, running them on crafted packets, the maps and the
//! programmer that keeps them equal to a model, the Maglev and weighted round-robin tables, a
//! packet builder and describer, pcap and pcapng files, the replay tool built on all of them,
//! and the capture inside the data plane.

mod batch;
pub mod capture;
pub mod forwarding;
mod mac;
pub mod maglev;
mod maps;
pub mod object;
pub mod packet;
pub mod pcap;
pub mod pcapng;
pub mod pin;
mod programmer;
pub mod replay;
pub mod slots;
mod snapshot;
pub mod trace;
pub mod wrr;

pub use mac::MacAddr;
pub use maps::{ConnTable, Maps, TrafficTotals};
pub use programmer::{ApplyReport, BackendSpec, BackendState, Programmer, SecondChance, VipSpec};
pub use snapshot::{BackendRecord, ProgrammerState, VipRecord};

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::names;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Object(#[from] object::ObjectError),
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("the benchmark harness restores at most {max} bytes, the packet has {0}", max = lb_common::HARNESS_MAX_PACKET)]
    HarnessPacketTooLong(usize),
    #[error("pins under {path}: {reason}")]
    Pin { path: PathBuf, reason: String },
    #[error("test run: output buffer too small or program error: {0}")]
    TestRun(ProgramError),
    #[error("the capture program is not loaded (Dataplane::enable_capture)")]
    CaptureProgram,
}

/// The action an XDP program returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Unknown(u32),
}

impl XdpAction {
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Unknown(other),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aborted => "ABORTED",
            Self::Drop => "DROP",
            Self::Pass => "PASS",
            Self::Tx => "TX",
            Self::Redirect => "REDIRECT",
            Self::Unknown(_) => "UNKNOWN",
        }
    }
}

/// Result of running a program once on one packet.
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub action: XdpAction,
    pub packet: Vec<u8>,
}

/// Which programs to load. Loading only what is used keeps test start-up short.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub balancer: bool,
    pub decap: bool,
    pub pass: bool,
    pub bench: bool,
    /// Connection-table size (LRU entries).
    pub conn_table_size: u32,
    /// Pin the maps under this bpffs directory (and reuse pins found there), so a restarted
    /// daemon adopts the running state instead of starting empty.
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            balancer: true,
            decap: false,
            pass: false,
            bench: false,
            conn_table_size: lb_common::CONN_TABLE_SIZE,
            pin_dir: None,
        }
    }
}

impl LoadOptions {
    pub fn all() -> Self {
        Self {
            decap: true,
            pass: true,
            bench: true,
            ..Self::default()
        }
    }
}

/// A loaded data plane: the object, its programs and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    loaded: Vec<&'static str>,
}

impl Dataplane {
    pub fn load(opts: LoadOptions) -> Result<Self, DataplaneError> {
        let bytes = object::bytes()?;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(names::MAP_CONNS, opts.conn_table_size);
        let pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => pin::map_paths(dir),
            None => Vec::new(),
        };
        if let Some(dir) = &opts.pin_dir {
            pin::prepare(dir)?;
        }
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(&bytes)?;
        let mut dp = Self {
            ebpf,
            loaded: Vec::new(),
        };
        let wanted = [
            (opts.balancer, names::PROG_BALANCER),
            (opts.decap, names::PROG_DECAP),
            (opts.pass, names::PROG_PASS),
            (opts.bench, names::PROG_FLOOR),
            (opts.bench, names::PROG_HARNESS),
            (opts.bench, names::PROG_BALANCER_UNHOOKED),
        ];
        for (want, name) in wanted {
            if want {
                dp.xdp_mut(name)?
                    .load()
                    .map_err(|source| DataplaneError::Program { name, source })?;
                dp.loaded.push(name);
            }
        }
        Ok(dp)
    }

    /// Loads only `xdp_pass` and attaches it (driver mode) to `iface` in the calling thread's
    /// network namespace. XDP_TX on a veth needs a program on its peer: labs and tests put this
    /// one on the bridge-side end of a balancer's veth. It stays attached while the returned
    /// value lives.
    pub fn attach_pass(iface: &str) -> Result<Self, DataplaneError> {
        let mut dp = Self::load(LoadOptions {
            balancer: false,
            pass: true,
            conn_table_size: 1024,
            ..LoadOptions::default()
        })?;
        dp.attach(names::PROG_PASS, iface, XdpMode::Driver)?;
        Ok(dp)
    }

    fn xdp_mut(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?;
        prog.try_into()
            .map_err(|source| DataplaneError::Program { name, source })
    }

    pub fn xdp(&self, name: &'static str) -> Result<&Xdp, DataplaneError> {
        let prog = self
            .ebpf
            .program(name)
            .ok_or(DataplaneError::MissingProgram(name))?;
        prog.try_into()
            .map_err(|source| DataplaneError::Program { name, source })
    }

    /// Takes the maps out of the object (call once).
    pub fn take_maps(&mut self) -> Result<Maps, DataplaneError> {
        Maps::take(&mut self.ebpf)
    }

    /// Takes the capture's maps out of the object (call once: the ring has one reader).
    pub fn take_capture(&mut self) -> Result<capture::CaptureMaps, DataplaneError> {
        capture::CaptureMaps::take(&mut self.ebpf)
    }

    /// Loads `xdp_balancer_captured` (once; the verifier takes about as long as for the
    /// balancer itself, which is why it waits for the first capture) and makes it the
    /// balancer's tail call while a capture runs.
    pub fn enable_capture(
        &mut self,
        maps: &mut capture::CaptureMaps,
    ) -> Result<(), DataplaneError> {
        let name = names::PROG_BALANCER_CAPTURED;
        if !self.loaded.contains(&name) {
            self.xdp_mut(name)?
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
            self.loaded.push(name);
        }
        let fd = self
            .xdp(name)?
            .fd()
            .map_err(|source| DataplaneError::Program { name, source })?;
        maps.set_program(fd)
    }

    /// Attaches a loaded program to an interface.
    pub fn attach(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: XdpMode,
    ) -> Result<XdpLinkId, DataplaneError> {
        self.xdp_mut(name)?
            .attach(iface, mode)
            .map_err(|source| DataplaneError::Program { name, source })
    }

    /// Runs `name` once on `packet` in the kernel (BPF_PROG_TEST_RUN).
    pub fn run(&self, name: &'static str, packet: &[u8]) -> Result<RunOutput, DataplaneError> {
        Ok(test_run(self.xdp(name)?, packet, 1)?.0)
    }

    /// Runs `name` `repeat` times in the kernel; returns the action of the last run, the
    /// output, and the kernel's mean duration per run.
    pub fn run_repeat(
        &self,
        name: &'static str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(RunOutput, std::time::Duration), DataplaneError> {
        test_run(self.xdp(name)?, packet, repeat)
    }

    /// Points the benchmark harness at `target` and at the packet it restores before each run.
    /// With `vary_offset`, the 4 bytes there change on every run (a new flow each time).
    pub fn arm_harness(
        &self,
        maps: &mut Maps,
        target: &'static str,
        packet: &[u8],
        vary_offset: Option<u32>,
    ) -> Result<(), DataplaneError> {
        self.arm_harness_with(maps, self.xdp(target)?, packet, vary_offset)
    }

    /// Like [`Dataplane::arm_harness`], for any loaded XDP program (e.g. another balancer
    /// opened with [`PinnedXdp::open`], measured under exactly the same conditions).
    pub fn arm_harness_with(
        &self,
        maps: &mut Maps,
        target: &Xdp,
        packet: &[u8],
        vary_offset: Option<u32>,
    ) -> Result<(), DataplaneError> {
        if packet.len() > lb_common::HARNESS_MAX_PACKET {
            return Err(DataplaneError::HarnessPacketTooLong(packet.len()));
        }
        maps.set_harness_packet(packet, vary_offset.unwrap_or(0))?;
        let fd = target.fd().map_err(|source| DataplaneError::Program {
            name: "harness target",
            source,
        })?;
        maps.set_harness_target(fd)
    }

    /// Attaches `name` to `iface` through a pinned BPF link: if a link is pinned for the
    /// interface (a previous daemon's), its program is replaced atomically; otherwise a new
    /// link is created and pinned. Either way forwarding outlives this process.
    pub fn attach_pinned(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: pin::AttachMode,
        pin_dir: &std::path::Path,
        record_dir: &std::path::Path,
    ) -> Result<pin::Attached, DataplaneError> {
        let xdp = self.xdp_mut(name)?;
        pin::attach(xdp, name, iface, mode, pin_dir, record_dir)
    }

    pub fn loaded_programs(&self) -> &[&'static str] {
        &self.loaded
    }
}

/// Runs `prog` `repeat` times on `packet` (BPF_PROG_TEST_RUN): the last run's action and
/// output, and the kernel's mean duration per run.
pub fn test_run(
    prog: &Xdp,
    packet: &[u8],
    repeat: u32,
) -> Result<(RunOutput, std::time::Duration), DataplaneError> {
    // Encapsulation adds at most 40 bytes; leave room for it.
    let mut out = vec![0u8; packet.len() + 256];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .map_err(DataplaneError::TestRun)?;
    out.truncate(res.data_size_out as usize);
    Ok((
        RunOutput {
            action: XdpAction::from_code(res.return_value),
            packet: out,
        },
        res.duration,
    ))
}

/// An XDP program loaded by someone else and pinned in a bpffs (for benchmarks: another
/// balancer measured through the same harness, with the same packets, in the same run).
pub struct PinnedXdp {
    xdp: Xdp,
}

impl PinnedXdp {
    pub fn open(path: &std::path::Path) -> Result<Self, DataplaneError> {
        let xdp =
            Xdp::from_pin(path, aya_obj::programs::XdpAttachType::Interface).map_err(|source| {
                DataplaneError::Pin {
                    path: path.to_path_buf(),
                    reason: format!("opening a pinned XDP program: {source}"),
                }
            })?;
        Ok(Self { xdp })
    }

    pub fn xdp(&self) -> &Xdp {
        &self.xdp
    }

    pub fn run(&self, packet: &[u8]) -> Result<RunOutput, DataplaneError> {
        Ok(test_run(&self.xdp, packet, 1)?.0)
    }

    pub fn run_repeat(
        &self,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(RunOutput, std::time::Duration), DataplaneError> {
        test_run(&self.xdp, packet, repeat)
    }
}
