//! Unique lab prefixes, ownership records and cleanup of labs whose owner died.
//!
//! Every lab claims a directory `$TMPDIR/lbt-labs/PREFIX` with `mkdir` (atomic, so parallel
//! threads and processes never get the same prefix) and writes `owner` into it: the owning
//! process's pid and start time, or `persistent` for a lab meant to outlive its creator.
//! Its namespaces are `PREFIX-HOST` and `PREFIX_br`. A lab whose owner is gone is stale.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{LabError, Result};
use crate::exec::{run, tool};
use crate::setns::NETNS_DIR;

/// Prefix base of labs created by tests: namespaces look like `lbt1234x0-client`.
pub const DEFAULT_BASE: &str = "lbt";

/// Marker written instead of a pid for labs that must outlive their creator.
const PERSISTENT: &str = "persistent";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directory holding every lab's working directory.
pub fn labs_root() -> PathBuf {
    std::env::temp_dir().join("lbt-labs")
}

/// A directory claimed for one lab.
#[derive(Debug)]
pub(crate) struct Claim {
    pub prefix: String,
    pub dir: PathBuf,
}

/// Namespace of host `host` in lab `prefix`.
pub(crate) fn host_ns(prefix: &str, host: &str) -> String {
    format!("{prefix}-{host}")
}

/// Namespace of the bridge of lab `prefix`.
pub(crate) fn bridge_ns(prefix: &str) -> String {
    format!("{prefix}_br")
}

/// The lab prefix a namespace name belongs to (host names never contain `_`, prefixes never `-`).
fn lab_of(ns: &str) -> &str {
    ns.split(['-', '_']).next().unwrap_or(ns)
}

fn valid_base(base: &str) -> bool {
    !base.is_empty()
        && base.len() <= 12
        && base
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Claims a fresh prefix `BASE<pid%10000>x<counter>`.
pub(crate) fn claim_unique(base: &str) -> Result<Claim> {
    check_base(base)?;
    let pid = std::process::id() % 10_000;
    for _ in 0..10_000 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{base}{pid}x{n}");
        // Namespaces left by a crashed run without a directory: don't reuse that prefix.
        if !namespaces_of(&prefix)?.is_empty() {
            continue;
        }
        if let Some(claim) = try_claim(&prefix, &owner_record())? {
            return Ok(claim);
        }
    }
    Err(LabError::io(
        format!("claiming a lab prefix under {}", labs_root().display()),
        std::io::Error::other("10000 prefixes are taken: run cleanup_stale"),
    ))
}

/// Claims the fixed prefix `name` (e.g. `lab` for `cargo xtask lab`). A stale lab of that name
/// is removed first; a live one is an error.
pub(crate) fn claim_named(name: &str) -> Result<Claim> {
    check_base(name)?;
    if let Some(claim) = try_claim(name, &owner_record())? {
        if namespaces_of(name)?.is_empty() {
            return Ok(claim);
        }
        // Leftover namespaces without an owner directory are stale by definition.
        remove_lab_namespaces(name)?;
        return Ok(claim);
    }
    match owner_alive(&labs_root().join(name)) {
        Liveness::Dead => {
            destroy(name)?;
            try_claim(name, &owner_record())?.ok_or_else(|| {
                LabError::io(
                    format!("claiming lab `{name}`"),
                    std::io::Error::other("claimed by someone else meanwhile"),
                )
            })
        }
        Liveness::Alive(owner) => Err(LabError::io(
            format!("claiming lab `{name}`"),
            std::io::Error::other(format!(
                "it exists and is owned by {owner}: destroy it first"
            )),
        )),
    }
}

fn check_base(base: &str) -> Result<()> {
    if valid_base(base) {
        Ok(())
    } else {
        Err(LabError::Option {
            option: "prefix".to_string(),
            reason: format!("`{base}` must be 1-12 of a-z, 0-9"),
        })
    }
}

/// Claims `prefix` atomically with its owner record already in place: the directory is
/// prepared under a private name and renamed without replacing, so `cleanup_stale` never sees
/// a claimed directory without an owner.
fn try_claim(prefix: &str, owner: &str) -> Result<Option<Claim>> {
    let root = labs_root();
    fs::create_dir_all(&root)
        .map_err(|e| LabError::io(format!("creating {}", root.display()), e))?;
    let dir = root.join(prefix);
    let staging = root.join(format!(
        ".claim-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&staging)
        .map_err(|e| LabError::io(format!("creating {}", staging.display()), e))?;
    let outcome = write_owner(&staging, owner).and_then(|()| rename_noreplace(&staging, &dir));
    match outcome {
        Ok(true) => Ok(Some(Claim {
            prefix: prefix.to_string(),
            dir,
        })),
        Ok(false) => {
            let _ = fs::remove_dir_all(&staging);
            Ok(None)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// `renameat2(RENAME_NOREPLACE)`: `Ok(false)` when `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| {
            LabError::io(
                format!("path {}", p.display()),
                std::io::Error::other("NUL byte"),
            )
        })
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: valid C strings; AT_FDCWD with absolute paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == ErrorKind::AlreadyExists {
        Ok(false)
    } else {
        Err(LabError::io(
            format!("renaming {} to {}", from.display(), to.display()),
            e,
        ))
    }
}

fn write_owner(dir: &Path, owner: &str) -> Result<()> {
    let path = dir.join("owner");
    fs::write(&path, format!("{owner}\n"))
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))
}

