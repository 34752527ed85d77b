//! Running short commands (`ip`, `ethtool`, `sysctl`, `curl`, ...) with bounded waits and
//! errors that carry the command line and its stderr.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// How long [`run`] and [`output`] let a command run before killing it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// After a command exits, how long to wait for its pipes to close (a background child that
/// inherited them can keep them open forever).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Programs the lab itself shells out to, with their Debian packages.
pub const LAB_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("sysctl", "procps"),
];

/// A `Command` that runs `args` inside network namespace `ns` (`ip netns exec NS ARGS...`).
/// Like every `ip netns exec` command it sees its own `/sys` for that namespace.
pub fn netns_command<I, S>(ns: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tool("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            parts.push(format!("'{}'", a.replace('\'', r"'\''")));
        } else {
            parts.push(a.into_owned());
        }
    }
    parts.join(" ")
}

/// Runs `cmd` to completion (at most [`DEFAULT_TIMEOUT`]), requires exit status 0 and returns
/// its stdout. The error names the command, its status and its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd, DEFAULT_TIMEOUT)?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Turns a non-zero exit status into [`LabError::Command`].
pub fn check(cmd: &Command, out: &Output) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `cmd` to completion whatever its exit status; kills its whole process group after
/// `timeout` and returns [`LabError::Timeout`]. Stdin is closed.
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| spawn_error(&command, source))?;
    let (tx, rx) = mpsc::channel();
    let readers = [
        child
            .stdout
            .take()
            .map(|p| read_in_background(p, 0, tx.clone())),
        child
            .stderr
            .take()
            .map(|p| read_in_background(p, 1, tx.clone())),
    ];
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = match wait_until(&mut child, deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_group(&mut child);
            return Err(LabError::Timeout {
                command,
                timeout,
                detail: String::new(),
            });
        }
        Err(e) => {
            kill_group(&mut child);
            return Err(LabError::io(format!("waiting for `{command}`"), e));
        }
    };
    let mut streams = [Vec::new(), Vec::new()];
    let pipe_deadline = Instant::now() + PIPE_GRACE;
    for _ in readers.iter().flatten() {
        let left = pipe_deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((idx, bytes)) => streams[idx] = bytes,
            // A leftover background child holds the pipe: keep what we have.
            Err(_) => break,
        }
    }
    let [stdout, stderr] = streams;
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn read_in_background<R: Read + Send + 'static>(
    mut pipe: R,
    idx: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just ends the capture; the exit status still tells the story.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send((idx, buf));
    })
}

/// Polls `child` until it exits or `deadline` passes (`Ok(None)`).
pub(crate) fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// SIGKILLs the process group led by `child` (spawned with `process_group(0)`) and reaps it.
pub(crate) fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: plain syscall; the group id is our own child's pid.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn spawn_error(command: &str, source: std::io::Error) -> LabError {
    if source.kind() == std::io::ErrorKind::NotFound {
        LabError::Spawn {
            command: command.to_string(),
            source: std::io::Error::new(source.kind(), "program not found on PATH"),
        }
    } else {
        LabError::Spawn {
            command: command.to_string(),
            source,
        }
    }
}

/// Fails with [`LabError::NotRoot`] unless we run as root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { euid })
    }
}

/// Where `tool` is: the first executable on `PATH`, then in the sbin/bin directories (test
/// runners do not always pass root's PATH on).
pub fn which(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return is_exec(Path::new(tool)).then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|dir| dir.join(tool))
        .find(|p| is_exec(p))
}

/// Whether `tool` is installed (see [`which`]).
pub fn have_tool(tool: &str) -> bool {
    which(tool).is_some()
}

/// A `Command` for `tool`, found with [`which`] (falls back to the bare name, so a missing tool
/// fails at spawn with the name in the error).
pub fn tool(tool: &str) -> Command {
    Command::new(which(tool).unwrap_or_else(|| PathBuf::from(tool)))
}

/// Fails with [`LabError::MissingTool`] for the first `(tool, package)` not installed.
pub fn require_tools(tools: &[(&'static str, &'static str)]) -> Result<()> {
    match tools.iter().find(|(tool, _)| !have_tool(tool)) {
        Some(&(tool, package)) => Err(LabError::MissingTool { tool, package }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_command_and_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh -c 'echo oops >&2; exit 3'"), "{msg}");
        assert!(msg.contains("oops") && msg.contains('3'), "{msg}");
        assert_eq!(run(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }

    #[test]
    fn output_times_out_and_kills_the_group() {
        let err = output(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, LabError::Timeout { .. }), "{err}");
    }

    #[test]
    fn missing_program_is_named() {
        let err = run(&mut Command::new("no-such-program-lbt")).unwrap_err();
        assert!(err.to_string().contains("no-such-program-lbt"), "{err}");
        assert!(have_tool("sh"));
        let err = require_tools(&[("no-such-program-lbt", "lbt-pkg")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`no-such-program-lbt` is missing (apt-get install lbt-pkg)"
        );
    }
}
