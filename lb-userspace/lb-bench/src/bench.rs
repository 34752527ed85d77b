//! One measurement: a program on a packet, directly or through the restore harness, checked.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use lb_common::{Algorithm, DEFAULT_MAX_NEW_FLOWS_PER_CPU, ForwardMode, Reason, Settings, names};
use lb_dataplane::capture::{CaptureFilter, CaptureMaps};
use lb_dataplane::{Dataplane, LoadOptions, Maps, PinnedXdp, Programmer, XdpAction};

use crate::cases::{Capture, Case, Kind, ip, vip};

pub struct Bench {
    pub dp: Dataplane,
    prog: Programmer,
    capture: CaptureMaps,
    capturing: Capture,
    repeat: u32,
    pub katran: Option<PinnedXdp>,
    pub katran_default: Option<PinnedXdp>,
    settings: Settings,
    /// Flood-guard cases: flows forwarded without an entry, and all flows (ours).
    pub unpinned: (u64, u64),
}

/// The program a measurement runs.
#[derive(Clone, Copy)]
pub enum Target {
    Ours(&'static str),
    /// `--katran`: a build that inserts every new flow.
    Katran,
    /// `--katran-default`: Katran's default build (its flood guard skips the insert).
    KatranDefault,
}

impl Bench {
    pub fn setup(
        repeat: u32,
        conn_table_size: u32,
        katran: Option<&std::path::Path>,
        katran_default: Option<&std::path::Path>,
    ) -> Result<Self> {
        let open = |p: Option<&std::path::Path>, opt: &str| {
            p.map(|p| PinnedXdp::open(p).with_context(|| format!("{opt} {}", p.display())))
                .transpose()
        };
        let katran = open(katran, "--katran")?;
        let katran_default = open(katran_default, "--katran-default")?;
        let mut dp = Dataplane::load(LoadOptions {
            bench: true,
            decap: true,
            conn_table_size,
            ..LoadOptions::default()
        })
        .context("loading the data plane (run as root after `cargo xtask build-ebpf`)")?;
        let mut maps = dp.take_maps()?;
        let mut capture = dp.take_capture()?;
        dp.enable_capture(&mut capture)?;
        // The flood guard is off except in the cases that measure it (`set_guard`).
        let settings = Settings {
            ipip_src_v4: lb_common::user::addr_words(ip("10.77.0.2"))[0],
            ipip_src_v6: lb_common::user::addr_words(ip("fd77::2")),
            backend_mtu: 0,
            max_new_flows_per_cpu: 0,
            ..Default::default()
        };
        maps.set_settings(&settings)?;
        maps.add_decap_address(ip(crate::decap::HERE))?;
        let mut prog = Programmer::new(maps);
        prog.apply(&[
            vip(
                "maglev",
                "10.77.0.100",
                Algorithm::Maglev,
                ForwardMode::DsrL2,
            ),
            vip(
                "iphash",
                "10.77.0.101",
                Algorithm::IpHash,
                ForwardMode::DsrL2,
            ),
            vip(
                "wrr",
                "10.77.0.102",
                Algorithm::WeightedRoundRobin,
                ForwardMode::DsrL2,
            ),
            vip(
                "lc",
                "10.77.0.103",
                Algorithm::LeastConnections,
                ForwardMode::DsrL2,
            ),
            vip("ipip", "10.77.0.104", Algorithm::Maglev, ForwardMode::Ipip),
            vip("ipip6", "fd77::100", Algorithm::Maglev, ForwardMode::Ipip),
        ])?;
        Ok(Self {
            dp,
            prog,
            capture,
            capturing: Capture::Off,
            repeat,
            katran,
            katran_default,
            settings,
            unpinned: (0, 0),
        })
    }

    /// Our flood guard at its default limit (`on`) or off.
    fn set_guard(&mut self, on: bool) -> Result<()> {
        let limit = if on { DEFAULT_MAX_NEW_FLOWS_PER_CPU } else { 0 };
        if self.settings.max_new_flows_per_cpu != limit {
            self.settings.max_new_flows_per_cpu = limit;
            let s = self.settings;
            self.maps().set_settings(&s)?;
        }
        Ok(())
    }

