//! The replay tool end to end: a pcap in, one line per packet, a pcap out.

use lb_config::Config;

use lb_dataplane::packet::{Frame, L4, TCP_SYN};

use lb_dataplane::pcap;

use lb_dataplane::replay::{Replay, placeholder_mac, replay_file};

use crate::fixture::{ip, require_root};

#[test]
fn replay_reports_each_packet_and_writes_a_pcap() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lb-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.toml");
    let packets = [
        Frame::tcp(ip("10.9.0.1"), 1234, ip("10.77.0.100"), 80, TCP_SYN).build(),
        Frame::tcp(ip("10.9.0.1"), 1234, ip("10.77.0.55"), 80, TCP_SYN).build(),
        Frame::new(
            ip("10.9.0.1"),
            ip("10.77.0.100"),
            L4::EchoRequest { id: 1, seq: 1 },
        )
        .build(),
        {
            let mut f = Frame::tcp(ip("10.9.0.1"), 1234, ip("10.77.0.100"), 80, TCP_SYN);
            f.fragment = Some((true, 0));
            f.build()
        },
        Frame::tcp(ip("fd00::1"), 1234, ip("fd77::100"), 80, TCP_SYN).build(),
    ];
    let input = dir.join("in.pcap");
    write_pcap(&input, &packets);
    let setup = example_setup(config);
    let replay = Replay::new(&setup).expect("replay setup");
    let lines: Vec<_> = packets
        .iter()
        .enumerate()
        .map(|(i, p)| replay.run(i + 1, p).expect("run").0)
        .collect();
    let summary: Vec<(&str, &str)> = lines.iter().map(|l| (l.action, l.reason)).collect();
    assert_eq!(
        summary,
        vec![
            ("TX", "tx_forward"),
            ("PASS", "pass_not_vip"),
            ("TX", "tx_echo_reply"),
            ("DROP", "drop_fragment"),
            ("TX", "tx_forward"),
        ]
    );
    let be = lines[0].backend.as_deref().expect("backend named");
    assert!(be.starts_with("web/10.77.0.1"), "{be}");
    assert!(
        lines[4]
            .backend
            .as_deref()
            .is_some_and(|b| b.starts_with("web6/fd77::1"))
    );
    assert!(
        lines[0]
            .input
            .contains("10.9.0.1:1234 -> 10.77.0.100:80 [S]"),
        "{}",
        lines[0].input
    );
    assert!(
        lines[4]
            .output
            .as_deref()
            .is_some_and(|o| o.contains("IP6IP6 fd77::2 -> fd77::1")),
        "{:?}",
        lines[4].output
    );

    // The file-level command writes every transmitted or passed packet.
    let out = dir.join("out.pcap");
    replay_file(&setup, &input, Some(&out), true).expect("replay_file");
    let written = pcap::read(std::fs::File::open(&out).expect("out pcap")).expect("read back");
    assert_eq!(
        written.len(),
        4,
        "4 of 5 packets leave the program (one is dropped)"
    );
    let macs: Vec<[u8; 6]> = ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
        .iter()
        .map(|a| placeholder_mac(ip(a)))
        .collect();
    assert!(
        macs.iter().any(|m| written[0].data[0..6] == m[..]),
        "first packet to a web backend"
    );
    assert_eq!(
        written[1].data, packets[1],
        "the passed packet is untouched"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The capture of the issue that broke the tool: a short VLAN-tagged frame, runts, frames cut
/// or padded against their IP length, IPv6 extension headers. Every one is described and
/// replayed; the length disagreements to a VIP are dropped as malformed.
#[test]
fn replay_describes_a_capture_of_edge_cases() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lb-replay-edge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.toml");
    let syn = Frame::tcp(ip("10.9.0.1"), 1234, ip("10.77.0.100"), 80, TCP_SYN);
    let mut tagged = syn.clone();
    tagged.vlan = Some(5);
    let tagged = tagged.build();
    let full = syn.build();
    let mut padded = full.clone();
    padded.extend_from_slice(&[0; 10]);
    let mut ext = Frame::tcp(ip("fd00::1"), 1234, ip("fd77::100"), 80, TCP_SYN);
    ext.ext_headers = vec![lb_dataplane::packet::ExtHeader::routing(1)];
    let packets = vec![
        tagged[..16].to_vec(),
        tagged[..17].to_vec(),
        vec![0x81; 5],
        full[..40].to_vec(),
        padded,
        ext.build(),
    ];
    let input = dir.join("edge.pcap");
    write_pcap(&input, &packets);
    let setup = example_setup(config);
    replay_file(&setup, &input, None, false).expect("replay_file");
    let replay = Replay::new(&setup).expect("replay setup");
    let lines: Vec<_> = packets[3..]
        .iter()
        .enumerate()
        .map(|(i, p)| replay.run(i + 4, p).expect("run").0)
        .collect();
    let summary: Vec<(&str, &str)> = lines.iter().map(|l| (l.action, l.reason)).collect();
    assert_eq!(
        summary,
        vec![
            ("DROP", "drop_malformed"),
            ("TX", "tx_forward"),
            ("DROP", "drop_ext_header"),
        ]
    );
    assert!(
        lines[0].input.contains("total length 40 > 26 bytes"),
        "{}",
        lines[0].input
    );
    assert!(
        lines[1].input.contains("10 bytes of padding"),
        "{}",
        lines[1].input
    );
    assert!(
        lines[2].input.contains("routing (segments left 1)"),
        "{}",
        lines[2].input
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes `packets` as a pcap, one record per second.
fn write_pcap(path: &std::path::Path, packets: &[Vec<u8>]) {
    let records: Vec<pcap::Record> = packets
        .iter()
        .enumerate()
        .map(|(i, d)| pcap::Record {
            ts_sec: i as u32,
            ts_frac: 0,
            data: d.clone(),
        })
        .collect();
    pcap::write(std::fs::File::create(path).expect("create"), &records).expect("write pcap");
}

fn example_setup(config: &str) -> lb_dataplane::replay::ReplaySetup {
    Config::load(std::path::Path::new(config))
        .expect("example config")
        .replay_setup()
}
