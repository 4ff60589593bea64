//! The `Banks` service: create, list, add (client stream), remove, export (server stream), delete.
//!
//! Store work runs on tokio's blocking pool (redb does synchronous, fsync'ed I/O). An acknowledged write is
//! durable: `AddHashes` commits each request message before reading the next, and says in its error how
//! much was committed when a later message is refused.

use super::auth::{caller_of, Caller};
use super::proto::{self, HashKind};
use super::{error_status, Shared};
use crate::banks::{validate_meta, BankSummary};
use crate::error::Error;
use crate::matcher::{AnyHash, Kind};
use crate::store::{
    AuditEntry, AuditEvent, AuditFilter, AuditRecord, BankPolicy, EntryMeta, EntryState, EntryUpdate,
    FloodGuard, NewEntry,
};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The `Banks` service.
pub(crate) struct BanksService(pub(crate) Arc<Shared>);

fn kind_to_proto(k: Kind) -> HashKind {
    match k {
        Kind::Pdq => HashKind::Pdq,
        Kind::Phash => HashKind::Phash,
        Kind::Md5 => HashKind::Md5,
        Kind::Sha1 => HashKind::Sha1,
        Kind::Sha256 => HashKind::Sha256,
    }
}

/// The kind a request names; `None` for unspecified when `optional`, else an error.
pub(crate) fn kind_from_proto(k: i32, optional: bool) -> Result<Option<Kind>, Status> {
    match HashKind::try_from(k) {
        Ok(HashKind::Pdq) => Ok(Some(Kind::Pdq)),
        Ok(HashKind::Phash) => Ok(Some(Kind::Phash)),
        Ok(HashKind::Md5) => Ok(Some(Kind::Md5)),
        Ok(HashKind::Sha1) => Ok(Some(Kind::Sha1)),
        Ok(HashKind::Sha256) => Ok(Some(Kind::Sha256)),
        Ok(HashKind::Unspecified) if optional => Ok(None),
        _ => Err(Status::invalid_argument(
            "kind must be HASH_KIND_PDQ, HASH_KIND_PHASH, HASH_KIND_MD5, HASH_KIND_SHA1 or HASH_KIND_SHA256",
        )),
    }
}

fn policy_to_proto(p: BankPolicy) -> proto::BankPolicy {
    proto::BankPolicy {
        negative: p.negative,
        radius: p.radius,
        min_quality: p.min_quality,
        flood_max_matches: p.flood.map_or(0, |f| f.max_matches),
        flood_window_s: p.flood.map_or(0, |f| f.window_s),
        flood_auto_disable: p.flood.is_some_and(|f| f.auto_disable),
    }
}

fn policy_from_proto(p: Option<proto::BankPolicy>) -> Result<BankPolicy, Status> {
    let Some(p) = p else { return Ok(BankPolicy::default()) };
    let flood = match (p.flood_max_matches, p.flood_window_s) {
        (0, 0) if !p.flood_auto_disable => None,
        (0, _) | (_, 0) => {
            return Err(Status::invalid_argument(
                "a flood guard needs both flood_max_matches and flood_window_s (0 and 0 for none)",
            ))
        }
        (m, w) => Some(FloodGuard { max_matches: m, window_s: w, auto_disable: p.flood_auto_disable }),
    };
    Ok(BankPolicy {
        negative: p.negative,
        radius: p.radius,
        min_quality: p.min_quality,
        flood,
        match_ratio_ppm: None,
    })
}

fn bank_to_proto(b: BankSummary) -> proto::Bank {
    proto::Bank {
        name: b.name,
        kind: kind_to_proto(b.kind) as i32,
        size: b.size,
        created_ms: b.created_ms,
        next_id: b.next_id,
        policy: Some(policy_to_proto(b.policy)),
    }
}

fn state_from_proto(state: i32, until_ms: u64) -> Result<EntryState, String> {
    match proto::EntryState::try_from(state) {
        Ok(proto::EntryState::Active) => Ok(EntryState::Active),
        Ok(proto::EntryState::Disabled) => {
            Ok(EntryState::Disabled { until_ms: (until_ms > 0).then_some(until_ms) })
        }
        Err(_) => Err(format!("unknown entry state {state}")),
    }
}

fn entry_to_proto(
    id: u64,
    hash: String,
    added_ms: u64,
    meta: EntryMeta,
    state: EntryState,
) -> proto::BankEntry {
    proto::BankEntry {
        id,
        hash,
        label: meta.label.unwrap_or_default(),
        added_ms,
        external_id: meta.external_id.unwrap_or_default(),
        source: meta.source.unwrap_or_default(),
        tags: meta.tags,
        quality: meta.quality,
        note: meta.note.unwrap_or_default(),
        state: match state {
            EntryState::Active => proto::EntryState::Active,
            EntryState::Disabled { .. } => proto::EntryState::Disabled,
        } as i32,
        disabled_until_ms: state.disabled_until_ms().unwrap_or(0),
        metadata: meta.metadata.into_iter().collect(),
    }
}

