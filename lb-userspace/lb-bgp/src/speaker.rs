//! The BIRD process: lbd writes its configuration, checks it, then adopts a BIRD that already
//! answers on the control socket (an earlier lbd started it and was killed) by making it
//! reload, or starts one. BIRD runs in a process group of its own, so it outlives a killed
//! lbd and keeps announcing what the kernel table holds (docs/bgp.md, "failures").

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lb_config::BgpConfig;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::{conf, ctl::Ctl};

/// How long a starting BIRD may take to open its control socket.
const START_WAIT: Duration = Duration::from_secs(10);

pub struct Speaker {
    cfg: BgpConfig,
    /// The BIRD lbd started; `None` for an adopted one (or none running).
    child: Option<Child>,
    /// Found running at start.
    pub adopted: bool,
    /// Times lbd started BIRD.
    pub starts: u64,
    pub version: Option<String>,
}

fn pid_file(cfg: &BgpConfig) -> PathBuf {
    cfg.config_file.with_extension("pid")
}

/// BIRD's output (`log stderr all`), beside its configuration.
pub fn log_file(cfg: &BgpConfig) -> PathBuf {
    cfg.config_file.with_extension("log")
}

/// Writes `text` to `path` with mode 0600 (the configuration may hold TCP-MD5 keys),
/// replacing the old file in one rename.
fn write_private(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Speaker {
    /// Writes and checks BIRD's configuration, then adopts the running BIRD or starts one.
    pub async fn start(cfg: &BgpConfig) -> Result<Self> {
        let text = conf::render(cfg)?;
        write_private(&cfg.config_file, &text)?;
        if !cfg.bird.is_file() {
            bail!(
                "bgp.bird: {} does not exist (install BIRD 2: apt-get install bird2)",
                cfg.bird.display()
            );
        }
        let check = Command::new(&cfg.bird)
            .arg("-p")
            .arg("-c")
            .arg(&cfg.config_file)
            .output()
            .await
            .with_context(|| format!("running {} -p", cfg.bird.display()))?;
        if !check.status.success() {
            bail!(
                "BIRD rejects the configuration lbd wrote ({}): {}",
                cfg.config_file.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            );
        }
        let mut s = Self {
            cfg: cfg.clone(),
            child: None,
            adopted: false,
            starts: 0,
            version: None,
        };
        match Ctl::connect(&cfg.socket).await {
            Ok(mut ctl) => {
                let file = cfg.config_file.display().to_string();
                ctl.command(&format!("configure \"{file}\""))
                    .await
                    .context("making the running BIRD read lbd's configuration")?;
                info!(socket = %cfg.socket.display(), version = %ctl.version, "bgp: adopted the running BIRD (reconfigured)");
                s.version = Some(ctl.version);
                s.adopted = true;
            }
            Err(_) => s.spawn().await?,
        }
        Ok(s)
    }

    async fn spawn(&mut self) -> Result<()> {
        let cfg = &self.cfg;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file(cfg))
            .with_context(|| format!("opening {}", log_file(cfg).display()))?;
        let err = log.try_clone()?;
        // Its own process group: a signal to lbd's group (a terminal's Ctrl-C, a service
        // manager stopping lbd) does not reach it; lbd stops it itself on a clean stop.
        let child = Command::new(&cfg.bird)
            .arg("-f")
            .arg("-c")
            .arg(&cfg.config_file)
            .arg("-s")
            .arg(&cfg.socket)
            .arg("-P")
            .arg(pid_file(cfg))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .with_context(|| format!("starting {}", cfg.bird.display()))?;
        self.child = Some(child);
        self.starts += 1;
        let t0 = tokio::time::Instant::now();
        loop {
            if let Ok(ctl) = Ctl::connect(&cfg.socket).await {
                info!(socket = %cfg.socket.display(), version = %ctl.version, "bgp: BIRD started");
                self.version = Some(ctl.version);
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                bail!(
                    "BIRD exited at start ({status}): {}",
                    tail(&log_file(cfg), 10)
                );
            }
            if t0.elapsed() > START_WAIT {
                bail!(
                    "BIRD did not open {} within {START_WAIT:?}: {}",
                    cfg.socket.display(),
                    tail(&log_file(cfg), 10)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A control connection, or why there is none.
    pub async fn ctl(&self) -> Result<Ctl> {
        Ok(Ctl::connect(&self.cfg.socket).await?)
    }

    /// Starts BIRD again when the one lbd started has exited (an adopted one is watched
    /// through its socket by the caller). Returns whether it did.
    pub async fn restart_if_exited(&mut self) -> Result<bool> {
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait()?.map(|s| s.to_string()),
            None if !self.adopted => Some("not running".into()),
            None => None,
        };
        let Some(why) = exited else {
            return Ok(false);
        };
        warn!(status = %why, log = %tail(&log_file(&self.cfg), 5), "bgp: BIRD is gone; starting it again");
        self.child = None;
        self.spawn().await?;
        Ok(true)
    }

    /// After an adopted BIRD stopped answering: start one of lbd's own.
    pub async fn replace_adopted(&mut self) -> Result<()> {
        warn!("bgp: the adopted BIRD no longer answers; starting a new one");
        self.adopted = false;
        self.spawn().await
    }

    /// Stops BIRD: `down` on its socket (it closes every session with a Cease notification),
    /// then waits for it to exit; a signal if it does not.
    pub async fn stop(&mut self) {
        match Ctl::connect(&self.cfg.socket).await {
            Ok(mut ctl) => {
                if let Err(e) = ctl.command("down").await {
                    warn!(error = %e, "bgp: BIRD refused `down`");
                }
            }
            Err(e) => warn!(error = %e, "bgp: BIRD does not answer; signalling it"),
        }
        let pid = std::fs::read_to_string(pid_file(&self.cfg))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        let t0 = tokio::time::Instant::now();
        loop {
            let gone = match self.child.as_mut() {
                Some(c) => c.try_wait().map(|s| s.is_some()).unwrap_or(true),
                None => pid.is_none_or(|p| !alive(p)),
            };
            if gone {
                info!("bgp: BIRD stopped");
                return;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                warn!("bgp: BIRD did not stop within 5 s; killing it");
                match (self.child.as_mut(), pid) {
                    (Some(c), _) => {
                        let _ = c.kill().await;
                    }
                    // SAFETY: kill(2) on the pid BIRD wrote for itself.
                    (None, Some(p)) => unsafe {
                        libc::kill(p, libc::SIGKILL);
                    },
                    (None, None) => {}
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether `pid` runs (not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}
