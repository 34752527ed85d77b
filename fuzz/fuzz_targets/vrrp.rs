//! The VRRP codec on any bytes: a whole IPv4 packet and a bare VRRPv3 message (both
//! families' pseudo-headers); what decodes encodes back to a message that decodes the same.
#![no_main]

use std::net::IpAddr;

use lb_vrrp::packet::{decode_ipv4_with, decode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&vrid, rest)) = data.split_first() else {
        return;
    };
    let _ = decode_ipv4_with(rest, vrid, true);
    let _ = decode_ipv4_with(rest, vrid, false);
    let (v4s, v4d): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [224, 0, 0, 18].into());
    let (v6s, v6d): (IpAddr, IpAddr) = (
        "fe80::1".parse().expect("address"),
        "ff02::12".parse().expect("address"),
    );
    for (s, d) in [(v4s, v4d), (v6s, v6d)] {
        if let Ok(r) = decode_message(rest, s, d, 255, vrid) {
            let again = r.advert.encode(s, d);
            let back = decode_message(&again, s, d, 255, vrid).expect("our own encoding decodes");
            assert_eq!(back.advert, r.advert);
        }
    }
});
