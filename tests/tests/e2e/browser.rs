//! Headless Chromium (Debian's `chromium`) driven by playwright-core from npm, inside a lab
//! host's namespace: `tests/dashboard/driver.js` takes one JSON command a line and answers one
//! a line. `cargo xtask test e2e` installs both (apt, `npm ci` on the committed lockfile).
//! Every call is bounded; dropping the [`Browser`] kills node and Chromium (one process group).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tests::Host;

/// Chromium's path (Debian's package).
const CHROMIUM: &str = "/usr/bin/chromium";

/// Extra time a call may take beyond its own timeout (the driver's answer, a slow start).
const SLACK: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    /// `None` once closed (the driver then closes Chromium and exits).
    stdin: Option<ChildStdin>,
    answers: Receiver<String>,
    log: PathBuf,
}

impl Browser {
    /// Starts the driver in `host`'s namespace; its stderr goes to `log`.
    pub fn start(host: &Host, log: &Path) -> Result<Self> {
        let dir = repo().join("tests/dashboard");
        ensure!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the dashboard tests need Debian's chromium \
             (cargo xtask test e2e installs it, or apt-get install chromium)"
        );
        ensure!(
            dir.join("node_modules/playwright-core").is_dir(),
            "{}/node_modules/playwright-core is missing: run `npm ci` there (cargo xtask test \
             e2e does)",
            dir.display()
        );
        let err =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = host.command(["node", "driver.js"]);
        cmd.current_dir(&dir)
            .env("CHROMIUM", CHROMIUM)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .context("starting node tests/dashboard/driver.js")?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = child.stdout.take().context("driver stdout")?;
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin: Some(stdin),
            answers,
            log: log.to_path_buf(),
        })
    }

    /// Sends one command; its answer's `value`, or its error.
    pub fn call(&mut self, cmd: Value, timeout: Duration) -> Result<Value> {
        let line = cmd.to_string();
        let stdin = self
            .stdin
            .as_mut()
            .context("the browser driver is closed")?;
        writeln!(stdin, "{line}").context("writing to the browser driver")?;
        stdin.flush()?;
        let answer = match self.answers.recv_timeout(timeout + SLACK) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "the browser driver did not answer {line} within {:?}\n{}",
                    timeout + SLACK,
                    self.log_tail()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!(
                    "the browser driver exited during {line}\n{}",
                    self.log_tail()
                )
            }
        };
        let v: Value = serde_json::from_str(&answer)
            .with_context(|| format!("the driver's answer {answer:?}"))?;
        if v["ok"] == true {
            Ok(v["value"].clone())
        } else {
            bail!("browser: {line}: {}", v["error"].as_str().unwrap_or("?"))
        }
    }

    /// Opens `url` in a new page: its HTTP status and Content-Security-Policy header.
    pub fn open(&mut self, url: &str) -> Result<(u64, Option<String>)> {
        let v = self.call(json!({"op": "open", "url": url}), Duration::from_secs(60))?;
        Ok((
            v["status"].as_u64().unwrap_or(0),
            v["csp"].as_str().map(str::to_string),
        ))
    }

    pub fn fill(&mut self, selector: &str, value: &str) -> Result<()> {
        self.call(
            json!({"op": "fill", "selector": selector, "value": value}),
            Duration::from_secs(10),
        )
        .map(drop)
    }

    pub fn click(&mut self, selector: &str) -> Result<()> {
        self.call(
            json!({"op": "click", "selector": selector}),
            Duration::from_secs(10),
        )
        .map(drop)
    }

    /// Waits (at most `timeout`) until an element matching `selector` has text matching the
    /// regular expression `text`; answers that text.
    pub fn wait_text(&mut self, selector: &str, text: &str, timeout: Duration) -> Result<String> {
        let v = self.call(
            json!({"op": "wait", "selector": selector, "text": text,
                   "timeout_ms": timeout.as_millis() as u64}),
            timeout,
        )?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// The text of every element matching `selector`.
    pub fn texts(&mut self, selector: &str) -> Result<Vec<String>> {
        let v = self.call(
            json!({"op": "texts", "selector": selector}),
            Duration::from_secs(10),
        )?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect())
    }

    pub fn screenshot(&mut self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.call(
            json!({"op": "screenshot", "path": path, "full_page": true}),
            Duration::from_secs(30),
        )
        .map(drop)
    }

    /// Console errors, page errors and failed requests so far.
    pub fn errors(&mut self) -> Result<Vec<String>> {
        let v = self.call(json!({"op": "errors"}), Duration::from_secs(10))?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "driver log {}:\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End of input: the driver closes Chromium (which Playwright runs in a process group
        // of its own) and exits. Then whatever is left of the driver's group goes.
        self.stdin = None;
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: plain syscall on our own child's process group (node and Chromium).
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where screenshots go: `$CARGO_TARGET_DIR/screenshots` (default `target/screenshots`).
pub fn screenshots() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("screenshots")
}
