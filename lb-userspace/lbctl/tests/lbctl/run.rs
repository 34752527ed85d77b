//! Running the real `lbctl` binary with a bounded wait, and reading its tables.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_lbd::FakeLbd;

/// What one run of lbctl left behind.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "lbctl failed: stderr={} stdout={}",
            self.stderr, self.stdout
        );
        self
    }

    /// A failure: non-zero status and exactly one line on stderr.
    pub fn failed(self) -> Self {
        assert_ne!(
            self.code, 0,
            "lbctl should have failed: stdout={}",
            self.stdout
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one-line error expected: {}",
            self.stderr
        );
        assert!(self.stderr.starts_with("lbctl: "), "{}", self.stderr);
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}): {}", self.stdout))
    }
}

/// Kills lbctl if the test gives up on it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs lbctl with a clean environment (no LBCTL_* from the caller) and a bounded wait.
pub fn lbctl(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbctl"));
    for var in [
        "LBCTL_SOCKET",
        "LBCTL_URL",
        "LBCTL_TOKEN",
        "LBCTL_TOKEN_FILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().expect("cannot start lbctl"));
    let mut stdout = child.0.stdout.take().expect("stdout piped");
    let mut stderr = child.0.stderr.take().expect("stderr piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for lbctl") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "lbctl {args:?} did not finish within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().expect("reader").expect("stdout is UTF-8"),
        stderr: err_reader.join().expect("reader").expect("stderr is UTF-8"),
    }
}

fn sock(lbd: &FakeLbd) -> [String; 2] {
    ["--socket".into(), lbd.socket.display().to_string()]
}

/// `lbctl --socket SOCK args...`
pub fn over_socket(lbd: &FakeLbd, args: &[&str]) -> Out {
    let s = sock(lbd);
    let all: Vec<&str> = s
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect();
    lbctl(&all, &[])
}

/// The table line that starts with `first` (after indentation), split on whitespace.
pub fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row for {first} in:\n{table}"))
}
