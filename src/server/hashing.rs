//! The `Hasher` and `Matcher` services: images in, hashes (and matches) out.
//!
//! Streams keep request order: each stream reads requests while it has fewer than
//! `max_in_flight_per_stream` unanswered, submits each to the shared batcher at once (so items of one
//! stream are decoded and hashed in parallel, and batched with other streams' items), and writes the
//! responses in the order the requests came. A bad item gets an in-band `Error`; the stream goes on.
//! When the client reads slowly, the response channel fills, the stream stops reading, and HTTP/2 flow
//! control pushes back on the client: memory stays bounded.

use super::auth::{caller_of, Caller};
use super::proto::{self, hash_and_match_response, hash_response};
use super::{deadline_of, error_status, in_band, pipeline_status, Shared};
use crate::banks::{BankHit, BankQuery};
use crate::engine::HashOptions;
use crate::hash::pdq::Dihedral;
use crate::hash::HashRecord;
use crate::image::DecodeOptions;
use crate::matcher::AnyHash;
use crate::pipeline::{Job, Source};
use futures_util::stream::{FuturesOrdered, StreamExt as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What a request asks to compute besides the PDQ and pHash every answer carries.
#[derive(Clone, Copy)]
pub(super) struct What {
    pub(super) dihedral: bool,
    pub(super) exif: bool,
    pub(super) exact: bool,
}

impl What {
    fn of(r: &proto::HashRequest) -> What {
        What { dihedral: r.dihedral, exif: r.exif_orientation, exact: r.exact }
    }
}

/// The `Hasher` service.
pub(crate) struct HasherService(pub(crate) Arc<Shared>);

/// The `Matcher` service.
pub(crate) struct MatcherService(pub(crate) Arc<Shared>);

type ResponseStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

impl Shared {
    fn job(&self, image: bytes::Bytes, what: What, deadline: Option<Instant>) -> Job {
        Job {
            source: Source::Bytes(image),
            opts: HashOptions {
                decode: DecodeOptions { limits: self.cfg.limits(), exif_orientation: what.exif },
                dihedral: what.dihedral,
                exact: what.exact,
            },
            deadline,
        }
    }

    /// Hashes one image through the shared batcher, within the caller's quotas (one request, and one of
    /// its image slots until the hash is done).
    pub(super) async fn hash_one(
        &self,
        image: bytes::Bytes,
        what: What,
        deadline: Option<Instant>,
        caller: &Caller,
    ) -> Result<HashRecord, Status> {
        if image.is_empty() {
            return Err(Status::invalid_argument("the image field is empty"));
        }
        let _slot = caller.admit_image(&self.metrics)?;
        self.pipeline.hash(self.job(image, what, deadline)).await.0.map_err(pipeline_status)
    }

    /// The banks a caller's query searches: `None` when there is nothing it may search (a restricted
    /// caller whose granted banks do not exist), else the list for [`crate::banks::BankSet::search`]
    /// (empty: every bank).
    pub(super) fn targets(&self, caller: &Caller, named: Vec<String>) -> Result<Option<Vec<String>>, Status> {
        let explicit = !named.is_empty();
        let banks = caller.banks_to_search(named)?;
        if explicit || caller.granted_banks().is_none() {
            return Ok(Some(banks));
        }
        let existing: Vec<String> = banks.into_iter().filter(|b| self.banks.kind(b).is_ok()).collect();
        Ok((!existing.is_empty()).then_some(existing))
    }

    /// Hashes and matches one image: the work of one `HashAndMatch` item.
    async fn hash_and_match(
        self: Arc<Self>,
        r: proto::HashAndMatchRequest,
        deadline: Option<Instant>,
        caller: Arc<Caller>,
    ) -> Result<proto::HashAndMatchResult, Status> {
        let targets = self.targets(&caller, r.banks)?;
        // The file digests are computed when asked for, or when a bank searched needs them.
        let exact = r.exact || targets.as_ref().is_some_and(|t| self.banks.needs_digests(t));
        let what = What { dihedral: r.dihedral, exif: r.exif_orientation, exact };
        let rec = self.hash_one(r.image, what, deadline, &caller).await?;
        let hashes = Some(hashes_of(&rec));
        if let Some(min) = r.min_quality.filter(|&m| rec.pdq.quality < m) {
            let skipped = format!("quality {} is below min_quality {min}: not matched", rec.pdq.quality);
            return Ok(proto::HashAndMatchResult {
                hashes,
                matches: Vec::new(),
                skipped,
                truncated: false,
                suppressed: Vec::new(),
            });
        }
        let mut hashes_q = vec![AnyHash::Pdq(rec.pdq.hash), AnyHash::Phash(rec.phash)];
        if let Some(d) = &rec.dihedral {
            hashes_q.extend(d.named().iter().map(|(_, h)| AnyHash::Pdq(*h)));
        }
        if let Some(e) = &rec.exact {
            hashes_q.extend([AnyHash::Md5(e.md5), AnyHash::Sha1(e.sha1), AnyHash::Sha256(e.sha256)]);
        }
        let request_id = (!r.id.is_empty()).then(|| r.id.clone());
        let query = BankQuery {
            hashes: hashes_q,
            quality: Some(rec.pdq.quality),
            request_id,
            caller: caller.name().map(str::to_string),
        };
        let found = self.match_blocking(targets, query, r.radius, &caller).await?;
        Ok(proto::HashAndMatchResult {
            hashes,
            matches: found.matches,
            skipped: String::new(),
            truncated: found.truncated,
            suppressed: found.suppressed,
        })
    }

    /// Runs a bank search on the blocking pool (it reads labels from the store) and converts the hits for
    /// the caller: a bank's hashes only to callers that may read that bank, a suppressing negative entry
    /// only to callers granted its bank.
    async fn match_blocking(
        self: Arc<Self>,
        banks: Option<Vec<String>>,
        query: BankQuery,
        radius: Option<u32>,
        caller: &Caller,
    ) -> Result<proto::MatchResponse, Status> {
        let Some(banks) = banks else {
            return Ok(proto::MatchResponse::default());
        };
        let start = Instant::now();
        let shared = self.clone();
        let found = tokio::task::spawn_blocking(move || shared.banks.search(&banks, &query, radius))
            .await
            .map_err(|e| Status::internal(format!("match task failed: {e}")))?
            .map_err(|e| error_status(&e))?;
        self.metrics.stage_seconds.with_label_values(&["match"]).observe(start.elapsed().as_secs_f64());
        Ok(proto::MatchResponse {
            id: String::new(),
            matches: found.hits.into_iter().map(|h| match_to_proto(h, caller)).collect(),
            truncated: found.truncated,
            suppressed: found
                .suppressed
                .into_iter()
                .map(|s| {
                    let by = caller.may_use(&s.by.bank).then_some(s.by);
                    proto::Suppressed {
                        by_id: by.as_ref().map_or(0, |b| b.id),
                        by_external_id: by.as_ref().and_then(|b| b.external_id.clone()).unwrap_or_default(),
                        by_bank: by.map(|b| b.bank).unwrap_or_default(),
                        r#match: Some(match_to_proto(s.hit, caller)),
                    }
                })
                .collect(),
        })
    }
}

/// The wire form of a hit, for a caller: the entry's hash only when the caller may read its bank.
fn match_to_proto(h: BankHit, caller: &Caller) -> proto::Match {
    let hash = if caller.may_read(&h.bank) { h.hash.to_hex() } else { String::new() };
    proto::Match {
        hash,
        bank: h.bank,
        id: h.id,
        distance: h.distance,
        label: h.label.unwrap_or_default(),
        external_id: h.external_id.unwrap_or_default(),
        tags: h.tags,
    }
}

/// The wire form of a hash record.
pub(crate) fn hashes_of(rec: &HashRecord) -> proto::Hashes {
    proto::Hashes {
        pdq: rec.pdq.hash.to_bytes().to_vec(),
        pdq_hex: rec.pdq.hash.to_hex(),
        quality: rec.pdq.quality,
        phash: rec.phash.0.to_be_bytes().to_vec(),
        phash_hex: rec.phash.to_hex(),
        width: rec.width,
        height: rec.height,
        dihedral: rec.dihedral.as_ref().map(dihedral_of),
        md5: rec.exact.map(|e| e.md5_hex()).unwrap_or_default(),
        sha1: rec.exact.map(|e| e.sha1_hex()).unwrap_or_default(),
        sha256: rec.exact.map(|e| e.sha256_hex()).unwrap_or_default(),
    }
}

fn dihedral_of(d: &Dihedral) -> proto::Dihedral {
    proto::Dihedral {
        rot90: d.rot90.to_hex(),
        rot180: d.rot180.to_hex(),
        rot270: d.rot270.to_hex(),
        flipx: d.flipx.to_hex(),
        flipy: d.flipy.to_hex(),
        flipplus1: d.flipplus1.to_hex(),
        flipminus1: d.flipminus1.to_hex(),
    }
}

/// Runs one stream: reads requests (at most `max_in_flight_per_stream` unanswered), starts `work` on each
/// at once, and writes the responses in request order. Stops reading at shutdown and answers what it read.
/// A transport error on the inbound side (a malformed or oversized message, a reset) ends the stream after
/// the responses already owed, with that error's status.
fn ordered_stream<Req, Resp, F, Fut>(
    shared: Arc<Shared>,
    mut inbound: Streaming<Req>,
    work: F,
) -> ResponseStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Req) -> Fut + Send + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    let per_stream = shared.cfg.max_in_flight_per_stream;
    let (tx, rx) = mpsc::channel(per_stream);
    let mut stopping = shared.stopping.clone();
    tokio::spawn(async move {
        let mut pending = FuturesOrdered::new();
        let mut reading = !*stopping.borrow_and_update();
        let mut failure = None;
        loop {
            tokio::select! {
                biased;
                Some(resp) = pending.next(), if !pending.is_empty() => {
                    if tx.send(Ok(resp)).await.is_err() {
                        return; // the client went away; dropping `pending` cancels its items
                    }
                }
                _ = stopping.changed(), if reading => reading = false,
                msg = inbound.message(), if reading && pending.len() < per_stream => match msg {
                    Ok(Some(req)) => pending.push_back(work(req)),
                    Ok(None) => reading = false,
                    Err(status) => {
                        reading = false;
                        failure = Some(status);
                    }
                },
                else => break,
            }
        }
        if let Some(status) = failure {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl proto::hasher_server::Hasher for HasherService {
    #[tracing::instrument(level = "debug", skip_all, fields(method = "Hash"))]
    async fn hash(&self, req: Request<proto::HashRequest>) -> Result<Response<proto::HashResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(&req);
        let caller = caller_of(&req);
        let r = req.into_inner();
        let what = What::of(&r);
        let result = self.0.hash_one(r.image, what, deadline, &caller).await;
        self.0.record("Hash", start, result.as_ref().err());
        let hashes = result?;
        Ok(Response::new(proto::HashResponse {
            id: r.id,
            outcome: Some(hash_response::Outcome::Hashes(hashes_of(&hashes))),
        }))
    }

    type HashStreamStream = ResponseStream<proto::HashResponse>;

    #[tracing::instrument(level = "debug", skip_all, fields(method = "HashStream"))]
    async fn hash_stream(
        &self,
        req: Request<Streaming<proto::HashRequest>>,
    ) -> Result<Response<Self::HashStreamStream>, Status> {
        let deadline = deadline_of(&req);
        let caller = caller_of(&req);
        let shared = self.0.clone();
        let work = move |r: proto::HashRequest| {
            let (shared, caller) = (shared.clone(), caller.clone());
            async move {
                let start = Instant::now();
                let what = What::of(&r);
                let result = shared.hash_one(r.image, what, deadline, &caller).await;
                shared.record("HashStream", start, result.as_ref().err());
                let outcome = match result {
                    Ok(rec) => hash_response::Outcome::Hashes(hashes_of(&rec)),
                    Err(s) => hash_response::Outcome::Error(in_band(&s)),
                };
                proto::HashResponse { id: r.id, outcome: Some(outcome) }
            }
        };
        Ok(Response::new(ordered_stream(self.0.clone(), req.into_inner(), work)))
    }
}

#[tonic::async_trait]
impl proto::matcher_server::Matcher for MatcherService {
    #[tracing::instrument(level = "debug", skip_all, fields(method = "Match"))]
    async fn r#match(
        &self,
        req: Request<proto::MatchRequest>,
    ) -> Result<Response<proto::MatchResponse>, Status> {
        let start = Instant::now();
        let caller = caller_of(&req);
        let r = req.into_inner();
        let result = async {
            let targets = self.0.targets(&caller, r.banks.clone())?;
            let kind = super::banks::kind_from_proto(r.kind, true)?;
            let parse = |s: &str| match kind {
                Some(k) => AnyHash::parse(k, s.trim()),
                None => AnyHash::from_hex(s.trim()),
            };
            let mut query = vec![parse(&r.hash).map_err(|e| error_status(&e))?];
            for v in &r.variants {
                let h = parse(v).map_err(|e| error_status(&e))?;
                if h.kind() != query[0].kind() {
                    return Err(Status::invalid_argument(format!(
                        "variant '{v}' is a {} hash; the query is a {} hash",
                        h.kind(),
                        query[0].kind()
                    )));
                }
                query.push(h);
            }
            let request_id = (!r.id.is_empty()).then(|| r.id.clone());
            let caller_name = caller.name().map(str::to_string);
            let query = BankQuery { hashes: query, quality: r.quality, request_id, caller: caller_name };
            self.0.clone().match_blocking(targets, query, r.radius, &caller).await
        }
        .await;
        self.0.record("Match", start, result.as_ref().err());
        Ok(Response::new(proto::MatchResponse { id: r.id, ..result? }))
    }

    type HashAndMatchStream = ResponseStream<proto::HashAndMatchResponse>;

    #[tracing::instrument(level = "debug", skip_all, fields(method = "HashAndMatch"))]
    async fn hash_and_match(
        &self,
        req: Request<Streaming<proto::HashAndMatchRequest>>,
    ) -> Result<Response<Self::HashAndMatchStream>, Status> {
        let deadline = deadline_of(&req);
        let caller = caller_of(&req);
        let shared = self.0.clone();
        let work = move |r: proto::HashAndMatchRequest| {
            let (shared, caller) = (shared.clone(), caller.clone());
            async move {
                let start = Instant::now();
                let id = r.id.clone();
                let result = shared.clone().hash_and_match(r, deadline, caller).await;
                shared.record("HashAndMatch", start, result.as_ref().err());
                let outcome = match result {
                    Ok(res) => hash_and_match_response::Outcome::Result(res),
                    Err(s) => hash_and_match_response::Outcome::Error(in_band(&s)),
                };
                proto::HashAndMatchResponse { id, outcome: Some(outcome) }
            }
        };
        Ok(Response::new(ordered_stream(self.0.clone(), req.into_inner(), work)))
    }
}
