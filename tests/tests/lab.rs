//! The namespace lab against the real kernel (run as root: `cargo test -p tests`).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tests::netns::{cleanup_stale, labs_root, list_namespaces};
use tests::topology::Role;
use tests::{Lab, SegmentKind, Topology};

const WAIT: Duration = Duration::from_secs(20);

fn three_hosts() -> Result<Topology> {
    Ok(Topology::builder()
        .node("client", Role::Client, 10)
        .balancer("lb1", 2, 100)
        .node("be1", Role::Backend, 11)
        .build()?)
}

fn ns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// One echo exchange from `from` to `to`'s address `ip` over TCP, both sockets created inside
/// the hosts' namespaces.
fn tcp_round_trip(lab: &Lab, from: &str, to: &str, ip: IpAddr) -> Result<()> {
    let server = lab.host(to)?;
    let unspecified: IpAddr = if ip.is_ipv4() {
        "0.0.0.0".parse()?
    } else {
        "::".parse()?
    };
    let listener = server.in_netns(|| TcpListener::bind((unspecified, 0)))??;
    let port = listener.local_addr()?.port();
    let accept = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut s, peer) = listener.accept()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        s.write_all(format!("{buf} from {}", peer.ip()).as_bytes())?;
        Ok(buf)
    });
    let addr = SocketAddr::new(ip, port);
    let mut stream = lab
        .host(from)?
        .in_netns(|| TcpStream::connect_timeout(&addr, WAIT))?
        .with_context(|| format!("{from} -> {to} at {addr}"))?;
    stream.set_read_timeout(Some(WAIT))?;
    stream.write_all(b"hello")?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let got = accept
        .join()
        .map_err(|_| anyhow::anyhow!("accept thread panicked"))??;
    ensure!(got == "hello", "server got {got:?}");
    let from_ip = lab.host(from)?.node().addrs()[usize::from(ip.is_ipv6())];
    ensure!(
        reply == format!("hello from {from_ip}"),
        "{from} -> {to}: reply {reply:?}"
    );
    Ok(())
}

#[test]
fn every_host_reaches_every_other_over_ipv4_and_ipv6() -> Result<()> {
    let lab = Lab::create(&three_hosts()?)?;
    for from in lab.hosts() {
        for to in lab.hosts() {
            if from.name() == to.name() {
                continue;
            }
            for ip in to.node().addrs() {
                tcp_round_trip(&lab, from.name(), to.name(), ip)?;
            }
        }
    }
    Ok(())
}

#[test]
fn macvlan_segment_connects_every_host_and_leaves_root_alone() -> Result<()> {
    let topo = three_hosts()?;
    let lab = Lab::builder(&topo)
        .segment(SegmentKind::Macvlan)
        .mtu("lb1", 3000)
        .build()?;
    assert_eq!(lab.segment_kind(), SegmentKind::Macvlan);
    for from in lab.hosts() {
        for to in lab.hosts() {
            if from.name() != to.name() {
                for ip in to.node().addrs() {
                    tcp_round_trip(&lab, from.name(), to.name(), ip)?;
                }
            }
        }
    }
    let link = lab
        .host("lb1")?
        .exec(["ip", "-d", "-o", "link", "show", "eth0"])?;
    assert!(
        link.contains("mtu 3000") && link.contains("macvlan mode bridge"),
        "{link}"
    );
    let err = lab.host("lb1")?.bridge_port().unwrap_err().to_string();
    assert!(err.contains("macvlan"), "{err}");
    let root_links = tests::exec::run(tests::exec::tool("ip").args(["-o", "link", "show"]))?;
    assert!(
        !root_links.contains(&format!(" {}:", lab.bridge())) && !root_links.contains("macvlan"),
        "{root_links}"
    );
    Ok(())
}

#[test]
fn hosts_are_configured_as_specified() -> Result<()> {
    let topo = three_hosts()?;
    let lab = Lab::builder(&topo)
        .mtu("lb1", 3000)
        .sysctl("be1", "net.ipv4.conf.all.arp_ignore", "1")
        .build()?;
    let be1 = lab.host("be1")?;
    assert_eq!(
        be1.exec(["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"])?
            .trim(),
        "1"
    );
    assert_eq!(
        lab.host("client")?
            .exec(["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"])?
            .trim(),
        "0"
    );
    let offload = be1.exec(["ethtool", "-k", "eth0"])?;
    assert!(offload.contains("tx-checksumming: off"), "{offload}");
    let link = lab
        .host("lb1")?
        .exec(["ip", "-o", "link", "show", "eth0"])?;
    assert!(
        link.contains("mtu 3000") && link.contains("state UP"),
        "{link}"
    );
    let peer = lab.host("lb1")?.bridge_port()?.to_string();
    let port = tests::exec::run(tests::exec::tool("ip").args([
        "-n",
        lab.bridge_ns(),
        "-o",
        "link",
        "show",
        &peer,
    ]))?;
    assert!(
        port.contains("mtu 3000") && port.contains(&format!("master {}", lab.bridge())),
        "{port}"
    );
    let addrs = be1.exec(["ip", "-o", "addr", "show", "eth0"])?;
    assert!(
        addrs.contains("10.77.0.11/24") && addrs.contains("fd77::11/64"),
        "{addrs}"
    );
    assert!(!addrs.contains("tentative"), "{addrs}");
    let lo = be1.exec(["ip", "-o", "link", "show", "lo"])?;
    assert!(lo.contains("UP"), "{lo}");
    Ok(())
}

