//! Second chance (issue 14) in the BGP lab: three balancers behind the router's ECMP, the
//! IPv4 VIP in `ipip` mode, `xdp_decap` on be1..be3. Under load (keep-alive connections that
//! send a request every 200 ms, and a stream of new connections), all at once: a backend is
//! added (weight 0 -> 100), another removed (100 -> 0: drained, its app keeps serving what it
//! has), a third re-weighted, and one balancer restarted with an empty connection table
//! (`lbctl shutdown --detach`: withdrawn, its pins gone); when it announces again the router
//! moves flows onto it and between the others. The same scenario runs with the VIP's
//! `second_chance` off, then on: off must lose connections (the table change sends moved
//! flows to a backend without their socket, which resets them), on must lose none and show
//! the mechanism at work in both sides' counters.
//!
//! Every balancer changes alike and at once: the change is one `lbctl reload` of the same
//! file on each (one table flip: second chance knows only the table before the last flip).
//! The restarted balancer comes back with the set the others run, then takes the change with
//! them, so it too has the previous table at hand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::Reason;
use serde_json::Value;

use crate::load::{KeepAlive, Load, Spec};
use crate::{BgpLab, poll};

/// Keep-alive connections to the IPv4 VIP per run: enough that the table change moves several.
const KEEP_ALIVE: usize = 200;
/// `second_chance_window_s`: longer than a run's connections live after the change (a flow
/// that second chance carries is not pinned in the connection table; after the window it is
/// hashed to the new table like any other).
const WINDOW_S: u32 = 120;
const CONVERGE: Duration = Duration::from_secs(30);

/// Backend weights of the IPv4 VIP, in be1..be3 order.
type Weights = [u32; 3];

/// Before the first run: be3 is out (weight 0).
const A: Weights = [100, 100, 0];
/// Run 1's change: be3 added, be1 removed, be2 re-weighted.
const B: Weights = [0, 200, 100];
/// Run 2's change: be1 added, be3 removed, be2 re-weighted back.
const C: Weights = [100, 100, 0];

#[test]
fn second_chance_keeps_connections_that_a_table_change_and_a_restart_would_reset() -> Result<()> {
    let lab = BgpLab::start("second-chance", &[])?;
    let sc = ScLab::setup(&lab)?;
    sc.reload_all(A, false)?;
    sc.expect_tables(A, "the VIP in ipip mode, be3 at weight 0")?;

    let off = sc.run("off", A, B, false, "lb1")?;
    sc.reload_all(B, true)?;
    sc.expect_tables(B, "second chance turned on")?;
    let on = sc.run("on", B, C, true, "lb2")?;

    for r in [&off, &on] {
        lab.say(&r.line());
    }
    ensure!(
        off.broken >= 1,
        "with second chance off the change should break connections that moved, but none \
         broke: the scenario cannot tell the two apart ({})",
        off.line()
    );
    ensure!(
        on.broken == 0 && on.new_failed == 0,
        "with second chance on no connection may break and every request must be answered: {}\n{}",
        on.line(),
        on.failures
    );
    ensure!(
        on.tx_second_chance > 0,
        "the balancers sent no packet carrying a second choice: {}",
        on.line()
    );
    ensure!(
        on.redirects > 0,
        "no backend passed a packet on to the previous backend: {}",
        on.line()
    );
    Ok(())
}

/// What one run measured.
struct RunReport {
    name: &'static str,
    broken: usize,
    lanes: usize,
    requests: usize,
    new_failed: usize,
    new_total: usize,
    tx_second_chance: u64,
    redirects: u64,
    pass_second_chance: u64,
    failures: String,
}

impl RunReport {
    fn line(&self) -> String {
        format!(
            "second chance {}: {} of {} keep-alive connections broken ({} requests), {} of {} \
             new connections failed; balancers tx_second_chance {}, backends \
             tx_second_chance_redirect {}, pass_second_chance {}",
            self.name,
            self.broken,
            self.lanes,
            self.requests,
            self.new_failed,
            self.new_total,
            self.tx_second_chance,
            self.redirects,
            self.pass_second_chance
        )
    }
}