    /// The capture the case runs under: off, on for another VIP, or on and sampling its VIP.
    fn set_capture(&mut self, case: &Case) -> Result<()> {
        if self.capturing == case.capture && case.capture == Capture::Off {
            return Ok(());
        }
        match case.capture {
            Capture::Off => self.capture.stop()?,
            Capture::FilteredOut | Capture::Sampled => {
                let vip = case.vip.context("a capture case has a VIP")?;
                let other = if vip == "maglev" { "iphash" } else { "maglev" };
                let (name, every) = if case.capture == Capture::Sampled {
                    (vip, 100)
                } else {
                    (other, 1)
                };
                // A fresh start each round: the ring is emptied, so nothing is lost to it.
                self.capture.start(&CaptureFilter {
                    vip_id: Some(self.prog.vip_id(name).context("vip programmed")?),
                    sample_every: every,
                    snap_len: 128,
                    ..Default::default()
                })?;
            }
        }
        self.capturing = case.capture;
        Ok(())
    }

    /// Records the capture of a `Sampled` case wrote, and the ones its ring lost.
    pub fn captured(&mut self) -> Result<(u64, u64)> {
        let c = self.capture.counters()?;
        Ok((c.written, c.lost))
    }

    fn maps(&mut self) -> &mut Maps {
        self.prog.maps_mut()
    }

    fn katran(&self, target: Target) -> Result<&PinnedXdp> {
        match target {
            Target::KatranDefault => self
                .katran_default
                .as_ref()
                .context("--katran-default not given"),
            _ => self.katran.as_ref().context("--katran not given"),
        }
    }

    fn run_once(&self, target: Target, packet: &[u8]) -> Result<lb_dataplane::RunOutput> {
        Ok(match target {
            Target::Ours(name) => self.dp.run(name, packet)?,
            Target::Katran | Target::KatranDefault => self.katran(target)?.run(packet)?,
        })
    }

    /// Mean ns per run of `target` on `packet`, checked against `expect`.
    pub fn direct(&self, target: Target, packet: &[u8], expect: XdpAction) -> Result<f64> {
        let (out, d) = match target {
            Target::Ours(name) => self.dp.run_repeat(name, packet, self.repeat)?,
            Target::Katran | Target::KatranDefault => {
                self.katran(target)?.run_repeat(packet, self.repeat)?
            }
        };
        ensure!(
            out.action == expect,
            "{}: action {:?}, expected {expect:?}",
            target.name(),
            out.action
        );
        Ok(ns(d))
    }

    fn arm(&mut self, target: Target, packet: &[u8], vary: Option<u32>) -> Result<()> {
        let maps = self.prog.maps_mut();
        match target {
            Target::Ours(name) => self.dp.arm_harness(maps, name, packet, vary)?,
            Target::Katran | Target::KatranDefault => {
                let k = match target {
                    Target::KatranDefault => self.katran_default.as_ref(),
                    _ => self.katran.as_ref(),
                }
                .context("the other balancer's pin was not given")?;
                self.dp.arm_harness_with(maps, k.xdp(), packet, vary)?
            }
        }
        Ok(())
    }

    fn through_harness(
        &mut self,
        target: Target,
        packet: &[u8],
        vary: u32,
        expect: XdpAction,
    ) -> Result<f64> {
        self.arm(target, packet, (vary != 0).then_some(vary))?;
        let (out, d) = self
            .dp
            .run_repeat(names::PROG_HARNESS, packet, self.repeat)?;
        ensure!(
            out.action == expect,
            "harness -> {}: action {:?}, expected {expect:?}",
            target.name(),
            out.action
        );
        Ok(ns(d))
    }

    fn new_conns(&mut self, vip: &str) -> Result<u64> {
        let id = self.prog.vip_id(vip).context("vip programmed")?;
        Ok(self.maps().vip_totals(id)?.new_conns)
    }

