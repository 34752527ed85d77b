//! The replay tool: every packet of a pcap through the real XDP program, with a balancer
//! config's maps, one line per packet (action, backend, reason) and the output packets in a
//! pcap that Wireshark opens.

use std::{collections::BTreeMap, fs::File, io::BufReader, io::BufWriter, net::IpAddr, path::Path};

use anyhow::{Context, Result};
use lb_common::{Reason, Settings, names};

use crate::{Dataplane, LoadOptions, MacAddr, Programmer, VipSpec, XdpAction, packet, pcap};

/// What the replay programs into the maps: a balancer's settings and VIPs (as lbd would from
/// its config, see `lb_config::Config::replay_setup`), and a name for every backend MAC.
#[derive(Clone, Debug)]
pub struct ReplaySetup {
    pub conn_table_size: u32,
    pub settings: Settings,
    pub vips: Vec<VipSpec>,
    /// `VIP/address` of the backend each MAC belongs to, for the report.
    pub backend_names: BTreeMap<[u8; 6], String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    pub index: usize,
    pub action: &'static str,
    pub reason: &'static str,
    pub backend: Option<String>,
    pub input: String,
    pub output: Option<String>,
}

/// The MAC used for a backend without a static `mac` in the config: 02:00 + its last 4 bytes.
pub fn placeholder_mac(addr: IpAddr) -> [u8; 6] {
    let o = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let n = o.len();
    [0x02, 0x00, o[n - 4], o[n - 3], o[n - 2], o[n - 1]]
}

pub struct Replay {
    dp: Dataplane,
    prog: Programmer,
    macs: BTreeMap<[u8; 6], String>,
}

impl Replay {
    pub fn new(setup: &ReplaySetup) -> Result<Self> {
        let mut dp = Dataplane::load(LoadOptions {
            conn_table_size: setup.conn_table_size,
            ..LoadOptions::default()
        })
        .context("loading the XDP program (root is required)")?;
        let mut maps = dp.take_maps()?;
        maps.set_settings(&setup.settings)?;
        let mut prog = Programmer::new(maps);
        prog.apply(&setup.vips)?;
        Ok(Self {
            dp,
            prog,
            macs: setup.backend_names.clone(),
        })
    }

    fn reasons(&self) -> Result<Vec<(Reason, u64)>> {
        Ok(self.prog.maps().reasons()?)
    }

    pub fn run(&self, index: usize, frame: &[u8]) -> Result<(Line, Option<Vec<u8>>)> {
        let before = self.reasons()?;
        let out = self.dp.run(names::PROG_BALANCER, frame)?;
        let after = self.reasons()?;
        let reason = before
            .iter()
            .zip(&after)
            .find(|((_, a), (_, b))| b > a)
            .map(|((r, _), _)| r.name())
            .unwrap_or("-");
        let backend = (out.action == XdpAction::Tx)
            .then(|| {
                out.packet
                    .get(0..6)
                    .and_then(|m| <[u8; 6]>::try_from(m).ok())
            })
            .flatten()
            .map(|mac| {
                self.macs
                    .get(&mac)
                    .cloned()
                    .unwrap_or_else(|| format!("to {}", MacAddr(mac)))
            });
        let emitted = matches!(out.action, XdpAction::Tx | XdpAction::Pass);
        let line = Line {
            index,
            action: out.action.name(),
            reason,
            backend,
            input: packet::describe(frame),
            output: emitted.then(|| packet::describe(&out.packet)),
        };
        Ok((line, emitted.then_some(out.packet)))
    }
}

/// Replays `input`, prints a line per packet (or JSON lines), writes outputs to `out`.
pub fn replay_file(
    setup: &ReplaySetup,
    input: &Path,
    out: Option<&Path>,
    json: bool,
) -> Result<()> {
    let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let records = pcap::read(BufReader::new(file))?;
    let replay = Replay::new(setup)?;
    let mut outputs = Vec::new();
    if !json {
        println!(
            "{:>5}  {:<6} {:<16} {:<24} packet",
            "#", "action", "reason", "backend"
        );
    }
    for (i, rec) in records.iter().enumerate() {
        let (line, emitted) = if rec.data.len() < 14 {
            let line = Line {
                index: i + 1,
                action: "SKIP",
                reason: "shorter_than_ethernet",
                backend: None,
                input: packet::describe(&rec.data),
                output: None,
            };
            (line, None)
        } else {
            replay.run(i + 1, &rec.data)?
        };
        if json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            println!(
                "{:>5}  {:<6} {:<16} {:<24} {}{}",
                line.index,
                line.action,
                line.reason,
                line.backend.as_deref().unwrap_or("-"),
                line.input,
                line.output
                    .as_deref()
                    .filter(|o| *o != line.input)
                    .map(|o| format!("  =>  {o}"))
                    .unwrap_or_default()
            );
        }
        if let Some(data) = emitted {
            outputs.push(pcap::Record {
                ts_sec: rec.ts_sec,
                ts_frac: rec.ts_frac,
                data,
            });
        }
    }
    if let Some(path) = out {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        pcap::write(BufWriter::new(f), &outputs)?;
        eprintln!("wrote {} packets to {}", outputs.len(), path.display());
    }
    Ok(())
}