impl BanksService {
    /// Runs store work on the blocking pool, maps its error, and counts the call.
    async fn blocking<T: Send + 'static>(
        &self,
        method: &str,
        f: impl FnOnce(&Shared) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let start = Instant::now();
        let shared = self.0.clone();
        let result = tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| Status::internal(format!("{e}")))
            .and_then(|r| r.map_err(|e| error_status(&e)));
        self.0.record(method, start, result.as_ref().err());
        result
    }
}

/// Records a bank change (or export) by `caller` in the audit, durably. The change itself is already
/// committed, so a failure to record it is logged (and counted) rather than failing the call: answering an
/// error would make the client retry a change that happened.
pub(super) fn audit_change(
    shared: &Shared,
    event: AuditEvent,
    bank: &str,
    first_id: u64,
    count: Option<u64>,
    caller: &Caller,
) {
    let record = AuditRecord::bank_change(event, bank, first_id, count, caller.name());
    if let Err(e) = shared.banks.audit_change(record) {
        shared.metrics.errors.with_label_values(&["INTERNAL"]).inc();
        tracing::error!(bank = %bank, event = event.name(), "the change was made but its audit record was not written: {e}");
    }
}

/// A server stream fed from a store read on the blocking pool: `read` calls `send` once per item (which
/// waits while the client is slow: the channel holds 1,024 items, so memory stays bounded, and fails once
/// the client went away, ending the read); an error of the read ends the stream with its status. Counted as
/// one call of `method`.
fn stream_from_store<T: Send + 'static>(
    shared: Arc<Shared>,
    method: &'static str,
    read: impl FnOnce(&Shared, &mut dyn FnMut(T) -> Result<(), Error>) -> Result<(), Error> + Send + 'static,
) -> Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut send = |item: T| {
            tx.blocking_send(Ok(item)).map_err(|_| Error::InvalidInput("the client went away".into()))
        };
        let result = read(&shared, &mut send);
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(error_status(e)));
        }
        let status = result.as_ref().err().map(error_status);
        shared.record(method, start, status.as_ref());
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Parses one `AddHashes` message into store entries (all or nothing).
fn parse_entries(kind: Kind, entries: Vec<proto::NewEntry>) -> Result<Vec<NewEntry>, String> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let hash = AnyHash::parse_for(kind, e.hash.trim()).map_err(|err| format!("entry {i}: {err}"))?;
            let some = |s: String| (!s.is_empty()).then_some(s);
            let mut meta = EntryMeta {
                label: some(e.label),
                external_id: some(e.external_id),
                source: some(e.source),
                tags: Vec::new(),
                quality: e.quality,
                note: some(e.note),
                metadata: e.metadata.into_iter().collect(),
            };
            for t in &e.tags {
                meta.add_tag(t);
            }
            validate_meta(&meta).map_err(|err| format!("entry {i}: {err}"))?;
            let state =
                state_from_proto(e.state, e.disabled_until_ms).map_err(|err| format!("entry {i}: {err}"))?;
            Ok(NewEntry { hash, meta, added_ms: (e.added_ms > 0).then_some(e.added_ms), state })
        })
        .collect()
}

