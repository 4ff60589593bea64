//! The audit writer: every match a search reports (and every suppression and flood event) is committed to
//! the store before the search returns, so an answer a client got is always in the audit.
//!
//! A commit is an fsync (milliseconds on most disks), so searches do not commit one by one: a writer
//! thread takes every batch waiting when it wakes and commits them together (group commit), then tells
//! each waiting search its result. Under load many searches share one fsync; an idle daemon pays one per
//! search that matched (searches that match nothing write nothing).
//!
//! With a shared store (PostgreSQL) a replica also has a **local spool** (a redb file in its data
//! directory): while the database cannot be reached, a batch is committed there instead, so matching goes
//! on and every answered match is still on disk; the writer moves the spooled records into the database as
//! soon as it answers again (oldest first; a crash between the two steps can copy a record twice, never
//! lose one).

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{AuditRecord, BankStore, Store};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Records moved from the spool to the store per transaction.
const DRAIN_BATCH: usize = 5_000;

/// Records to commit, and where to send the outcome.
type Batch = (Vec<AuditRecord>, mpsc::SyncSender<std::result::Result<(), String>>);

/// The group-commit writer of the audit table.
#[derive(Debug)]
pub(crate) struct AuditLog {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Starts the writer thread; with `spool`, batches the store cannot take for now
    /// ([`Error::Unavailable`]) go there.
    pub(crate) fn start(
        store: Arc<dyn BankStore>,
        spool: Option<Store>,
        metrics: Arc<Metrics>,
    ) -> Result<AuditLog> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("pharos-audit".into())
            .spawn(move || {
                // Records left in the spool by an earlier run are moved first.
                let mut spooled = spool.is_some();
                loop {
                    let first = match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(b) => Some(b),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    if let (Some(sp), true) = (&spool, spooled) {
                        spooled = !drain(sp, store.as_ref());
                    }
                    let Some(first) = first else { continue };
                    let mut batches = vec![first];
                    batches.extend(rx.try_iter());
                    let records: Vec<AuditRecord> =
                        batches.iter_mut().flat_map(|(r, _)| r.drain(..)).collect();
                    let mut outcome = store.append_audit(&records);
                    if let (Err(Error::Unavailable(why)), Some(sp)) = (&outcome, &spool) {
                        tracing::warn!(reason = %why, records = records.len(), "audit kept in the local spool");
                        outcome = sp.append_audit(&records);
                        if outcome.is_ok() {
                            spooled = true;
                            metrics.audit_spooled.inc_by(records.len() as u64);
                        }
                    }
                    let outcome = outcome.map_err(|e| e.to_string());
                    if let Err(e) = &outcome {
                        tracing::error!(error = %e, records = records.len(), "audit commit failed");
                    }
                    for (_, ack) in batches {
                        let _ = ack.send(outcome.clone());
                    }
                }
                if let (Some(sp), true) = (&spool, spooled) {
                    drain(sp, store.as_ref());
                }
            })
            .map_err(Error::Io)?;
        Ok(AuditLog { tx: Some(tx), thread: Some(thread) })
    }

    /// Commits `records` durably (together with whatever other searches are committing); returns when they
    /// are on disk, or the store's error.
    pub(crate) fn record(&self, records: Vec<AuditRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (ack, done) = mpsc::sync_channel(1);
        let stopped = || Error::Store("the audit writer has stopped".into());
        self.tx.as_ref().ok_or_else(stopped)?.send((records, ack)).map_err(|_| stopped())?;
        done.recv().map_err(|_| stopped())?.map_err(|e| Error::Store(format!("audit: {e}")))
    }
}

/// Moves spooled records into the store, oldest first; true when the spool is empty afterwards.
fn drain(spool: &Store, store: &dyn BankStore) -> bool {
    loop {
        let batch = match spool.oldest_audit(DRAIN_BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the audit spool failed");
                return false;
            }
        };
        if batch.is_empty() {
            return true;
        }
        let (keys, records): (Vec<(u64, u64)>, Vec<AuditRecord>) = batch.into_iter().unzip();
        if store.append_audit(&records).is_err() {
            return false; // still unreachable: the next wake-up tries again
        }
        if let Err(e) = spool.delete_audit(&keys) {
            tracing::error!(error = %e, "emptying the audit spool failed");
            return false;
        }
        tracing::info!(records = records.len(), "spooled audit records moved to the store");
    }
}

impl Drop for AuditLog {
    /// Stops the writer after the batches already sent, so the store is closed when the bank set is.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
