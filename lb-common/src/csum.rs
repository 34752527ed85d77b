//! The Internet checksum (RFC 1071) as userspace computes it: the packet builders of the tests
//! and benches, lbd's ICMP and VRRP messages. The data plane does not call it: it updates
//! checksums incrementally with the kernel's helpers.

/// The one's complement of the one's complement sum of `parts`, read as one byte stream (a
/// part may end on an odd byte), starting from `initial` (a pseudo-header's partial sum).
pub fn checksum(parts: &[&[u8]], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut odd: Option<u8> = None;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        match odd.take() {
            Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
            None => odd = Some(b),
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn rfc1071_example_and_odd_parts() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data], 0), !0xddf2);
        // Split on an odd byte: the same stream, the same sum.
        assert_eq!(checksum(&[&data[..3], &data[3..]], 0), !0xddf2);
        // An odd tail is padded with a zero byte.
        assert_eq!(checksum(&[&[0xab]], 0), !0xab00);
        // A message carrying its checksum sums to zero.
        let mut m = [
            0x45, 0x00, 0x00, 0x1c, 0, 0, 0x40, 0x00, 0x40, 0x01, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&[&m], 0);
        m[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&[&m], 0), 0);
        assert_eq!(checksum(&[], 0x1_2345), !0x2346);
    }
}
