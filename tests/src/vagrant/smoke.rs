//! The VM lab's smoke test, run from the client VM through the VIP:
//!
//! 1. which XDP mode (native `driver` or `generic`) each balancer's lbd attached with;
//! 2. HTTP over IPv4 and over IPv6 reaches every backend (new connections, `x-served-by`);
//! 3. a user created through the IPv4 VIP is read back through the IPv6 VIP, from the cache
//!    (the backends' cache counters: at most one database load);
//! 4. with two balancers (the full lab): the VRRP master VM is powered off under load on both
//!    families, the backup takes both VIPs, and the longest gap between two answers is
//!    reported. The reduced lab CI boots has one balancer: the report says the check was not
//!    part of it.
//!
//! Waits are bounded (scaled for software emulation) and fail naming what they waited for; no
//! result depends on a duration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::VmLab;
use crate::error::{LabError, Result};
use crate::topology::Role;

/// New connections per family in the spread check: with three backends the chance that one
/// gets none of 30 is 3 * (2/3)^30, about 1 in 70,000.
const SPREAD_REQUESTS: usize = 30;
/// Reads of the new user; all but the first must come from a cache.
const READS: usize = 6;
/// Answers each client loop must count before the master is cut, and again after the takeover.
const LOOP_ANSWERS: usize = 10;

/// XDP attachment of one balancer interface.
#[derive(Debug, Clone, Serialize)]
pub struct XdpAttach {
    /// Balancer host.
    pub host: String,
    /// Interface.
    pub iface: String,
    /// `driver` (native) or `generic`.
    pub mode: String,
}

/// Requests of one family through the VIP, per backend that answered.
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// The URL asked.
    pub url: String,
    /// Answers per backend (`x-served-by`).
    pub by_backend: BTreeMap<String, usize>,
}

/// The cached users API check.
#[derive(Debug, Clone, Serialize)]
pub struct CacheCheck {
    /// Id of the user created through the IPv4 VIP.
    pub user: i64,
    /// Reads through the IPv6 VIP.
    pub reads: usize,
    /// Backends that answered the reads.
    pub readers: Vec<String>,
    /// Cache hits (L1 + L2) the reads caused, over every backend.
    pub cache_hits: f64,
    /// Database loads of the user they caused.
    pub db_loads: f64,
}

/// One family's client loop across the failover.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// Requests made.
    pub requests: usize,
    /// Requests that failed (timed out during the takeover).
    pub failed: usize,
    /// Longest time between two answers, measured on the client.
    pub longest_gap_ms: u64,
}

/// The VRRP failover check.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The master powered off.
    pub master: String,
    /// The backup that took over.
    pub backup: String,
    /// From the power-off until the backup reported master on every router, seen from the host
    /// through SSH (an upper bound).
    pub takeover_ms: u64,
    /// The client's loops, per family.
    pub gaps: Vec<Gap>,
}

/// Everything the smoke test saw.
#[derive(Debug, Clone, Serialize)]
pub struct Smoke {
    /// `kvm` or `tcg`.
    pub accel: String,
    /// XDP mode per balancer interface.
    pub xdp: Vec<XdpAttach>,
    /// IPv4 and IPv6 spread.
    pub spread: Vec<Spread>,
    /// The cached API.
    pub cache: CacheCheck,
    /// The failover; `None` in a lab with one balancer (the reduced lab).
    pub failover: Option<Failover>,
}

fn fail(step: &str, reason: impl Into<String>) -> LabError {
    LabError::Option {
        option: format!("smoke test: {step}"),
        reason: reason.into(),
    }
}

/// Runs the smoke test on a started lab. It powers the VRRP master off.
pub fn run(lab: &VmLab) -> Result<Smoke> {
    let client = lab
        .topology()
        .nodes_with_role(Role::Client)
        .next()
        .map(|n| n.name().to_string())
        .ok_or_else(|| fail("client", "the lab has no client host"))?;
    let xdp = xdp_modes(lab)?;
    let vip = lab.topology().vip();
    let v4 = format!("http://{}:{}", vip.ipv4(), vip.port());
    let v6 = format!("http://[{}]:{}", vip.ipv6(), vip.port());
    let spread = vec![
        spread(lab, &client, &format!("{v4}/ping"))?,
        spread(lab, &client, &format!("{v6}/ping"))?,
    ];
    let cache = cache(lab, &client, &v4, &v6)?;
    let failover = match lab.balancers().len() {
        1 => None,
        _ => Some(failover(lab, &client, &v4, &v6)?),
    };
    Ok(Smoke {
        accel: lab.accel().libvirt_driver().replace("qemu", "tcg"),
        xdp,
        spread,
        cache,
        failover,
    })
}

