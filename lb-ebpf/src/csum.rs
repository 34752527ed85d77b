//! Internet checksum helpers (RFC 1071, incremental update per RFC 1624).

/// Folds a 32-bit one's-complement sum to 16 bits (bounded: two folds always suffice).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old` to `new`.
/// All values as they are stored in the packet (network order), which the sum tolerates.
#[inline(always)]
pub fn replace16(csum: u16, old: u16, new: u16) -> u16 {
    let sum = (!csum as u32 & 0xffff) + (!old as u32 & 0xffff) + new as u32;
    !fold(sum)
}

/// Checksum of a 20-byte IPv4 header given as ten words (checksum word zero).
#[inline(always)]
pub fn ipv4_header(words: &[u16; 10]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 10 {
        sum += words[i] as u32;
        i += 1;
    }
    !fold(sum)
}
