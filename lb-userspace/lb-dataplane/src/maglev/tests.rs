use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::*;

/// Owns the keys that `MaglevBackend` borrows: `(id, key, weight)`.
struct Set(Vec<(u32, Vec<u8>, u32)>);

impl Set {
    /// `n` backends with ids `0..n`, IPv4 keys 10.1.x.y and the given weights (cycled).
    fn new(n: u32, weights: &[u32]) -> Self {
        Set((0..n)
            .map(|i| {
                (
                    i,
                    vec![10, 1, (i >> 8) as u8, i as u8],
                    weights[i as usize % weights.len()],
                )
            })
            .collect())
    }

    fn backends(&self) -> Vec<MaglevBackend<'_>> {
        self.0
            .iter()
            .map(|(id, key, weight)| MaglevBackend {
                id: *id,
                key,
                weight: *weight,
            })
            .collect()
    }

    fn build(&self, size: u32) -> Vec<u32> {
        build(&self.backends(), TableSize::new(size).unwrap()).unwrap()
    }
}

fn counts(table: &[u32], ids: usize) -> Vec<usize> {
    let mut c = vec![0; ids];
    for &e in table {
        c[e as usize] += 1;
    }
    c
}

/// Every backend's share of the table is within `tolerance` (relative) of weight / sum.
fn assert_shares(weights: &[u32], size: u32, tolerance: f64) {
    let set = Set::new(weights.len() as u32, weights);
    let table = set.build(size);
    let c = counts(&table, weights.len());
    let sum: u32 = weights.iter().sum();
    let mut worst = 0.0f64;
    for (i, (&w, &n)) in weights.iter().zip(&c).enumerate() {
        let want = f64::from(w) / f64::from(sum);
        let got = n as f64 / table.len() as f64;
        let err = (got - want).abs() / want;
        assert!(
            err <= tolerance,
            "weights {weights:?}, M {size}: backend {i} has share {got:.5}, expected {want:.5}"
        );
        worst = worst.max(err);
    }
    let shown = if weights.len() <= 8 {
        format!("{weights:?}")
    } else {
        format!("({} backends)", weights.len())
    };
    println!(
        "weights {shown}, M {size}: largest share error {:.3}%",
        worst * 100.0
    );
}

