//! `vagrant/topology.json`: the one description of the lab, and how bad descriptions are rejected.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use serde_json::{Value, json};
use tests::topology::{LAB_TOPOLOGY_PATH, Protocol, Role, Service, Topology, TopologyError};

#[test]
fn repo_topology_is_the_documented_lab() -> Result<()> {
    let t = Topology::lab()?;
    let seg = t.segment();
    assert_eq!(seg.ipv4().to_string(), "10.77.0.0/24");
    assert_eq!(seg.ipv6().to_string(), "fd77::/64");
    assert_eq!(seg.mtu(), 1500);
    assert!(!seg.bridge().is_empty());
    let vip = t.vip();
    assert_eq!(
        (vip.name(), vip.port(), vip.protocol()),
        ("web", 80, Protocol::Tcp)
    );
    assert_eq!(vip.ipv4(), Ipv4Addr::new(10, 77, 0, 100));
    assert_eq!(vip.ipv6(), "fd77::100".parse::<Ipv6Addr>()?);
    let expect: [(&str, Role, u8, Option<u8>); 7] = [
        ("client", Role::Client, 10, None),
        ("lb1", Role::Balancer, 2, Some(100)),
        ("lb2", Role::Balancer, 3, Some(90)),
        ("be1", Role::Backend, 11, None),
        ("be2", Role::Backend, 12, None),
        ("be3", Role::Backend, 13, None),
        ("svc", Role::Services, 20, None),
    ];
    assert_eq!(t.nodes().len(), expect.len());
    for (node, (name, role, n, prio)) in t.nodes().iter().zip(expect) {
        assert_eq!(node.name(), name);
        assert_eq!(node.role(), role, "{name}");
        assert_eq!(node.ipv4(), Ipv4Addr::new(10, 77, 0, n), "{name}");
        assert_eq!(
            node.ipv6(),
            format!("fd77::{n}").parse::<Ipv6Addr>()?,
            "{name}"
        );
        assert_eq!(node.priority(), prio, "{name}");
    }
    assert_eq!(
        t.node("svc").map(|n| n.services()),
        Some(&[Service::Redis, Service::Postgres, Service::Prometheus][..])
    );
    Ok(())
}

fn repo_json() -> Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        LAB_TOPOLOGY_PATH,
    )?)?)
}

/// Applies `change` to the repo's file and returns the error, which must name `field`.
fn rejected(change: impl FnOnce(&mut Value), field: &str) -> TopologyError {
    let mut doc = repo_json().expect("repo topology");
    change(&mut doc);
    let err = Topology::from_json(&doc.to_string()).expect_err("broken topology accepted");
    assert_eq!(err.field(), Some(field), "wrong field in: {err}");
    assert!(err.to_string().starts_with(&format!("{field}: ")), "{err}");
    err
}

#[test]
fn broken_topologies_name_the_field() {
    rejected(|d| d["nodes"][1]["name"] = json!("client"), "nodes[1].name");
    rejected(|d| d["nodes"][1]["name"] = json!("LB 1"), "nodes[1].name");
    let e = rejected(
        |d| d["nodes"][0]["ipv4"] = json!("10.78.0.10"),
        "nodes[0].ipv4",
    );
    assert!(
        e.to_string().contains("outside segment.ipv4 10.77.0.0/24"),
        "{e}"
    );
    rejected(
        |d| d["nodes"][0]["ipv4"] = json!("10.77.0.255"),
        "nodes[0].ipv4",
    );
    rejected(
        |d| d["nodes"][0]["ipv4"] = json!("10.77.0"),
        "nodes[0].ipv4",
    );
    rejected(
        |d| d["nodes"][0]["ipv6"] = json!("fd78::10"),
        "nodes[0].ipv6",
    );
    let e = rejected(
        |d| d["nodes"][2]["ipv6"] = json!("fd77::2"),
        "nodes[2].ipv6",
    );
    assert!(e.to_string().contains("nodes[1].ipv6"), "{e}");
    rejected(
        |d| d["nodes"][3]["ipv4"] = json!("10.77.0.100"),
        "nodes[3].ipv4",
    );
    rejected(
        |d| d["nodes"][0]["role"] = json!("gateway"),
        "nodes[0].role",
    );
    // `router` is a role (the BGP lab's), but a router needs its edge addresses.
    rejected(
        |d| d["nodes"][0]["role"] = json!("router"),
        "nodes[0].edge_ipv4",
    );
    rejected(
        |d| _ = d["nodes"][1].as_object_mut().map(|o| o.remove("priority")),
        "nodes[1].priority",
    );
    rejected(
        |d| d["nodes"][2]["priority"] = json!(100),
        "nodes[2].priority",
    );
    rejected(
        |d| d["nodes"][2]["priority"] = json!(255),
        "nodes[2].priority",
    );
    rejected(
        |d| d["nodes"][3]["priority"] = json!(50),
        "nodes[3].priority",
    );
    rejected(
        |d| d["nodes"][6]["services"] = json!([]),
        "nodes[6].services",
    );
    rejected(
        |d| d["nodes"][6]["services"] = json!(["redis", "redis"]),
        "nodes[6].services[1]",
    );
    rejected(
        |d| d["nodes"][6]["services"] = json!(["mysql"]),
        "nodes[6].services[0]",
    );
    // A backend may carry services (the reduced VM lab folds the services host into it);
    // a client or a balancer may not.
    rejected(
        |d| d["nodes"][0]["services"] = json!(["redis"]),
        "nodes[0].services",
    );
    rejected(
        |d| d["nodes"][1]["services"] = json!(["redis"]),
        "nodes[1].services",
    );
    rejected(
        |d| d["nodes"][0]["colour"] = json!("red"),
        "nodes[0].colour",
    );
    rejected(|d| d["nodes"] = json!([]), "nodes");
    rejected(
        |d| d["segment"]["ipv4"] = json!("10.77.0.1/24"),
        "segment.ipv4",
    );
    rejected(
        |d| d["segment"]["ipv6"] = json!("fd77::/127"),
        "segment.ipv6",
    );
    rejected(|d| d["segment"]["mtu"] = json!(576), "segment.mtu");
    rejected(
        |d| d["segment"]["bridge"] = json!("a-very-long-bridge-name"),
        "segment.bridge",
    );
    rejected(|d| d["vip"]["port"] = json!(0), "vip.port");
    rejected(|d| d["vip"]["port"] = json!(70000), "vip.port");
    rejected(|d| d["vip"]["protocol"] = json!("sctp"), "vip.protocol");
    rejected(|d| d["vip"]["ipv4"] = json!("10.77.1.100"), "vip.ipv4");
    let e = rejected(
        |d| _ = d.as_object_mut().map(|o| o.remove("vip")),
        "(document)",
    );
    assert!(e.to_string().contains("missing field `vip`"), "{e}");
}