#[test]
fn root_namespace_holds_no_lab_interface() -> Result<()> {
    let lab = Lab::create(&three_hosts()?)?;
    let root_links = tests::exec::run(tests::exec::tool("ip").args(["-o", "link", "show"]))?;
    for host in lab.hosts() {
        let port = host.bridge_port()?;
        assert!(!root_links.contains(port), "{port} in root:\n{root_links}");
    }
    assert!(
        !root_links.contains(&format!(" {}:", lab.bridge())),
        "{root_links}"
    );
    Ok(())
}

#[test]
fn mac_matches_what_the_neighbour_learned() -> Result<()> {
    let lab = Lab::create(&three_hosts()?)?;
    tcp_round_trip(&lab, "client", "lb1", lab.host("lb1")?.ipv4().into())?;
    let client = lab.host("client")?;
    let mac = client.mac()?;
    let neigh = lab
        .host("lb1")?
        .exec(["ip", "neigh", "show", &client.ipv4().to_string()])?;
    assert!(
        neigh.contains(&format!("lladdr {mac}")),
        "client {mac}, lb1 sees: {neigh}"
    );
    assert_ne!(mac, lab.host("lb1")?.mac()?);
    Ok(())
}

#[test]
fn two_labs_at_once_do_not_collide() -> Result<()> {
    let topo = three_hosts()?;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::create(&topo));
        let b = s.spawn(|| Lab::create(&topo));
        (a.join(), b.join())
    });
    let a = a.map_err(|_| anyhow::anyhow!("lab a panicked"))??;
    let b = b.map_err(|_| anyhow::anyhow!("lab b panicked"))??;
    assert_ne!(a.prefix(), b.prefix());
    for ns in a.namespaces() {
        assert!(!b.namespaces().contains(ns), "{ns} in both labs");
        assert!(ns_exists(ns));
    }
    // Same addresses in both, separate segments: each works on its own.
    for lab in [&a, &b] {
        tcp_round_trip(lab, "client", "be1", "10.77.0.11".parse()?)?;
        tcp_round_trip(lab, "be1", "client", "fd77::10".parse()?)?;
    }
    Ok(())
}

#[test]
fn drop_removes_every_namespace_and_the_lab_dir() -> Result<()> {
    let lab = Lab::create(&three_hosts()?)?;
    let namespaces = lab.namespaces().to_vec();
    let dir = lab.dir().to_path_buf();
    assert_eq!(namespaces.len(), 4, "bridge + 3 hosts: {namespaces:?}");
    let mut sleeper = lab
        .host("be1")?
        .spawn("sleeper", ["sh", "-c", "echo up; exec sleep 300"])?;
    // Once it printed, it runs inside the namespace (not still inside `ip netns exec`).
    sleeper.wait_for_log("up", WAIT)?;
    let pid = sleeper.pid();
    std::mem::forget(sleeper); // the lab must kill what runs inside even without the guard
    drop(lab);
    for ns in &namespaces {
        assert!(!ns_exists(ns), "{ns} left behind");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z"),
        "sleep {pid} still running: {state}"
    );
    Ok(())
}

#[test]
fn a_panicking_test_body_still_tears_down() -> Result<()> {
    let topo = three_hosts()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::create(&topo).expect("lab");
        tx.send((lab.namespaces().to_vec(), lab.dir().to_path_buf()))
            .expect("send");
        panic!("test body fails");
    }));
    assert!(outcome.is_err());
    let (namespaces, dir) = rx.recv()?;
    for ns in &namespaces {
        assert!(!ns_exists(ns), "{ns} survived the panic");
    }
    // Logs of a failed test are kept for reading.
    assert!(dir.exists());
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn cleanup_stale_removes_labs_of_dead_owners_only() -> Result<()> {
    let live = Lab::create(&three_hosts()?)?;
    // Fake a crashed run: a namespace of a lab whose owner file names a dead process. Its
    // base (`lbq`) is one no other test process cleans up, so parallel runs don't race on it.
    let base = format!("lbq{}x", std::process::id());
    let stale = format!("{base}7");
    let stale_ns = format!("{stale}-client");
    std::fs::create_dir_all(labs_root().join(&stale))?;
    std::fs::write(labs_root().join(&stale).join("owner"), "999999999 1\n")?;
    tests::exec::run(tests::exec::tool("ip").args(["netns", "add", &stale_ns]))?;
    let removed = cleanup_stale(&base)?;
    assert_eq!(removed, vec![stale_ns.clone()]);
    assert!(!ns_exists(&stale_ns));
    assert!(!labs_root().join(&stale).exists());
    let removed = cleanup_stale("lbt")?;
    assert!(
        removed.iter().all(|ns| !ns.starts_with(live.prefix())),
        "{removed:?}"
    );
    for ns in live.namespaces() {
        assert!(ns_exists(ns), "live lab lost {ns}");
    }
    assert!(list_namespaces()?.contains(&live.bridge_ns().to_string()));
    Ok(())
}

