//! Smooth weighted round-robin (nginx's `ngx_http_upstream_get_peer`): on each pick every
//! backend's `current` grows by its weight, the backend with the largest `current` is chosen
//! (the first in id order on ties) and its `current` drops by the total weight. Picks of a heavy
//! backend are spread out (`a a b a c a a` for weights 5, 1, 1) instead of bunched.
//!
//! The data plane cannot keep that state per backend, so the control plane precomputes one full
//! period of the pick sequence and the XDP program walks it with a per-CPU cursor. After one
//! period every `current` is back at 0, so repeating the period is exactly nginx's sequence.
//!
//! The period is the sum of the weights after dividing them by their gcd. When that still
//! exceeds `max_len`, the weights are scaled down proportionally (`w * B / sum`, rounded down
//! but never below 1, with the largest budget `B` whose result fits), then reduced by their gcd
//! again. Scaled shares are then exact only to within about one pick per backend per period.
//!
//! Building costs `period * distinct weights` steps: backends of equal weight are served in
//! turn, so only one of them per weight competes in each pick.

/// Why a sequence could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WrrError {
    #[error("no backend has a positive weight: a round-robin sequence needs at least one")]
    NoBackends,
    #[error("backend id {0} appears more than once")]
    DuplicateId(u32),
    #[error("the sequence length limit must be at least 1")]
    ZeroLength,
    #[error(
        "{backends} backends with a positive weight do not fit a sequence of at most {max_len} \
         entries (each needs one)"
    )]
    TooManyBackends { backends: usize, max_len: usize },
}

/// One period of the smooth weighted round-robin sequence of backend ids, at most `max_len`
/// long. `backends` are `(id, weight)`; weight 0 backends get no entries. The result does not
/// depend on the input order.
pub fn sequence(backends: &[(u32, u32)], max_len: usize) -> Result<Vec<u32>, WrrError> {
    if max_len == 0 {
        return Err(WrrError::ZeroLength);
    }
    let mut sorted = backends.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(WrrError::DuplicateId(w[0].0));
    }
    let (ids, weights): (Vec<u32>, Vec<u64>) = sorted
        .iter()
        .filter(|&&(_, w)| w > 0)
        .map(|&(id, w)| (id, u64::from(w)))
        .unzip();
    if ids.is_empty() {
        return Err(WrrError::NoBackends);
    }
    if ids.len() > max_len {
        return Err(WrrError::TooManyBackends {
            backends: ids.len(),
            max_len,
        });
    }
    let weights = period_weights(weights, max_len as u64);
    Ok(smooth_picks(&ids, &weights))
}

/// The weights that define the period: reduced by their gcd and, if their sum still exceeds
/// `max_len`, scaled down so that it fits. Needs `1 <= weights.len() <= max_len`, all positive.
fn period_weights(weights: Vec<u64>, max_len: u64) -> Vec<u64> {
    let mut weights = reduce(weights);
    let sum: u64 = weights.iter().sum();
    if sum <= max_len {
        return weights;
    }
    // fitted(B) = sum(max(1, w * B / sum)) grows with the budget B, and fitted(0) = n fits:
    // binary-search the largest budget whose result fits (it is at most max_len + n, since the
    // rounding loses less than one per backend).
    let fitted = |budget: u64| -> Vec<u64> {
        weights
            .iter()
            .map(|&w| (u128::from(w) * u128::from(budget) / u128::from(sum)).max(1) as u64)
            .collect()
    };
    let fits = |budget: u64| fitted(budget).iter().sum::<u64>() <= max_len;
    let (mut lo, mut hi) = (0, max_len.saturating_add(weights.len() as u64));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    weights = fitted(lo);
    reduce(weights)
}

