//! A real rabbitmq-server on its own AMQP and distribution ports, node name and data
//! directory, started by the tests. Boot takes about 15-20 s, so a test binary shares one
//! broker ([`shared`]) and gives each test its own queue-name prefix.

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use app_testkit::local_rabbit::{self, SERVER};

use super::{START_TIMEOUT, free_port, port_open, require_binary, wait_until};

pub struct RabbitServer {
    pub port: u16,
    dist_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RabbitServer {
    /// Starts a broker; panics (naming the apt package) when RabbitMQ is not installed.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for rabbitmq");
        local_rabbit::prepare_dir(dir.path()).expect("plugins and config files");
        let mut s = Self {
            port: free_port(),
            dist_port: free_port(),
            dir,
            child: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        if !Path::new(SERVER).is_file() {
            require_binary("rabbitmq-server", &["/usr/sbin"], "rabbitmq-server");
            panic!("{SERVER} is missing: install the apt package `rabbitmq-server`");
        }
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("server.out")).expect("rabbitmq output file");
        let log2 = log.try_clone().expect("clone log handle");
        let child =
            local_rabbit::server_command(d, self.port, self.dist_port, &format!("t{}", self.port))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .expect("spawn rabbitmq-server");
        self.child = Some(child);
        let port = self.port;
        if !wait_until(START_TIMEOUT, Duration::from_millis(100), || {
            port_open(port)
        }) {
            let out = std::fs::read_to_string(d.join("server.out")).unwrap_or_default();
            self.kill();
            panic!("rabbitmq-server did not open AMQP port {port}; output:\n{out}");
        }
    }

    /// Kills the broker's whole process group (SIGKILL), as a crash would. Durable queues
    /// and persistent messages survive in the data directory.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_group(c.id());
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts it again on the same ports and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pgid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

fn kill_group(pgid: u32) {
    let pgid = i32::try_from(pgid).expect("pid fits in i32");
    // SAFETY: kill(2) on a process group we created; no memory is involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.kill();
    }
}

static SHARED: OnceLock<RabbitServer> = OnceLock::new();
static SHARED_PGID: OnceLock<u32> = OnceLock::new();

extern "C" fn kill_shared() {
    if let Some(p) = SHARED_PGID.get() {
        kill_group(*p);
    }
    if let Some(s) = SHARED.get() {
        let _ = std::fs::remove_dir_all(s.dir());
    }
}

/// One broker for the whole test binary, killed when the binary exits (statics are never
/// dropped, so an `atexit` hook does it).
pub fn shared() -> &'static RabbitServer {
    SHARED.get_or_init(|| {
        let s = RabbitServer::start();
        if let Some(p) = s.pgid() {
            let _ = SHARED_PGID.set(p);
            // SAFETY: registers a plain extern "C" function without captured state.
            unsafe {
                libc::atexit(kill_shared);
            }
        }
        s
    })
}