/// Marks the lab in `dir` as persistent: `cleanup_stale` leaves it alone.
pub(crate) fn mark_persistent(dir: &Path) -> Result<()> {
    write_owner(dir, PERSISTENT)
}

/// "PID STARTTIME" of this process: the start time tells a reused pid apart.
fn owner_record() -> String {
    let pid = std::process::id();
    format!("{pid} {}", start_time(pid).unwrap_or_default())
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

enum Liveness {
    Alive(String),
    Dead,
}

fn owner_alive(dir: &Path) -> Liveness {
    let Ok(text) = fs::read_to_string(dir.join("owner")) else {
        return Liveness::Dead;
    };
    let text = text.trim();
    if text == PERSISTENT {
        return Liveness::Alive("nobody (persistent lab)".to_string());
    }
    let mut parts = text.split_whitespace();
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let start = parts.next().and_then(|s| s.parse::<u64>().ok());
    match (pid, start) {
        (Some(pid), Some(start)) if start_time(pid) == Some(start) => {
            Liveness::Alive(format!("pid {pid}"))
        }
        _ => Liveness::Dead,
    }
}

/// Names of the namespaces of lab `prefix`.
fn namespaces_of(prefix: &str) -> Result<Vec<String>> {
    Ok(list_namespaces()?
        .into_iter()
        .filter(|ns| lab_of(ns) == prefix)
        .collect())
}

/// All named network namespaces.
pub fn list_namespaces() -> Result<Vec<String>> {
    match fs::read_dir(NETNS_DIR) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(LabError::io(format!("listing {NETNS_DIR}"), e)),
    }
}

/// Kills every process still inside `ns` (never this process), then deletes the namespace.
pub(crate) fn delete_namespace(ns: &str) -> Result<()> {
    let pids = run(tool("ip").args(["netns", "pids", ns]))?;
    let me = std::process::id();
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if pid != me
            && let Ok(pid) = libc::pid_t::try_from(pid)
        {
            // SAFETY: plain syscall; the pid was just listed as living inside our namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    run(tool("ip").args(["netns", "delete", ns]))?;
    Ok(())
}

/// Unmounts whatever is mounted below `dir` (bpffs of a crashed lab), deepest first.
pub(crate) fn unmount_below(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| Path::new(t).starts_with(dir))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        if let Ok(c) = std::ffi::CString::new(t) {
            // SAFETY: valid C string; MNT_DETACH never blocks.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn remove_lab_namespaces(prefix: &str) -> Result<Vec<String>> {
    let mut namespaces = namespaces_of(prefix)?;
    // Hosts first, the bridge last: the bridge namespace marks the lab as present.
    namespaces.sort_by_key(|ns| ns.ends_with("_br"));
    for ns in &namespaces {
        delete_namespace(ns)?;
    }
    Ok(namespaces)
}

/// Removes lab `prefix` whoever owns it: kills the processes inside its namespaces, deletes
/// them, unmounts its bpffs and removes its directory. Returns the namespaces deleted.
pub fn destroy(prefix: &str) -> Result<Vec<String>> {
    let removed = remove_lab_namespaces(prefix)?;
    let dir = labs_root().join(prefix);
    unmount_below(&dir);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(LabError::io(format!("removing {}", dir.display()), e)),
    }
    Ok(removed)
}

/// Removes labs left behind by crashed runs: every lab whose prefix starts with `prefix` and
/// looks generated (`BASE<digits>x<digits>`, e.g. `cleanup_stale("lbt")`) and whose owner
/// process is gone. Labs of live processes and persistent labs are left alone, so this is
/// safe while other tests run. Returns the namespaces deleted.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let mut labs: Vec<String> = list_namespaces()?
        .iter()
        .map(|ns| lab_of(ns).to_string())
        .collect();
    if let Ok(entries) = fs::read_dir(labs_root()) {
        labs.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()));
    }
    labs.sort();
    labs.dedup();
    let mut removed = Vec::new();
    for lab in labs
        .iter()
        .filter(|l| l.starts_with(prefix) && looks_generated(l))
    {
        if let Liveness::Dead = owner_alive(&labs_root().join(lab)) {
            tracing::info!(lab, "removing stale lab");
            removed.extend(destroy(lab)?);
        }
    }
    Ok(removed)
}

/// `letters digits 'x' digits`.
fn looks_generated(prefix: &str) -> bool {
    let Some(i) = prefix.find(|c: char| c.is_ascii_digit()) else {
        return false;
    };
    let (base, rest) = prefix.split_at(i);
    let Some((pid, n)) = rest.split_once('x') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    !base.is_empty() && base.chars().all(|c| c.is_ascii_lowercase()) && digits(pid) && digits(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_back() {
        assert_eq!(lab_of("lbt12x3-client"), "lbt12x3");
        assert_eq!(lab_of("lbt12x3-be-1"), "lbt12x3");
        assert_eq!(lab_of("lbt12x3_br"), "lbt12x3");
        assert!(looks_generated("lbt1234x0"));
        assert!(!looks_generated("lbt1234"));
        assert!(!looks_generated("lab"));
        assert!(!looks_generated("1234x0"));
        assert!(start_time(std::process::id()).is_some());
    }
}
