//! The `Banks` service: create, list, add (client stream), remove, export (server stream), delete.
//!
//! Store work runs on tokio's blocking pool (redb does synchronous, fsync'ed I/O). An acknowledged write is
//! durable: `AddHashes` commits each request message before reading the next, and says in its error how
//! much was committed when a later message is refused.

use super::proto::{self, HashKind};
use super::{error_status, Shared};
use crate::banks::{validate_label, BankSummary};
use crate::error::Error;
use crate::matcher::{AnyHash, Kind};
use crate::store::NewEntry;
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
    }
}

fn bank_to_proto(b: BankSummary) -> proto::Bank {
    proto::Bank {
        name: b.name,
        kind: kind_to_proto(b.kind) as i32,
        size: b.size,
        created_ms: b.created_ms,
        next_id: b.next_id,
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

/// Parses one `AddHashes` message into store entries (all or nothing).
fn parse_entries(kind: Kind, entries: Vec<proto::NewEntry>) -> Result<Vec<NewEntry>, String> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let hash = AnyHash::from_hex(e.hash.trim()).map_err(|err| format!("entry {i}: {err}"))?;
            if hash.kind() != kind {
                return Err(format!("entry {i}: a {} hash in a {kind} bank", hash.kind()));
            }
            if !e.label.is_empty() {
                validate_label(&e.label).map_err(|err| format!("entry {i}: {err}"))?;
            }
            Ok(NewEntry { hash, label: (!e.label.is_empty()).then_some(e.label) })
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
        let r = req.into_inner();
        let kind = match HashKind::try_from(r.kind) {
            Ok(HashKind::Pdq) => Kind::Pdq,
            Ok(HashKind::Phash) => Kind::Phash,
            _ => return Err(Status::invalid_argument("kind must be HASH_KIND_PDQ or HASH_KIND_PHASH")),
        };
        let bank = self.blocking("CreateBank", move |s| s.banks.create(&r.name, kind)).await?;
        tracing::info!(bank = %bank.name, kind = %bank.kind, "bank created");
        Ok(Response::new(bank_to_proto(bank)))
    }

    async fn list_banks(
        &self,
        _req: Request<proto::ListBanksRequest>,
    ) -> Result<Response<proto::ListBanksResponse>, Status> {
        let banks = self.blocking("ListBanks", |s| Ok(s.banks.list())).await?;
        Ok(Response::new(proto::ListBanksResponse { banks: banks.into_iter().map(bank_to_proto).collect() }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "AddHashes"))]
    async fn add_hashes(
        &self,
        req: Request<Streaming<proto::AddHashesRequest>>,
    ) -> Result<Response<proto::AddHashesResponse>, Status> {
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
            let first =
                self.blocking("AddHashes", move |s| s.banks.add(&name, &entries)).await.map_err(|s| {
                    Status::new(
                        s.code(),
                        format!("message {n}: {}; {}", s.message(), committed(added, first_id)),
                    )
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
        let r = req.into_inner();
        let removed = r.ids.len() as u64;
        self.blocking("RemoveHashes", move |s| s.banks.remove(&r.bank, &r.ids)).await?;
        Ok(Response::new(proto::RemoveHashesResponse { removed }))
    }

    type ExportBankStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::BankEntry, Status>> + Send>>;

    #[tracing::instrument(level = "debug", skip_all, fields(method = "ExportBank"))]
    async fn export_bank(
        &self,
        req: Request<proto::ExportBankRequest>,
    ) -> Result<Response<Self::ExportBankStream>, Status> {
        let name = req.into_inner().bank;
        // Fail fast (as a status, before the stream starts) when the bank does not exist.
        self.0.banks.kind(&name).map_err(|e| error_status(&e))?;
        let (tx, rx) = mpsc::channel(1024);
        let shared = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let result = shared.banks.export(&name, |e| {
                let entry = proto::BankEntry {
                    id: e.id,
                    hash: e.hash.to_hex(),
                    label: e.label.unwrap_or_default(),
                    added_ms: e.added_ms,
                };
                tx.blocking_send(Ok(entry)).map_err(|_| Error::InvalidInput("the client went away".into()))
            });
            if let Err(e) = &result {
                let _ = tx.blocking_send(Err(error_status(e)));
            }
            let status = result.as_ref().err().map(error_status);
            shared.record("ExportBank", start, status.as_ref());
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(method = "DeleteBank"))]
    async fn delete_bank(
        &self,
        req: Request<proto::DeleteBankRequest>,
    ) -> Result<Response<proto::DeleteBankResponse>, Status> {
        let name = req.into_inner().name;
        let logged = name.clone();
        self.blocking("DeleteBank", move |s| s.banks.delete(&name)).await?;
        tracing::info!(bank = %logged, "bank deleted");
        Ok(Response::new(proto::DeleteBankResponse {}))
    }
}