/// The BGP lab set up for second chance.
struct ScLab<'a> {
    lab: &'a BgpLab,
    /// Each balancer's lbd.toml as `balancer.sh` wrote it.
    base: BTreeMap<String, String>,
    /// Where each backend's `xdp_decap` link is pinned, and its interface.
    decap_pins: BTreeMap<String, (PathBuf, &'static str)>,
}

impl<'a> ScLab<'a> {
    /// Backends: `xdp_decap` on eth0 for their own address, reverse-path filtering off (the
    /// decapsulated packets keep the client's source), `xdp_pass` on their bridge ports
    /// (their redirects leave by XDP_TX). Balancers: IP forwarding on, since a backend's
    /// redirect comes back through the balancer that delivered the packet, which routes it to
    /// the previous backend.
    fn setup(lab: &'a BgpLab) -> Result<Self> {
        let system = &lab.system;
        let mut decap_pins = BTreeMap::new();
        for be in system.backends() {
            let host = system.lab().host(&be)?;
            for conf in ["all", "default", host.iface()] {
                host.sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0")?;
            }
            let pins = system.bpffs().join(format!("decap-{be}"));
            let mut c = host.command([system.bin("lbctl")]);
            c.args([
                "xdp",
                "attach",
                "--program",
                "decap",
                "--iface",
                host.iface(),
            ])
            .arg("--pin-dir")
            .arg(&pins)
            .args(["--decap-address", &host.ipv4().to_string()]);
            tests::exec::run(&mut c).with_context(|| format!("xdp_decap on {be}"))?;
            let port = system.lab().bridge_port_of(&be)?;
            let mut c = tests::exec::netns_command(system.lab().bridge_ns(), [system.bin("lbctl")]);
            c.args(["xdp", "attach", "--program", "pass", "--iface", port])
                .arg("--pin-dir")
                .arg(system.bpffs().join(format!("bridge-{be}")));
            tests::exec::run(&mut c).with_context(|| format!("xdp_pass on {be}'s bridge port"))?;
            decap_pins.insert(be, (pins, host.iface()));
        }
        let mut base = BTreeMap::new();
        for lb in system.balancers() {
            system.lab().host(&lb)?.sysctl("net.ipv4.ip_forward", "1")?;
            let path = system.host_dir(&lb).join("lbd.toml");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            base.insert(lb, text);
        }
        Ok(Self {
            lab,
            base,
            decap_pins,
        })
    }

    /// `lb`'s lbd.toml with the IPv4 VIP in `ipip` mode, second chance `on` or off, and the
    /// backends at `weights` (the IPv6 VIP stays as `balancer.sh` wrote it).
    fn config(&self, lb: &str, weights: Weights, on: bool) -> Result<String> {
        let base = self.base.get(lb).context("no such balancer")?;
        let host = self.lab.system.lab().host(lb)?;
        let mut out = Vec::new();
        let mut lines = base.lines().peekable();
        let name = format!("name = \"{}\"", self.lab.vip_name);
        while let Some(line) = lines.next() {
            out.push(line.to_string());
            if line.trim() == "[bgp]" {
                // A started lbd announces nothing for this long: the restarted balancer takes
                // the change (one reload) before the router moves flows onto it.
                out.push("announce_delay_s = 5".into());
            }
            if line.trim() == "[dataplane]" {
                out.push(format!("ipip_source_v4 = \"{}\"", host.ipv4()));
                // The segment carries 1500 bytes: bigger encapsulated packets are answered
                // with "fragmentation needed" (and the backends' self-check passes).
                out.push("backend_mtu = 1500".into());
            }
            if line.trim() == name {
                // The VIP's own keys, then its backends; its old backends are skipped.
                let mut in_backends = false;
                while let Some(next) = lines.peek() {
                    let t = next.trim();
                    if t.starts_with('[') && !t.starts_with("[[vips.backends]]") {
                        break;
                    }
                    in_backends |= t.starts_with("[[vips.backends]]");
                    let line = lines.next().unwrap_or_default();
                    if !in_backends {
                        out.push(line.to_string());
                    }
                }
                out.push("mode = \"ipip\"".into());
                out.push(format!("second_chance = {on}"));
                if on {
                    out.push(format!("second_chance_window_s = {WINDOW_S}"));
                }
                for (be, w) in self.lab.system.backends().iter().zip(weights) {
                    let addr = self.lab.system.lab().host(be)?.ipv4();
                    out.push(format!(
                        "[[vips.backends]]\naddress = \"{addr}\"\nweight = {w}"
                    ));
                }
                out.push(String::new());
            }
        }
        Ok(out.join("\n") + "\n")
    }

