//! The multi-index must return exactly what the brute-force scan returns, at every radius, on random and
//! on clustered data (near-duplicate families and skewed substrings, as real PDQ banks have), including
//! after interleaved adds and removes.

use pharos::matcher::{Hit, MihIndex};
use pharos::synth::SplitMix64 as Rng;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// How the bank's hashes are drawn.
#[derive(Clone, Copy, Debug)]
enum Data {
    /// Uniform random bits.
    Random,
    /// Families: a base hash and copies with a few flipped bits; a third of the bases share a handful of
    /// frequent 16-bit substring values (skew: some buckets far fuller than others).
    Clustered,
}

fn flip<const L: usize>(h: &mut [u64; L], rng: &mut Rng, bits: u64) {
    for _ in 0..bits {
        let b = rng.below(64 * L as u64);
        h[(b / 64) as usize] ^= 1 << (b % 64);
    }
}

fn draw<const L: usize>(rng: &mut Rng, data: Data, bases: &mut Vec<[u64; L]>) -> [u64; L] {
    let mut h = [0u64; L];
    h.iter_mut().for_each(|l| *l = rng.next_u64());
    match data {
        Data::Random => h,
        Data::Clustered => {
            if !bases.is_empty() && rng.below(4) != 0 {
                let mut v = bases[rng.below(bases.len() as u64) as usize];
                let bits = rng.below(40);
                flip(&mut v, rng, bits);
                v
            } else {
                if rng.below(3) == 0 {
                    // Skew: most substrings take one of four common values.
                    const COMMON: [u64; 4] = [0, 0xffff, 0x5555, 0x8000];
                    for l in h.iter_mut() {
                        let mut v = 0;
                        for s in 0..4 {
                            let w = if rng.below(4) != 0 {
                                COMMON[rng.below(4) as usize]
                            } else {
                                rng.next_u64() & 0xffff
                            };
                            v |= w << (16 * s);
                        }
                        *l = v;
                    }
                }
                bases.push(h);
                h
            }
        }
    }
}

fn queries<const L: usize>(rng: &mut Rng, rows: &[[u64; L]], n: usize) -> Vec<[u64; L]> {
    (0..n)
        .map(|i| {
            if i % 3 == 2 || rows.is_empty() {
                let mut h = [0u64; L];
                h.iter_mut().for_each(|l| *l = rng.next_u64());
                h // most likely a miss
            } else {
                let mut h = rows[rng.below(rows.len() as u64) as usize];
                let bits = rng.below(48);
                flip(&mut h, rng, bits);
                h // a hit at some radius
            }
        })
        .collect()
}

fn check<const L: usize>(idx: &MihIndex<L>, qs: &[[u64; L]], radii: &[u32]) -> Result<(), TestCaseError> {
    let (mut a, mut b) = (Vec::<Hit>::new(), Vec::<Hit>::new());
    for q in qs {
        for &r in radii {
            a.clear();
            b.clear();
            idx.search_index(q, r, &mut a);
            idx.search_scan(q, r, &mut b);
            prop_assert_eq!(&a, &b, "radius {}", r);
            let mut auto = Vec::new();
            idx.search(q, r, &mut auto);
            prop_assert_eq!(&auto, &b, "auto, radius {}", r);
        }
    }
    Ok(())
}