fn xdp_modes(lab: &VmLab) -> Result<Vec<XdpAttach>> {
    let mut out = Vec::new();
    for lb in lab.balancers() {
        out.extend(xdp_of(lab, &lb)?);
    }
    if out.is_empty() {
        return Err(fail("xdp", "no balancer reports an XDP interface"));
    }
    Ok(out)
}

/// The interfaces balancer `lb`'s lbd attached XDP to, with their mode (`lbctl status`: each
/// entry of `interfaces` has `iface` and `mode`).
pub fn xdp_of(lab: &VmLab, lb: &str) -> Result<Vec<XdpAttach>> {
    let status = lab.lbctl_json(lb, "status")?;
    let field = |i: &Value, key: &str| {
        i[key].as_str().map(str::to_string).ok_or_else(|| {
            fail(
                "xdp",
                format!("{lb}: `lbctl status` interface without {key}: {i}"),
            )
        })
    };
    status["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            Ok(XdpAttach {
                host: lb.to_string(),
                iface: field(i, "iface")?,
                mode: field(i, "mode")?,
            })
        })
        .collect()
}

/// `curl` as the smoke test runs it: quiet, IPv6 literals not taken for globs, bounded by 5 s
/// (scaled for emulation: on a busy 2-core machine one emulated request took longer).
fn curl(lab: &VmLab) -> String {
    format!(
        "curl -s -g --max-time {}",
        lab.scaled(Duration::from_secs(5)).as_secs().min(60)
    )
}

fn spread(lab: &VmLab, client: &str, url: &str) -> Result<Spread> {
    let curl = curl(lab);
    let script = format!(
        "for i in $(seq 1 {SPREAD_REQUESTS}); do \
           {curl} -o /dev/null -D - '{url}' | tr -d '\\r' | \
           awk -F': ' 'tolower($1) == \"x-served-by\" {{ print $2; found = 1 }} END {{ if (!found) print \"FAIL\" }}'; \
         done"
    );
    let out = lab.ssh(client, &script, lab.scaled(Duration::from_secs(60)))?;
    let mut by_backend = BTreeMap::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *by_backend.entry(line.to_string()).or_insert(0usize) += 1;
    }
    if let Some(n) = by_backend.get("FAIL") {
        return Err(fail(
            "spread",
            format!("{n} of {SPREAD_REQUESTS} requests to {url} got no answer: {by_backend:?}"),
        ));
    }
    let missing: Vec<String> = lab
        .backends()
        .into_iter()
        .filter(|b| !by_backend.contains_key(b))
        .collect();
    if !missing.is_empty() {
        return Err(fail(
            "spread",
            format!(
                "{url}: no answer from {missing:?} in {SPREAD_REQUESTS} requests: {by_backend:?}"
            ),
        ));
    }
    Ok(Spread {
        url: url.to_string(),
        by_backend,
    })
}

/// Sum of the user-cache counters of every backend, read at each backend's own address.
fn cache_counters(lab: &VmLab, client: &str) -> Result<(f64, f64)> {
    let port = lab.topology().vip().port();
    let (mut hits, mut loads) = (0.0, 0.0);
    for be in lab.backends() {
        let node = lab
            .topology()
            .node(&be)
            .ok_or_else(|| fail("cache", format!("no node {be}")))?;
        let text = lab.ssh(
            client,
            &format!("{} -f http://{}:{port}/metrics", curl(lab), node.ipv4()),
            lab.scaled(Duration::from_secs(5)),
        )?;
        let (h, l) = crate::metrics::user_cache(&text);
        hits += h;
        loads += l;
    }
    Ok((hits, loads))
}

/// Splits `curl -D - ...` output into (status, `x-served-by`, body).
fn parse_response(out: &str) -> (u16, String, String) {
    let text = out.replace('\r', "");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let served = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            k.eq_ignore_ascii_case("x-served-by").then(|| v.to_string())
        })
        .unwrap_or_default();
    (status, served, body.trim().to_string())
}

