//! The backend's decap program: today's IPIP path beside second chance's two GUE paths
//! (delivered to a local socket, redirected to the previous backend).

use std::net::{IpAddr, TcpListener, TcpStream};

use anyhow::{Context, Result};
use lb_common::{SECOND_CHANCE_HOPS, SECOND_CHANCE_PORT, SECOND_CHANCE_TYPE};
use lb_dataplane::XdpAction;
use lb_dataplane::packet::{Frame, TCP_ACK, checksum};

use crate::cases::{Case, Kind, ip};

/// This host (a decap address) and the backend the flow had before.
pub const HERE: &str = "10.77.0.11";
const PREVIOUS: &str = "10.77.0.12";

/// A real established TCP connection on loopback: the socket the local-delivery case finds.
pub struct Loopback {
    _listener: TcpListener,
    _client: TcpStream,
    _server: TcpStream,
    client_port: u16,
    server_port: u16,
}

impl Loopback {
    pub fn open() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("loopback listener")?;
        let server_port = listener.local_addr()?.port();
        let client = TcpStream::connect(("127.0.0.1", server_port)).context("loopback connect")?;
        let (server, _) = listener.accept().context("loopback accept")?;
        Ok(Self {
            client_port: client.local_addr()?.port(),
            _listener: listener,
            _client: client,
            _server: server,
            server_port,
        })
    }
}

fn octets(a: &str) -> [u8; 4] {
    match ip(a) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => unreachable!("IPv4 literal"),
    }
}

/// `inner` (an Ethernet frame) wrapped as the balancer sends it to `HERE`: IPIP, or GUE
/// naming `PREVIOUS` (docs/dataplane.md, "Second chance").
fn encapsulated(inner: &[u8], gue: bool) -> Vec<u8> {
    let ip_packet = &inner[14..];
    let extra: Vec<u8> = if gue {
        let udp_len = (8 + 4 + 8 + ip_packet.len()) as u16;
        let mut h = 0xc001u16.to_be_bytes().to_vec();
        h.extend_from_slice(&SECOND_CHANCE_PORT.to_be_bytes());
        h.extend_from_slice(&udp_len.to_be_bytes());
        // UDP checksum 0; GUE: version 0, 2 words of private data, IPv4 inside, flag P.
        h.extend_from_slice(&[0, 0, 2, 4, 0, 1]);
        h.extend_from_slice(&[SECOND_CHANCE_TYPE, SECOND_CHANCE_HOPS, 0, 0]);
        h.extend_from_slice(&octets(PREVIOUS));
        h
    } else {
        Vec::new()
    };
    let total = (20 + extra.len() + ip_packet.len()) as u16;
    let proto = if gue { 17 } else { 4 };
    let mut outer = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    outer[2..4].copy_from_slice(&total.to_be_bytes());
    outer.extend_from_slice(&octets("10.77.0.2"));
    outer.extend_from_slice(&octets(HERE));
    let c = checksum(&outer, 0);
    outer[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = inner[..14].to_vec();
    f.extend_from_slice(&outer);
    f.extend_from_slice(&extra);
    f.extend_from_slice(ip_packet);
    f
}

pub fn cases(lo: &Loopback) -> Vec<Case> {
    let away = Frame::tcp(ip("10.9.0.1"), 40000, ip("10.77.0.104"), 80, TCP_ACK).build();
    let local = Frame::tcp(
        ip("127.0.0.1"),
        lo.client_port,
        ip("127.0.0.1"),
        lo.server_port,
        TCP_ACK,
    )
    .build();
    [
        (
            "decap, ipip (today)",
            encapsulated(&away, false),
            XdpAction::Pass,
        ),
        (
            "decap, second chance, local socket",
            encapsulated(&local, true),
            XdpAction::Pass,
        ),
        (
            "decap, second chance, redirect",
            encapsulated(&away, true),
            XdpAction::Tx,
        ),
    ]
    .into_iter()
    .map(|(name, packet, expect)| Case {
        name: name.into(),
        kind: Kind::Decap,
        program: lb_common::names::PROG_DECAP,
        capture: crate::cases::Capture::Off,
        vip: None,
        packet,
        vary_offset: 0,
        expect,
        katran: false,
        guard: false,
    })
    .collect()
}
