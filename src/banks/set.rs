//! The live banks: the store on disk and one in-memory index per bank, kept in step.
//!
//! With a shared store (PostgreSQL, several replicas) a write commits in the store and is applied to the
//! indexes through the store's change log, like every other replica's writes, before it is acknowledged:
//! one path for every index update, in commit order ([`BankSet::catch_up`], [`BankSet::follow`]).
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

use super::audit::AuditLog;
use super::{load, SearchPolicy};
use crate::error::{Error, Result};
use crate::matcher::{AnyHash, Hit, Index, Kind, Method, SearchOptions};
use crate::metrics::Metrics;
use crate::store::{
    AuditEntry, AuditEvent, AuditFilter, AuditRecord, BankInfo, BankPolicy, BankStore, Change, ChangeOp,
    Entry, EntryMeta, EntryState, EntryUpdate, FloodGuard, NewEntry, Store,
};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One bank, live.
#[derive(Debug)]
struct LiveBank {
    kind: Kind,
    info: Mutex<BankInfo>,
    /// Its match policy (changed under `writer`, after the store).
    policy: RwLock<BankPolicy>,
    index: RwLock<Index>,
    /// The disabled entries by row (few: a map consulted only for rows a query found).
    disabled: RwLock<HashMap<u32, EntryState>>,
    size: AtomicU64,
    /// Serialises writers (store transaction + index update) to this bank.
    writer: Mutex<()>,
    /// Set (under `writer`) when the bank is deleted; writes that still hold it then fail.
    deleted: AtomicBool,
    /// Flood guard: recent match times (ms) of the entries that matched within the window.
    flood: Mutex<HashMap<u32, VecDeque<u64>>>,
}

impl LiveBank {
    fn new(info: BankInfo, index: Index, disabled: HashMap<u32, EntryState>) -> LiveBank {
        LiveBank {
            kind: info.kind,
            policy: RwLock::new(info.policy),
            disabled: RwLock::new(disabled),
            size: AtomicU64::new(index.len() as u64),
            info: Mutex::new(info),
            index: RwLock::new(index),
            writer: Mutex::new(()),
            deleted: AtomicBool::new(false),
            flood: Mutex::new(HashMap::new()),
        }
    }
}

impl LiveBank {
    /// Takes removed entries out of the index and the disabled map (idempotent) and updates the size.
    fn drop_rows(&self, ids: &[u64]) {
        let mut index = self.index.write();
        let mut disabled = self.disabled.write();
        for &id in ids {
            index.remove(id as u32);
            disabled.remove(&(id as u32));
        }
        drop(disabled);
        self.size.store(index.len() as u64, Ordering::Release);
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
    /// Its match policy.
    pub policy: BankPolicy,
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
    /// The partner's id for the entry.
    pub external_id: Option<String>,
    /// The entry's tags.
    pub tags: Vec<String>,
}

/// A match withheld because the query also matched a known-benign entry of a negative bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppressed {
    /// The match withheld.
    pub hit: BankHit,
    /// The negative bank's entry that withheld it (the nearest one the query matched).
    pub by: BankHit,
}

/// The matches of one query, nearest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchResult {
    /// At most the policy's `max_matches`, by (distance, bank, id). Never entries of negative banks.
    pub hits: Vec<BankHit>,
    /// True when more matches were within the radius than `max_matches`.
    pub truncated: bool,
    /// Matches withheld because the query matched an entry of a negative bank (at most `max_matches`,
    /// nearest first).
    pub suppressed: Vec<Suppressed>,
}

/// One query: an image's hashes (of any kinds: each bank is searched with those of its own kind) and its PDQ
/// quality when known (for the banks' minimum quality).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BankQuery {
    /// The hashes (at most [`super::MAX_VARIANTS`] of one kind).
    pub hashes: Vec<AnyHash>,
    /// PDQ quality of the image, when known.
    pub quality: Option<u32>,
    /// The request's id, for the audit (a gRPC item id, an input line).
    pub request_id: Option<String>,
    /// Who asked (the caller's identity), for the audit.
    pub caller: Option<String>,
}

impl BankQuery {
    /// A query of these hashes, quality unknown.
    pub fn of(hashes: &[AnyHash]) -> BankQuery {
        BankQuery { hashes: hashes.to_vec(), quality: None, request_id: None, caller: None }
    }

    /// The first hash of each kind, by kind name, as the audit keeps the query.
    fn audit_hashes(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for h in &self.hashes {
            out.entry(h.kind().name().to_string()).or_insert_with(|| h.to_hex());
        }
        out
    }
}

/// A hit before its fields are read: (position of its bank among the targets, row, distance, hash).
type RawHit = (usize, u32, u32, AnyHash);

/// Where this replica is in a shared store's change log.
#[derive(Debug)]
struct Follow {
    /// The sequence number of the last change applied here; its lock makes appliers take turns.
    applied: Mutex<u64>,
    /// Whether the store answered the follower's last attempt.
    available: AtomicBool,
}