    fn write_config(&self, lb: &str, weights: Weights, on: bool) -> Result<()> {
        let path = self.lab.system.host_dir(lb).join("lbd.toml");
        std::fs::write(&path, self.config(lb, weights, on)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    fn reload(&self, lb: &str) -> Result<()> {
        let mut c = self.lab.system.lbctl(lb);
        c.arg("reload");
        tests::exec::run(&mut c)
            .map(drop)
            .with_context(|| format!("lbctl reload on {lb}\n{}", self.lab.logs(&[(lb, "lbd")])))
    }

    /// Writes the same change on every running balancer, then reloads each: one table flip
    /// each, within a fraction of a second of the others.
    fn reload_all(&self, weights: Weights, on: bool) -> Result<()> {
        let running = self.lab.running_balancers();
        for lb in &running {
            self.write_config(lb, weights, on)?;
        }
        for lb in &running {
            self.reload(lb)?;
        }
        Ok(())
    }

    /// Addresses of the backends with a weight in `weights`.
    fn table_of(&self, weights: Weights) -> Result<Vec<String>> {
        let system = &self.lab.system;
        Ok(system
            .backends()
            .iter()
            .zip(weights)
            .filter(|(_, w)| *w > 0)
            .map(|(be, _)| system.lab().host(be).map(|h| h.ipv4().to_string()))
            .collect::<Result<_, _>>()?)
    }

    /// Addresses of the backends in `lb`'s active table for the IPv4 VIP.
    fn table_backends(&self, lb: &str) -> Result<Vec<String>> {
        let counts = tests::pinned::table_counts(
            &self.lab.system.bpffs().join(lb),
            self.lab.vip.ip(),
            self.lab.vip.port(),
            6,
        )?;
        Ok(counts.into_keys().collect())
    }

    /// Waits until every running balancer's active table holds exactly the backends with a
    /// weight in `weights`, and the balancers' forwarding state is equal.
    fn expect_tables(&self, weights: Weights, when: &str) -> Result<()> {
        let want = self.table_of(weights)?;
        let mut last = BTreeMap::new();
        poll(&format!("{when}: tables of {want:?}"), CONVERGE, || {
            for lb in self.lab.running_balancers() {
                let have = self.table_backends(&lb)?;
                if have != want {
                    last.insert(lb, have);
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .map_err(|e| anyhow::anyhow!("{e}: last seen {last:?}\n{}", self.backends_now()))?;
        poll(&format!("{when}: equal forwarding state"), CONVERGE, || {
            Ok(self.lab.same_tables(when).is_ok())
        })
        .map_err(|e| anyhow::anyhow!("{e}: {:?}", self.lab.same_tables(when).err()))?;
        Ok(())
    }

    /// Failure context: each running balancer's view of the IPv4 VIP's backends, and the end
    /// of its log.
    fn backends_now(&self) -> String {
        let mut out = String::new();
        for lb in self.lab.running_balancers() {
            let list = self
                .lab
                .system
                .lbctl_json(&lb, ["backend", "list", &self.lab.vip_name])
                .map(|v| v.to_string())
                .unwrap_or_else(|e| e.to_string());
            out.push_str(&format!(
                "{lb}: {list}\n{}\n",
                self.lab.system.log_tail(&lb, "lbd", 12)
            ));
        }
        out
    }

    /// Restarts lbd on `lb` with an empty connection table: `lbctl shutdown --detach`
    /// (withdraw, drain, stop, detach, pins removed), then lbd again with its file.
    fn restart_empty(&self, lb: &str) -> Result<()> {
        let system = &self.lab.system;
        let mut c = system.lbctl(lb);
        c.args(["shutdown", "--detach"]);
        tests::exec::run(&mut c).with_context(|| format!("lbctl shutdown on {lb}"))?;
        self.lab.wait_next_hops(2, Duration::from_secs(10))?;
        system
            .wait_gone(lb, "lbd", Duration::from_secs(20))
            .map_err(|e| anyhow::anyhow!("{e}\n{}", self.lab.logs(&[(lb, "lbd")])))?;
        let pins = system.bpffs().join(lb);
        let left = std::fs::read_dir(&pins).map(|d| d.count()).unwrap_or(0);
        ensure!(
            left == 0,
            "{lb}: {left} pins left under {} after --detach",
            pins.display()
        );
        let dir = system.host_dir(lb);
        let _ = std::fs::remove_file(system.lbd_socket(lb));
        let mut c = system.lab().host(lb)?.command([
            "sh".as_ref(),
            "-c".as_ref(),
            "setsid \"$0\" --config \"$1\" >>\"$2\" 2>&1 </dev/null & echo $! >\"$3\"".as_ref(),
            system.bin("lbd").as_os_str(),
            dir.join("lbd.toml").as_os_str(),
            dir.join("lbd.log").as_os_str(),
            dir.join("lbd.pid").as_os_str(),
        ]);
        tests::exec::run(&mut c).with_context(|| format!("starting lbd on {lb}"))?;
        poll(&format!("{lb}'s new lbd to answer"), CONVERGE, || {
            Ok(system.lbctl_json(lb, ["stats"]).is_ok())
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", self.lab.logs(&[(lb, "lbd")])))?;
        Ok(())
    }

    /// Sum of a counter over the running balancers (`lbctl stats`).
    fn balancer_reason(&self, reason: Reason) -> Result<u64> {
        let mut sum = 0;
        for lb in self.lab.running_balancers() {
            let stats = self.lab.system.lbctl_json(&lb, ["stats"])?;
            sum += stats["reasons"][reason.name()].as_u64().unwrap_or(0);
        }
        Ok(sum)
    }

    /// Sum of a counter of the backends' `xdp_decap` (its REASONS map, found from the
    /// pinned link).
    fn backend_reason(&self, reason: Reason) -> Result<u64> {
        let mut sum = 0;
        for (pins, iface) in self.decap_pins.values() {
            sum += decap_reason(pins, iface, reason)?;
        }
        Ok(sum)
    }

    /// One run: load, then the change with a restart of `restart`; returns what broke.
    fn run(
        &self,
        name: &'static str,
        from: Weights,
        to: Weights,
        on: bool,
        restart: &str,
    ) -> Result<RunReport> {
        let lab = self.lab;
        let t0 = Instant::now();
        let redirects0 = self.backend_reason(Reason::TxSecondChanceRedirect)?;
        let pass0 = self.backend_reason(Reason::PassSecondChance)?;
        let keep = KeepAlive::start(
            lab.client(),
            lab.vip,
            &format!("sc-{name}"),
            KEEP_ALIVE,
            Duration::from_millis(200),
        )?;
        let mut spec = Spec::new(&format!("sc-{name}-new"));
        spec.workers = 2;
        spec.pace = Duration::from_millis(20);
        spec.max_time = Duration::from_secs(120);
        let load = Load::start(lab.client(), lab.vip, spec)?;
        load.wait_more(50, Duration::from_secs(20))?;

        self.restart_empty(restart)?;
        // The restarted balancer runs the set the others run (its first table, written at
        // once with its restored health verdicts), then all change together, before it
        // announces again (its BGP sessions take a second or more): its previous table is
        // the one the flows began under, and the flows the router moves onto it all miss.
        let want = self.table_of(from)?;
        poll(
            &format!("run {name}: {restart}'s first table"),
            CONVERGE,
            || Ok(self.table_backends(restart)? == want),
        )?;
        for lb in lab.running_balancers() {
            self.write_config(&lb, to, on)?;
        }
        for lb in lab.running_balancers() {
            self.reload(&lb)?;
        }
        let changed = Instant::now();
        let hops = lab.next_hops(lab.vip.ip())?;
        ensure!(
            hops.len() == 2,
            "run {name}: {restart} announced before the change ({hops:?}): the flows moved onto \
             it would not test anything"
        );
        lab.wait_next_hops(3, CONVERGE)?;
        self.expect_tables(to, &format!("run {name}: after the change"))?;
        lab.say(&format!(
            "run {name}: {restart} restarted empty, weights {from:?} -> {to:?} on every \
             balancer; {restart} announcing again {} ms after the change",
            changed.elapsed().as_millis()
        ));
        // Every keep-alive connection sends about 25 more requests over the new paths.
        std::thread::sleep(Duration::from_secs(5));
        for lb in lab.running_balancers() {
            let stats = lab.system.lbctl_json(&lb, ["stats"])?;
            lab.say(&format!("run {name}: {lb} reasons {}", stats["reasons"]));
        }
        load.wait_more(50, Duration::from_secs(20))?;
        let report = load.finish()?;
        let kept = keep.finish()?;
        let broken = kept.broken_lanes();
        let failed = report.failed();
        let failures = format!(
            "keep-alive: {}\nnew: {}",
            kept.describe_failures(&broken, t0),
            report.describe_failures(&failed, t0)
        );
        Ok(RunReport {
            name,
            broken: broken.len(),
            lanes: KEEP_ALIVE,
            requests: kept.outcomes.len(),
            new_failed: failed.len(),
            new_total: report.outcomes.len(),
            tx_second_chance: self.balancer_reason(Reason::TxSecondChance)?,
            redirects: self.backend_reason(Reason::TxSecondChanceRedirect)? - redirects0,
            pass_second_chance: self.backend_reason(Reason::PassSecondChance)? - pass0,
            failures,
        })
    }
}

/// Counter `reason` of the `xdp_decap` whose link is pinned under `pins`, summed over CPUs.
fn decap_reason(pins: &std::path::Path, iface: &str, reason: Reason) -> Result<u64> {
    let bpftool = |args: &[&str]| -> Result<Value> {
        let mut c = std::process::Command::new("bpftool");
        c.arg("-j").args(args);
        Ok(serde_json::from_str(&tests::exec::run(&mut c)?)?)
    };
    // lb-dataplane's layout: PIN_DIR/vN/links/IFACE.
    let link = pins
        .join(format!("v{}", lb_common::LAYOUT_VERSION))
        .join("links")
        .join(iface);
    let link = bpftool(&["link", "show", "pinned", &link.to_string_lossy()])?;
    let prog = link["prog_id"]
        .as_u64()
        .context("bpftool link show: prog_id")?;
    let prog = bpftool(&["prog", "show", "id", &prog.to_string()])?;
    for id in prog["map_ids"].as_array().into_iter().flatten() {
        let id = id.as_u64().context("map id")? as u32;
        let map = bpftool(&["map", "show", "id", &id.to_string()])?;
        if map["name"] != "REASONS" {
            continue;
        }
        let data = MapData::from_id(id).context("opening REASONS")?;
        let arr: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(data)).context("REASONS")?;
        let values = arr.get(&(reason as u32), 0).context("reading REASONS")?;
        return Ok(values.iter().sum());
    }
    anyhow::bail!("xdp_decap under {} has no REASONS map", pins.display())
}
