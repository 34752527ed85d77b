//! Highly available Redis made of real `redis-server` processes on free loopback ports:
//! a Redis Cluster (`cluster-enabled yes`, built with `redis-cli --cluster create`) and a
//! Sentinel set (one master, its replicas, three sentinels). Every process lives in one
//! temporary directory and is killed when the value drops, also when a test panics.
//!
//! Waits are bounded; a failed wait panics with the end of the relevant logs (this is a test
//! and benchmark harness: a cluster that cannot be built ends the run with that message).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::process::{
    ChildGuard, START_TIMEOUT, free_port, port_open, require_binary, send_signal, wait_until,
};

/// Failure detection of the cluster: a master silent this long is failed over by its
/// replica. Short enough for a quick test, long enough that a loaded 2-core machine does
/// not fail over healthy masters.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 3_000;
/// Sentinel's `down-after-milliseconds` (same trade-off).
pub const SENTINEL_DOWN_AFTER_MS: u64 = 2_000;
/// Bound on a failover (detection, election, promotion) on a loaded machine.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// One redis-server (data node or sentinel).
pub struct Node {
    pub port: u16,
    /// The cluster bus port chosen for it (cluster nodes only use it).
    pub bus_port: u16,
    pub name: String,
    dir: PathBuf,
    guard: Option<ChildGuard>,
    paused: bool,
}

impl Node {
    /// Starts `redis-server` with `args(port, bus_port)` in its own subdirectory of `root`
    /// and waits for PING. A port taken between probe and bind makes the server exit: then
    /// it is tried again with other ports.
    fn start(
        root: &Path,
        name: &str,
        config_file: Option<&dyn Fn(u16) -> String>,
        args: &dyn Fn(u16, u16) -> Vec<String>,
    ) -> Self {
        let bin = require_binary("redis-server", &[], "redis-server");
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("node directory");
        let mut last_log = String::new();
        for _ in 0..5 {
            let (port, bus) = (free_port(), free_port());
            let mut cmd = Command::new(&bin);
            if let Some(conf) = config_file {
                let path = dir.join("node.conf");
                std::fs::write(&path, conf(port)).expect("write node config");
                cmd.arg(&path);
            }
            let log = dir.join("redis.log");
            let _ = std::fs::remove_file(&log);
            let child = cmd
                .args(args(port, bus))
                .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut guard = ChildGuard::new(format!("redis {name}"), child);
            let up = wait_until(START_TIMEOUT, Duration::from_millis(20), || {
                !guard.is_running() || (port_open(port) && cli(port, &["PING"]) == "PONG")
            });
            if up && guard.is_running() {
                return Self {
                    port,
                    bus_port: bus,
                    name: name.to_string(),
                    dir,
                    guard: Some(guard),
                    paused: false,
                };
            }
            guard.stop();
            last_log = log_tail(&log);
        }
        panic!("redis {name} did not start (5 tries); log:\n{last_log}");
    }

    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop();
        }
    }

    /// Freezes the process (SIGSTOP): its connections stay open but nothing answers, as
    /// with a hung host or a network partition.
    pub fn pause(&mut self) {
        if let Some(g) = &self.guard {
            g.signal(libc::SIGSTOP);
            self.paused = true;
        }
    }

    /// Undoes [`Node::pause`].
    pub fn resume(&mut self) {
        if let Some(g) = &self.guard {
            g.signal(libc::SIGCONT);
            self.paused = false;
        }
    }

    /// Running and not paused: it can answer.
    pub fn is_live(&mut self) -> bool {
        !self.paused && self.guard.as_mut().is_some_and(ChildGuard::is_running)
    }

    pub fn log(&self) -> String {
        log_tail(&self.dir.join("redis.log"))
    }

    /// The process id, while it runs under this guard.
    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(ChildGuard::pid)
    }
}

/// Bound on one `redis-cli` call: a frozen node would hold it forever.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `redis-cli` against 127.0.0.1:`port` (RESP2 output, one value per line); an empty
/// string when the node does not answer within [`CLI_TIMEOUT`].
pub fn cli(port: u16, args: &[&str]) -> String {
    let bin = require_binary("redis-cli", &[], "redis-tools");
    let child = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run redis-cli");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(CLI_TIMEOUT) {
        Ok(Ok(out)) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(Err(e)) => panic!("redis-cli failed: {e}"),
        Err(_) => {
            // The reader thread reaps it once killed.
            send_signal(pid, libc::SIGKILL);
            String::new()
        }
    }
}