/// The store plus every bank's index.
#[derive(Debug)]
pub struct BankSet {
    store: Arc<dyn BankStore>,
    audit: AuditLog,
    banks: RwLock<BTreeMap<String, Arc<LiveBank>>>,
    admin: Mutex<()>,
    metrics: Arc<Metrics>,
    policy: SearchPolicy,
    /// Following a shared store's change log (PostgreSQL); `None` for a store only this process writes.
    follow: Option<Follow>,
    /// Test hook: extra time spent inside every store write, as a slow disk would.
    write_delay_ms: AtomicU64,
    /// Test hook: the next `n` adds panic while holding the bank's writer and index locks.
    write_panics: AtomicU32,
}

impl BankSet {
    /// Loads and indexes every bank of the store.
    pub fn open(
        store: impl BankStore + 'static,
        metrics: Arc<Metrics>,
        policy: SearchPolicy,
    ) -> Result<BankSet> {
        Self::open_store(Arc::new(store), None, None, metrics, policy)
    }

    /// Loads and indexes only the named banks (`pharos match` needs no others).
    pub fn open_only(
        store: impl BankStore + 'static,
        names: &[String],
        metrics: Arc<Metrics>,
        policy: SearchPolicy,
    ) -> Result<BankSet> {
        Self::open_store(Arc::new(store), Some(names), None, metrics, policy)
    }

    /// Loads and indexes the named banks (every bank when `names` is `None`) of a store of any kind. A
    /// store with a change log (PostgreSQL) is followed from the position it had before the banks were
    /// read (see [`BankSet::follow`]); `spool` is where audit records wait while such a store cannot be
    /// reached.
    pub fn open_store(
        store: Arc<dyn BankStore>,
        names: Option<&[String]>,
        spool: Option<Store>,
        metrics: Arc<Metrics>,
        policy: SearchPolicy,
    ) -> Result<BankSet> {
        // The position first: changes committed while the banks are read are then applied again, which is
        // harmless (every change applies idempotently), where the other order could miss some.
        let position = store.log_position()?;
        let names: Vec<String> = match names {
            Some(n) => n.to_vec(),
            None => store.list_banks()?.into_iter().map(|b| b.name).collect(),
        };
        let mut banks = BTreeMap::new();
        for name in &names {
            let start = std::time::Instant::now();
            let loaded = load(store.as_ref(), name)?;
            tracing::info!(
                bank = %name,
                kind = %loaded.info.kind,
                entries = loaded.index.len(),
                seconds = start.elapsed().as_secs_f64(),
                "bank loaded"
            );
            metrics.bank_entries.with_label_values(&[name]).set(loaded.index.len() as i64);
            let disabled = loaded.disabled.into_iter().map(|(id, st)| (id as u32, st)).collect();
            banks.insert(name.clone(), Arc::new(LiveBank::new(loaded.info, loaded.index, disabled)));
        }
        if let Some(p) = position {
            metrics.replication_position.set(p as i64);
        }
        Ok(BankSet {
            audit: AuditLog::start(store.clone(), spool, metrics.clone())?,
            store,
            banks: RwLock::new(banks),
            admin: Mutex::new(()),
            metrics,
            policy,
            follow: position.map(|p| Follow { applied: Mutex::new(p), available: AtomicBool::new(true) }),
            write_delay_ms: AtomicU64::new(0),
            write_panics: AtomicU32::new(0),
        })
    }

