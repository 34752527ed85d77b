//! Bloom filter positions: `hashes` bit positions per id in a `2^bits_log2`-bit Redis
//! bitmap, by double hashing. The hash is fixed (not the process-random std hasher) so
//! every instance computes the same positions.

#[derive(Debug, Clone, Copy)]
pub struct BloomParams {
    mask: u64,
    hashes: u8,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl BloomParams {
    pub fn new(bits_log2: u8, hashes: u8) -> Self {
        Self {
            mask: (1u64 << bits_log2) - 1,
            hashes,
        }
    }

    pub fn positions(&self, id: i64) -> Vec<u64> {
        let h1 = splitmix64(id as u64);
        // Odd step, so the positions differ for every i within the power-of-two table.
        let h2 = splitmix64(h1 ^ 0x5851_F42D_4C95_7F2D) | 1;
        (0..u64::from(self.hashes))
            .map(|i| h1.wrapping_add(i.wrapping_mul(h2)) & self.mask)
            .collect()
    }
}

/// What the shared filter says about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BloomAnswer {
    /// Certainly not in the database (no false negatives while the filter is complete).
    Absent,
    /// Maybe there: ask the cache/database.
    Maybe,
    /// The filter is incomplete, disabled, or Redis did not answer.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stable_distinct_and_in_range() {
        let p = BloomParams::new(16, 7);
        let a = p.positions(42);
        assert_eq!(a, p.positions(42));
        assert_eq!(a.len(), 7);
        assert!(a.iter().all(|&x| x < 1 << 16));
        let mut d = a.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 7);
        assert_ne!(a, p.positions(43));
    }

    #[test]
    fn false_positive_rate_is_low() {
        // 10k ids in 2^20 bits with 7 hashes: expected rate far below 1%.
        let p = BloomParams::new(20, 7);
        let mut bits = vec![false; 1 << 20];
        for id in 0..10_000 {
            for x in p.positions(id) {
                bits[x as usize] = true;
            }
        }
        let fp = (1_000_000..1_010_000)
            .filter(|&id| p.positions(id).iter().all(|&x| bits[x as usize]))
            .count();
        assert!(fp < 100, "false positives: {fp} of 10000");
    }
}