/// Runs `redis-cli --cluster SUBCOMMAND ADDRS... OPTIONS... --cluster-yes`; panics with
/// its output when it fails.
fn redis_cli_cluster(sub: &[&str], addrs: &[String], options: &[&str]) {
    let bin = require_binary("redis-cli", &[], "redis-tools");
    let out = Command::new(bin)
        .arg("--cluster")
        .args(sub)
        .args(addrs)
        .args(options)
        .arg("--cluster-yes")
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli --cluster");
    assert!(
        out.status.success(),
        "redis-cli --cluster {} failed: {}\n{}",
        sub.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `127.0.0.1:P1,127.0.0.1:P2,...`
fn host_list(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",")
}

/// The end of every node's log, for a failed wait.
fn logs_of(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- {} ({}):\n{}", n.name, n.port, n.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `field:value` lines of `INFO` output.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// The two halves of [`RedisCluster::migrate_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStep {
    Started,
    Finished,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct ClusterNodeInfo {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges served (masters only).
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each.
pub struct RedisCluster {
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("app-redis-cluster-")
            .tempdir()
            .expect("temp dir for the cluster");
        let nodes: Vec<Node> = (0..masters * (1 + replicas))
            .map(|i| {
                Node::start(dir.path(), &format!("node{i}"), None, &|port, bus| {
                    vec![
                        "--port".into(),
                        port.to_string(),
                        // The bus port is chosen too: port + 10000 may be taken or > 65535.
                        "--cluster-port".into(),
                        bus.to_string(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        "nodes.conf".into(),
                        "--cluster-node-timeout".into(),
                        CLUSTER_NODE_TIMEOUT_MS.to_string(),
                        // A replica may take over however long ago it last heard its master.
                        "--cluster-replica-validity-factor".into(),
                        "0".into(),
                        "--save".into(),
                        String::new(),
                        "--appendonly".into(),
                        "no".into(),
                    ]
                })
            })
            .collect();
        let c = Self { nodes, dir };
        if masters >= 3 {
            let addrs: Vec<String> = host_list(&c.nodes).split(',').map(String::from).collect();
            redis_cli_cluster(
                &["create"],
                &addrs,
                &["--cluster-replicas", &replicas.to_string()],
            );
        } else {
            // `redis-cli --cluster create` refuses fewer than 3 masters (too few to vote a
            // failover); a smaller cluster is assembled by hand, the way it does.
            c.assemble(masters);
        }
        c.wait_healthy(masters, masters * replicas);
        c
    }

    /// Gives the first `masters` nodes equal contiguous slot ranges, introduces every node
    /// to the first, and makes each further node a replica of a master in turn.
    fn assemble(&self, masters: usize) {
        let ok = |out: String, what: &str| assert_eq!(out, "OK", "{what}: {out}");
        for (i, n) in self.nodes[..masters].iter().enumerate() {
            let lo = 16_384 * i / masters;
            let hi = 16_384 * (i + 1) / masters - 1;
            ok(
                n.cli(&["CLUSTER", "ADDSLOTSRANGE", &lo.to_string(), &hi.to_string()]),
                "CLUSTER ADDSLOTSRANGE",
            );
        }
        // The bus port is not port + 10000 here: MEET must name it.
        let (first, bus) = (
            self.nodes[0].port.to_string(),
            self.nodes[0].bus_port.to_string(),
        );
        for n in &self.nodes[1..] {
            ok(
                n.cli(&["CLUSTER", "MEET", "127.0.0.1", &first, &bus]),
                "CLUSTER MEET",
            );
        }
        let ids: Vec<String> = self.nodes[..masters]
            .iter()
            .map(|n| n.cli(&["CLUSTER", "MYID"]))
            .collect();
        for (i, n) in self.nodes[masters..].iter().enumerate() {
            let master = &ids[i % masters];
            // The replica must know its master first (gossip spreads MEET within seconds).
            let known = wait_until(START_TIMEOUT, Duration::from_millis(100), || {
                n.cli(&["CLUSTER", "NODES"]).contains(master.as_str())
            });
            assert!(known, "{} never learnt about master {master}", n.name);
            ok(
                n.cli(&["CLUSTER", "REPLICATE", master]),
                "CLUSTER REPLICATE",
            );
        }
    }

    /// `redis-cli --cluster reshard`: moves `slots` slots (the lowest first) from the master
    /// on `from` to the master on `to`, keys included, while clients keep working (they get
    /// `ASK` while a slot moves, then `MOVED`).
    pub fn reshard(&mut self, from: u16, to: u16, slots: usize) {
        let ids: Vec<(u16, String)> = self
            .topology()
            .into_iter()
            .map(|n| (n.port, n.id))
            .collect();
        let id = |port: u16| {
            ids.iter()
                .find(|(p, _)| *p == port)
                .map(|(_, id)| id.clone())
                .unwrap_or_else(|| panic!("no cluster node on port {port}"))
        };
        redis_cli_cluster(
            &["reshard"],
            &[format!("127.0.0.1:{from}")],
            &[
                "--cluster-from",
                &id(from),
                "--cluster-to",
                &id(to),
                "--cluster-slots",
                &slots.to_string(),
            ],
        );
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", host_list(&self.nodes))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn live_port(&mut self) -> u16 {
        self.nodes
            .iter_mut()
            .find_map(|n| n.is_live().then_some(n.port))
            .expect("no live cluster node")
    }

    /// The cluster's view from a live node.
    pub fn topology(&mut self) -> Vec<ClusterNodeInfo> {
        let port = self.live_port();
        parse_cluster_nodes(&cli(port, &["CLUSTER", "NODES"]))
    }

    /// Live masters that serve slots.
    pub fn masters(&mut self) -> Vec<ClusterNodeInfo> {
        self.topology()
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .collect()
    }

    /// The port of the master serving `slot`.
    pub fn master_of_slot(&mut self, slot: u16) -> u16 {
        self.masters()
            .into_iter()
            .find(|m| m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|m| m.port)
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    /// The hash slot of `key`, as the cluster computes it.
    pub fn slot_of(&mut self, key: &str) -> u16 {
        let port = self.live_port();
        let s = cli(port, &["CLUSTER", "KEYSLOT", key]);
        s.parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {s}"))
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Moves `slot` to the master on `to` the way `redis-cli --cluster reshard` does, in
    /// two steps: [`MigrationStep::Started`] leaves the slot half-moved (source MIGRATING,
    /// target IMPORTING, the keys already on the target: clients get `ASK`), then
    /// [`MigrationStep::Finished`] assigns it to the target everywhere (clients get `MOVED`).
    pub fn migrate_slot(&mut self, slot: u16, to: u16, step: MigrationStep) {
        let nodes = self.topology();
        let from = nodes
            .iter()
            .find(|m| {
                m.master && !m.failed && m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
            })
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .clone();
        let target = nodes
            .iter()
            .find(|n| n.port == to && n.master)
            .unwrap_or_else(|| panic!("{to} is not a master"))
            .clone();
        let slot_s = slot.to_string();
        let ok = |out: String, what: &str| assert_eq!(out, "OK", "{what}: {out}");
        match step {
            MigrationStep::Started => {
                ok(
                    cli(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from.id]),
                    "SETSLOT IMPORTING",
                );
                ok(
                    cli(
                        from.port,
                        &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &target.id],
                    ),
                    "SETSLOT MIGRATING",
                );
                loop {
                    let keys = cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "100"]);
                    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
                    if keys.is_empty() {
                        break;
                    }
                    let to_s = to.to_string();
                    let mut args = vec!["MIGRATE", "127.0.0.1", &to_s, "", "0", "5000", "KEYS"];
                    args.extend(keys);
                    ok(cli(from.port, &args), "MIGRATE");
                }
            }
            MigrationStep::Finished => {
                for n in nodes.iter().filter(|n| n.master && !n.failed) {
                    ok(
                        cli(n.port, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &target.id]),
                        "SETSLOT NODE",
                    );
                }
            }
        }
    }

    /// SIGKILLs the master on `port`.
    pub fn kill(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Waits until another node serves the slots `old_master` served and every live node
    /// says `cluster_state:ok`; returns the promoted node's port.
    pub fn wait_promoted(&mut self, old_master: u16, slot: u16) -> u16 {
        let mut promoted = None;
        let ok = wait_until(FAILOVER_TIMEOUT, Duration::from_millis(100), || {
            let live: Vec<u16> = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.is_live().then_some(n.port))
                .collect();
            let all_ok = live.iter().all(|&p| {
                info_field(&cli(p, &["CLUSTER", "INFO"]), "cluster_state").as_deref() == Some("ok")
            });
            let owner = live.first().and_then(|&p| {
                parse_cluster_nodes(&cli(p, &["CLUSTER", "NODES"]))
                    .into_iter()
                    .find(|m| {
                        m.master
                            && !m.failed
                            && m.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
                    })
                    .map(|m| m.port)
            });
            promoted = owner.filter(|&p| p != old_master);
            all_ok && promoted.is_some()
        });
        if !ok {
            panic!(
                "no replica took over slot {slot} of master {old_master} within {FAILOVER_TIMEOUT:?}; logs:\n{}",
                logs_of(&self.nodes)
            );
        }
        promoted.expect("checked above")
    }

    /// Waits until every node knows every other, all slots are served by `masters` masters,
    /// `replicas` replicas are in sync and every node says `cluster_state:ok`.
    pub fn wait_healthy(&self, masters: usize, replicas: usize) {
        let total = self.nodes.len();
        let ok = wait_until(START_TIMEOUT, Duration::from_millis(100), || {
            self.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info_field(&info, "cluster_state").as_deref() == Some("ok")
                    && info_field(&info, "cluster_known_nodes") == Some(total.to_string())
                    && info_field(&info, "cluster_slots_ok").as_deref() == Some("16384")
            }) && {
                let nodes = parse_cluster_nodes(&self.nodes[0].cli(&["CLUSTER", "NODES"]));
                nodes.iter().filter(|n| n.master).count() == masters
                    && self
                        .nodes
                        .iter()
                        .filter(|n| {
                            let info = n.cli(&["INFO", "replication"]);
                            info_field(&info, "role").as_deref() == Some("slave")
                                && info_field(&info, "master_link_status").as_deref() == Some("up")
                        })
                        .count()
                        == replicas
            }
        });
        if !ok {
            panic!(
                "cluster not healthy within {START_TIMEOUT:?}:\n{}\nlog of node0:\n{}",
                self.nodes[0].cli(&["CLUSTER", "NODES"]),
                self.nodes[0].log()
            );
        }
    }
}