#[test]
fn siphash_matches_reference_vectors() {
    // Test vectors from the SipHash paper / reference implementation (key 00..0f).
    let key = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    let msg: Vec<u8> = (0..64).collect();
    assert_eq!(siphash24(key, &msg[..0]), 0x726f_db47_dd0e_0e31);
    assert_eq!(siphash24(key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
    assert_eq!(siphash24(key, &msg[..8]), 0x93f5_f579_9a93_2462);
    assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
    assert_eq!(siphash24(key, &msg[..63]), 0x958a_324c_eb06_4572);
}

#[test]
fn table_size_accepts_primes_only() {
    for p in [2, 3, 7, 13, 251, 65_521, 65_537] {
        assert_eq!(TableSize::new(p).unwrap().get(), p);
    }
    assert_eq!(TableSize::DEFAULT.get(), 65_537);
    assert_eq!(TableSize::default(), TableSize::DEFAULT);
    assert_eq!(TableSize::new(0), Err(MaglevError::SizeTooSmall(0)));
    assert_eq!(TableSize::new(1), Err(MaglevError::SizeTooSmall(1)));
    assert_eq!(
        TableSize::new(65_536),
        Err(MaglevError::SizeNotPrime {
            size: 65_536,
            divisor: 2,
            suggestion: 65_537
        })
    );
    assert_eq!(
        TableSize::new(91),
        Err(MaglevError::SizeNotPrime {
            size: 91,
            divisor: 7,
            suggestion: 97
        })
    );
    // 65539 is prime but larger than the data plane's table.
    assert_eq!(
        TableSize::new(65_539),
        Err(MaglevError::SizeTooLarge {
            size: 65_539,
            max: MAX_TABLE
        })
    );
    assert_eq!(
        TableSize::try_from(u32::MAX),
        Err(MaglevError::SizeTooLarge {
            size: u32::MAX,
            max: MAX_TABLE
        })
    );
    let msg = TableSize::new(1000).unwrap_err().to_string();
    assert!(
        msg.contains("1000") && msg.contains("not prime") && msg.contains("1009"),
        "{msg}"
    );
}

#[test]
fn equal_weights_balance_within_two_percent() {
    let table = Set::new(100, &[1]).build(65_537);
    let c = counts(&table, 100);
    let (min, max) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
    let ratio = max as f64 / min as f64;
    println!("100 equal backends, M 65537: entries min {min}, max {max}, max/min {ratio:.4}");
    assert!(ratio <= 1.02, "max/min = {ratio:.4} ({max}/{min})");
}

#[test]
fn removing_one_of_hundred_backends_moves_under_one_percent() {
    let full = Set::new(100, &[1]);
    let before = full.build(65_537);
    let mut worst = 0.0f64;
    for removed in [0u32, 37, 99] {
        let rest = Set(full.0.iter().filter(|b| b.0 != removed).cloned().collect());
        let after = rest.build(65_537);
        let kept: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != removed)
            .collect();
        let moved = kept.iter().filter(|&&i| after[i] != before[i]).count();
        let frac = moved as f64 / kept.len() as f64;
        println!(
            "remove backend {removed} of 100 (M 65537): {moved} of {} entries of the other 99 moved ({:.3}%)",
            kept.len(),
            frac * 100.0
        );
        assert!(after.iter().all(|&id| id != removed));
        assert!(
            frac <= 0.01,
            "removing backend {removed} moved {:.3}% of the others' entries",
            frac * 100.0
        );
        worst = worst.max(frac);
    }
    println!("worst disruption: {:.3}%", worst * 100.0);
}

#[test]
fn weights_are_honoured() {
    assert_shares(&[2, 1, 1], 65_537, 0.05);
    assert_shares(&[10, 1], 65_537, 0.05);
    assert_shares(&[3, 7, 1, 5, 2], 65_537, 0.05);
    // Weights act in every round, so the ratio also holds on a small table.
    assert_shares(&[2, 1, 1], 251, 0.05);
}

#[test]
fn weights_act_beyond_the_first_round() {
    // One heavy backend among many light ones: the turns of the light ones are spread over the
    // whole fill, so the heavy one ends up with its share rather than one extra slot per round.
    let mut weights = vec![1; 50];
    weights[17] = 50;
    assert_shares(&weights, 65_537, 0.05);
}

#[test]
fn skewed_weights_use_the_queue_and_stay_proportional() {
    // n * W > SCAN_FACTOR * sum: the event-queue strategy runs.
    let mut weights = vec![1; 200];
    weights[3] = 1_000;
    assert_shares(&weights, 65_537, 0.05);
    // Extreme weights must neither overflow nor take forever.
    let table = Set::new(3, &[u32::MAX, 1, 1]).build(65_537);
    assert!(counts(&table, 3)[0] >= 65_535);
}

#[test]
fn scan_and_queue_strategies_build_identical_tables() {
    let mut rng = StdRng::seed_from_u64(7);
    let cases: Vec<Vec<u32>> = vec![
        vec![1; 10],
        vec![5, 3, 0, 9, 1, 1, 2],
        vec![1_000, 1, 1, 1, 1, 1, 1, 1],
        (0..64)
            .map(|_| rand::Rng::gen_range(&mut rng, 0..=20))
            .collect(),
        (0..300)
            .map(|_| rand::Rng::gen_range(&mut rng, 1..=3))
            .collect(),
    ];
    for weights in cases {
        for size in [13, 1_009, 65_537] {
            let set = Set::new(weights.len() as u32, &weights);
            if weights.iter().filter(|&&w| w > 0).count() > size as usize {
                continue;
            }
            let size = TableSize::new(size).unwrap();
            let (mut scan, mut queue) = (Vec::new(), Vec::new());
            let mut b = MaglevBuilder::default();
            b.build_with(&set.backends(), size, &mut scan, Strategy::Scan)
                .unwrap();
            b.build_with(&set.backends(), size, &mut queue, Strategy::Queue)
                .unwrap();
            assert_eq!(scan, queue, "weights {weights:?}, size {size}");
        }
    }
}

#[test]
fn scaling_all_weights_gives_the_same_table() {
    assert_eq!(
        Set::new(5, &[2, 4, 6]).build(1_009),
        Set::new(5, &[1, 2, 3]).build(1_009)
    );
}

#[test]
fn zero_weight_gets_nothing() {
    let table = Set::new(4, &[1, 0, 3, 2]).build(65_537);
    let c = counts(&table, 4);
    assert_eq!(c[1], 0);
    assert!(c[0] > 0 && c[2] > 0 && c[3] > 0);
    // A draining backend does not change what the others get.
    let without = Set(Set::new(4, &[1, 0, 3, 2])
        .0
        .into_iter()
        .filter(|b| b.0 != 1)
        .collect())
    .build(65_537);
    assert_eq!(table, without);
}

#[test]
fn input_order_does_not_matter() {
    let set = Set::new(40, &[1, 2, 3]);
    let reference = set.build(65_537);
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..3 {
        let mut shuffled = Set(set.0.clone());
        shuffled.0.shuffle(&mut rng);
        assert_eq!(shuffled.build(65_537), reference);
    }
}

#[test]
fn same_input_gives_same_table() {
    let set = Set::new(25, &[1, 4]);
    let mut builder = MaglevBuilder::default();
    let mut reused = vec![7; 3];
    builder
        .build_into(&set.backends(), TableSize::new(1_009).unwrap(), &mut reused)
        .unwrap();
    assert_eq!(set.build(1_009), set.build(1_009));
    assert_eq!(reused, set.build(1_009));
}

#[test]
fn golden_table_guards_hash_and_seeds() {
    // Two nodes (or two versions of lbd during a rolling upgrade) must agree on this table; if it
    // changes, every flow is reshuffled. Change it only on purpose.
    let table = Set::new(3, &[1]).build(13);
    assert_eq!(table, GOLDEN_13);
    assert_eq!(
        permutation(&[10, 1, 0, 0], TableSize::DEFAULT),
        GOLDEN_PERMUTATION
    );
}

// Cross-checked with an independent Python implementation of SipHash-2-4 and Maglev.
const GOLDEN_13: [u32; 13] = [2, 0, 0, 2, 2, 1, 1, 1, 2, 0, 0, 0, 1];
const GOLDEN_PERMUTATION: (u32, u32) = (61_035, 40_544);

#[test]
fn permutation_depends_only_on_key() {
    let size = TableSize::new(1_009).unwrap();
    let key = [192u8, 0, 2, 7];
    let (offset, skip) = permutation(&key, size);
    assert!(offset < 1_009 && (1..1_009).contains(&skip));
    // A backend keeps its slot choices whatever its id and neighbours: alone in a table it
    // fills slot `offset` first.
    for id in [0, 5, u32::MAX] {
        let table = build(
            &[MaglevBackend {
                id,
                key: &key,
                weight: 3,
            }],
            size,
        )
        .unwrap();
        assert!(table.iter().all(|&e| e == id));
    }
    let other = [192u8, 0, 2, 8];
    let a = build(
        &[
            MaglevBackend {
                id: 1,
                key: &key,
                weight: 1,
            },
            MaglevBackend {
                id: 2,
                key: &other,
                weight: 1,
            },
        ],
        size,
    )
    .unwrap();
    let b = build(
        &[
            MaglevBackend {
                id: 9,
                key: &other,
                weight: 1,
            },
            MaglevBackend {
                id: 4,
                key: &key,
                weight: 1,
            },
        ],
        size,
    )
    .unwrap();
    let relabelled: Vec<u32> = b.iter().map(|&e| if e == 4 { 1 } else { 2 }).collect();
    assert_eq!(a, relabelled);
    assert_eq!(
        a[offset as usize], 1,
        "the first preference of the lower key is always won"
    );
}

#[test]
fn small_prime_tables_work() {
    for size in [2, 3, 7, 13] {
        let n = size.min(3);
        let table = Set::new(n, &[1]).build(size);
        assert_eq!(table.len(), size as usize);
        let c = counts(&table, n as usize);
        assert!(c.iter().all(|&k| k >= 1), "size {size}: {table:?}");
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "size {size}: {table:?}"
        );
    }
}

