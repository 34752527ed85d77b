//! A throw-away `rabbitmq-server` on free loopback ports with its own node name and data
//! directory, for the benchmark and the tests. It boots in about 15-20 s. Its process group is killed and
//! its directory removed when the guard is dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The start script, run directly: the /usr/sbin wrapper switches to the `rabbitmq` user,
/// which cannot write a temporary directory of ours.
pub const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

#[derive(Debug, thiserror::Error)]
pub enum LocalRabbitError {
    #[error("{SERVER} not found: install the Debian package `rabbitmq-server`")]
    Missing,
    #[error("rabbitmq-server did not start: {0}")]
    Start(String),
}

pub struct LocalRabbit {
    child: Child,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes the (empty) plugin list and config file a node started by [`server_command`] reads
/// from its directory.
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    std::fs::write(dir.join("rabbitmq.conf"), "")
}

/// The start script for a node of our own: AMQP port `port`, distribution port `dist_port`,
/// node name `{name}@localhost`, every file under `dir` (see [`prepare_dir`]). It runs in its
/// own process group, so that killing the group stops the script and the Erlang VM together.
pub fn server_command(dir: &Path, port: u16, dist_port: u16, name: &str) -> Command {
    let mut c = Command::new(SERVER);
    c.env("HOME", dir)
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_NODENAME", format!("{name}@localhost"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
        .current_dir(dir)
        .process_group(0);
    c
}

impl LocalRabbit {
    /// Starts the broker and waits (up to 90 s) until its AMQP port accepts connections.
    pub fn start() -> Result<Self, LocalRabbitError> {
        if !Path::new(SERVER).is_file() {
            return Err(LocalRabbitError::Missing);
        }
        let err = |e: std::io::Error| LocalRabbitError::Start(e.to_string());
        let port = free_port().map_err(err)?;
        let dist = free_port().map_err(err)?;
        let dir = std::env::temp_dir().join(format!(
            "app-rabbit-{}-{port}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(err)?;
        prepare_dir(&dir).map_err(err)?;
        let out = std::fs::File::create(dir.join("server.out")).map_err(err)?;
        let child = server_command(&dir, port, dist, &format!("bench{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(err)?)
            .stderr(out)
            .spawn()
            .map_err(err)?;
        let mut r = LocalRabbit { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(90);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                let out = std::fs::read_to_string(r.dir.join("server.out")).unwrap_or_default();
                return Err(LocalRabbitError::Start(format!(
                    "exited with {status}: {out}"
                )));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(LocalRabbitError::Start(format!(
                    "AMQP port {port} not open after 90 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for LocalRabbit {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group this guard created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
