//! The packet describer on any bytes (it must describe, never panic), and the builder on a
//! frame made from the bytes: whatever it agrees to build has IP lengths that match the frame
//! and is described as the packet it is.
#![no_main]

use std::net::IpAddr;

use lb_dataplane::packet::{ExtHeader, Frame, L4, describe, l3_offset};
use libfuzzer_sys::fuzz_target;

/// Takes bytes from the front of the input (zeros once it runs out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn vec(&mut self, max: usize) -> Vec<u8> {
        let n = (self.u8() as usize).min(max).min(self.0.len());
        let (v, rest) = self.0.split_at(n);
        self.0 = rest;
        v.to_vec()
    }
    fn addr(&mut self, v6: bool) -> IpAddr {
        if v6 {
            let mut o = [0u8; 16];
            o.iter_mut().for_each(|b| *b = self.u8());
            IpAddr::from(o)
        } else {
            IpAddr::from([self.u8(), self.u8(), self.u8(), self.u8()])
        }
    }
}

fn frame(b: &mut Bytes) -> Frame {
    let flags = b.u8();
    let (v6_src, v6_dst) = (flags & 1 != 0, flags & 2 != 0);
    let src = b.addr(v6_src);
    let dst = b.addr(v6_dst);
    let l4 = match b.u8() % 5 {
        0 => L4::Tcp {
            sport: b.u16(),
            dport: b.u16(),
            flags: b.u8(),
        },
        1 => L4::Udp {
            sport: b.u16(),
            dport: b.u16(),
        },
        2 => L4::EchoRequest {
            id: b.u16(),
            seq: b.u16(),
        },
        3 => L4::Icmp {
            kind: b.u8(),
            code: b.u8(),
            rest: [b.u8(), b.u8(), b.u8(), b.u8()],
            body: b.vec(64),
        },
        _ => L4::Raw {
            proto: b.u8(),
            bytes: b.vec(64),
        },
    };
    let mut f = Frame::new(src, dst, l4);
    if flags & 4 != 0 {
        f.vlan = Some(b.u16());
    }
    if flags & 8 != 0 {
        f.ip_options = b.vec(48);
    }
    if flags & 16 != 0 {
        f.fragment = Some((b.u8() & 1 != 0, b.u16()));
    }
    f.dont_fragment = flags & 32 != 0;
    for _ in 0..(b.u8() % 4) {
        let kind = b.u8();
        f.ext_headers.push(ExtHeader {
            kind,
            data: b.vec(40),
        });
    }
    f.payload = b.vec(255);
    f
}

fuzz_target!(|data: &[u8]| {
    let _ = describe(data);
    let f = frame(&mut Bytes(data));
    let Ok(out) = f.try_build() else {
        return;
    };
    let text = describe(&out);
    let l3 = l3_offset(&out).expect("a built frame has its ethertype");
    // The IP length field says exactly what follows the link header.
    let (len, hdr) = if f.src.is_ipv4() {
        (u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) as usize, 0)
    } else {
        (u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) as usize, 40)
    };
    assert_eq!(len + hdr, out.len() - l3, "{f:?}");
    assert!(text.contains(&f.src.to_string()), "{text} for {f:?}");
    // A raw payload is described too when its protocol says more headers follow (IPIP,
    // IPv6-in-IP, an extension header as protocol), and those headers are whatever bytes the
    // input held: only the headers the builder wrote are its to get right. The same holds for
    // an extension header of kind 4 or 41.
    let encapsulated = matches!(f.l4, L4::Raw { .. })
        || f.ext_headers.iter().any(|h| matches!(h.kind, 4 | 41));
    if !encapsulated {
        assert!(
            !text.contains("padding") && !text.contains("bytes in the frame"),
            "{text} for {f:?}"
        );
    }
});