    /// One round of one case on `target`: its cost with the harness's own cost taken off.
    pub fn measure(&mut self, case: &Case, target: Target, floor: f64) -> Result<f64> {
        self.set_guard(case.guard)?;
        self.set_capture(case)?;
        match case.kind {
            Kind::Floor => Ok(floor),
            Kind::Direct => self.direct(target, &case.packet, case.expect),
            Kind::Decap => {
                let harness = self.through_harness(
                    Target::Ours(names::PROG_FLOOR),
                    &case.packet,
                    0,
                    XdpAction::Tx,
                )? - floor;
                let total = self.through_harness(target, &case.packet, 0, case.expect)?;
                Ok((total - harness).max(0.0))
            }
            Kind::Hit | Kind::NewFlow => {
                let vip = case.vip.context("case has a VIP")?;
                if case.kind == Kind::Hit {
                    // New-flow cases fill the LRU and evict everything: re-establish the flow.
                    let out = self.run_once(target, &case.packet)?;
                    ensure!(
                        out.action == case.expect,
                        "{} ({}): establishing the flow gave {:?}",
                        case.name,
                        target.name(),
                        out.action
                    );
                }
                let harness = self.through_harness(
                    Target::Ours(names::PROG_FLOOR),
                    &case.packet,
                    case.vary_offset,
                    XdpAction::Tx,
                )? - floor;
                let before = self.new_conns(vip)?;
                let unpinned_before = self.maps().reason(Reason::TxForwardUnpinned)?;
                let total =
                    self.through_harness(target, &case.packet, case.vary_offset, case.expect)?;
                let unpinned = self.maps().reason(Reason::TxForwardUnpinned)? - unpinned_before;
                if let Target::Ours(_) = target {
                    ensure!(
                        case.guard || unpinned == 0,
                        "{}: {unpinned} flows not pinned with the flood guard off",
                        case.name
                    );
                    if case.guard {
                        self.unpinned.0 += unpinned;
                        self.unpinned.1 += self.repeat as u64;
                    }
                }
                // Our counters check our program; the other balancer's counters are its own
                // (its output is checked in `check_harness_output`).
                if let Target::Ours(_) = target {
                    let created = self.new_conns(vip)? - before;
                    let want = if case.kind == Kind::NewFlow {
                        self.repeat as u64
                    } else {
                        0
                    };
                    if created != want {
                        bail!(
                            "{}: {created} new connections in {} runs, expected {want}",
                            case.name,
                            self.repeat
                        );
                    }
                }
                if case.capture == Capture::Sampled {
                    let (written, lost) = self.captured()?;
                    let want = self.repeat as u64 / 100;
                    ensure!(
                        lost == 0 && written.abs_diff(want) <= 1,
                        "{}: {written} records written ({lost} lost) for {} runs, expected {want}",
                        case.name,
                        self.repeat
                    );
                }
                Ok((total - harness).max(0.0))
            }
        }
    }

    /// The harness must hand the program under test exactly the original packet: its output
    /// after one run equals the output of a direct run on the original packet. Forwarded
    /// packets to the `ipip` VIP must carry an outer IPv4 header (protocol 4) to a backend.
    pub fn check_harness_output(&mut self, case: &Case, target: Target) -> Result<()> {
        if case.kind == Kind::Floor || case.kind == Kind::Direct {
            return Ok(());
        }
        self.set_capture(case)?;
        let direct = self.run_once(target, &case.packet)?;
        ensure!(
            direct.action == case.expect,
            "{} ({}): direct run gave {:?}",
            case.name,
            target.name(),
            direct.action
        );
        if case.vip == Some("ipip") {
            let p = &direct.packet;
            ensure!(
                p.len() == case.packet.len() + 20 && p[14] == 0x45 && p[23] == 4,
                "{} ({}): output is not IPIP",
                case.name,
                target.name()
            );
            ensure!(
                p[30..33] == [10, 77, 0] && (11..14).contains(&p[33]),
                "{} ({}): outer destination {:?} is not a backend",
                case.name,
                target.name(),
                &p[30..34]
            );
        }
        if !matches!(case.kind, Kind::Hit | Kind::Decap) {
            return Ok(());
        }
        self.arm(target, &case.packet, None)?;
        let via = self.dp.run(names::PROG_HARNESS, &case.packet)?;
        ensure!(
            via.packet == direct.packet,
            "{} ({}): harness output differs from a direct run",
            case.name,
            target.name()
        );
        Ok(())
    }
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Ours(name) => name,
            Target::Katran => "katran",
            Target::KatranDefault => "katran (default build)",
        }
    }
}

pub fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}
