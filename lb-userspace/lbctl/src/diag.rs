//! `lbctl capture` and `lbctl trace` (docs/troubleshooting.md): a capture inside the data
//! plane, run by lbd and streamed here (one line per packet, a pcapng file with each packet's
//! verdict as its comment), and where a flow goes and why.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use lb_api::Client;
use lb_api::diag::{
    CaptureEnd, CaptureEvent, CapturePoint, CaptureRequest, CaptureStop, CapturedPacket, Trace,
    TraceQuery,
};
use lb_common::Reason;
use lb_dataplane::pcapng::{self, Direction};

/// What `lbctl capture` was asked.
pub struct CaptureArgs {
    pub request: CaptureRequest,
    pub write: Option<PathBuf>,
    pub quiet: bool,
    pub json: bool,
}

/// The pcapng file being written: one interface block per interface met.
struct Pcap {
    path: PathBuf,
    w: pcapng::Writer<BufWriter<File>>,
    ifaces: HashMap<String, u32>,
    snaplen: u32,
}

impl Pcap {
    fn create(path: &Path, snaplen: u32) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let w = pcapng::Writer::new(
            BufWriter::new(f),
            &format!(
                "lbctl {} (capture inside the XDP data plane)",
                env!("CARGO_PKG_VERSION")
            ),
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            w,
            ifaces: HashMap::new(),
            snaplen,
        })
    }

    fn packet(&mut self, p: &CapturedPacket, data: &[u8]) -> Result<()> {
        let id = match self.ifaces.get(&p.iface) {
            Some(id) => *id,
            None => {
                let id = self.w.interface(&p.iface, self.snaplen)?;
                self.ifaces.insert(p.iface.clone(), id);
                id
            }
        };
        let direction = match p.point {
            CapturePoint::Input => Direction::Inbound,
            CapturePoint::Output => Direction::Outbound,
        };
        self.w
            .packet(id, p.ts_unix_ns, p.len, data, Some(&comment(p)), direction)?;
        Ok(())
    }
}

/// The verdict as the packet's comment in Wireshark (`frame.comment`).
pub fn comment(p: &CapturedPacket) -> String {
    let mut c = format!(
        "lb: {} {} point={}",
        p.action,
        p.reason,
        match p.point {
            CapturePoint::Input => "input",
            CapturePoint::Output => "output",
        }
    );
    if let Some(v) = &p.vip {
        c.push_str(&format!(" vip={v}"));
    }
    if let Some(b) = &p.backend {
        c.push_str(&format!(" backend={b}"));
    }
    c.push_str(&format!(" cpu={} queue={}", p.cpu, p.rx_queue));
    c
}

/// Local wall-clock time of a Unix timestamp, as HH:MM:SS.micro.
fn clock(ts_ns: u64) -> String {
    let secs = (ts_ns / 1_000_000_000) as libc::time_t;
    // SAFETY: a zeroed tm is a valid out-parameter; localtime_r is thread-safe.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ts_ns % 1_000_000_000 / 1000
    )
}

/// One line per packet: time, interface, point, action, reason, VIP -> backend, the packet.
pub fn line(p: &CapturedPacket, data: &[u8]) -> String {
    let target = match (&p.vip, &p.backend) {
        (Some(v), Some(b)) => format!("{v} -> {b}"),
        (Some(v), None) => v.clone(),
        (None, _) => "-".into(),
    };
    format!(
        "{} {:<6} {:<3} {:<4} {:<19} {:<28} {}",
        clock(p.ts_unix_ns),
        p.iface,
        match p.point {
            CapturePoint::Input => "in",
            CapturePoint::Output => "out",
        },
        p.action,
        p.reason,
        target,
        lb_dataplane::packet::describe(data)
    )
}

fn summary(end: &CaptureEnd, written: Option<&Path>) -> String {
    let why = match end.stopped_by {
        CaptureStop::Count => "the count was reached",
        CaptureStop::Duration => "the duration ran out",
        CaptureStop::Shutdown => "lbd is stopping",
    };
    let mut s = format!(
        "{} packets captured in {:.1} s ({why})",
        end.packets, end.elapsed_s
    );
    if end.lost_in_ring > 0 {
        s.push_str(&format!(
            "; {} lost: the ring was full (filter more, sample, or lower --snap-len)",
            end.lost_in_ring
        ));
    }
    if end.dropped_slow_reader > 0 {
        s.push_str(&format!(
            "; {} not sent: this reader was too slow",
            end.dropped_slow_reader
        ));
    }
    if let Some(p) = written {
        s.push_str(&format!("; wrote {}", p.display()));
    }
    s
}