#[test]
fn single_backend_fills_the_whole_table() {
    let key = [1u8, 2, 3, 4];
    let table = build(
        &[MaglevBackend {
            id: 42,
            key: &key,
            weight: 5,
        }],
        TableSize::DEFAULT,
    )
    .unwrap();
    assert_eq!(table.len(), 65_537);
    assert!(table.iter().all(|&e| e == 42));
}

#[test]
fn id_u32_max_is_a_valid_id() {
    let (k1, k2) = ([1u8], [2u8]);
    let table = build(
        &[
            MaglevBackend {
                id: u32::MAX,
                key: &k1,
                weight: 1,
            },
            MaglevBackend {
                id: 0,
                key: &k2,
                weight: 1,
            },
        ],
        TableSize::new(13).unwrap(),
    )
    .unwrap();
    assert_eq!(table.iter().filter(|&&e| e == u32::MAX).count(), 7);
    assert_eq!(table.iter().filter(|&&e| e == 0).count(), 6);
}

#[test]
fn bad_backend_sets_are_errors() {
    let size = TableSize::new(13).unwrap();
    assert_eq!(build(&[], size), Err(MaglevError::NoBackends));
    assert_eq!(Set::new(3, &[0]).backends().len(), 3);
    assert_eq!(
        build(&Set::new(3, &[0]).backends(), size),
        Err(MaglevError::NoBackends)
    );

    let (a, b) = ([10u8, 0, 0, 1], [10u8, 0, 0, 2]);
    let dup_key = [
        MaglevBackend {
            id: 4,
            key: &a,
            weight: 1,
        },
        MaglevBackend {
            id: 2,
            key: &a,
            weight: 0,
        },
    ];
    let err = build(&dup_key, size).unwrap_err();
    assert_eq!(
        err,
        MaglevError::DuplicateKey {
            first: 2,
            second: 4,
            key: "0a000001".into()
        }
    );
    assert!(err.to_string().contains("0a000001"), "{err}");

    let dup_id = [
        MaglevBackend {
            id: 3,
            key: &a,
            weight: 1,
        },
        MaglevBackend {
            id: 3,
            key: &b,
            weight: 1,
        },
    ];
    assert_eq!(build(&dup_id, size), Err(MaglevError::DuplicateId(3)));

    let err = build(&Set::new(14, &[1]).backends(), size).unwrap_err();
    assert_eq!(
        err,
        MaglevError::TooManyBackends {
            backends: 14,
            size: 13
        }
    );
    // Draining backends do not count against the size.
    assert!(build(&Set::new(20, &[1, 0]).backends(), size).is_ok());

    let mut out = vec![1, 2, 3];
    assert!(build_into(&[], size, &mut out).is_err());
    assert!(
        out.is_empty(),
        "a failed build leaves no stale table behind"
    );
}

#[test]
fn bench_build_times_each_round() {
    let mut times = bench_build(1_000, TableSize::DEFAULT, 11);
    assert_eq!(times.len(), 11);
    times.sort();
    println!(
        "M 65537, 1000 backends: build min {:?}, median {:?}, max {:?} (informational)",
        times[0], times[5], times[10]
    );
    assert!(bench_build(0, TableSize::new(7).unwrap(), 0).is_empty());
}
