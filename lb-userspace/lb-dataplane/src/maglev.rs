//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI'16), computed in userspace and indexed by the data plane with
//! `flow_hash % table_len`.
//!
//! # Stability across nodes and changes
//!
//! A backend's preference list (its permutation of table slots, `offset + j * skip mod M`)
//! depends only on its `key` (its stable identity, e.g. the address bytes), hashed with
//! SipHash-2-4 under two fixed, published keys ([`OFFSET_SEED`], [`SKIP_SEED`]). Backends are
//! sorted by key before the fill, so two balancer nodes given the same backends in any order build
//! byte-identical tables, and a backend keeps its preferences when others come and go. Changing
//! the hash or the seeds reshuffles every flow on a rolling upgrade: a golden-table test guards
//! them.
//!
//! # Weights
//!
//! The fill runs in rounds. In every round each backend adds its weight to an accumulator and
//! takes one turn when the accumulator reaches the largest weight `W` (which then is subtracted);
//! a turn claims the next free slot of the backend's own permutation. So the heaviest backends
//! take a turn every round and a backend of weight `w` takes one in `w / W` of the rounds, in
//! *every* round of the fill, not only the first: entry counts end up proportional to weights
//! (to within about one entry per backend). With equal weights this is exactly the paper's
//! algorithm. Weight 0 means draining: no entries. Scaling all weights by the same factor gives
//! the same table.
//!
//! Two strategies compute this same order of turns: scanning every backend each round (cheap
//! when weights are similar) and an event queue keyed by `(round, key order)` (used when a few
//! heavy backends would make most of each scan useless). Both produce identical tables.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fmt,
    time::{Duration, Instant},
};

use lb_common::{DEFAULT_TABLE, MAX_TABLE};

/// SipHash-2-4 key `(k0, k1)` whose hash of a backend key gives the permutation offset.
pub const OFFSET_SEED: (u64, u64) = (0x6c62_7864_702d_6d67, 0x6f66_6673_6574_2d31);
/// SipHash-2-4 key `(k0, k1)` whose hash of a backend key gives the permutation skip.
pub const SKIP_SEED: (u64, u64) = (0x6c62_7864_702d_6d67, 0x736b_6970_2d2d_2d32);

/// Marks a free slot during the fill; slots hold positions in the sorted active list (< 65537)
/// until the last pass swaps in backend ids, so every `u32` stays usable as an id.
const EMPTY: u32 = u32::MAX;

/// Scan every backend each round while `backends * max_weight <= SCAN_FACTOR * weight_sum`,
/// i.e. while at least one backend in `SCAN_FACTOR` takes a turn per round on average.
const SCAN_FACTOR: u64 = 8;

const _: () = assert!(is_prime(DEFAULT_TABLE) && DEFAULT_TABLE <= MAX_TABLE);

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("table size {0} is too small: a Maglev table size must be a prime of at least 2")]
    SizeTooSmall(u32),
    #[error("table size {size} is too large: the data plane holds at most {max} entries per table")]
    SizeTooLarge { size: u32, max: u32 },
    #[error(
        "table size {size} is not prime (divisible by {divisor}): Maglev needs a prime size, \
         e.g. {suggestion}"
    )]
    SizeNotPrime {
        size: u32,
        divisor: u32,
        suggestion: u32,
    },
    #[error("no backend has a positive weight: a Maglev table needs at least one")]
    NoBackends,
    #[error("backends {first} and {second} have the same key {key}: keys must be unique")]
    DuplicateKey {
        first: u32,
        second: u32,
        key: String,
    },
    #[error("backend id {0} is given to more than one backend")]
    DuplicateId(u32),
    #[error(
        "{backends} backends with a positive weight do not fit a table of {size} entries: \
         use a larger table size"
    )]
    TooManyBackends { backends: usize, size: u32 },
}

/// Size of a Maglev table: a prime in `2..=MAX_TABLE`, so that every skip in `1..M` walks all
/// slots (the permutation property the paper relies on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableSize(u32);

impl TableSize {
    /// The data plane's default, 65537. Equal-weight backends get `M / N` entries give or take
    /// one, so the paper's rule `M >= 100 * N` keeps them within 1% up to ~650 backends.
    pub const DEFAULT: TableSize = TableSize(DEFAULT_TABLE);