    /// Starts the thread that keeps this replica's indexes current with a shared store's change log: it
    /// waits for an announcement (LISTEN) or for `poll` to pass, whichever comes first, then applies every
    /// change after the last one applied. When the store cannot be reached it says so
    /// ([`BankSet::store_available`], metrics), retries with backoff (up to 5 s) and catches up from where
    /// it stopped. Nothing to do for a store without a change log. The thread holds the set weakly and
    /// ends within `poll` once the set is dropped.
    pub fn follow(self: &Arc<Self>, poll: Duration) -> Result<()> {
        if self.follow.is_none() {
            return Ok(());
        }
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("pharos-follow".into())
            .spawn(move || {
                let mut watch: Option<Box<dyn crate::store::ChangeWatch>> = None;
                let mut backoff = Duration::from_millis(100);
                let mut last_ok = std::time::Instant::now();
                loop {
                    let Some(set) = weak.upgrade() else { return };
                    let outcome = (|| -> Result<()> {
                        if watch.is_none() {
                            watch = set.store.watch()?;
                        }
                        set.catch_up()
                    })();
                    match outcome {
                        Ok(()) => {
                            last_ok = std::time::Instant::now();
                            set.metrics.replication_lag.set(0.0);
                            set.set_available(true, None);
                            backoff = Duration::from_millis(100);
                        }
                        Err(e) => {
                            watch = None;
                            set.metrics.replication_lag.set(last_ok.elapsed().as_secs_f64());
                            set.set_available(false, Some(&e));
                            drop(set);
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                    drop(set);
                    if let Some(w) = watch.as_mut() {
                        if w.wait(poll).is_err() {
                            watch = None; // reconnect (and catch up) on the next turn
                        }
                    }
                }
            })
            .map_err(Error::Io)?;
        Ok(())
    }

    fn set_available(&self, available: bool, why: Option<&Error>) {
        let Some(f) = &self.follow else { return };
        let was = f.available.swap(available, Ordering::AcqRel);
        self.metrics.store_available.set(i64::from(available));
        match (was, available) {
            (true, false) => tracing::error!(
                store = %self.store.describe(),
                error = %why.map(|e| e.to_string()).unwrap_or_default(),
                "the bank store cannot be reached: matching goes on from memory, writes fail until it is back"
            ),
            (false, true) => {
                tracing::info!(store = %self.store.describe(), "the bank store is reachable again")
            }
            _ => {}
        }
    }

    /// Whether the store answered the last time this replica asked (always true for a local store).
    pub fn store_available(&self) -> bool {
        self.follow.as_ref().is_none_or(|f| f.available.load(Ordering::Acquire))
    }

    /// Whether this set follows a shared store's change log.
    pub fn is_shared(&self) -> bool {
        self.follow.is_some()
    }

    /// Applies every change of the store's log after the last one applied here (nothing for a store
    /// without a log). Called by the follower and, after each write, by the writer: a write is acknowledged
    /// once this replica shows it too.
    pub fn catch_up(&self) -> Result<()> {
        let Some(f) = &self.follow else { return Ok(()) };
        let mut applied = f.applied.lock();
        loop {
            let changes = self.store.changes_after(*applied, 1000)?;
            if changes.first().is_some_and(|c| c.seq != *applied + 1) {
                // The changes after ours were pruned (this replica was away longer than the log is kept):
                // read every bank again, then go on from the position read before.
                let position = self.store.log_position()?.unwrap_or(0);
                tracing::warn!(
                    applied = *applied,
                    position,
                    "the change log no longer reaches back here: reloading every bank"
                );
                self.resync()?;
                *applied = position;
                continue;
            }
            let now = crate::store::now_ms();
            for c in &changes {
                match self.apply(c) {
                    Ok(()) => {}
                    Err(e @ Error::Unavailable(_)) => return Err(e),
                    // Anything else (rows that do not fit what this replica holds): the bank is read whole
                    // instead, which is what every other replica has too.
                    Err(e) => {
                        tracing::error!(bank = %c.bank, seq = c.seq, error = %e, "applying a change failed: reading the bank again");
                        self.reload(&c.bank)?;
                    }
                }
                *applied = c.seq;
                self.metrics.replication_position.set(c.seq as i64);
                self.metrics.replication_delay.observe(now.saturating_sub(c.time_ms) as f64 / 1000.0);
            }
            if changes.len() < 1000 {
                return Ok(());
            }
        }
    }

    /// The live bank `name` when it is the incarnation `uid`.
    fn incarnation(&self, name: &str, uid: u64) -> Option<Arc<LiveBank>> {
        self.banks.read().get(name).filter(|b| b.info.lock().uid == uid).cloned()
    }

    /// Applies one change of the log to the indexes (idempotently: a change already reflected, because the
    /// bank was read after it, changes nothing). Rows are read from the store as they are now; later
    /// changes bring them to the same state every other replica reaches.
    fn apply(&self, c: &Change) -> Result<()> {
        match &c.op {
            ChangeOp::Created => {
                if self.incarnation(&c.bank, c.bank_uid).is_some() {
                    return Ok(());
                }
                match self.store.bank(&c.bank) {
                    Ok(info) if info.uid == c.bank_uid => self.reload(&c.bank),
                    Ok(_) | Err(Error::UnknownBank(_)) => Ok(()), // deleted since: a later change says so
                    Err(e) => Err(e),
                }
            }
            ChangeOp::Deleted => {
                if let Some(bank) = self.incarnation(&c.bank, c.bank_uid) {
                    let _admin = self.admin.lock();
                    bank.deleted.store(true, Ordering::Release);
                    self.banks.write().remove(&c.bank);
                    let _ = self.metrics.bank_entries.remove_label_values(&[&c.bank]);
                }
                Ok(())
            }
            ChangeOp::PolicySet => {
                let Some(bank) = self.incarnation(&c.bank, c.bank_uid) else { return Ok(()) };
                match self.store.bank(&c.bank) {
                    Ok(info) if info.uid == c.bank_uid => {
                        *bank.policy.write() = info.policy;
                        bank.info.lock().policy = info.policy;
                        Ok(())
                    }
                    Ok(_) | Err(Error::UnknownBank(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            ChangeOp::Added { first, count } => {
                let Some(bank) = self.incarnation(&c.bank, c.bank_uid) else { return Ok(()) };
                let have = bank.info.lock().next_id;
                if have >= first + count {
                    return Ok(());
                }
                let stored = match self.store.load_from(&c.bank, have) {
                    Ok(s) if s.info.uid == c.bank_uid => s,
                    Ok(_) | Err(Error::UnknownBank(_)) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let hashes = stored.rows.into_hashes();
                let mut index = bank.index.write();
                let mut disabled = bank.disabled.write();
                index.extend(&hashes)?;
                for id in &stored.removed {
                    index.remove(*id as u32);
                }
                for (id, st) in &stored.disabled {
                    disabled.insert(*id as u32, *st);
                }
                drop(disabled);
                bank.size.store(index.len() as u64, Ordering::Release);
                drop(index);
                {
                    let mut info = bank.info.lock();
                    info.next_id = stored.info.next_id;
                    info.removed = stored.info.removed;
                }
                self.metrics
                    .bank_entries
                    .with_label_values(&[&c.bank])
                    .set(bank.size.load(Ordering::Acquire) as i64);
                Ok(())
            }
            ChangeOp::Removed { ids } => {
                let Some(bank) = self.incarnation(&c.bank, c.bank_uid) else { return Ok(()) };
                bank.drop_rows(ids);
                self.metrics
                    .bank_entries
                    .with_label_values(&[&c.bank])
                    .set(bank.size.load(Ordering::Acquire) as i64);
                Ok(())
            }
            ChangeOp::Updated { ids } => {
                let Some(bank) = self.incarnation(&c.bank, c.bank_uid) else { return Ok(()) };
                let states = match self.store.entry_states(&c.bank, ids) {
                    Ok(s) => s,
                    Err(Error::UnknownBank(_)) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let mut disabled = bank.disabled.write();
                for (&id, st) in ids.iter().zip(states) {
                    match st {
                        Some(EntryState::Active) | None => disabled.remove(&(id as u32)),
                        Some(st) => disabled.insert(id as u32, st),
                    };
                }
                Ok(())
            }
        }
    }

    /// Reads every bank of the store again and drops the ones it no longer has.
    fn resync(&self) -> Result<()> {
        let names: Vec<String> = self.store.list_banks()?.into_iter().map(|b| b.name).collect();
        for name in &names {
            self.reload(name)?;
        }
        let gone: Vec<String> = self.banks.read().keys().filter(|n| !names.contains(n)).cloned().collect();
        for name in gone {
            if let Some(bank) = self.banks.write().remove(&name) {
                bank.deleted.store(true, Ordering::Release);
                let _ = self.metrics.bank_entries.remove_label_values(&[&name]);
            }
        }
        Ok(())
    }

    /// Deletes the shared store's changes older than `retention` (a no-op for a local store); how many.
    pub fn prune_changes(&self, retention: Duration) -> Result<usize> {
        self.store.prune_changes(crate::store::now_ms().saturating_sub(retention.as_millis() as u64))
    }

    /// Reads bank `name` whole from the store and puts it in place of the one held (if any).
    fn reload(&self, name: &str) -> Result<()> {
        let loaded = match load(self.store.as_ref(), name) {
            Ok(l) => l,
            Err(Error::UnknownBank(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _admin = self.admin.lock();
        self.metrics.bank_entries.with_label_values(&[name]).set(loaded.index.len() as i64);
        let disabled = loaded.disabled.into_iter().map(|(id, st)| (id as u32, st)).collect();
        let bank = Arc::new(LiveBank::new(loaded.info, loaded.index, disabled));
        if let Some(old) = self.banks.write().insert(name.to_string(), bank) {
            old.deleted.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// After a write to a shared store: apply it (and whatever came before it) here before answering. The
    /// write is committed whatever happens here; a failure is logged and the follower retries.
    fn after_shared_write(&self) {
        if let Err(e) = self.catch_up() {
            tracing::warn!(error = %e, "applying a committed write here failed; the follower will retry");
        }
    }

    /// Calls `f` on the audit records that pass `filter`, oldest first.
    pub fn audit(&self, filter: &AuditFilter, mut f: impl FnMut(AuditRecord) -> Result<()>) -> Result<()> {
        self.store.for_each_audit(filter, &mut f)
    }

    /// Deletes the audit records older than `retention`, in short transactions (matching goes on meanwhile,
    /// its audit commits waiting for one step at most); returns how many.
    pub fn prune_audit(&self, retention: Duration) -> Result<u64> {
        self.prune_audit_while(retention, || true)
    }

    /// [`BankSet::prune_audit`], stopping early (between steps) once `go_on` says false.
    pub fn prune_audit_while(&self, retention: Duration, go_on: impl Fn() -> bool) -> Result<u64> {
        let before = crate::store::now_ms().saturating_sub(retention.as_millis() as u64);
        let mut total = 0u64;
        loop {
            let n = self.store.prune_audit(before, 10_000)?;
            total += n as u64;
            if n < 10_000 || !go_on() {
                return Ok(total);
            }
        }
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
            policy: *bank.policy.read(),
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

    /// Creates an empty bank with the default policy.
    pub fn create(&self, name: &str, kind: Kind) -> Result<BankSummary> {
        self.create_with(name, kind, BankPolicy::default())
    }

    /// Creates an empty bank with a policy.
    pub fn create_with(&self, name: &str, kind: Kind, policy: BankPolicy) -> Result<BankSummary> {
        if self.follow.is_some() {
            let info = self.store.create_bank_with(name, kind, policy)?;
            self.after_shared_write();
            return Ok(self.summary_after(&info));
        }
        let _admin = self.admin.lock();
        self.slow_disk();
        let info = self.store.create_bank_with(name, kind, policy)?;
        let bank = Arc::new(LiveBank::new(info, Index::new(kind), HashMap::new()));
        self.banks.write().insert(name.to_string(), bank.clone());
        self.metrics.bank_entries.with_label_values(&[name]).set(0);
        Ok(Self::summary(name, &bank))
    }

    /// The summary of the bank a shared-store write returned: from the live bank once this replica holds
    /// that incarnation, else from the store's record.
    fn summary_after(&self, info: &BankInfo) -> BankSummary {
        match self.incarnation(&info.name, info.uid) {
            Some(bank) => Self::summary(&info.name, &bank),
            None => BankSummary {
                name: info.name.clone(),
                kind: info.kind,
                size: info.live(),
                created_ms: info.created_ms,
                next_id: info.next_id,
                policy: info.policy,
            },
        }
    }

    /// One bank's summary.
    pub fn summary_of(&self, name: &str) -> Result<BankSummary> {
        let bank = self.get(name)?;
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
            super::validate_meta(&e.meta).map_err(|err| Error::InvalidInput(format!("entry {i}: {err}")))?;
        }
        if self.follow.is_some() {
            let first = self.store.add(name, entries)?;
            self.after_shared_write();
            return Ok(first);
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
        {
            let mut disabled = bank.disabled.write();
            for (i, e) in entries.iter().enumerate() {
                if e.state != EntryState::Active {
                    disabled.insert((first + i as u64) as u32, e.state);
                }
            }
        }
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
        if self.follow.is_some() {
            self.store.remove(name, ids)?;
            self.after_shared_write();
            return Ok(());
        }
        let bank = self.get(name)?;
        let _writer = bank.writer.lock();
        if bank.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownBank(name.into()));
        }
        self.slow_disk();
        self.store.remove(name, ids)?;
        bank.drop_rows(ids);
        bank.info.lock().removed += ids.len() as u64;
        self.metrics.bank_entries.with_label_values(&[name]).set(bank.size.load(Ordering::Acquire) as i64);
        Ok(())
    }

    /// Changes entries in place (tags, note, state), all or none, durably; a state change takes effect for
    /// the next query. Returns the entries' fields and states after the change.
    pub fn update(&self, name: &str, updates: &[(u64, EntryUpdate)]) -> Result<Vec<(EntryMeta, EntryState)>> {
        for (id, u) in updates {
            super::validate_update(u).map_err(|e| Error::InvalidInput(format!("entry {id}: {e}")))?;
        }
        if self.follow.is_some() {
            let after = self.store.update(name, updates)?;
            self.after_shared_write();
            return Ok(after);
        }
        let bank = self.get(name)?;
        let _writer = bank.writer.lock();
        if bank.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownBank(name.into()));
        }
        self.slow_disk();
        let after = self.store.update(name, updates)?;
        let mut disabled = bank.disabled.write();
        for ((id, _), (_, state)) in updates.iter().zip(&after) {
            match state {
                EntryState::Active => disabled.remove(&(*id as u32)),
                st => disabled.insert(*id as u32, *st),
            };
        }
        Ok(after)
    }

    /// One live entry: its hash, fields and state (`UnknownEntry` when it was never added or was removed).
    pub fn entry(&self, name: &str, id: u64) -> Result<(AnyHash, EntryMeta, EntryState)> {
        let bank = self.get(name)?;
        let unknown = || Error::UnknownEntry { bank: name.to_string(), id };
        let row = u32::try_from(id).map_err(|_| unknown())?;
        let hash = bank.index.read().get_live(row).ok_or_else(unknown)?;
        let state = bank.disabled.read().get(&row).copied().unwrap_or_default();
        let meta = self.store.metas(name, &[id])?.pop().unwrap_or_default();
        Ok((hash, meta, state))
    }

    /// The ids of the live entries with each of these external ids (see [`BankStore::ids_by_external_id`]).
    pub fn ids_by_external_id(&self, name: &str, external_ids: &[String]) -> Result<Vec<(String, Vec<u64>)>> {
        self.get(name)?;
        self.store.ids_by_external_id(name, external_ids)
    }

    /// Replaces a bank's match policy, durably. The matching ratio (HMA's, set by [`BankSet::set_match_ratio`])
    /// is kept as it is.
    pub fn set_policy(&self, name: &str, mut policy: BankPolicy) -> Result<BankSummary> {
        policy.match_ratio_ppm = self.get(name)?.policy.read().match_ratio_ppm;
        self.replace_policy(name, policy)
    }

    /// Sets a bank's matching ratio (HMA's `matching_enabled_ratio`, in millionths), keeping the rest of
    /// its policy.
    pub fn set_match_ratio(&self, name: &str, ppm: u32) -> Result<BankSummary> {
        let mut policy = *self.get(name)?.policy.read();
        policy.match_ratio_ppm = (ppm != crate::store::FULL_RATIO_PPM).then_some(ppm);
        self.replace_policy(name, policy)
    }

    fn replace_policy(&self, name: &str, policy: BankPolicy) -> Result<BankSummary> {
        if self.follow.is_some() {
            let info = self.store.set_policy(name, policy)?;
            self.after_shared_write();
            return Ok(self.summary_after(&info));
        }
        let bank = self.get(name)?;
        let _writer = bank.writer.lock();
        if bank.deleted.load(Ordering::Acquire) {
            return Err(Error::UnknownBank(name.into()));
        }
        self.slow_disk();
        let info = self.store.set_policy(name, policy)?;
        *bank.policy.write() = info.policy;
        bank.info.lock().policy = info.policy;
        Ok(Self::summary(name, &bank))
    }

    /// Deletes a bank and its entries.
    pub fn delete(&self, name: &str) -> Result<()> {
        if self.follow.is_some() {
            self.store.delete_bank(name)?;
            self.after_shared_write();
            return Ok(());
        }
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

    /// Records a change to a bank (or an export), durably, through the same group-commit writer as the
    /// match audit.
    pub fn audit_change(&self, record: AuditRecord) -> Result<()> {
        self.audit.record(vec![record])
    }

    /// Calls `f` on every live entry of a bank, in id order (from the store: a consistent snapshot).
    pub fn export(&self, name: &str, mut f: impl FnMut(Entry) -> Result<()>) -> Result<()> {
        self.get(name)?;
        self.store.for_each_entry(name, &mut f)
    }

    /// Whether searching `names` (every bank when empty) needs the file digests of the image: when one of
    /// them, or a negative bank, is an MD5, SHA-1 or SHA-256 bank.
    pub fn needs_digests(&self, names: &[String]) -> bool {
        let banks = self.banks.read();
        banks.values().any(|b| b.kind.is_exact() && b.policy.read().negative)
            || if names.is_empty() {
                banks.values().any(|b| b.kind.is_exact())
            } else {
                names.iter().any(|n| banks.get(n).is_some_and(|b| b.kind.is_exact()))
            }
    }

    /// The banks a request names (or every bank of a kind the query offers, by name, when it names none),
    /// then every negative bank of such a kind not already named (negative banks always apply), checked
    /// against the radius asked for.
    fn targets(
        &self,
        names: &[String],
        kinds: &[Kind],
        radius: Option<u32>,
    ) -> Result<Vec<(String, Arc<LiveBank>)>> {
        let mut targets: Vec<(String, Arc<LiveBank>)> = if names.is_empty() {
            self.banks
                .read()
                .iter()
                // A bank switched off (matching ratio 0) is searched only when named.
                .filter(|(_, b)| kinds.contains(&b.kind) && b.policy.read().match_ratio_ppm != Some(0))
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
        for (n, b) in self.banks.read().iter() {
            if b.policy.read().negative && kinds.contains(&b.kind) && !targets.iter().any(|(t, _)| t == n) {
                targets.push((n.clone(), b.clone()));
            }
        }
        for (_, b) in &targets {
            self.policy.radius(b.kind, radius)?;
        }
        Ok(targets)
    }

    /// Matches one query (its hashes may mix kinds: each bank uses those of its own kind) against `banks`,
    /// or every bank of a kind the query has when `banks` is empty; negative banks of the query's kinds
    /// always take part. A named bank whose kind the query lacks is an error. At most `max_matches` hits,
    /// nearest first.
    pub fn search(&self, banks: &[String], query: &BankQuery, radius: Option<u32>) -> Result<SearchResult> {
        self.policy.check_query(&query.hashes)?;
        let kinds: Vec<Kind> = query.hashes.iter().map(AnyHash::kind).collect();
        let targets = self.targets(banks, &kinds, radius)?;
        for (_, b) in &targets {
            if !kinds.contains(&b.kind) {
                let found = query.hashes.first().map_or("none", |h| h.kind().name());
                return Err(Error::KindMismatch { expected: b.kind.name(), found });
            }
        }
        let mut results = self.search_targets(&targets, std::slice::from_ref(query), radius, false)?;
        Ok(results.pop().unwrap_or_default())
    }

    /// Matches many queries against the named banks, in parallel (rayon): one result per query, in
    /// order. A bank whose kind a query lacks contributes nothing to that query (no error), so one run can
    /// search banks of every kind with lines that carry some of them.
    pub fn search_many(
        &self,
        banks: &[String],
        queries: &[BankQuery],
        radius: Option<u32>,
    ) -> Result<Vec<SearchResult>> {
        for q in queries {
            self.policy.check_query(&q.hashes)?;
        }
        let targets = self.targets(banks, &Kind::ALL, radius)?;
        self.search_targets(&targets, queries, radius, true)
    }

    fn search_targets(
        &self,
        targets: &[(String, Arc<LiveBank>)],
        queries: &[BankQuery],
        radius: Option<u32>,
        parallel: bool,
    ) -> Result<Vec<SearchResult>> {
        let now = crate::store::now_ms();
        let mut raw: Vec<Vec<RawHit>> = vec![Vec::new(); queries.len()];
        let mut negative = vec![false; targets.len()];
        for (pos, (_, bank)) in targets.iter().enumerate() {
            let policy = *bank.policy.read();
            negative[pos] = policy.negative;
            let radius = match radius {
                Some(r) => self.policy.radius(bank.kind, Some(r))?,
                None => policy.radius.unwrap_or_else(|| bank.kind.default_radius()),
            };
            let opts = SearchOptions { radius, method: Method::Auto };
            // Queries below the bank's minimum quality are not searched in it.
            let eligible = |q: &BankQuery| match (policy.min_quality, q.quality) {
                (Some(min), Some(got)) => got >= min,
                _ => true,
            };
            let index = bank.index.read();
            let found: Vec<Vec<Hit>> = if parallel {
                let wanted: Vec<Vec<AnyHash>> =
                    queries.iter().map(|q| if eligible(q) { q.hashes.clone() } else { Vec::new() }).collect();
                index.search_batch(&wanted, opts)
            } else {
                let mut out = Vec::new();
                queries
                    .iter()
                    .map(|q| {
                        if eligible(q) {
                            index.search(&q.hashes, opts, &mut out);
                            out.clone()
                        } else {
                            Vec::new()
                        }
                    })
                    .collect()
            };
            let disabled = bank.disabled.read();
            for (q, hits) in found.into_iter().enumerate() {
                raw[q].extend(hits.into_iter().filter_map(|h| {
                    if disabled.get(&h.row).is_some_and(|st| !st.is_active_at(now)) {
                        return None;
                    }
                    index.get(h.row).map(|hash| (pos, h.row, h.distance, hash))
                }));
            }
        }
        // Split off the negative banks' hits: any of them withholds the query's other hits.
        let max = self.policy.max_matches;
        let key = |h: &RawHit| (h.2, h.0, h.1);
        let mut by: Vec<Option<RawHit>> = vec![None; queries.len()];
        let mut withheld: Vec<Vec<RawHit>> = vec![Vec::new(); queries.len()];
        for (q, hits) in raw.iter_mut().enumerate() {
            let (neg, pos): (Vec<RawHit>, Vec<RawHit>) = hits.drain(..).partition(|h| negative[h.0]);
            by[q] = neg.into_iter().min_by_key(key);
            if by[q].is_some() {
                withheld[q] = pos;
            } else {
                *hits = pos;
            }
        }
        // Cut each query's hits (and withheld hits) to the nearest `max_matches`, then read the fields of
        // those only.
        let mut truncated = vec![false; queries.len()];
        for (q, hits) in raw.iter_mut().enumerate() {
            if hits.len() > max {
                truncated[q] = true;
                self.metrics.matches_truncated.inc();
                if max > 0 {
                    hits.select_nth_unstable_by_key(max - 1, key);
                }
                hits.truncate(max);
            }
            hits.sort_unstable_by_key(key);
            let w = &mut withheld[q];
            if w.len() > max {
                if max > 0 {
                    w.select_nth_unstable_by_key(max - 1, key);
                }
                w.truncate(max);
            }
            w.sort_unstable_by_key(key);
        }
        let mut metas: Vec<HashMap<u32, EntryMeta>> = Vec::with_capacity(targets.len());
        for (pos, (name, _)) in targets.iter().enumerate() {
            let reported = raw.iter().flatten().filter(|h| h.0 == pos).count();
            self.metrics.matches.with_label_values(&[name]).inc_by(reported as u64);
            let mut ids: Vec<u64> = raw
                .iter()
                .flatten()
                .chain(withheld.iter().flatten())
                .chain(by.iter().flatten())
                .filter(|h| h.0 == pos)
                .map(|h| u64::from(h.1))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let found = if ids.is_empty() {
                Vec::new()
            } else {
                match self.store.metas(name, &ids) {
                    Ok(m) => m,
                    // A shared store that cannot be reached: the matches still go out, without their
                    // fields (bank and id say which entry; the fields can be read once it is back).
                    Err(Error::Unavailable(why)) => {
                        self.metrics.match_fields_unavailable.inc_by(ids.len() as u64);
                        tracing::warn!(bank = %name, reason = %why, "matches answered without their fields");
                        vec![EntryMeta::default(); ids.len()]
                    }
                    Err(e) => return Err(e),
                }
            };
            metas.push(ids.iter().zip(found).map(|(&id, m)| (id as u32, m)).collect());
        }
        let hit = |(pos, row, distance, hash): RawHit| {
            let meta = metas[pos].get(&row).cloned().unwrap_or_default();
            BankHit {
                bank: targets[pos].0.clone(),
                id: u64::from(row),
                hash,
                distance,
                label: meta.label,
                external_id: meta.external_id,
                tags: meta.tags,
            }
        };
        let results: Vec<SearchResult> = raw
            .into_iter()
            .zip(truncated)
            .zip(withheld.into_iter().zip(by))
            .map(|((hits, truncated), (withheld, by))| SearchResult {
                hits: hits.into_iter().map(hit).collect(),
                truncated,
                suppressed: match by {
                    Some(b) => {
                        let by = hit(b);
                        withheld.into_iter().map(|h| Suppressed { hit: hit(h), by: by.clone() }).collect()
                    }
                    None => Vec::new(),
                },
            })
            .collect();
        self.audit_and_guard(targets, queries, &results, now)?;
        Ok(results)
    }

    /// Records every reported match and every suppression in the audit (durably, before the caller answers),
    /// and runs the flood guard of the banks that have one.
    fn audit_and_guard(
        &self,
        targets: &[(String, Arc<LiveBank>)],
        queries: &[BankQuery],
        results: &[SearchResult],
        now: u64,
    ) -> Result<()> {
        let entry = |h: &BankHit| AuditEntry {
            bank: h.bank.clone(),
            entry_id: h.id,
            external_id: h.external_id.clone(),
        };
        let mut records = Vec::new();
        let mut to_disable: Vec<(String, u64)> = Vec::new();
        for (q, r) in queries.iter().zip(results) {
            if r.hits.is_empty() && r.suppressed.is_empty() {
                continue;
            }
            let query = q.audit_hashes();
            let record = |event, h: &BankHit, by: Option<AuditEntry>| AuditRecord {
                time_ms: now,
                event,
                entry: entry(h),
                distance: h.distance,
                query: query.clone(),
                request_id: q.request_id.clone(),
                caller: q.caller.clone(),
                by,
                count: None,
            };
            for h in &r.hits {
                records.push(record(AuditEvent::Match, h, None));
                let Some((_, bank)) = targets.iter().find(|(n, _)| *n == h.bank) else { continue };
                let Some(guard) = bank.policy.read().flood else { continue };
                if self.flooded(bank, h.id as u32, guard, now) {
                    self.metrics.flood_trips.with_label_values(&[&h.bank]).inc();
                    let event =
                        if guard.auto_disable { AuditEvent::FloodDisabled } else { AuditEvent::Flood };
                    tracing::warn!(
                        bank = %h.bank,
                        entry = h.id,
                        max_matches = guard.max_matches,
                        window_s = guard.window_s,
                        disabled = guard.auto_disable,
                        "flood guard tripped"
                    );
                    records.push(AuditRecord {
                        distance: 0,
                        query: BTreeMap::new(),
                        ..record(event, h, None)
                    });
                    if guard.auto_disable {
                        to_disable.push((h.bank.clone(), h.id));
                    }
                }
            }
            for s in &r.suppressed {
                records.push(record(AuditEvent::Suppressed, &s.hit, Some(entry(&s.by))));
            }
        }
        self.audit.record(records)?;
        for (bank, id) in to_disable {
            let disable =
                EntryUpdate { state: Some(EntryState::Disabled { until_ms: None }), ..Default::default() };
            if let Err(e) = self.update(&bank, &[(id, disable)]) {
                tracing::error!(bank = %bank, entry = id, error = %e, "flood guard could not disable the entry");
            }
        }
        Ok(())
    }

    /// Counts a match of `row` at `now` against the bank's flood guard; true when it passes the limit (the
    /// count then starts again, so one flood is reported once per window's worth of matches).
    fn flooded(&self, bank: &LiveBank, row: u32, guard: FloodGuard, now: u64) -> bool {
        let window = u64::from(guard.window_s) * 1000;
        let mut flood = bank.flood.lock();
        if flood.len() > 100_000 {
            // Forget entries whose matches have all left the window (bounded memory under any load).
            flood.retain(|_, times| times.back().is_some_and(|&t| t + window > now));
        }
        let times = flood.entry(row).or_default();
        times.push_back(now);
        while times.front().is_some_and(|&t| t + window <= now) {
            times.pop_front();
        }
        if times.len() > guard.max_matches as usize {
            flood.remove(&row);
            true
        } else {
            false
        }
    }
}
