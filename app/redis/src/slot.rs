//! Redis Cluster hash slots: CRC16 (XMODEM) of the key, or of its hash tag (the part
//! between the first `{` and the next `}`, when not empty), modulo 16384. Keys that one
//! script or multi-key command touches must share a slot, so they carry the same tag.

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that decides its slot.
fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The hash slot of `key`, as Redis Cluster computes it.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// A hash tag (without braces) whose slot lies in the `index`-th of `parts` equal slot
/// ranges: `base-index-n` for the smallest such `n`. Deterministic, so every instance
/// derives the same names; `redis-cli --cluster create` gives each master a contiguous range,
/// so `parts` tags made this way land on every master when `parts` is at least the number of
/// masters.
pub fn spread_tag(base: &str, index: u32, parts: u32) -> String {
    let parts = parts.max(1);
    let lo = u32::from(SLOTS) * index / parts;
    let hi = u32::from(SLOTS) * (index + 1) / parts;
    (0u64..)
        .map(|n| format!("{base}-{index}-{n}"))
        .find(|tag| (lo..hi).contains(&u32::from(key_slot(tag.as_bytes()))))
        .expect("CRC16 covers every slot range")
}

/// Which of `parts` equal slot ranges `slot` falls in.
pub fn slot_part(slot: u16, parts: u32) -> u32 {
    u32::from(slot) * parts.max(1) / u32::from(SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn spread_tags_cover_their_ranges() {
        for parts in [1, 3, 16] {
            for i in 0..parts {
                let tag = spread_tag("t", i, parts);
                assert_eq!(slot_part(key_slot(tag.as_bytes()), parts), i, "{tag}");
            }
        }
        assert_eq!(spread_tag("t", 2, 16), spread_tag("t", 2, 16));
    }
}
