//! The live banks: the store on disk and one in-memory index per bank, kept in step.
//!
//! Every bank is indexed when the set is opened. A write goes to the store first (one durable
//! transaction) and then to the index, under the bank's writer lock, so index rows stay equal to store ids
//! even when several clients add to one bank at once. Queries take only a read lock on an index: they
//! never wait for the disk.
//!
//! Locking, so that nothing cheap ever waits behind an fsync (the daemon calls every method here from its
//! blocking pool; only [`BankSet::kind`] and [`BankSet::list`] are cheap enough for an async thread):
//! - `admin` serialises create and delete across their store transactions; the map of banks is locked
//!   only to insert or remove an entry, never across I/O;
//! - each bank's `writer` serialises add, remove and delete of that bank. Delete marks the bank deleted
//!   under it, so a write that looked the bank up before a delete (and a re-create under the same name)
//!   fails with "unknown bank" instead of writing to the new bank's store rows and the old bank's index;
//! - a bank's kind is immutable and its size an atomic: listing never waits for an index update;
//! - the locks do not poison (parking_lot): a panic in one call cannot make every later call panic.

use super::{load, SearchPolicy};
use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Index, Kind, Method, SearchOptions};
use crate::metrics::Metrics;
use crate::store::{BankInfo, Entry, NewEntry, Store};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One bank, live.
#[derive(Debug)]
struct LiveBank {
    kind: Kind,
    info: Mutex<BankInfo>,
    index: RwLock<Index>,
    size: AtomicU64,
    /// Serialises writers (store transaction + index update) to this bank.
    writer: Mutex<()>,
    /// Set (under `writer`) when the bank is deleted; writes that still hold it then fail.
    deleted: AtomicBool,
}

impl LiveBank {
    fn new(info: BankInfo, index: Index) -> LiveBank {
        LiveBank {
            kind: info.kind,
            size: AtomicU64::new(index.len() as u64),
            info: Mutex::new(info),
            index: RwLock::new(index),
            writer: Mutex::new(()),
            deleted: AtomicBool::new(false),
        }
    }
}

/// A bank's metadata as reported to clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankSummary {
    /// Name.
    pub name: String,
    /// Hash kind.
    pub kind: Kind,
    /// Live entries.
    pub size: u64,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// The id the next added entry gets.
    pub next_id: u64,
}

/// One match of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankHit {
    /// Bank name.
    pub bank: String,
    /// Entry id in the bank.
    pub id: u64,
    /// The entry's hash.
    pub hash: AnyHash,
    /// Hamming distance (best over the query's variants).
    pub distance: u32,
    /// The entry's label.
    pub label: Option<String>,
}

/// The matches of one query, nearest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResult {
    /// At most the policy's `max_matches`, by (distance, bank, id).
    pub hits: Vec<BankHit>,
    /// True when more matches were within the radius than `max_matches`.
    pub truncated: bool,
}

/// A hit before its label is read: (position of its bank among the targets, row, distance, hash).
type RawHit = (usize, u32, u32, AnyHash);

/// The store plus every bank's index.
#[derive(Debug)]
pub struct BankSet {
    store: Store,
    banks: RwLock<BTreeMap<String, Arc<LiveBank>>>,
    admin: Mutex<()>,
    metrics: Arc<Metrics>,
    policy: SearchPolicy,
    /// Test hook: extra time spent inside every store write, as a slow disk would.
    write_delay_ms: AtomicU64,
    /// Test hook: the next `n` adds panic while holding the bank's writer and index locks.
    write_panics: AtomicU32,
}

impl BankSet {
    /// Loads and indexes every bank of the store.
    pub fn open(store: Store, metrics: Arc<Metrics>, policy: SearchPolicy) -> Result<BankSet> {
        let names: Vec<String> = store.list_banks()?.into_iter().map(|b| b.name).collect();
        Self::open_only(store, &names, metrics, policy)
    }

    /// Loads and indexes only the named banks (`pharos match` needs no others).
    pub fn open_only(
        store: Store,
        names: &[String],
        metrics: Arc<Metrics>,
        policy: SearchPolicy,
    ) -> Result<BankSet> {
        let mut banks = BTreeMap::new();
        for name in names {
            let start = std::time::Instant::now();
            let loaded = load(&store, name)?;
            tracing::info!(
                bank = %name,
                kind = %loaded.info.kind,
                entries = loaded.index.len(),
                seconds = start.elapsed().as_secs_f64(),
                "bank loaded"
            );
            metrics.bank_entries.with_label_values(&[name]).set(loaded.index.len() as i64);
            banks.insert(name.clone(), Arc::new(LiveBank::new(loaded.info, loaded.index)));
        }
        Ok(BankSet {
            store,
            banks: RwLock::new(banks),
            admin: Mutex::new(()),
            metrics,
            policy,
            write_delay_ms: AtomicU64::new(0),
            write_panics: AtomicU32::new(0),
        })
    }

