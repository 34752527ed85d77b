//! `lab status` and the live view.

use std::process::Command;

use anyhow::{Context, Result};
use tests::Role;

use super::hosts;

/// `lbctl --socket SOCK ARGS...` for balancer `lb` (the unix socket needs no namespace).
fn lbctl(lb: &str) -> Command {
    let mut c = Command::new(hosts::lbctl());
    c.arg("--socket")
        .arg(hosts::lbd_socket(lb))
        .args(["--timeout", "3"]);
    c
}

/// Runs `lbctl stats --watch` against `lb` until Ctrl-C. xtask itself ignores SIGINT once the
/// view runs, so Ctrl-C ends only the view and the caller still tears the lab down.
pub fn watch(lb: &str) -> Result<()> {
    let mut child = lbctl(lb)
        .args(["stats", "--watch"])
        .spawn()
        .context("starting lbctl stats --watch")?;
    // SAFETY: installing SIG_IGN has no preconditions; set after the spawn so lbctl keeps the
    // default disposition (ignored signals are inherited).
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = child.wait()?;
    // lbctl ends with 0 on Ctrl-C; anything else means the view broke (lbd gone, ...).
    anyhow::ensure!(status.success(), "the live view stopped: lbctl {status}");
    Ok(())
}

/// Pid files (`NAME.pid`) of a host's daemons: (name, pid, alive).
fn daemons(host: &str) -> Vec<(String, String, bool)> {
    let Ok(entries) = std::fs::read_dir(hosts::host_dir(host)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, bool)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let daemon = name.strip_suffix(".pid")?.to_string();
            let pid = std::fs::read_to_string(e.path()).ok()?.trim().to_string();
            let alive = std::path::Path::new("/proc").join(&pid).exists();
            Some((daemon, pid, alive))
        })
        .collect();
    out.sort();
    out
}

/// `lab status`.
pub fn status() -> Result<()> {
    let topo = hosts::topology()?;
    if !hosts::is_up()? {
        println!("the lab is not running (`cargo xtask lab up` starts it)");
        return Ok(());
    }
    let namespaces = tests::netns::list_namespaces()?;
    let vip = topo.vip();
    println!(
        "lab `{}` at {}: VIP {}:{}",
        super::LAB,
        hosts::lab_dir().display(),
        vip.ipv4(),
        vip.port()
    );
    println!(
        "{:<8} {:<9} {:<12} {:<5} daemons",
        "host", "role", "ipv4", "ns"
    );
    for node in topo.nodes() {
        let ns_up = namespaces.contains(&hosts::ns(node.name()));
        let ds: Vec<String> = daemons(node.name())
            .into_iter()
            .map(|(d, pid, alive)| format!("{d}[{pid}] {}", if alive { "up" } else { "DOWN" }))
            .collect();
        println!(
            "{:<8} {:<9} {:<12} {:<5} {}",
            node.name(),
            node.role().to_string(),
            node.ipv4().to_string(),
            if ns_up { "up" } else { "GONE" },
            if ds.is_empty() {
                "-".into()
            } else {
                ds.join(", ")
            }
        );
    }
    for lb in topo.nodes_with_role(Role::Balancer) {
        println!("\n== {}: lbctl status / health", lb.name());
        for args in [&["status"][..], &["health"][..]] {
            let out = lbctl(lb.name()).args(args).output()?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                println!("  ({})", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
    }
    Ok(())
}
