//! The banks module (`pharos::banks`), the one bank search `pharos match` and the daemon share: search
//! bounds, labels, and consistency of store and index under concurrent writers (issue 10, defects 3, 4,
//! 5 and 9).

use crate::common::flipped;
use pharos::banks::{validate_label, BankQuery, BankSet, SearchPolicy, MAX_VARIANTS};
use pharos::hash::{Hash256, Hash64};
use pharos::matcher::{AnyHash, Kind};
use pharos::metrics::Metrics;
use pharos::store::{NewEntry, Store};
use pharos::synth::SplitMix64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn open(dir: &std::path::Path, policy: SearchPolicy) -> BankSet {
    BankSet::open(Store::open(dir).unwrap(), Arc::new(Metrics::new()), policy).unwrap()
}

fn pdq(rng: &mut SplitMix64) -> Hash256 {
    Hash256 { limbs: std::array::from_fn(|_| rng.next_u64()) }
}

fn entries(hashes: impl IntoIterator<Item = Hash256>) -> Vec<NewEntry> {
    hashes.into_iter().map(|h| NewEntry::labelled(AnyHash::Pdq(h), None)).collect()
}

/// Defect 3: a query near thousands of entries gets at most `max_matches`, the nearest ones, sorted, and
/// says it was truncated; radii above the kind's cap and too many variants are refused.
#[test]
fn matches_are_capped_nearest_first_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let banks = open(dir.path(), SearchPolicy { max_matches: 100 });
    banks.create("near", Kind::Pdq).unwrap();
    let mut rng = SplitMix64::new(7);
    let q = pdq(&mut rng);
    // 3,000 entries within distance 0..=30 of the query, 100 of each distance.
    let hashes: Vec<Hash256> = (0..3000).map(|i| flipped(q, i % 31)).collect();
    banks.add("near", &entries(hashes)).unwrap();

    let all = banks.search(&[], &BankQuery::of(&[AnyHash::Pdq(q)]), Some(31)).unwrap();
    assert!(all.truncated, "3,000 within the radius, 100 returned");
    assert_eq!(all.hits.len(), 100);
    let d: Vec<u32> = all.hits.iter().map(|h| h.distance).collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]), "nearest first: {d:?}");
    assert_eq!(*d.last().unwrap(), 1, "the 100 nearest: ~97 at 0, then the nearest at distance 1");
    let ids: Vec<u64> = all.hits.iter().filter(|h| h.distance == 0).map(|h| h.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ties by id");

    // At radius 0 only ids 0, 31, 62, … match: 97, under the cap.
    let few = banks.search(&[], &BankQuery::of(&[AnyHash::Pdq(q)]), Some(0)).unwrap();
    assert_eq!((few.hits.len(), few.truncated), (97, false));

    // Radius capped per kind.
    let err = banks.search(&[], &BankQuery::of(&[AnyHash::Pdq(q)]), Some(256)).unwrap_err().to_string();
    assert!(err.contains("largest allowed") && err.contains("64"), "{err}");
    assert!(banks.search(&[], &BankQuery::of(&[AnyHash::Pdq(q)]), Some(Kind::Pdq.max_radius())).is_ok());
    // At most 8 variants of one kind.
    let nine: Vec<AnyHash> = (0..=MAX_VARIANTS).map(|i| AnyHash::Pdq(flipped(q, i))).collect();
    let err = banks.search(&[], &BankQuery::of(&nine), None).unwrap_err().to_string();
    assert!(err.contains("at most 8"), "{err}");
    assert!(banks.search(&[], &BankQuery::of(&nine[..MAX_VARIANTS]), None).is_ok());
}

/// The same bounds in `search_many` (what `pharos match` uses), query by query.
#[test]
fn search_many_caps_each_query_and_skips_banks_of_other_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let banks = open(dir.path(), SearchPolicy { max_matches: 5 });
    banks.create("p", Kind::Pdq).unwrap();
    banks.create("h", Kind::Phash).unwrap();
    let mut rng = SplitMix64::new(9);
    let q = pdq(&mut rng);
    banks.add("p", &entries((0..20).map(|i| flipped(q, i % 3)))).unwrap();
    banks.add("h", &[NewEntry::labelled(AnyHash::Phash(Hash64(0xabcd)), Some("x".into()))]).unwrap();
    let names = vec!["p".to_string(), "h".to_string()];
    let queries =
        [vec![AnyHash::Pdq(q)], vec![AnyHash::Phash(Hash64(0xabcd))], vec![AnyHash::Pdq(pdq(&mut rng))]]
            .map(|h| BankQuery::of(&h));
    let r = banks.search_many(&names, &queries, None).unwrap();
    assert_eq!((r[0].hits.len(), r[0].truncated), (5, true));
    assert!(r[0].hits.iter().all(|h| h.bank == "p" && h.distance == 0));
    assert_eq!((r[1].hits.len(), r[1].truncated), (1, false));
    assert_eq!(r[1].hits[0].label.as_deref(), Some("x"));
    assert!(r[2].hits.is_empty() && !r[2].truncated);
}