fn reduce(mut weights: Vec<u64>) -> Vec<u64> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    if g > 1 {
        weights.iter_mut().for_each(|w| *w /= g);
    }
    weights
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Backends of equal weight. nginx's `current` of a backend after the `t`-th increment is
/// `t * w - picks * total`, so within a group the leader is the backend with the fewest picks
/// (lowest index on ties): the group is served round-robin in index order, and only its next
/// member can win. Comparing one candidate per distinct weight instead of every backend makes
/// a step cost O(distinct weights), at most ~360 since distinct weights sum to <= 65537.
struct Group {
    weight: i64,
    /// Indices into the id list, ascending.
    members: Vec<usize>,
    /// Position in `members` of the next to serve; the ones before it have one pick more.
    next: usize,
    /// Picks of each member from `next` on.
    picks: i64,
}

/// Runs nginx's selection for one period (`sum(weights)` picks).
fn smooth_picks(ids: &[u32], weights: &[u64]) -> Vec<u32> {
    // The sum fits `max_len` and so does each weight: i64 holds `t * w` (< 2^33) easily.
    let total = weights.iter().sum::<u64>() as i64;
    let mut by_weight: Vec<usize> = (0..ids.len()).collect();
    by_weight.sort_by_key(|&i| weights[i]); // stable: members stay in index order
    let mut groups: Vec<Group> = Vec::new();
    for i in by_weight {
        let w = weights[i] as i64;
        match groups.last_mut() {
            Some(g) if g.weight == w => g.members.push(i),
            _ => groups.push(Group {
                weight: w,
                members: vec![i],
                next: 0,
                picks: 0,
            }),
        }
    }
    let mut out = Vec::with_capacity(total as usize);
    for t in 1..=total {
        // (current, index, group) of the best candidate; ties go to the lowest index as in
        // nginx, which scans peers in order and replaces the best only on a strictly larger one.
        let mut best = (i64::MIN, usize::MAX, 0);
        for (gi, g) in groups.iter().enumerate() {
            let cand = (t * g.weight - g.picks * total, g.members[g.next]);
            if cand.0 > best.0 || (cand.0 == best.0 && cand.1 < best.1) {
                best = (cand.0, cand.1, gi);
            }
        }
        let g = &mut groups[best.2];
        out.push(ids[best.1]);
        g.next += 1;
        if g.next == g.members.len() {
            g.next = 0;
            g.picks += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx's loop verbatim: every backend, every pick.
    fn nginx(backends: &[(u32, u32)]) -> Vec<u32> {
        let mut b: Vec<(u32, i64, i64)> = backends
            .iter()
            .filter(|b| b.1 > 0)
            .map(|&(id, w)| (id, i64::from(w), 0))
            .collect();
        b.sort_unstable();
        let total: i64 = b.iter().map(|x| x.1).sum();
        let mut out = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            for i in 0..b.len() {
                b[i].2 += b[i].1;
                if b[i].2 > b[best].2 {
                    best = i;
                }
            }
            b[best].2 -= total;
            out.push(b[best].0);
        }
        out
    }

    fn count(seq: &[u32], id: u32) -> usize {
        seq.iter().filter(|&&e| e == id).count()
    }

    #[test]
    fn matches_nginx_for_5_1_1() {
        let (a, b, c) = (1, 2, 3);
        let seq = sequence(&[(a, 5), (b, 1), (c, 1)], 65_537).unwrap();
        assert_eq!(seq, [a, a, b, a, c, a, a]);
    }

    #[test]
    fn grouped_selection_equals_nginx_loop() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(3);
        for case in 0..200 {
            let n = rng.gen_range(1..40);
            let max_w = if case % 2 == 0 { 4 } else { 60 };
            let mut backends: Vec<(u32, u32)> = (0..n)
                .map(|i| (i * 3 + 1, rng.gen_range(0..=max_w)))
                .collect();
            backends[0].1 = backends[0].1.max(1);
            // Coprime-ish weights so that the gcd reduction does not hide anything.
            backends.push((1_000, 1));
            assert_eq!(
                sequence(&backends, 65_537).unwrap(),
                nginx(&backends),
                "{backends:?}"
            );
        }
    }

    #[test]
    fn proportions_are_exact_over_one_period() {
        let backends = [(10, 3), (11, 7), (12, 2), (13, 5)];
        let seq = sequence(&backends, 65_537).unwrap();
        assert_eq!(seq.len(), 17);
        for (id, w) in backends {
            assert_eq!(count(&seq, id), w as usize, "backend {id}");
        }
    }

    #[test]
    fn picks_are_spread_out() {
        // Smoothness: over any window of the cycled sequence, a backend of weight w out of total
        // S appears within one of its fair share `len * w / S`.
        let backends = [(1, 5), (2, 1), (3, 1), (4, 3)];
        let seq = sequence(&backends, 65_537).unwrap();
        let total = seq.len();
        let cycled: Vec<u32> = seq.iter().chain(&seq).copied().collect();
        for len in 1..=total {
            for start in 0..total {
                let window = &cycled[start..start + len];
                for (id, w) in backends {
                    let fair = (len * w as usize) as f64 / total as f64;
                    let got = count(window, id) as f64;
                    assert!(
                        (got - fair).abs() < 1.0 + 1e-9,
                        "{seq:?}: window {start}+{len}, id {id}: {got} vs {fair}"
                    );
                }
            }
        }
    }

    #[test]
    fn weights_are_reduced_by_their_gcd() {
        assert_eq!(
            sequence(&[(1, 500), (2, 100), (3, 100)], 65_537).unwrap(),
            [1, 1, 2, 1, 3, 1, 1]
        );
        assert_eq!(sequence(&[(7, 4), (8, 4)], 65_537).unwrap(), [7, 8]);
    }

    #[test]
    fn input_order_and_zero_weights_do_not_matter() {
        let a = sequence(&[(3, 1), (1, 5), (9, 0), (2, 1)], 100).unwrap();
        let b = sequence(&[(1, 5), (2, 1), (3, 1)], 100).unwrap();
        assert_eq!(a, b);
        assert_eq!(count(&a, 9), 0);
    }

    #[test]
    fn long_periods_are_scaled_down() {
        // 1_000_003 and 999_983 are coprime: no gcd reduction, period 2_000_002 > 1000.
        let seq = sequence(&[(1, 1_000_003), (2, 999_983)], 1_000).unwrap();
        assert!(seq.len() <= 1_000);
        assert_eq!(
            seq,
            [1, 2],
            "scaled to 500 + 500, then reduced by their gcd"
        );

        // A tiny weight keeps one entry; the others share the rest proportionally.
        let seq = sequence(&[(1, u32::MAX), (2, u32::MAX / 2), (3, 1)], 100).unwrap();
        assert!(seq.len() <= 100, "{}", seq.len());
        assert_eq!(count(&seq, 3), 1);
        let (a, b) = (count(&seq, 1) as f64, count(&seq, 2) as f64);
        assert!((a / b - 2.0).abs() < 0.1, "{a} vs {b}");

        // Many small weights pushed up to 1 must still fit.
        let mut backends: Vec<(u32, u32)> = (0..50).map(|i| (i, 1)).collect();
        backends.push((99, 1_000_000));
        let seq = sequence(&backends, 60).unwrap();
        assert!(seq.len() <= 60, "{}", seq.len());
        assert!((0..50).all(|i| count(&seq, i) == 1));
        assert!(count(&seq, 99) >= 1);

        // Exactly as many backends as the limit: one entry each.
        let backends: Vec<(u32, u32)> = (0..10).map(|i| (i, i + 1)).collect();
        assert_eq!(
            sequence(&backends, 10).unwrap(),
            (0..10).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(sequence(&[], 10), Err(WrrError::NoBackends));
        assert_eq!(sequence(&[(1, 0), (2, 0)], 10), Err(WrrError::NoBackends));
        assert_eq!(sequence(&[(1, 1)], 0), Err(WrrError::ZeroLength));
        assert_eq!(
            sequence(&[(1, 1), (2, 3), (1, 0)], 10),
            Err(WrrError::DuplicateId(1))
        );
        assert_eq!(
            sequence(&[(1, 1), (2, 1), (3, 1)], 2),
            Err(WrrError::TooManyBackends {
                backends: 3,
                max_len: 2
            })
        );
    }
}