fn cache(lab: &VmLab, client: &str, v4: &str, v6: &str) -> Result<CacheCheck> {
    let email = format!(
        "vm-smoke-{}-{}@example.com",
        std::process::id(),
        lab.prefix()
    );
    let body = format!(r#"{{"name":"VM smoke","email":"{email}"}}"#);
    let out = lab.ssh(
        client,
        &format!(
            "{} -D - -H 'content-type: application/json' -d '{body}' '{v4}/users'",
            curl(lab)
        ),
        lab.scaled(Duration::from_secs(5)),
    )?;
    let (status, _, created) = parse_response(&out);
    if status != 201 {
        return Err(fail(
            "cache",
            format!("POST {v4}/users: {status} {created}"),
        ));
    }
    let user: Value = serde_json::from_str(&created)
        .map_err(|e| fail("cache", format!("POST /users answered {created}: {e}")))?;
    let id = user["id"]
        .as_i64()
        .ok_or_else(|| fail("cache", format!("the new user has no id: {created}")))?;
    // A write deletes the cached value twice (at once and 500 ms later): read after both.
    std::thread::sleep(Duration::from_millis(1500));
    let (hits0, loads0) = cache_counters(lab, client)?;
    let mut readers = Vec::new();
    for i in 0..READS {
        let out = lab.ssh(
            client,
            &format!("{} -D - '{v6}/users/{id}'", curl(lab)),
            lab.scaled(Duration::from_secs(5)),
        )?;
        let (status, served, text) = parse_response(&out);
        let read: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 || read != user {
            return Err(fail(
                "cache",
                format!("GET {v6}/users/{id} #{i}: {status} {text} (created {user})"),
            ));
        }
        readers.push(served);
    }
    let (hits1, loads1) = cache_counters(lab, client)?;
    let (hits, loads) = (hits1 - hits0, loads1 - loads0);
    if loads > 1.0 {
        return Err(fail(
            "cache",
            format!("{READS} reads of user {id} loaded it {loads} times from the database"),
        ));
    }
    if hits < (READS - 1) as f64 {
        return Err(fail(
            "cache",
            format!("only {hits} of {READS} reads of user {id} were cache hits"),
        ));
    }
    Ok(CacheCheck {
        user: id,
        reads: READS,
        readers,
        cache_hits: hits,
        db_loads: loads,
    })
}

fn vrrp_states(lab: &VmLab, lb: &str) -> Vec<String> {
    let Ok(json) = lab.lbctl_json(lb, "vrrp") else {
        return Vec::new();
    };
    let routers: Vec<&Value> = match &json {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if !o.contains_key("state") => o
            .values()
            .flat_map(|v| v.as_array().into_iter().flatten())
            .collect(),
        other => vec![other],
    };
    routers
        .iter()
        .filter_map(|r| r["state"].as_str().map(str::to_string))
        .collect()
}

fn all_master(states: &[String]) -> bool {
    !states.is_empty() && states.iter().all(|s| s == "master")
}

/// Polls `cond` every second until it holds, at most `timeout`.
fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                command: what.to_string(),
                timeout,
                detail: String::new(),
            });
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The client's request loop for one family: one request at a time (each bounded by
/// `timeout_s`), each line `ok|fail NS`.
fn loop_script(url: &str, log: &str, limit_s: u64, timeout_s: u64) -> String {
    format!(
        "nohup sh -c 'end=$(( $(date +%s) + {limit_s} )); \
           while [ ! -e /tmp/lab-smoke.stop ] && [ \"$(date +%s)\" -lt \"$end\" ]; do \
             if curl -s -g -f --max-time {timeout_s} -o /dev/null \"{url}\"; then r=ok; else r=fail; fi; \
             echo \"$r $(date +%s%N)\"; sleep 0.1; \
           done' >{log} 2>&1 </dev/null &"
    )
}

/// (answers, failures) in a loop log so far.
fn count(lab: &VmLab, client: &str, log: &str) -> Result<(usize, usize)> {
    // `grep -c` fails when it counts nothing; `echo` of the substitutions does not.
    let text = lab.ssh(
        client,
        &format!("echo $(grep -c '^ok' {log}) $(grep -c '^fail' {log})"),
        lab.scaled(Duration::from_secs(5)),
    )?;
    let mut n = text
        .split_whitespace()
        .map(|w| w.parse::<usize>().unwrap_or(0));
    Ok((n.next().unwrap_or(0), n.next().unwrap_or(0)))
}

fn gap_of(family: &str, log: &str) -> Gap {
    let mut last_ok: Option<u64> = None;
    let (mut requests, mut failed, mut longest) = (0, 0, 0u64);
    for line in log.lines() {
        let Some((r, ns)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ns) = ns.trim().parse::<u64>() else {
            continue;
        };
        requests += 1;
        if r == "ok" {
            if let Some(prev) = last_ok {
                longest = longest.max(ns.saturating_sub(prev));
            }
            last_ok = Some(ns);
        } else {
            failed += 1;
        }
    }
    Gap {
        family: family.to_string(),
        requests,
        failed,
        longest_gap_ms: longest / 1_000_000,
    }
}

