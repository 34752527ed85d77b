//! Packet tests on hand-built byte vectors (checksums computed independently, by hand/Python).

use super::*;

/// A keepalived 2.2.7 style IPv4 advert (vrrp_version 3, virtual_router_id 51, priority 100,
/// advert_int 1, one VIP 192.168.1.100) from 10.0.0.1, built byte by byte per RFC 5798: IP
/// header with TOS 0xc0 and TTL 255, then the VRRP message with the pseudo-header checksum.
const KEEPALIVED_V4: [u8; 32] = [
    0x45, 0xc0, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x9a, // IPv4 header
    10, 0, 0, 1, 224, 0, 0, 18, // src, dst
    0x31, 51, 100, 1, // version 3 type 1, vrid, priority, count
    0x00, 0x64, 0xbd, 0xca, // max advert int 100 cs, checksum (pseudo-header form)
    192, 168, 1, 100, // the VIP
];

fn v4(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

#[test]
fn decodes_keepalived_format() {
    let r = decode_ipv4(&KEEPALIVED_V4, 51).expect("valid advert");
    assert_eq!(r.source, IpAddr::V4(v4([10, 0, 0, 1])));
    assert_eq!(r.advert.priority, 100);
    assert_eq!(r.advert.interval.get(), 100);
    assert_eq!(
        r.advert.addresses,
        Addresses::V4(vec![v4([192, 168, 1, 100])])
    );
}

#[test]
fn encodes_byte_for_byte_like_keepalived() {
    let a = Advert {
        vrid: 51,
        priority: 100,
        interval: Centis::new(100).unwrap(),
        addresses: Addresses::V4(vec![v4([192, 168, 1, 100])]),
    };
    assert_eq!(a.encode_ipv4(v4([10, 0, 0, 1]), GROUP_V4), KEEPALIVED_V4);
}

#[test]
fn accepts_message_only_checksum() {
    // RFC 9568 form: checksum over the VRRP message alone (0xa85a for this message).
    let mut p = KEEPALIVED_V4;
    p[26] = 0xa8;
    p[27] = 0x5a;
    assert!(decode_ipv4(&p, 51).is_ok());
}

#[test]
fn rejects_each_malformation_with_its_reason() {
    let mut bad_sum = KEEPALIVED_V4;
    bad_sum[27] ^= 1;
    assert_eq!(decode_ipv4(&bad_sum, 51), Err(Reject::Checksum));

    let mut ttl = KEEPALIVED_V4;
    ttl[8] = 254;
    assert_eq!(decode_ipv4(&ttl, 51), Err(Reject::Ttl));
    // Unicast peers: the TTL is not checked (keepalived's rule), everything else still is.
    assert!(decode_ipv4_with(&ttl, 51, false).is_ok());
    let mut ttl_and_sum = ttl;
    ttl_and_sum[27] ^= 1;
    assert_eq!(
        decode_ipv4_with(&ttl_and_sum, 51, false),
        Err(Reject::Checksum)
    );

    let mut version = KEEPALIVED_V4;
    version[20] = 0x21; // VRRPv2
    assert_eq!(decode_ipv4(&version, 51), Err(Reject::Version));

    let mut kind = KEEPALIVED_V4;
    kind[20] = 0x32;
    assert_eq!(decode_ipv4(&kind, 51), Err(Reject::Type));

    assert_eq!(decode_ipv4(&KEEPALIVED_V4, 52), Err(Reject::Vrid));
    assert_eq!(
        decode_ipv4(&KEEPALIVED_V4[..27], 51),
        Err(Reject::Truncated)
    );
    assert_eq!(
        decode_ipv4(&KEEPALIVED_V4[..10], 51),
        Err(Reject::Truncated)
    );

    // The address count says 2 but only one address follows (IP total length fixed up).
    let mut count = KEEPALIVED_V4;
    count[23] = 2;
    assert_eq!(decode_ipv4(&count, 51), Err(Reject::Truncated));

    let mut proto = KEEPALIVED_V4;
    proto[9] = 17;
    assert_eq!(decode_ipv4(&proto, 51), Err(Reject::BadIpHeader));
}

#[test]
fn zero_interval_is_rejected_after_the_checksum() {
    let msg = [0x31, 51, 100, 0, 0, 0, 0, 0];
    let mut m = msg.to_vec();
    let src = IpAddr::V4(v4([10, 0, 0, 1]));
    let dst = IpAddr::V4(GROUP_V4);
    let sum = inet_checksum(&[&pseudo_header(src, dst, m.len()), &m]);
    m[6..8].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(decode_message(&m, src, dst, 255, 51), Err(Reject::Interval));
}

#[test]
fn ipv6_advert_round_trip_and_fixed_checksum() {
    let src: Ipv6Addr = "fe80::1".parse().unwrap();
    let vip: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let a = Advert {
        vrid: 7,
        priority: 90,
        interval: Centis::new(10).unwrap(),
        addresses: Addresses::V6(vec![vip]),
    };
    let m = a.encode(IpAddr::V6(src), IpAddr::V6(GROUP_V6));
    assert_eq!(&m[..8], &[0x31, 7, 90, 1, 0x00, 0x0a, 0x48, 0x15]);
    let r = decode_message(&m, IpAddr::V6(src), IpAddr::V6(GROUP_V6), 255, 7).unwrap();
    assert_eq!(r.advert, a);
    assert_eq!(
        decode_message(&m, IpAddr::V6(src), IpAddr::V6(GROUP_V6), 64, 7),
        Err(Reject::Ttl)
    );
}

#[test]
fn interval_bounds() {
    assert!(Centis::new(0).is_none());
    assert!(Centis::new(4096).is_none());
    assert_eq!(Centis::new(4095).unwrap().duration().as_millis(), 40_950);
}

#[test]
fn checksum_of_odd_length_pads_with_zero() {
    assert_eq!(inet_checksum(&[&[0x01]]), !0x0100);
    assert_eq!(inet_checksum(&[&[0x01], &[0x02]]), !0x0102);
}
