//! The daemon's banks: the store on disk and one in-memory index per bank, kept in step.
//!
//! Every bank is loaded and indexed at start-up. A write goes to the store first (one durable transaction)
//! and then to the index, under the bank's writer lock, so index rows stay equal to store ids even when
//! several clients add to one bank at once. Queries take only a read lock on the index: they never wait
//! for the disk.

use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Index, Kind, Method, SearchOptions};
use crate::metrics::Metrics;
use crate::store::{BankInfo, Entry, NewEntry, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

/// One bank, live.
#[derive(Debug)]
struct LiveBank {
    info: Mutex<BankInfo>,
    index: RwLock<Index>,
    /// Serialises writers (store transaction + index update) to this bank.
    writer: Mutex<()>,
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

/// The store plus every bank's index.
#[derive(Debug)]
pub struct BankSet {
    store: Store,
    banks: RwLock<BTreeMap<String, Arc<LiveBank>>>,
    metrics: Arc<Metrics>,
}

impl BankSet {
    /// Loads and indexes every bank of the store.
    pub fn open(store: Store, metrics: Arc<Metrics>) -> Result<BankSet> {
        let mut banks = BTreeMap::new();
        for info in store.list_banks()? {
            let start = std::time::Instant::now();
            let loaded = store.load(&info.name)?;
            tracing::info!(
                bank = %info.name,
                kind = %info.kind,
                entries = loaded.index.len(),
                seconds = start.elapsed().as_secs_f64(),
                "bank loaded"
            );
            metrics.bank_entries.with_label_values(&[&info.name]).set(loaded.index.len() as i64);
            banks.insert(
                info.name.clone(),
                Arc::new(LiveBank {
                    info: Mutex::new(loaded.info),
                    index: RwLock::new(loaded.index),
                    writer: Mutex::new(()),
                }),
            );
        }
        Ok(BankSet { store, banks: RwLock::new(banks), metrics })
    }

    fn get(&self, name: &str) -> Result<Arc<LiveBank>> {
        self.banks
            .read()
            .expect("banks lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownBank(name.into()))
    }

    fn summary(bank: &LiveBank) -> BankSummary {
        let info = bank.info.lock().expect("info lock").clone();
        BankSummary {
            size: bank.index.read().expect("index lock").len() as u64,
            name: info.name,
            kind: info.kind,
            created_ms: info.created_ms,
            next_id: info.next_id,
        }
    }

    /// Creates an empty bank.
    pub fn create(&self, name: &str, kind: Kind) -> Result<BankSummary> {
        let mut banks = self.banks.write().expect("banks lock");
        let info = self.store.create_bank(name, kind)?;
        let bank = Arc::new(LiveBank {
            info: Mutex::new(info),
            index: RwLock::new(Index::new(kind)),
            writer: Mutex::new(()),
        });
        banks.insert(name.to_string(), bank.clone());
        self.metrics.bank_entries.with_label_values(&[name]).set(0);
        Ok(Self::summary(&bank))
    }

    /// Every bank, by name.
    pub fn list(&self) -> Vec<BankSummary> {
        self.banks.read().expect("banks lock").values().map(|b| Self::summary(b)).collect()
    }

    /// The kind of a bank.
    pub fn kind(&self, name: &str) -> Result<Kind> {
        Ok(self.get(name)?.index.read().expect("index lock").kind())
    }

    /// Adds entries durably (one transaction); returns the first id.
    pub fn add(&self, name: &str, entries: &[NewEntry]) -> Result<u64> {
        let bank = self.get(name)?;
        let _writer = bank.writer.lock().expect("writer lock");
        let first = self.store.add(name, entries)?;
        let hashes: Vec<AnyHash> = entries.iter().map(|e| e.hash).collect();
        let mut index = bank.index.write().expect("index lock");
        index.extend(&hashes)?;
        bank.info.lock().expect("info lock").next_id = first + entries.len() as u64;
        self.metrics.bank_entries.with_label_values(&[name]).set(index.len() as i64);
        Ok(first)
    }

    /// Removes entries by id, all or none.
    pub fn remove(&self, name: &str, ids: &[u64]) -> Result<()> {
        let bank = self.get(name)?;
        let _writer = bank.writer.lock().expect("writer lock");
        self.store.remove(name, ids)?;
        let mut index = bank.index.write().expect("index lock");
        for &id in ids {
            index.remove(id as u32);
        }
        bank.info.lock().expect("info lock").removed += ids.len() as u64;
        self.metrics.bank_entries.with_label_values(&[name]).set(index.len() as i64);
        Ok(())
    }

    /// Deletes a bank and its entries.
    pub fn delete(&self, name: &str) -> Result<()> {
        let mut banks = self.banks.write().expect("banks lock");
        self.store.delete_bank(name)?;
        banks.remove(name);
        let _ = self.metrics.bank_entries.remove_label_values(&[name]);
        Ok(())
    }

    /// Calls `f` on every live entry of a bank, in id order (from the store: a consistent snapshot).
    pub fn export(&self, name: &str, f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        self.get(name)?;
        self.store.for_each_entry(name, f)
    }

    /// Matches one query (its variants may mix kinds: each bank uses the variants of its own kind) against
    /// `banks`, or every bank of a kind the query has when `banks` is empty. Nearest first.
    pub fn search(&self, banks: &[String], query: &[AnyHash], radius: Option<u32>) -> Result<Vec<BankHit>> {
        let has = |k: Kind| query.iter().any(|h| h.kind() == k);
        let targets: Vec<(String, Arc<LiveBank>)> = if banks.is_empty() {
            let all = self.banks.read().expect("banks lock");
            all.iter()
                .filter(|(_, b)| has(b.index.read().expect("index lock").kind()))
                .map(|(n, b)| (n.clone(), b.clone()))
                .collect()
        } else {
            let mut v = Vec::with_capacity(banks.len());
            for name in banks {
                let bank = self.get(name)?;
                let kind = bank.index.read().expect("index lock").kind();
                if !has(kind) {
                    let found = query.first().map_or("none", |h| h.kind().name());
                    return Err(Error::KindMismatch { expected: kind.name(), found });
                }
                if let Some(r) = radius.filter(|&r| r > kind.bits()) {
                    return Err(Error::InvalidInput(format!(
                        "radius {r} is larger than a {kind} hash ({} bits)",
                        kind.bits()
                    )));
                }
                v.push((name.clone(), bank));
            }
            v
        };
        let mut out = Vec::new();
        let mut hits = Vec::new();
        for (name, bank) in targets {
            let index = bank.index.read().expect("index lock");
            let kind = index.kind();
            let opts = SearchOptions {
                radius: radius.unwrap_or(kind.default_radius()).min(kind.bits()),
                method: Method::Auto,
            };
            index.search(query, opts, &mut hits);
            if hits.is_empty() {
                continue;
            }
            let found: Vec<(u64, AnyHash, u32)> = hits
                .iter()
                .filter_map(|h| index.get(h.row).map(|hash| (u64::from(h.row), hash, h.distance)))
                .collect();
            drop(index);
            let ids: Vec<u64> = found.iter().map(|f| f.0).collect();
            let labels = self.store.labels(&name, &ids)?;
            self.metrics.matches.with_label_values(&[&name]).inc_by(found.len() as u64);
            for ((id, hash, distance), label) in found.into_iter().zip(labels) {
                out.push(BankHit { bank: name.clone(), id, hash, distance, label });
            }
        }
        out.sort_by(|a, b| (a.distance, &a.bank, a.id).cmp(&(b.distance, &b.bank, b.id)));
        Ok(out)
    }
}
