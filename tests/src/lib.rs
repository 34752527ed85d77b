//! Lab helper for the end-to-end tests (and later `cargo xtask lab`).
//!
//! - [`topology`]: the lab description `vagrant/topology.json` (also read by the Vagrantfile),
//!   parsed and validated; small ad-hoc topologies built in code.
//! - [`netns`]: a [`Lab`] of network namespaces around a bridge built from a topology, torn down
//!   on drop; [`netns::cleanup_stale`] for leftovers of killed runs.
//! - [`exec`]: bounded command runs whose errors carry the command line and stderr.
//! - [`process`]: long-running processes with a log file, killed (whole group) on drop.
//! - [`setns`]: run Rust closures inside a namespace (sockets from "the client host").
//! - [`bins`]: the workspace's programs (lbd, lbctl, app) for tests of another package.
//! - [`bpffs`]: a private bpffs for pins that commands inside namespaces can see.
//! - [`system`]: the whole system (lbd, app, Redis, PostgreSQL) provisioned into a lab.
//! - [`openapi`]: the API docs' tables rendered from an OpenAPI document, and checked.
//! - [`schemathesis`]: bounded Schemathesis runs against a service's document, and their reports.
//! - [`vagrant`]: the same system as virtual machines (Vagrant, libvirt), and its smoke test.
//! - [`metrics`]: reading the apps' Prometheus metrics.
//! - [`metrics_doc`]: docs/metrics.md checked against what lbd and app expose and define.
//! - [`http`]: a small HTTP/1.1 client for requests from inside a namespace.
//! - [`mixed`]: a mixed load through the VIP (user reads and writes, tasks, orders) with a
//!   ledger of every request (the chaos tests and the soak).
//! - [`observe`]: a running system's vital signs (daemons' memory, lbd's metrics, Redis).
//! - [`stats`]: the median every benchmark reports.
//!
//! ```no_run
//! use std::net::{SocketAddr, TcpListener, TcpStream};
//! use tests::{Lab, Topology};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lab = Lab::create(&Topology::small(2)?)?;
//! let be1 = lab.host("be1")?;
//! let listener = be1.in_netns(|| TcpListener::bind("0.0.0.0:8080"))??;
//! let addr = SocketAddr::from((be1.ipv4(), 8080));
//! let stream = lab.host("client")?.in_netns(|| TcpStream::connect(addr))??;
//! let curl = lab.host("client")?.exec(["curl", "-s", "--max-time", "5", "http://10.77.0.11:8080/"]);
//! # Ok(()) }
//! ```
//! Everything needs root and the `ip` (iproute2), `ethtool` and `sysctl` (procps) programs.

#![warn(missing_docs)]

pub mod bins;
pub mod bpffs;
pub mod error;
pub mod exec;
pub mod http;
pub mod metrics;
pub mod metrics_doc;
pub mod mixed;
pub mod netns;
pub mod observe;
pub mod openapi;
pub mod pinned;
pub mod process;
pub mod schemathesis;
pub mod setns;
pub mod stats;
pub mod system;
pub mod topology;
pub mod vagrant;

pub use error::{LabError, Result};
pub use netns::{Host, Lab, LabBuilder, MacAddr, SegmentKind};
pub use process::Process;
pub use system::{System, SystemOptions, XdpMode};
pub use topology::{HaMode, Role, Topology};