/// The reasons `--drops` stands for.
pub fn drop_reasons() -> Vec<String> {
    Reason::ALL
        .iter()
        .map(|r| r.name())
        .filter(|n| n.starts_with("drop_"))
        .map(String::from)
        .collect()
}

/// Runs a capture to its end (or Ctrl-C, which ends it on lbd too).
pub async fn capture(client: &Client, args: CaptureArgs) -> Result<()> {
    let snap = args.request.snap_len.unwrap_or(256);
    let mut pcap = match &args.write {
        Some(p) => Some(Pcap::create(p, snap)?),
        None => None,
    };
    let mut stream = client.capture(&args.request).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut out = std::io::stdout().lock();
    let mut packets = 0u64;
    let mut end = None;
    loop {
        let next = tokio::select! {
            n = stream.next() => n?,
            _ = &mut ctrl_c => break,
        };
        let Some((event, raw)) = next else {
            break;
        };
        if args.json {
            writeln!(out, "{raw}")?;
        }
        match event {
            CaptureEvent::Started {
                request,
                interfaces,
                shared,
            } => {
                if !args.json && !args.quiet {
                    let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                    eprintln!(
                        "capturing inside the data plane on {} (up to {} packets or {} s{}); Ctrl-C stops",
                        if names.is_empty() {
                            "every interface".to_string()
                        } else {
                            names.join(", ")
                        },
                        request.count.unwrap_or(0),
                        request.duration_s.unwrap_or(0.0),
                        if shared {
                            ", sharing the ring with another capture"
                        } else {
                            ""
                        }
                    );
                }
            }
            CaptureEvent::Packet(p) => {
                packets += 1;
                let data = p.data().unwrap_or_default();
                if !args.json && !args.quiet {
                    writeln!(out, "{}", line(&p, &data))?;
                }
                if let Some(pc) = &mut pcap {
                    pc.packet(&p, &data)
                        .with_context(|| format!("writing {}", pc.path.display()))?;
                }
            }
            CaptureEvent::End(e) => {
                end = Some(e);
                break;
            }
        }
        out.flush()?;
    }
    drop(stream);
    let written = match pcap {
        Some(mut pc) => {
            pc.w.flush()
                .with_context(|| format!("writing {}", pc.path.display()))?;
            Some(pc.path)
        }
        None => None,
    };
    match end {
        Some(e) => {
            if !args.json {
                eprintln!("{}", summary(&e, written.as_deref()));
            }
        }
        None => eprintln!(
            "{packets} packets captured; stopped before lbd's end of capture{}",
            written
                .map(|p| format!("; wrote {}", p.display()))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

/// `lbctl trace`.
pub async fn trace(
    client: &Client,
    vip: &str,
    flow: SocketAddr,
    protocol: Option<String>,
    port: Option<u16>,
    established: bool,
    json: bool,
) -> Result<()> {
    let q = TraceQuery {
        client: flow,
        protocol,
        port,
        first: established.then(|| "other".to_string()),
    };
    let r = client.trace(vip, &q).await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r.raw)?)?;
    } else {
        out.write_all(render(&r.value).as_bytes())?;
    }
    Ok(())
}

/// The backend a decision names, for the headline.
fn chosen(t: &Trace) -> String {
    use lb_api::diag::TraceDecision as D;
    let addr = |b: &lb_api::diag::TraceBackend| {
        b.address
            .map(|a: IpAddr| a.to_string())
            .unwrap_or_else(|| format!("slot {}", b.id))
    };
    match &t.decision {
        D::Entry { backend } => format!("{} (connection table)", addr(backend)),
        D::Algorithm { backend } => format!("{} ({})", addr(backend), t.algorithm),
        D::PerCpu { per_cpu } => per_cpu
            .iter()
            .map(|c| {
                format!(
                    "CPU {}: {}",
                    c.cpu,
                    c.backend
                        .as_ref()
                        .map(addr)
                        .unwrap_or_else(|| "none".into())
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        D::NoBackend => "none: dropped (drop_no_backend)".into(),
        D::OtherVip { vip } => format!("another VIP ({vip})"),
        D::NotAVip => "none: not a VIP flow (passed to the kernel)".into(),
    }
}

pub fn render(t: &Trace) -> String {
    let mut s = format!(
        "{} {} -> {} of VIP {}: {}\n",
        t.protocol,
        t.client,
        t.destination,
        t.vip,
        chosen(t)
    );
    for line in &t.explanation {
        s.push_str("  ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// Parses `--duration` values.
pub fn duration_s(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}
