//! Long-running processes (servers, daemons) with a log file and kill-on-drop.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::exec::{describe, kill_group, spawn_error, wait_until};

/// Lines of log shown in errors.
const LOG_TAIL_LINES: usize = 30;

/// A child process started in its own process group, its stdout and stderr going to a log
/// file. Dropping it SIGKILLs the whole group (the process and everything it started) and
/// reaps it; use [`Process::stop`] for a graceful SIGTERM first.
#[derive(Debug)]
pub struct Process {
    name: String,
    command: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` with its output appended to `LOG_DIR/NAME.log` (`NAME.2.log`, ... when that
    /// exists already). Stdin is closed. `cmd` may carry its own env and working directory.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let command = describe(&cmd);
        let (log, file) = create_log(log_dir, name)?;
        let err_file = file
            .try_clone()
            .map_err(|e| LabError::io(format!("duplicating {}", log.display()), e))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file)
            .process_group(0)
            .spawn()
            .map_err(|e| spawn_error(&command, e))?;
        tracing::debug!(name, pid = child.id(), %command, log = %log.display(), "spawned");
        Ok(Self {
            name: name.to_string(),
            command,
            child,
            log,
            status: None,
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id (also the process-group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (lossy UTF-8; empty when unreadable).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Its exit status if it has exited (reaps it), `None` while it runs.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| LabError::io(format!("checking `{}`", self.name), e))?;
        }
        Ok(self.status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to its whole process group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pgid = libc::pid_t::try_from(self.pid())
            .map_err(|_| LabError::io("signalling", std::io::Error::other("pid out of range")))?;
        // SAFETY: plain syscall on our own child's process group.
        if unsafe { libc::killpg(pgid, signal) } == 0 {
            Ok(())
        } else {
            Err(LabError::io(
                format!("sending signal {signal} to `{}`", self.name),
                std::io::Error::last_os_error(),
            ))
        }
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = wait_until(&mut self.child, Instant::now() + timeout)
                .map_err(|e| LabError::io(format!("waiting for `{}`", self.name), e))?;
        }
        Ok(self.status)
    }

    /// Graceful stop: SIGTERM to the group, up to `grace` to exit, then SIGKILL.
    /// Returns the exit status.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        // ESRCH only means it exited meanwhile.
        let _ = self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_timeout(grace)? {
            // Children that ignored the TERM still die with the group.
            let _ = self.signal(libc::SIGKILL);
            return Ok(status);
        }
        kill_group(&mut self.child);
        let status = self
            .child
            .wait()
            .map_err(|e| LabError::io(format!("reaping `{}`", self.name), e))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Waits (bounded by `timeout`) until its log contains `needle`. Fails early, with the log
    /// tail, if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_for(&format!("log line containing {needle:?}"), timeout, |p| {
            p.log().contains(needle)
        })
    }

    /// Waits (bounded by `timeout`) until `ready(self)` is true, checking every 50 ms. Fails
    /// with the log tail if the process exits first or the time runs out.
    pub fn wait_for<F>(&mut self, what: &str, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut(&Self) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(status) = self.try_status()? {
                return Err(LabError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    command: format!("`{}` ({}) to show a {what}", self.name, self.command),
                    timeout,
                    detail: format!("; log {}:\n{}", self.log.display(), self.log_tail()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Kill the group even if the leader exited: daemons it forked stay in the group.
        let _ = self.signal(libc::SIGKILL);
        if self.status.is_none() {
            kill_group(&mut self.child);
        }
    }
}

fn create_log(dir: &Path, name: &str) -> Result<(PathBuf, File)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    for n in 1..1000 {
        let file = if n == 1 {
            format!("{safe}.log")
        } else {
            format!("{safe}.{n}.log")
        };
        let path = dir.join(file);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::io(format!("creating {}", path.display()), e)),
        }
    }
    Err(LabError::io(
        format!("creating a log for `{name}` in {}", dir.display()),
        std::io::Error::other("999 logs with that name exist already"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbt-process-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn alive(pid: i32) -> bool {
        // A zombie still has /proc/PID; look at its state.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    }

    #[test]
    fn logs_and_kills_the_whole_group_on_drop() {
        let dir = temp_dir("drop");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 300 & echo child=$!; echo ready; wait"]);
        let mut p = Process::spawn("sleeper", cmd, &dir).unwrap();
        p.wait_for_log("ready", Duration::from_secs(20)).unwrap();
        let log = p.log();
        let child: i32 = log
            .lines()
            .find_map(|l| l.strip_prefix("child="))
            .and_then(|s| s.trim().parse().ok())
            .unwrap();
        assert!(alive(child));
        assert_eq!(p.log_path(), dir.join("sleeper.log"));
        drop(p);
        // The grandchild was re-parented to init, which reaps it; wait for that, bounded.
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(child), "grandchild {child} survived the drop");
        let again = Process::spawn("sleeper", Command::new("true"), &dir).unwrap();
        assert_eq!(again.log_path(), dir.join("sleeper.2.log"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn early_exit_is_reported_with_the_log() {
        let dir = temp_dir("exit");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo bad config >&2; exit 7"]);
        let mut p = Process::spawn("broken", cmd, &dir).unwrap();
        let err = p
            .wait_for_log("listening", Duration::from_secs(20))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad config") && msg.contains('7'), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stop_is_graceful() {
        let dir = temp_dir("stop");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.1; done",
        ]);
        let mut p = Process::spawn("polite", cmd, &dir).unwrap();
        p.wait_for_log("up", Duration::from_secs(20)).unwrap();
        let log = p.log_path().to_path_buf();
        let status = p.stop(Duration::from_secs(20)).unwrap();
        assert!(status.success(), "{status}");
        assert!(std::fs::read_to_string(log).unwrap().contains("bye"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