/// Defect 4: a panic while a bank's locks are held must not poison them: every later call still works.
#[test]
fn a_panic_holding_a_bank_lock_does_not_break_later_calls() {
    let dir = tempfile::tempdir().unwrap();
    let banks = open(dir.path(), SearchPolicy::default());
    banks.create("b", Kind::Pdq).unwrap();
    let mut rng = SplitMix64::new(3);
    let h = pdq(&mut rng);
    banks.inject_write_panics(1);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| banks.add("b", &entries([h]))));
    assert!(panicked.is_err(), "the injected panic happened");
    // The same bank, every operation, afterwards:
    assert_eq!(banks.add("b", &entries([h])).unwrap(), 0, "nothing was written by the panicking call");
    assert_eq!(banks.list()[0].size, 1);
    assert_eq!(banks.search(&["b".into()], &BankQuery::of(&[AnyHash::Pdq(h)]), None).unwrap().hits.len(), 1);
    banks.remove("b", &[0]).unwrap();
    banks.delete("b").unwrap();
}

/// Defect 5: deleting and re-creating a bank while writers add to it never leaves the store and the index
/// disagreeing: after the storm, every bank's index holds exactly the entries its store rows hold.
#[test]
fn delete_and_recreate_during_adds_keeps_store_and_index_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let banks = Arc::new(open(dir.path(), SearchPolicy::default()));
    banks.create("b", Kind::Pdq).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (banks, stop) = (banks.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = SplitMix64::new(100 + t);
                let mut ok = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch = entries((0..4).map(|_| pdq(&mut rng)));
                    match banks.add("b", &batch) {
                        Ok(_) => ok += 1,
                        Err(pharos::Error::UnknownBank(_)) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    for _ in 0..150 {
        match banks.delete("b") {
            Ok(()) | Err(pharos::Error::UnknownBank(_)) => {}
            Err(e) => panic!("delete: {e}"),
        }
        std::thread::yield_now();
        banks.create("b", Kind::Pdq).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let added: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(added > 0, "the writers got some adds in");
    let mut stored = 0u64;
    banks
        .export("b", |_| {
            stored += 1;
            Ok(())
        })
        .unwrap();
    let indexed = banks.list().into_iter().find(|b| b.name == "b").unwrap().size;
    assert_eq!(indexed, stored, "index and store of the re-created bank agree");
    // And every stored hash is found through the index.
    let mut missing = 0;
    let mut exported = Vec::new();
    banks
        .export("b", |e| {
            exported.push(e.hash);
            Ok(())
        })
        .unwrap();
    for h in exported {
        missing +=
            usize::from(banks.search(&["b".into()], &BankQuery::of(&[h]), Some(0)).unwrap().hits.is_empty());
    }
    assert_eq!(missing, 0, "stored entries missing from the index");
}

/// Defect 9: labels are validated (length, control characters); comma, quote and newline are fine.
#[test]
fn labels_are_validated() {
    assert!(validate_label("case 12, \"disputed\"\nsecond line\ttab").is_ok());
    assert!(validate_label(&"x".repeat(4096)).is_ok());
    assert!(validate_label(&"x".repeat(4097)).unwrap_err().to_string().contains("4096"));
    assert!(validate_label("bell\u{7}").unwrap_err().to_string().contains("U+0007"));
    assert!(validate_label("nul\0").is_err());
    assert!(validate_label("csi\u{9b}").is_err());
    let dir = tempfile::tempdir().unwrap();
    let banks = open(dir.path(), SearchPolicy::default());
    banks.create("b", Kind::Phash).unwrap();
    let bad = NewEntry::labelled(AnyHash::Phash(Hash64(1)), Some("esc\u{1b}[31m".into()));
    let err = banks.add("b", &[bad]).unwrap_err();
    assert!(matches!(err, pharos::Error::InvalidInput(_)), "{err}");
    assert_eq!(banks.list()[0].size, 0, "nothing written");
}
