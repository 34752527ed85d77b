//! A throw-away `redis-server` on a free loopback port, for the benchmark and the tests.
//! The process is killed and its directory removed when the guard is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server child.
pub struct LocalRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalRedisError {
    #[error("redis-server not found on PATH: install the Debian package `redis-server` ({0})")]
    Missing(std::io::Error),
    #[error("redis-server did not start: {0}")]
    Start(String),
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalRedis {
    /// Starts redis-server (no persistence) and waits until it answers PING.
    pub fn start() -> Result<Self, LocalRedisError> {
        let mut last = String::new();
        // The port is free when probed but could be taken before redis binds it: retry.
        for _ in 0..5 {
            let port = free_port().map_err(|e| LocalRedisError::Start(e.to_string()))?;
            let dir = std::env::temp_dir().join(format!(
                "app-redis-{}-{port}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).map_err(|e| LocalRedisError::Start(e.to_string()))?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "yes",
                ])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    let _ = std::fs::remove_dir_all(&dir);
                    if e.kind() == std::io::ErrorKind::NotFound {
                        LocalRedisError::Missing(e)
                    } else {
                        LocalRedisError::Start(e.to_string())
                    }
                })?;
            let mut r = LocalRedis { child, dir, port };
            match r.wait_ready(Duration::from_secs(15)) {
                Ok(()) => return Ok(r),
                Err(e) => last = e,
            }
        }
        Err(LocalRedisError::Start(last))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500))
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("no PING answer within the time limit".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (to freeze it with SIGSTOP, for example).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