#[test]
fn exec_spawn_and_setns_helpers() -> Result<()> {
    let lab = Lab::create(&three_hosts()?)?;
    let be1 = lab.host("be1")?;
    // exec: errors name the command and carry stderr.
    let err = be1
        .exec(["sh", "-c", "echo nope >&2; exit 4"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ip netns exec") && err.contains("nope"),
        "{err}"
    );
    assert!(be1.exec(["ip", "-o", "addr"])?.contains("10.77.0.11"));
    // spawn: a server inside be1, reached from the client.
    let mut server = be1.spawn("server", ["sh", "-c", "echo starting; exec sleep 300"])?;
    server.wait_for_log("starting", WAIT)?;
    assert!(server.log_path().starts_with(lab.dir()));
    assert!(server.is_running());
    // A listener thread inside be1, waited for from the client.
    let listener = be1.in_netns(|| TcpListener::bind("[::]:7000"))??;
    lab.host("client")?
        .wait_tcp(SocketAddr::new(be1.ipv6().into(), 7000), WAIT)?;
    drop(listener);
    // spawn_thread: the socket is created in be1's namespace.
    let handle = be1.spawn_thread(|| std::fs::read_link("/proc/thread-self/ns/net"))?;
    let inside = handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread panicked"))??;
    let outside = std::fs::read_link("/proc/thread-self/ns/net")?;
    assert_ne!(inside, outside);
    // A panic in in_netns reaches the caller.
    let caught = std::panic::catch_unwind(|| be1.in_netns(|| panic!("inner")));
    assert!(caught.is_err());
    // bpffs: mounted once, visible from a command inside a namespace.
    let fs = lab.bpffs()?;
    assert_eq!(lab.bpffs()?, fs);
    let kind = be1.exec(["stat", "-f", "-c", "%T", fs.to_str().context("path")?])?;
    assert_eq!(kind.trim(), "bpf_fs");
    Ok(())
}

#[test]
fn full_lab_topology_comes_up() -> Result<()> {
    let topo = Topology::lab()?;
    let lab = Lab::create(&topo)?;
    assert_eq!(lab.hosts().len(), topo.nodes().len());
    assert_eq!(lab.hosts_with_role(Role::Backend).count(), 3);
    tcp_round_trip(&lab, "client", "svc", "fd77::20".parse()?)?;
    tcp_round_trip(&lab, "lb2", "be3", "10.77.0.13".parse()?)?;
    let env = lab.provision_env(lab.host("lb2")?);
    assert!(
        env.contains(&("LAB_PRIORITY".into(), "90".into())),
        "{env:?}"
    );
    Ok(())
}

#[test]
fn unknown_host_and_bad_options_are_named() -> Result<()> {
    let topo = three_hosts()?;
    let err = Lab::builder(&topo)
        .mtu("nope", 1500)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("mtu(nope)"), "{err}");
    let err = Lab::builder(&topo)
        .mtu("be1", 1000)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("mtu(be1)") && err.contains("1280"), "{err}");
    let lab = Lab::create(&topo)?;
    let err = lab.host("be9").unwrap_err().to_string();
    assert!(
        err.contains("be9") && err.contains("client, lb1, be1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn named_labs_persist_until_destroyed() -> Result<()> {
    let name = format!("lbn{}", std::process::id());
    let topo = three_hosts()?;
    let lab = Lab::builder(&topo).named(&name).build()?;
    assert_eq!(lab.host("client")?.ns(), format!("{name}-client"));
    // A second lab of the same name while the first lives is refused.
    let err = Lab::builder(&topo)
        .named(&name)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains(&name) && err.contains("destroy"), "{err}");
    let namespaces = lab.namespaces().to_vec();
    assert_eq!(lab.persist()?, name);
    for ns in &namespaces {
        assert!(ns_exists(ns), "persisted lab lost {ns}");
    }
    cleanup_stale("lbn")?;
    assert!(
        namespaces.iter().all(|ns| ns_exists(ns)),
        "cleanup_stale removed a persistent lab"
    );
    let mut removed = tests::netns::destroy(&name)?;
    removed.sort();
    let mut expected = namespaces.clone();
    expected.sort();
    assert_eq!(removed, expected);
    assert!(namespaces.iter().all(|ns| !ns_exists(ns)));
    assert!(!labs_root().join(&name).exists());
    Ok(())
}