#[tonic::async_trait]
impl proto::banks_server::Banks for BanksService {
    #[tracing::instrument(level = "debug", skip_all, fields(method = "CreateBank"))]
    async fn create_bank(
        &self,
        req: Request<proto::CreateBankRequest>,
    ) -> Result<Response<proto::Bank>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        caller.check_bank(&r.name)?;
        let kind = kind_from_proto(r.kind, false)?.expect("not optional");
        let policy = policy_from_proto(r.policy)?;
        let bank = self
            .blocking("CreateBank", move |s| {
                let bank = s.banks.create_with(&r.name, kind, policy)?;
                audit_change(s, AuditEvent::BankCreated, &bank.name, 0, None, &caller);
                Ok(bank)
            })
            .await?;
        tracing::info!(bank = %bank.name, kind = %bank.kind, "bank created");
        Ok(Response::new(bank_to_proto(bank)))
    }

    async fn list_banks(
        &self,
        req: Request<proto::ListBanksRequest>,
    ) -> Result<Response<proto::ListBanksResponse>, Status> {
        let caller = caller_of(&req);
        let mut banks = self.blocking("ListBanks", |s| Ok(s.banks.list())).await?;
        banks.retain(|b| caller.may_use(&b.name));
        Ok(Response::new(proto::ListBanksResponse { banks: banks.into_iter().map(bank_to_proto).collect() }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "AddHashes"))]
    async fn add_hashes(
        &self,
        req: Request<Streaming<proto::AddHashesRequest>>,
    ) -> Result<Response<proto::AddHashesResponse>, Status> {
        let caller = caller_of(&req);
        let mut inbound = req.into_inner();
        let mut bank = None::<(String, Kind)>;
        let (mut added, mut first_id) = (0u64, None);
        let mut n = 0usize;
        let committed = |added: u64, first: Option<u64>| match first {
            Some(f) => format!("{added} entries of earlier messages were committed (ids {f}..{})", f + added),
            None => "nothing was committed".to_string(),
        };
        while let Some(msg) = inbound
            .message()
            .await
            .map_err(|s| Status::new(s.code(), format!("{}; {}", s.message(), committed(added, first_id))))?
        {
            n += 1;
            let (name, kind) = match &bank {
                Some((name, _)) if *name != msg.bank => {
                    return Err(Status::invalid_argument(format!(
                        "message {n} names bank '{}', earlier messages named '{name}'; {}",
                        msg.bank,
                        committed(added, first_id)
                    )));
                }
                Some(b) => b.clone(),
                None => {
                    let name = msg.bank.clone();
                    caller.check_bank(&name)?;
                    let kind = self.0.banks.kind(&name).map_err(|e| error_status(&e))?;
                    bank = Some((name.clone(), kind));
                    (name, kind)
                }
            };
            let entries = parse_entries(kind, msg.entries).map_err(|e| {
                Status::invalid_argument(format!("message {n}: {e}; {}", committed(added, first_id)))
            })?;
            if entries.is_empty() {
                continue;
            }
            let count = entries.len() as u64;
            let by = caller.clone();
            let add = move |s: &Shared| {
                let first = s.banks.add(&name, &entries)?;
                audit_change(s, AuditEvent::EntriesAdded, &name, first, Some(count), &by);
                Ok(first)
            };
            let first = self.blocking("AddHashes", add).await.map_err(|s| {
                Status::new(s.code(), format!("message {n}: {}; {}", s.message(), committed(added, first_id)))
            })?;
            first_id.get_or_insert(first);
            added += count;
        }
        let bank = bank.map(|b| b.0).unwrap_or_default();
        if added > 0 {
            tracing::info!(bank = %bank, added, "hashes added");
        }
        Ok(Response::new(proto::AddHashesResponse { bank, added, first_id }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "RemoveHashes"))]
    async fn remove_hashes(
        &self,
        req: Request<proto::RemoveHashesRequest>,
    ) -> Result<Response<proto::RemoveHashesResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        caller.check_bank(&r.bank)?;
        let removed = r.ids.len() as u64;
        self.blocking("RemoveHashes", move |s| {
            s.banks.remove(&r.bank, &r.ids)?;
            audit_change(s, AuditEvent::EntriesRemoved, &r.bank, 0, Some(removed), &caller);
            Ok(())
        })
        .await?;
        Ok(Response::new(proto::RemoveHashesResponse { removed }))
    }

    type ExportBankStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::BankEntry, Status>> + Send>>;

    #[tracing::instrument(level = "debug", skip_all, fields(method = "ExportBank"))]
    async fn export_bank(
        &self,
        req: Request<proto::ExportBankRequest>,
    ) -> Result<Response<Self::ExportBankStream>, Status> {
        let caller = caller_of(&req);
        let name = req.into_inner().bank;
        caller.check_bank(&name)?;
        // Fail fast (as a status, before the stream starts) when the bank does not exist.
        self.0.banks.kind(&name).map_err(|e| error_status(&e))?;
        Ok(Response::new(stream_from_store(self.0.clone(), "ExportBank", move |shared, send| {
            let mut sent = 0u64;
            let result = shared.banks.export(&name, |e| {
                send(entry_to_proto(e.id, e.hash.to_hex(), e.added_ms, e.meta, e.state))?;
                sent += 1;
                Ok(())
            });
            // Recorded however the export ended: what left the server is what counts.
            audit_change(shared, AuditEvent::BankExported, &name, 0, Some(sent), &caller);
            result
        })))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "UpdateEntries"))]
    async fn update_entries(
        &self,
        req: Request<proto::UpdateEntriesRequest>,
    ) -> Result<Response<proto::UpdateEntriesResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        caller.check_bank(&r.bank)?;
        let state = match r.state {
            None => None,
            Some(s) => Some(state_from_proto(s, r.disabled_until_ms).map_err(Status::invalid_argument)?),
        };
        let update = EntryUpdate {
            add_tags: r.add_tags,
            remove_tags: r.remove_tags,
            note: r.note.map(|n| (!n.is_empty()).then_some(n)),
            state,
        };
        if update.is_empty() {
            return Err(Status::invalid_argument("nothing to change: give tags, a note or a state"));
        }
        let bank = r.bank.clone();
        let (ids, after) = self
            .blocking("UpdateEntries", move |s| {
                let mut ids = r.ids.clone();
                for (ext, found) in s.banks.ids_by_external_id(&r.bank, &r.external_ids)? {
                    if found.is_empty() {
                        return Err(Error::UnknownExternalId {
                            bank: r.bank.clone(),
                            external_id: ext.chars().take(80).collect(),
                        });
                    }
                    ids.extend(found);
                }
                if ids.is_empty() {
                    return Err(Error::InvalidInput("no entries named: give ids or external_ids".into()));
                }
                ids.sort_unstable();
                ids.dedup();
                let updates: Vec<(u64, EntryUpdate)> = ids.iter().map(|&id| (id, update.clone())).collect();
                let after = s.banks.update(&r.bank, &updates)?;
                audit_change(s, AuditEvent::EntriesUpdated, &r.bank, 0, Some(ids.len() as u64), &caller);
                Ok((ids, after))
            })
            .await?;
        tracing::info!(bank = %bank, entries = ids.len(), "entries updated");
        let entries = ids
            .into_iter()
            .zip(after)
            .map(|(id, (meta, state))| entry_to_proto(id, String::new(), 0, meta, state))
            .collect();
        Ok(Response::new(proto::UpdateEntriesResponse { entries }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "SetBankPolicy"))]
    async fn set_bank_policy(
        &self,
        req: Request<proto::SetBankPolicyRequest>,
    ) -> Result<Response<proto::Bank>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        caller.check_bank(&r.name)?;
        let policy = policy_from_proto(r.policy)?;
        let bank = self
            .blocking("SetBankPolicy", move |s| {
                let bank = s.banks.set_policy(&r.name, policy)?;
                audit_change(s, AuditEvent::PolicySet, &r.name, 0, None, &caller);
                Ok(bank)
            })
            .await?;
        tracing::info!(bank = %bank.name, "bank policy set");
        Ok(Response::new(bank_to_proto(bank)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "DeleteBank"))]
    async fn delete_bank(
        &self,
        req: Request<proto::DeleteBankRequest>,
    ) -> Result<Response<proto::DeleteBankResponse>, Status> {
        let caller = caller_of(&req);
        let name = req.into_inner().name;
        caller.check_bank(&name)?;
        let logged = name.clone();
        self.blocking("DeleteBank", move |s| {
            s.banks.delete(&name)?;
            audit_change(s, AuditEvent::BankDeleted, &name, 0, None, &caller);
            Ok(())
        })
        .await?;
        tracing::info!(bank = %logged, "bank deleted");
        Ok(Response::new(proto::DeleteBankResponse {}))
    }
}