fn scenario<const L: usize>(seed: u64, data: Data, n: usize, ops: usize) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let mut bases = Vec::new();
    let initial: Vec<[u64; L]> = (0..n).map(|_| draw(&mut rng, data, &mut bases)).collect();
    let removed: Vec<u64> = (0..n as u64).filter(|_| rng.below(20) == 0).collect();
    let mut idx = MihIndex::<L>::build(initial.clone(), &removed);
    let mut all = initial;
    // Every radius 0..=64 over the run, a few at a time.
    let radii: Vec<u32> = (0..=64).collect();
    let qs = queries(&mut rng, &all, 4);
    check(&idx, &qs, &radii)?;
    for step in 0..ops {
        match rng.below(3) {
            0 => {
                let k = 1 + rng.below(300) as usize;
                let add: Vec<[u64; L]> = (0..k).map(|_| draw(&mut rng, data, &mut bases)).collect();
                idx.extend(&add);
                all.extend_from_slice(&add);
            }
            1 => {
                for _ in 0..1 + rng.below(100) {
                    let row = rng.below(all.len() as u64) as u32;
                    let was = idx.is_live(row);
                    prop_assert_eq!(idx.remove(row), was);
                    prop_assert!(!idx.is_live(row));
                }
            }
            _ => {
                // Re-add copies of existing rows: duplicates must all be found.
                let k = 1 + rng.below(50) as usize;
                let add: Vec<[u64; L]> = (0..k).map(|_| all[rng.below(all.len() as u64) as usize]).collect();
                idx.extend(&add);
                all.extend_from_slice(&add);
            }
        }
        let qs = queries(&mut rng, &all, 3);
        let lo = (step * 7) % 60;
        let mut rs: Vec<u32> = (lo as u32..lo as u32 + 6).collect();
        rs.extend([0, 31, 32, 47, 64]);
        check(&idx, &qs, &rs)?;
    }
    check(&idx, &queries(&mut rng, &all, 3), &radii)?;
    prop_assert_eq!(idx.rows(), all.len());
    Ok(())
}

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, ..Config::default() }
}

proptest! {
    #![proptest_config(config(12))]

    #[test]
    fn pdq_index_equals_scan_random(seed in any::<u64>(), n in 0usize..3000) {
        scenario::<4>(seed, Data::Random, n, 12)?;
    }

    #[test]
    fn pdq_index_equals_scan_clustered(seed in any::<u64>(), n in 0usize..3000) {
        scenario::<4>(seed, Data::Clustered, n, 12)?;
    }

    #[test]
    fn phash_index_equals_scan_random(seed in any::<u64>(), n in 0usize..3000) {
        scenario::<1>(seed, Data::Random, n, 12)?;
    }

    #[test]
    fn phash_index_equals_scan_clustered(seed in any::<u64>(), n in 0usize..3000) {
        scenario::<1>(seed, Data::Clustered, n, 12)?;
    }
}

/// Many single adds into a small index: buckets relocate and tables compact; answers stay exact.
#[test]
fn incremental_adds_relocate_and_compact() {
    let mut rng = Rng::new(7);
    let mut idx = MihIndex::<1>::default();
    let mut bases = Vec::new();
    let mut all = Vec::new();
    for i in 0..20_000 {
        let h = draw::<1>(&mut rng, Data::Clustered, &mut bases);
        idx.extend(&[h]);
        all.push(h);
        if i % 3 == 0 {
            idx.remove(rng.below(all.len() as u64) as u32);
        }
    }
    let qs = queries(&mut rng, &all, 50);
    check(&idx, &qs, &[0, 3, 7, 10, 15, 20]).unwrap();
}

/// A bulk batch larger than the bank takes the rebuild path; removed rows stay removed.
#[test]
fn large_batch_keeps_tombstones() {
    let mut rng = Rng::new(11);
    let first: Vec<[u64; 4]> =
        (0..100).map(|_| [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()]).collect();
    let mut idx = MihIndex::<4>::build(first.clone(), &[]);
    assert!(idx.remove(5));
    let more: Vec<[u64; 4]> =
        (0..5000).map(|_| [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()]).collect();
    idx.extend(&more);
    assert!(!idx.is_live(5));
    let mut out = Vec::new();
    idx.search_index(&first[5], 0, &mut out);
    assert!(out.is_empty());
    idx.search_index(&more[10], 0, &mut out);
    assert_eq!(out, vec![Hit { row: 110, distance: 0 }]);
}
