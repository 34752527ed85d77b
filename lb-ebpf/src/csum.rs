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

/// Checksum of a 20-byte IPv4 header given as five 32-bit words (checksum field zero).
#[inline(always)]
pub fn ipv4_header_words(words: &[u32; 5]) -> u16 {
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < 5 {
        sum += words[i] as u64;
        i += 1;
    }
    !fold64(sum)
}

/// Folds a sum of 32-bit words (as they sit in memory) to 16 bits: 64 -> 32 -> 16, the sum
/// of the 16-bit halves as RFC 1071 wants. All ones means a header that verifies.
#[inline(always)]
pub fn fold64(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    fold(sum as u32)
}