    /// The search bounds in force.
    pub fn policy(&self) -> &SearchPolicy {
        &self.policy
    }

    fn get(&self, name: &str) -> Result<Arc<LiveBank>> {
        self.banks.read().get(name).cloned().ok_or_else(|| Error::UnknownBank(name.into()))
    }

    fn summary(name: &str, bank: &LiveBank) -> BankSummary {
        let info = bank.info.lock().clone();
        BankSummary {
            name: name.to_string(),
            kind: bank.kind,
            size: bank.size.load(Ordering::Acquire),
            created_ms: info.created_ms,
            next_id: info.next_id,
        }
    }

    /// Test hook: every store write takes `delay` longer (inside the locks it holds), as on a slow disk.
    #[doc(hidden)]
    pub fn set_write_delay(&self, delay: Duration) {
        self.write_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Test hook: the next `n` adds panic while they hold the bank's writer lock and index write lock (before
    /// writing anything), as a bug there would.
    #[doc(hidden)]
    pub fn inject_write_panics(&self, n: u32) {
        self.write_panics.store(n, Ordering::SeqCst);
    }

    fn slow_disk(&self) {
        let ms = self.write_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    /// Creates an empty bank.
    pub fn create(&self, name: &str, kind: Kind) -> Result<BankSummary> {
        let _admin = self.admin.lock();
        self.slow_disk();
        let info = self.store.create_bank(name, kind)?;
        let bank = Arc::new(LiveBank::new(info, Index::new(kind)));
        self.banks.write().insert(name.to_string(), bank.clone());
        self.metrics.bank_entries.with_label_values(&[name]).set(0);
        Ok(Self::summary(name, &bank))
    }

    /// Every bank, by name.
    pub fn list(&self) -> Vec<BankSummary> {
        self.banks.read().iter().map(|(n, b)| Self::summary(n, b)).collect()
    }

    /// The kind of a bank.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        Ok(self.get(name)?.kind)
    }

    /// Adds entries durably (one transaction); returns the first id. Labels are validated first.
    pub fn add(&self, name: &str, entries: &[NewEntry]) -> Result<u64> {
        for (i, e) in entries.iter().enumerate() {
            if let Some(l) = &e.label {
                super::validate_label(l).map_err(|err| Error::InvalidInput(format!("entry {i}: {err}")))?;
            }
        }
        let bank = self.get(name)?;
        let _writer = bank.writer.lock();
        if bank.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownBank(name.into()));
        }
        if self.write_panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            let _index = bank.index.write();
            panic!("injected panic while holding the bank's writer and index locks (test hook)");
        }
        self.slow_disk();
        let first = self.store.add(name, entries)?;
        let hashes: Vec<AnyHash> = entries.iter().map(|e| e.hash).collect();
        let mut index = bank.index.write();
        index.extend(&hashes)?;
        bank.size.store(index.len() as u64, Ordering::Release);
        drop(index);
        bank.info.lock().next_id = first + entries.len() as u64;
        self.metrics.bank_entries.with_label_values(&[name]).set(bank.size.load(Ordering::Acquire) as i64);
        Ok(first)
    }

    /// Removes entries by id, all or none.
    pub fn remove(&self, name: &str, ids: &[u64]) -> Result<()> {
        let bank = self.get(name)?;
        let _writer = bank.writer.lock();
        if bank.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownBank(name.into()));
        }
        self.slow_disk();
        self.store.remove(name, ids)?;
        let mut index = bank.index.write();
        for &id in ids {
            index.remove(id as u32);
        }
        bank.size.store(index.len() as u64, Ordering::Release);
        drop(index);
        bank.info.lock().removed += ids.len() as u64;
        self.metrics.bank_entries.with_label_values(&[name]).set(bank.size.load(Ordering::Acquire) as i64);
        Ok(())
    }

    /// Deletes a bank and its entries.
    pub fn delete(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock();
        let bank = self.get(name)?;
        let _writer = bank.writer.lock();
        self.slow_disk();
        self.store.delete_bank(name)?;
        bank.deleted.store(true, Ordering::Release);
        self.banks.write().remove(name);
        let _ = self.metrics.bank_entries.remove_label_values(&[name]);
        Ok(())
    }

    /// Calls `f` on every live entry of a bank, in id order (from the store: a consistent snapshot).
    pub fn export(&self, name: &str, f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        self.get(name)?;
        self.store.for_each_entry(name, f)
    }

    /// The banks a request names (or every bank, by name, when it names none), checked against the
    /// kinds the query offers and the radius asked for.
    fn targets(
        &self,
        names: &[String],
        kinds: &[Kind],
        radius: Option<u32>,
    ) -> Result<Vec<(String, Arc<LiveBank>)>> {
        let targets: Vec<(String, Arc<LiveBank>)> = if names.is_empty() {
            self.banks
                .read()
                .iter()
                .filter(|(_, b)| kinds.contains(&b.kind))
                .map(|(n, b)| (n.clone(), b.clone()))
                .collect()
        } else {
            let mut v = Vec::with_capacity(names.len());
            for name in names {
                if v.iter().any(|(n, _)| n == name) {
                    continue;
                }
                v.push((name.clone(), self.get(name)?));
            }
            v
        };
        for (_, b) in &targets {
            self.policy.radius(b.kind, radius)?;
        }
        Ok(targets)
    }

    /// Matches one query (its variants may mix kinds: each bank uses the variants of its own kind) against
    /// `banks`, or every bank of a kind the query has when `banks` is empty. A named bank whose kind the
    /// query lacks is an error. At most `max_matches` hits, nearest first.
    pub fn search(&self, banks: &[String], query: &[AnyHash], radius: Option<u32>) -> Result<SearchResult> {
        self.policy.check_query(query)?;
        let kinds: Vec<Kind> = query.iter().map(AnyHash::kind).collect();
        let targets = self.targets(banks, &kinds, radius)?;
        for (_, b) in &targets {
            if !kinds.contains(&b.kind) {
                let found = query.first().map_or("none", |h| h.kind().name());
                return Err(Error::KindMismatch { expected: b.kind.name(), found });
            }
        }
        let mut results =
            self.search_targets(&targets, std::slice::from_ref(&query.to_vec()), radius, false)?;
        Ok(results.pop().unwrap_or_default())
    }

    /// Matches many queries against the named banks, in parallel (rayon): one result per query, in
    /// order. A bank whose kind a query lacks contributes nothing to that query (no error), so one run can
    /// search PDQ and pHash banks with lines that carry either.
    pub fn search_many(
        &self,
        banks: &[String],
        queries: &[Vec<AnyHash>],
        radius: Option<u32>,
    ) -> Result<Vec<SearchResult>> {
        for q in queries {
            self.policy.check_query(q)?;
        }
        let targets = self.targets(banks, &[Kind::Pdq, Kind::Phash], radius)?;
        self.search_targets(&targets, queries, radius, true)
    }

    fn search_targets(
        &self,
        targets: &[(String, Arc<LiveBank>)],
        queries: &[Vec<AnyHash>],
        radius: Option<u32>,
        parallel: bool,
    ) -> Result<Vec<SearchResult>> {
        let mut raw: Vec<Vec<RawHit>> = vec![Vec::new(); queries.len()];
        for (pos, (_, bank)) in targets.iter().enumerate() {
            let opts = SearchOptions { radius: self.policy.radius(bank.kind, radius)?, method: Method::Auto };
            let index = bank.index.read();
            let found = if parallel {
                index.search_batch(queries, opts)
            } else {
                let mut out = Vec::new();
                queries
                    .iter()
                    .map(|q| {
                        index.search(q, opts, &mut out);
                        out.clone()
                    })
                    .collect()
            };
            for (q, hits) in found.into_iter().enumerate() {
                raw[q].extend(
                    hits.into_iter()
                        .filter_map(|h| index.get(h.row).map(|hash| (pos, h.row, h.distance, hash))),
                );
            }
        }
        // Cut each query's hits to the nearest `max_matches`, then read the labels of those only.
        let max = self.policy.max_matches;
        let mut truncated = vec![false; queries.len()];
        for (q, hits) in raw.iter_mut().enumerate() {
            let key = |h: &RawHit| (h.2, h.0, h.1);
            if hits.len() > max {
                truncated[q] = true;
                self.metrics.matches_truncated.inc();
                if max > 0 {
                    hits.select_nth_unstable_by_key(max - 1, key);
                }
                hits.truncate(max);
            }
            hits.sort_unstable_by_key(key);
        }
        let mut labels: Vec<HashMap<u32, String>> = Vec::with_capacity(targets.len());
        for (pos, (name, _)) in targets.iter().enumerate() {
            let mut ids: Vec<u64> =
                raw.iter().flatten().filter(|h| h.0 == pos).map(|h| u64::from(h.1)).collect();
            self.metrics.matches.with_label_values(&[name]).inc_by(ids.len() as u64);
            ids.sort_unstable();
            ids.dedup();
            let found = if ids.is_empty() { Vec::new() } else { self.store.labels(name, &ids)? };
            labels.push(ids.iter().zip(found).filter_map(|(&id, l)| Some((id as u32, l?))).collect());
        }
        Ok(raw
            .into_iter()
            .zip(truncated)
            .map(|(hits, truncated)| SearchResult {
                hits: hits
                    .into_iter()
                    .map(|(pos, row, distance, hash)| BankHit {
                        bank: targets[pos].0.clone(),
                        id: u64::from(row),
                        hash,
                        distance,
                        label: labels[pos].get(&row).cloned(),
                    })
                    .collect(),
                truncated,
            })
            .collect())
    }
}