    pub fn new(n: u32) -> Result<Self, MaglevError> {
        if n < 2 {
            return Err(MaglevError::SizeTooSmall(n));
        }
        if n > MAX_TABLE {
            return Err(MaglevError::SizeTooLarge {
                size: n,
                max: MAX_TABLE,
            });
        }
        match smallest_divisor(n) {
            Some(divisor) => {
                // 65537 (= MAX_TABLE) is prime, so a prime >= n always exists below the limit.
                let suggestion = (n..=MAX_TABLE).find(|&c| is_prime(c)).unwrap_or(MAX_TABLE);
                Err(MaglevError::SizeNotPrime {
                    size: n,
                    divisor,
                    suggestion,
                })
            }
            None => Ok(TableSize(n)),
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for TableSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for TableSize {
    type Error = MaglevError;
    fn try_from(n: u32) -> Result<Self, MaglevError> {
        Self::new(n)
    }
}

impl fmt::Display for TableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const fn smallest_divisor(n: u32) -> Option<u32> {
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return Some(d);
        }
        d += 1;
    }
    None
}

const fn is_prime(n: u32) -> bool {
    n >= 2 && smallest_divisor(n).is_none()
}

/// One backend of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    /// What the table stores (the data plane's backend slot).
    pub id: u32,
    /// Stable identity that alone decides the backend's permutation (e.g. its address bytes).
    pub key: &'a [u8],
    /// Relative share of the table; 0 = draining, no entries.
    pub weight: u32,
}

/// The `(offset, skip)` of the permutation of a backend with this key in a table of `size`:
/// its `j`-th preferred slot is `(offset + j * skip) % size`.
pub fn permutation(key: &[u8], size: TableSize) -> (u32, u32) {
    let m = u64::from(size.get());
    let offset = siphash24(OFFSET_SEED, key) % m;
    let skip = siphash24(SKIP_SEED, key) % (m - 1) + 1;
    (offset as u32, skip as u32)
}