/// The `Audit` service.
pub(crate) struct AuditService(pub(crate) Arc<Shared>);

fn audit_to_proto(r: AuditRecord) -> proto::AuditRecord {
    let by = r.by.unwrap_or(AuditEntry { bank: String::new(), entry_id: 0, external_id: None });
    proto::AuditRecord {
        time_ms: r.time_ms,
        event: r.event.name().to_string(),
        bank: r.entry.bank,
        entry_id: r.entry.entry_id,
        external_id: r.entry.external_id.unwrap_or_default(),
        distance: r.distance,
        query: r.query.into_iter().collect(),
        request_id: r.request_id.unwrap_or_default(),
        caller: r.caller.unwrap_or_default(),
        by_bank: by.bank,
        by_entry_id: by.entry_id,
        by_external_id: by.external_id.unwrap_or_default(),
        count: r.count.unwrap_or(0),
    }
}

#[tonic::async_trait]
impl proto::audit_server::Audit for AuditService {
    type ListAuditStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::AuditRecord, Status>> + Send>>;

    #[tracing::instrument(level = "debug", skip_all, fields(method = "ListAudit"))]
    async fn list_audit(
        &self,
        req: Request<proto::ListAuditRequest>,
    ) -> Result<Response<Self::ListAuditStream>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        // A caller restricted to some banks sees only their records.
        let banks = match caller.granted_banks() {
            Some(granted) if r.banks.is_empty() => {
                if granted.is_empty() {
                    return Err(Status::permission_denied(format!(
                        "caller '{}' is granted no bank",
                        caller.label()
                    )));
                }
                granted.iter().cloned().collect()
            }
            _ => {
                for b in &r.banks {
                    caller.check_bank(b)?;
                }
                r.banks
            }
        };
        let filter = AuditFilter {
            since_ms: r.since_ms,
            until_ms: r.until_ms,
            banks,
            limit: (r.limit > 0).then_some(r.limit as usize),
        };
        Ok(Response::new(stream_from_store(self.0.clone(), "ListAudit", move |shared, send| {
            shared.banks.audit(&filter, |rec| send(audit_to_proto(rec)))
        })))
    }
}