fn failover(lab: &VmLab, client: &str, v4: &str, v6: &str) -> Result<Failover> {
    let balancers = lab.balancers();
    let [master, backup] = balancers.as_slice() else {
        return Err(fail(
            "failover",
            format!("needs exactly two balancers, the lab has {balancers:?}"),
        ));
    };
    let settle = lab.scaled(Duration::from_secs(3));
    // Ten answers take ten request round trips through emulated guests sharing two cores with
    // six other VMs (a new curl process in a guest alone can take a second or more).
    let answers = lab.scaled(Duration::from_secs(6));
    wait(
        &format!("{master} VRRP master, {backup} backup"),
        settle,
        || {
            Ok(all_master(&vrrp_states(lab, master))
                && vrrp_states(lab, backup).iter().all(|s| s == "backup"))
        },
    )?;
    let logs = [
        ("ipv4", "/tmp/lab-smoke-v4.log", v4),
        ("ipv6", "/tmp/lab-smoke-v6.log", v6),
    ];
    let limit = lab.scaled(Duration::from_secs(60)).as_secs();
    let mut start = String::from("rm -f /tmp/lab-smoke.stop; ");
    for (_, log, base) in logs {
        // 1 s under KVM (as the e2e tests), 5 s under emulation.
        let timeout = lab.scaled(Duration::from_millis(250)).as_secs().max(1);
        start.push_str(&loop_script(&format!("{base}/ping"), log, limit, timeout));
        start.push(' ');
    }
    lab.ssh(client, &start, lab.scaled(Duration::from_secs(5)))?;
    let stop = || {
        let _ = lab.ssh(client, "touch /tmp/lab-smoke.stop", Duration::from_secs(60));
    };
    let result = (|| {
        for (family, log, _) in logs {
            wait(
                &format!("{LOOP_ANSWERS} answers over {family} before the failover"),
                answers,
                || Ok(count(lab, client, log)?.0 >= LOOP_ANSWERS),
            )?;
        }
        lab.power_off(master)?;
        let cut = Instant::now();
        wait(&format!("{backup} to become VRRP master"), settle, || {
            Ok(all_master(&vrrp_states(lab, backup)))
        })?;
        let takeover = cut.elapsed();
        for (family, log, _) in logs {
            let before = count(lab, client, log)?.0;
            wait(
                &format!("{LOOP_ANSWERS} answers over {family} through {backup}"),
                answers,
                || Ok(count(lab, client, log)?.0 >= before + LOOP_ANSWERS),
            )?;
        }
        Ok::<_, LabError>(takeover)
    })();
    stop();
    let takeover = result?;
    let mut gaps = Vec::new();
    for (family, log, _) in logs {
        let text = lab.ssh(
            client,
            &format!("cat {log}"),
            lab.scaled(Duration::from_secs(5)),
        )?;
        gaps.push(gap_of(family, &text));
    }
    Ok(Failover {
        master: master.clone(),
        backup: backup.clone(),
        takeover_ms: takeover.as_millis() as u64,
        gaps,
    })
}

impl Smoke {
    /// The report as a readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "accelerator        {}", self.accel);
        for x in &self.xdp {
            let _ = writeln!(s, "XDP                {} {}: {}", x.host, x.iface, x.mode);
        }
        for sp in &self.spread {
            let shares: Vec<String> = sp
                .by_backend
                .iter()
                .map(|(b, n)| format!("{b} {n}"))
                .collect();
            let _ = writeln!(s, "spread             {}: {}", sp.url, shares.join(", "));
        }
        let c = &self.cache;
        let _ = writeln!(
            s,
            "cached API         user {} created over IPv4, {} reads over IPv6 by {}: {} cache hits, {} database loads",
            c.user,
            c.reads,
            c.readers.join(" "),
            c.cache_hits,
            c.db_loads
        );
        let Some(f) = &self.failover else {
            let _ = writeln!(
                s,
                "failover           not in this lab (one balancer): `cargo xtask vagrant test --full`"
            );
            return s;
        };
        let _ = writeln!(
            s,
            "failover           {} powered off, {} master of both VIPs within {} ms",
            f.master, f.backup, f.takeover_ms
        );
        for g in &f.gaps {
            let _ = writeln!(
                s,
                "  {:<16} longest gap between answers {} ms; {} of {} requests failed",
                g.family, g.longest_gap_ms, g.failed, g.requests
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_is_the_longest_time_between_two_answers() {
        let log = "ok 1000000000\nok 1100000000\nfail 2100000000\nfail 3100000000\nok 3600000000\nok 3700000000\n";
        let g = gap_of("ipv4", log);
        assert_eq!((g.requests, g.failed, g.longest_gap_ms), (6, 2, 2500));
    }

    #[test]
    fn responses_are_split_into_status_server_body() {
        let out = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nX-Served-By: be2\r\n\r\n{\"id\":7}";
        assert_eq!(
            parse_response(out),
            (201, "be2".to_string(), "{\"id\":7}".to_string())
        );
    }
}