/// Builds a table of `size` backend ids. See [`MaglevBuilder`] to reuse buffers.
pub fn build(backends: &[MaglevBackend<'_>], size: TableSize) -> Result<Vec<u32>, MaglevError> {
    let mut out = Vec::new();
    build_into(backends, size, &mut out)?;
    Ok(out)
}

/// Builds a table into `out` (cleared first), reusing its allocation.
pub fn build_into(
    backends: &[MaglevBackend<'_>],
    size: TableSize,
    out: &mut Vec<u32>,
) -> Result<(), MaglevError> {
    MaglevBuilder::default().build_into(backends, size, out)
}

/// Which of the two equivalent fills to run (only tests choose).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), expect(dead_code, reason = "only tests force a strategy"))]
enum Strategy {
    Auto,
    Scan,
    Queue,
}

/// A positive-weight backend during the fill.
#[derive(Clone, Copy, Debug)]
struct Active {
    id: u32,
    weight: u64,
    /// Next slot of the permutation to try, always `< M`.
    pos: u32,
    skip: u32,
    /// Scan strategy: weight accumulated and not yet spent on a turn (`< max_weight`).
    acc: u64,
    /// Queue strategy: turns taken so far.
    turns: u64,
}

/// Builds tables while keeping scratch buffers between builds (the control plane rebuilds a
/// VIP's table on every backend change).
#[derive(Debug, Default)]
pub struct MaglevBuilder {
    order: Vec<usize>,
    ids: Vec<u32>,
    active: Vec<Active>,
    queue: BinaryHeap<Reverse<(u64, u32)>>,
}

impl MaglevBuilder {
    /// Builds a table into `out` (cleared first). On error `out` is left empty.
    pub fn build_into(
        &mut self,
        backends: &[MaglevBackend<'_>],
        size: TableSize,
        out: &mut Vec<u32>,
    ) -> Result<(), MaglevError> {
        self.build_with(backends, size, out, Strategy::Auto)
    }

    fn build_with(
        &mut self,
        backends: &[MaglevBackend<'_>],
        size: TableSize,
        out: &mut Vec<u32>,
        strategy: Strategy,
    ) -> Result<(), MaglevError> {
        out.clear();
        self.prepare(backends, size)?;
        let m = size.get() as usize;
        out.resize(m, EMPTY);

        let max_weight = self.active.iter().map(|a| a.weight).max().unwrap_or(1);
        let sum: u64 = self.active.iter().map(|a| a.weight).sum();
        let scan = match strategy {
            Strategy::Scan => true,
            Strategy::Queue => false,
            Strategy::Auto => self.active.len() as u64 * max_weight <= SCAN_FACTOR * sum,
        };
        if scan {
            fill_scan(&mut self.active, max_weight, out);
        } else {
            fill_queue(&mut self.active, &mut self.queue, max_weight, out);
        }
        for e in out.iter_mut() {
            *e = self.active[*e as usize].id;
        }
        Ok(())
    }

    /// Validates the input and fills `self.active` with the positive-weight backends in key
    /// order, each at the start of its permutation.
    fn prepare(
        &mut self,
        backends: &[MaglevBackend<'_>],
        size: TableSize,
    ) -> Result<(), MaglevError> {
        self.ids.clear();
        self.ids.extend(backends.iter().map(|b| b.id));
        self.ids.sort_unstable();
        if let Some(w) = self.ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(MaglevError::DuplicateId(w[0]));
        }

        self.order.clear();
        self.order.extend(0..backends.len());
        self.order
            .sort_unstable_by(|&a, &b| backends[a].key.cmp(backends[b].key));
        if let Some(w) = self
            .order
            .windows(2)
            .find(|w| backends[w[0]].key == backends[w[1]].key)
        {
            let (a, b) = (&backends[w[0]], &backends[w[1]]);
            return Err(MaglevError::DuplicateKey {
                first: a.id.min(b.id),
                second: a.id.max(b.id),
                key: hex(a.key),
            });
        }

        self.active.clear();
        for &i in &self.order {
            let b = &backends[i];
            if b.weight == 0 {
                continue;
            }
            let (pos, skip) = permutation(b.key, size);
            self.active.push(Active {
                id: b.id,
                weight: u64::from(b.weight),
                pos,
                skip,
                acc: 0,
                turns: 0,
            });
        }
        if self.active.is_empty() {
            return Err(MaglevError::NoBackends);
        }
        if self.active.len() > size.get() as usize {
            return Err(MaglevError::TooManyBackends {
                backends: self.active.len(),
                size: size.get(),
            });
        }
        Ok(())
    }
}

/// One turn: the backend at `idx` claims the next free slot of its permutation. The table is
/// never full when this is called, and a prime size makes the permutation reach every slot.
#[inline(always)]
fn claim(table: &mut [u32], a: &mut Active, idx: u32) {
    let m = table.len() as u32;
    loop {
        let p = a.pos as usize;
        a.pos += a.skip;
        if a.pos >= m {
            a.pos -= m;
        }
        if table[p] == EMPTY {
            table[p] = idx;
            return;
        }
    }
}

/// Rounds over all backends in key order; a backend takes a turn whenever its accumulated
/// weight reaches `max_weight` (at most once per round, since every weight is `<= max_weight`).
fn fill_scan(active: &mut [Active], max_weight: u64, table: &mut [u32]) {
    let mut left = table.len();
    loop {
        for (i, a) in active.iter_mut().enumerate() {
            a.acc += a.weight;
            if a.acc >= max_weight {
                a.acc -= max_weight;
                claim(table, a, i as u32);
                left -= 1;
                if left == 0 {
                    return;
                }
            }
        }
    }
}

/// The same turns as [`fill_scan`] in the same order, without visiting idle backends: the
/// backend's `k`-th turn (from 0) falls in round `ceil((k + 1) * W / w)` (rounds from 1), and
/// ties within a round go in key order, i.e. by position in `active`.
fn fill_queue(
    active: &mut [Active],
    queue: &mut BinaryHeap<Reverse<(u64, u32)>>,
    max_weight: u64,
    table: &mut [u32],
) {
    queue.clear();
    queue.extend(
        active
            .iter()
            .enumerate()
            .map(|(i, a)| Reverse((max_weight.div_ceil(a.weight), i as u32))),
    );
    for _ in 0..table.len() {
        let Some(mut top) = queue.peek_mut() else {
            unreachable!("the queue always holds every active backend");
        };
        let Reverse((_, i)) = *top;
        let a = &mut active[i as usize];
        claim(table, a, i);
        a.turns += 1;
        // (turns + 1) * W <= 65538 * u32::MAX: no overflow.
        *top = Reverse((((a.turns + 1) * max_weight).div_ceil(a.weight), i));
    }
}

/// SipHash-2-4 (Aumasson & Bernstein) of `data` under the 128-bit key `(k0, k1)`.
pub(crate) fn siphash24((k0, k1): (u64, u64), data: &[u8]) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        compress(&mut v, u64::from_le_bytes(word));
    }
    let mut last = [0u8; 8];
    let tail = chunks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    last[7] = data.len() as u8;
    compress(&mut v, u64::from_le_bytes(last));
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Times `rounds` builds of a table of `size` with `backends` equal-weight backends (keys are
/// synthetic IPv6 addresses; `backends` is clamped to `1..=size`), reusing one
/// [`MaglevBuilder`] and output buffer as the control plane does, after one untimed warm-up.
pub fn bench_build(backends: usize, size: TableSize, rounds: usize) -> Vec<Duration> {
    let n = backends.clamp(1, size.get() as usize);
    let keys: Vec<[u8; 16]> = (0..n as u32).map(synthetic_key).collect();
    let input: Vec<MaglevBackend<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| MaglevBackend {
            id: i as u32,
            key,
            weight: 1,
        })
        .collect();
    let mut builder = MaglevBuilder::default();
    let mut out = Vec::with_capacity(size.get() as usize);
    let ok = builder.build_into(&input, size, &mut out).is_ok();
    debug_assert!(ok, "synthetic backends are valid by construction");
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let r = builder.build_into(&input, size, &mut out);
            std::hint::black_box((&r, &out));
            start.elapsed()
        })
        .collect()
}

/// `fd00::a:<i>`: a plausible backend address as a key.
fn synthetic_key(i: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0] = 0xfd;
    k[11] = 0x0a;
    k[12..].copy_from_slice(&i.to_be_bytes());
    k
}

#[cfg(test)]
mod tests;
