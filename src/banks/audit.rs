//! The audit writer: every match a search reports (and every suppression and flood event) is committed to
//! the store before the search returns, so an answer a client got is always in the audit.
//!
//! A commit is an fsync (milliseconds on most disks), so searches do not commit one by one: a writer
//! thread takes every batch waiting when it wakes and commits them together (group commit), then tells
//! each waiting search its result. Under load many searches share one fsync; an idle daemon pays one per
//! search that matched (searches that match nothing write nothing).

use crate::error::{Error, Result};
use crate::store::{AuditRecord, BankStore};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Records to commit, and where to send the outcome.
type Batch = (Vec<AuditRecord>, mpsc::SyncSender<std::result::Result<(), String>>);

/// The group-commit writer of the audit table.
#[derive(Debug)]
pub(crate) struct AuditLog {
    tx: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditLog {
    /// Starts the writer thread.
    pub(crate) fn start(store: Arc<dyn BankStore>) -> Result<AuditLog> {
        let (tx, rx) = mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("pharos-audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batches = vec![first];
                    batches.extend(rx.try_iter());
                    let records: Vec<AuditRecord> =
                        batches.iter_mut().flat_map(|(r, _)| r.drain(..)).collect();
                    let outcome = store.append_audit(&records).map_err(|e| e.to_string());
                    if let Err(e) = &outcome {
                        tracing::error!(error = %e, records = records.len(), "audit commit failed");
                    }
                    for (_, ack) in batches {
                        let _ = ack.send(outcome.clone());
                    }
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

impl Drop for AuditLog {
    /// Stops the writer after the batches already sent, so the store is closed when the bank set is.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