/// Parses `CLUSTER NODES` (`id addr flags master ping pong epoch link slot...`).
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeInfo> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            // 127.0.0.1:7000@17000
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(ClusterNodeInfo {
                id: f[0].to_string(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

/// One master, `replicas` replicas and `sentinels` sentinels watching it under [`Self::NAME`].
pub struct RedisSentinel {
    pub data: Vec<Node>,
    pub sentinels: Vec<Node>,
    dir: tempfile::TempDir,
}

impl RedisSentinel {
    pub const NAME: &'static str = "appmaster";

    pub fn start(replicas: usize, sentinels: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("app-redis-sentinel-")
            .tempdir()
            .expect("temp dir for the sentinel set");
        let data_args = |port: u16| {
            vec![
                "--port".to_string(),
                port.to_string(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
            ]
        };
        let master = Node::start(dir.path(), "master", None, &|port, _| data_args(port));
        let mport = master.port;
        let mut data = vec![master];
        for i in 0..replicas {
            data.push(Node::start(
                dir.path(),
                &format!("replica{i}"),
                None,
                &|port, _| {
                    let mut a = data_args(port);
                    a.extend(["--replicaof".into(), "127.0.0.1".into(), mport.to_string()]);
                    a
                },
            ));
        }
        let quorum = sentinels / 2 + 1;
        let sentinel_nodes = (0..sentinels)
            .map(|i| {
                // Sentinel rewrites its config file, so it gets one of its own.
                let conf = |port: u16| {
                    format!(
                        "port {port}\n\
                         sentinel monitor {name} 127.0.0.1 {mport} {quorum}\n\
                         sentinel down-after-milliseconds {name} {SENTINEL_DOWN_AFTER_MS}\n\
                         sentinel failover-timeout {name} 10000\n\
                         sentinel parallel-syncs {name} 2\n",
                        name = Self::NAME
                    )
                };
                Node::start(dir.path(), &format!("sentinel{i}"), Some(&conf), &|_, _| {
                    vec!["--sentinel".into()]
                })
            })
            .collect();
        let s = Self {
            data,
            sentinels: sentinel_nodes,
            dir,
        };
        s.wait_healthy(replicas, sentinels);
        s
    }

    /// `redis+sentinel://` naming every sentinel and the master.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://{}/{}",
            host_list(&self.sentinels),
            Self::NAME
        )
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The master's port as the first answering sentinel reports it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", Self::NAME]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    pub fn data_node_mut(&mut self, port: u16) -> &mut Node {
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"))
    }

    /// SIGKILLs the current master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port().expect("sentinels name a master");
        self.data_node_mut(port).kill();
        port
    }

    /// Waits until the sentinels name another master and it says `role:master`.
    pub fn wait_promoted(&self, old_master: u16) -> u16 {
        let mut promoted = None;
        let ok = wait_until(FAILOVER_TIMEOUT, Duration::from_millis(100), || {
            promoted = self.master_port().filter(|&p| {
                p != old_master
                    && info_field(&cli(p, &["INFO", "replication"]), "role").as_deref()
                        == Some("master")
            });
            promoted.is_some()
        });
        if !ok {
            panic!(
                "the sentinels did not promote a replica of {old_master} within {FAILOVER_TIMEOUT:?}; logs:\n{}",
                logs_of(&self.sentinels)
            );
        }
        promoted.expect("checked above")
    }

    fn wait_healthy(&self, replicas: usize, sentinels: usize) {
        let ok = wait_until(START_TIMEOUT, Duration::from_millis(100), || {
            self.sentinels.iter().all(|s| {
                let out = s.cli(&["SENTINEL", "MASTER", Self::NAME]);
                let lines: Vec<&str> = out.lines().collect();
                let field = |k: &str| {
                    lines
                        .iter()
                        .position(|l| *l == k)
                        .and_then(|i| lines.get(i + 1).copied())
                };
                field("flags") == Some("master")
                    && field("num-slaves") == Some(&replicas.to_string())
                    && field("num-other-sentinels") == Some(&(sentinels - 1).to_string())
            }) && self.data[1..].iter().all(|r| {
                info_field(&r.cli(&["INFO", "replication"]), "master_link_status").as_deref()
                    == Some("up")
            })
        });
        if !ok {
            panic!(
                "sentinel set not healthy within {START_TIMEOUT:?}:\n{}\nlog of sentinel0:\n{}",
                self.sentinels[0].cli(&["SENTINEL", "MASTER", Self::NAME]),
                self.sentinels[0].log()
            );
        }
    }
}

/// A Redis Cluster or a Sentinel set, for tests that run the same on both.
pub enum Ha {
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

impl Ha {
    pub fn url(&self) -> String {
        match self {
            Ha::Cluster(c) => c.url(),
            Ha::Sentinel(s) => s.url(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Ha::Cluster(_) => "cluster",
            Ha::Sentinel(_) => "sentinel",
        }
    }

    /// The port of the master that holds `key`.
    pub fn master_of(&mut self, key: &str) -> u16 {
        match self {
            Ha::Cluster(c) => {
                let s = c.slot_of(key);
                c.master_of_slot(s)
            }
            Ha::Sentinel(s) => s.master_port().expect("sentinels name a master"),
        }
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        match self {
            Ha::Cluster(c) => c.node_mut(port),
            Ha::Sentinel(s) => s.data_node_mut(port),
        }
    }

    /// Waits until a replica serves `key` in place of `old`; returns its port.
    pub fn wait_promoted(&mut self, old: u16, key: &str) -> u16 {
        match self {
            Ha::Cluster(c) => {
                let s = c.slot_of(key);
                c.wait_promoted(old, s)
            }
            Ha::Sentinel(s) => s.wait_promoted(old),
        }
    }
}

/// Servers and directories of setups kept for the whole process ([`Ha::for_process`]).
static AT_EXIT: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

extern "C" fn clean_up_at_exit() {
    let g = AT_EXIT.lock().unwrap_or_else(PoisonError::into_inner);
    for pid in &g.0 {
        send_signal(*pid, libc::SIGKILL);
    }
    for dir in &g.1 {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Ha {
    /// Keeps this setup for the rest of the process, for a test binary whose tests share it
    /// (each with its own key prefix): its servers are killed and its directory removed when
    /// the process exits (statics are never dropped, so an `atexit` hook does it).
    pub fn for_process(self) -> &'static Ha {
        let (nodes, dir): (Vec<&Node>, &Path) = match &self {
            Ha::Cluster(c) => (c.nodes.iter().collect(), c.dir()),
            Ha::Sentinel(s) => (s.data.iter().chain(&s.sentinels).collect(), s.dir()),
        };
        let mut g = AT_EXIT.lock().unwrap_or_else(PoisonError::into_inner);
        if g.0.is_empty() && g.1.is_empty() {
            // SAFETY: registers a plain extern "C" function without captured state.
            unsafe {
                libc::atexit(clean_up_at_exit);
            }
        }
        g.0.extend(nodes.iter().filter_map(|n| n.pid()));
        g.1.push(dir.to_path_buf());
        drop(g);
        Box::leak(Box::new(self))
    }
}

/// One 3-master 3-replica cluster for the whole process (see [`Ha::for_process`]).
pub fn shared_cluster() -> &'static Ha {
    static CLUSTER: OnceLock<&'static Ha> = OnceLock::new();
    CLUSTER.get_or_init(|| Ha::Cluster(RedisCluster::start(3, 1)).for_process())
}

/// One Sentinel set (1 master, 2 replicas, 3 sentinels) for the whole process (see
/// [`Ha::for_process`]).
pub fn shared_sentinel() -> &'static Ha {
    static SENTINEL: OnceLock<&'static Ha> = OnceLock::new();
    SENTINEL.get_or_init(|| Ha::Sentinel(RedisSentinel::start(2, 3)).for_process())
}