#[test]
fn syntax_errors_and_missing_files_are_reported() {
    let e = Topology::from_json("{ \"segment\": ").unwrap_err();
    assert!(e.to_string().contains("EOF"), "{e}");
    let e = Topology::load("/nonexistent/topology.json").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/topology.json"), "{e}");
}

#[test]
fn subsets_and_builders_stay_valid() -> Result<()> {
    let t = Topology::lab()?;
    let small = t.subset(&["client", "lb1", "be1", "be2"])?;
    assert_eq!(small.nodes().len(), 4);
    assert_eq!(small.vip(), t.vip());
    assert_eq!(
        t.subset(&["client", "nope"]).unwrap_err().field(),
        Some("subset[1]")
    );
    assert_eq!(
        t.subset(&["be1", "be1"]).unwrap_err().field(),
        Some("nodes[1].name")
    );
    let e = Topology::builder()
        .node("lb1", Role::Balancer, 2)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), Some("nodes[0].priority"));
    let e = Topology::builder()
        .node("a", Role::Client, 0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), Some("nodes[0].ipv4"));
    let env = t.provision_env(t.node("svc").expect("svc"));
    assert!(env.contains(&(
        "LAB_SERVICES".to_string(),
        "redis postgres prometheus".to_string()
    )));
    assert!(env.contains(&(
        "LAB_BACKENDS".to_string(),
        "10.77.0.11 10.77.0.12 10.77.0.13".to_string()
    )));
    Ok(())
}

#[test]
fn the_bgp_lab_is_the_pair_changed_by_the_bgp_section() -> Result<()> {
    let t = Topology::lab()?.with_ha(tests::HaMode::Bgp)?;
    let names: Vec<&str> = t.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(
        names,
        [
            "client", "lb1", "lb2", "be1", "be2", "be3", "svc", "router", "lb3"
        ]
    );
    let client = t.node("client").expect("client");
    assert!(client.on_edge());
    assert_eq!(client.ipv4(), Ipv4Addr::new(10, 78, 0, 10));
    let router = t.router().expect("router");
    assert_eq!(router.role(), Role::Router);
    assert_eq!(
        router.edge_addrs(),
        Some((Ipv4Addr::new(10, 78, 0, 1), "fd78::1".parse::<Ipv6Addr>()?))
    );
    assert_eq!(t.nodes_with_role(Role::Balancer).count(), 3);
    let edge = t.edge().expect("edge segment");
    assert_eq!(edge.ipv4().to_string(), "10.78.0.0/24");
    // The provisioning variables name the router as every host's gateway on its segment.
    let env: std::collections::BTreeMap<String, String> =
        t.provision_env(client).into_iter().collect();
    assert_eq!(env["LAB_HA"], "bgp");
    assert_eq!(env["LAB_GATEWAY_IPV4"], "10.78.0.1");
    let be1: std::collections::BTreeMap<String, String> = t
        .provision_env(t.node("be1").expect("be1"))
        .into_iter()
        .collect();
    assert_eq!(be1["LAB_GATEWAY_IPV4"], "10.77.0.1");
    assert_eq!(be1["LAB_BALANCERS"], "10.77.0.2 10.77.0.3 10.77.0.4");
    // The VRRP lab has none of it.
    let pair = Topology::lab()?;
    assert!(pair.edge().is_none() && pair.router().is_none());
    Ok(())
}

#[test]
fn bad_bgp_sections_are_rejected_naming_the_field() {
    let e = rejected(
        |d| {
            d["bgp"]["nodes"][0]
                .as_object_mut()
                .expect("router")
                .remove("edge_ipv4");
        },
        "bgp lab: nodes[7].edge_ipv4",
    );
    assert!(e.to_string().contains("a router needs edge_ipv4"), "{e}");
    let e = rejected(
        |d| d["bgp"]["nodes"][1]["ipv4"] = json!("10.77.0.10"),
        "bgp lab: nodes[0].ipv4",
    );
    assert!(e.to_string().contains("outside"), "{e}");
}
