//! The pipeline's threads: decode workers (which also hash on the CPU backend) and the batcher thread
//! (GPU backend), each guarded so that a panic fails only the items it was working on.

use super::{Hooks, Inner, Outcome, Permit, PipelineConfig, PipelineError, Source, Timings};
use crate::engine::Engine;
use crate::error::Error;
use crate::hash::exact::ExactHashes;
use crate::hash::HashRecord;
use crate::image::{decode, Decoded};
use crate::metrics::Metrics;
use crate::pixels::ImageView;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A decoded job waiting for its batch.
pub(super) struct Ready {
    pixels: Decoded,
    dihedral: bool,
    /// The file's exact hashes, computed on the decode worker (which had the bytes), when asked for.
    exact: Option<ExactHashes>,
    deadline: Option<Instant>,
    timings: Timings,
    decoded_at: Instant,
    permit: Permit,
    reply: oneshot::Sender<Outcome>,
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// The text of a panic's payload, for the log.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// What a decode worker did with a job.
enum Step {
    /// Decoded; the batcher hashes it (GPU backend, an image the device can take).
    Decoded(Decoded, Option<ExactHashes>),
    /// Decoded and hashed here (CPU backend; on the GPU backend an image too large for the device, or any
    /// image once the device is lost), with the hashing time (boxed: a record with its dihedral
    /// variants is ~300 bytes).
    Hashed(Box<HashRecord>, Duration),
    /// Its deadline passed between decoding and hashing.
    Expired,
}

/// Reads a file, refusing (before reading) one larger than the byte limit.
fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Error> {
    let cannot = |e: std::io::Error| Error::InvalidInput(format!("cannot read: {e}"));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if meta.is_dir() {
        return Err(Error::InvalidInput("is a directory".into()));
    }
    if meta.len() > max_bytes {
        return Err(Error::TooLarge {
            what: crate::error::Limit::Bytes,
            value: meta.len(),
            limit: max_bytes,
        });
    }
    std::fs::read(path).map_err(cannot)
}

/// On a decode worker: bytes → pixels, then either hashed here (CPU) or sent to the batcher (GPU).
pub(super) fn decode_job(
    job: super::Job,
    admitted: Instant,
    mut permit: Permit,
    reply: oneshot::Sender<Outcome>,
    tx: Sender<Ready>,
) {
    let start = Instant::now();
    let mut timings = Timings { queue: start - admitted, ..Timings::default() };
    if expired(job.deadline) || reply.is_closed() {
        drop(permit);
        let _ = reply.send((Err(PipelineError::DeadlineExceeded), timings));
        return;
    }
    let inner = permit.inner.clone();
    let (opts, deadline) = (job.opts, job.deadline);
    // Everything that runs third-party or numeric code is under this guard: a panic fails this item only.
    let step = catch_unwind(AssertUnwindSafe(|| -> Result<Step, Error> {
        let _span = tracing::debug_span!("decode").entered();
        if take_one(&inner.hooks.decode_panics) {
            panic!("injected decoder panic (test hook)");
        }
        let read;
        let bytes: &[u8] = match &job.source {
            Source::Bytes(b) => b,
            Source::File(p) => {
                read = read_limited(p, opts.decode.limits.max_bytes)?;
                &read
            }
        };
        let decoded = decode(bytes, &opts.decode)?;
        // From the bytes in hand, before they are dropped (no second read), and only for a decodable input.
        let exact = opts.exact.then(|| ExactHashes::of(bytes));
        if inner.engine.batches_image(&decoded.view()) {
            return Ok(Step::Decoded(decoded, exact));
        }
        if expired(deadline) {
            return Ok(Step::Expired);
        }
        let hash_start = Instant::now();
        let _span = tracing::debug_span!("hash", images = 1, backend = "cpu").entered();
        let rec = HashRecord { exact, ..crate::engine::hash_pixels(decoded.view(), opts.dihedral) };
        Ok(Step::Hashed(Box::new(rec), hash_start.elapsed()))
    }));
    drop(job);
    let metrics = inner.metrics.clone();
    let step = match step {
        Ok(Ok(step)) => step,
        Ok(Err(e)) => {
            timings.decode = start.elapsed();
            drop(permit);
            let _ = reply.send((Err(PipelineError::Failed(e)), timings));
            return;
        }
        Err(payload) => {
            metrics.panics.with_label_values(&["decode"]).inc();
            tracing::error!(panic = panic_text(&*payload), "a decoder or hasher panicked; the item fails");
            drop(permit);
            let e = Error::Internal("decoding or hashing this image failed unexpectedly (logged)".into());
            let _ = reply.send((Err(PipelineError::Failed(e)), timings));
            return;
        }
    };
    match step {
        Step::Expired => {
            timings.decode = start.elapsed();
            drop(permit);
            let _ = reply.send((Err(PipelineError::DeadlineExceeded), timings));
        }
        Step::Hashed(rec, hash) => {
            timings.decode = start.elapsed() - hash;
            timings.hash = hash;
            timings.batch_size = 1;
            metrics.batch_size.observe(1.0);
            metrics.images_hashed.with_label_values(&["cpu"]).inc();
            answer(&metrics, None, permit, reply, *rec, timings);
        }
        Step::Decoded(pixels, exact) => {
            timings.decode = start.elapsed();
            let size = pixels.view().bytes().len() as u64;
            inner.decoded.acquire(size);
            permit.decoded = size;
            let ready = Ready {
                pixels,
                dihedral: opts.dihedral,
                exact,
                deadline,
                timings,
                decoded_at: Instant::now(),
                permit,
                reply,
            };
            if let Err(crossbeam_channel::SendError(r)) = tx.send(ready) {
                let Ready { permit, reply, timings, .. } = r;
                drop(permit);
                let _ = reply.send((Err(PipelineError::ShuttingDown), timings));
            }
        }
    }
}

/// Decrements a test-hook counter; true when it was positive.
fn take_one(n: &std::sync::atomic::AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// What the batcher thread needs. It holds no reference to the pipeline itself, so dropping the last
/// [`super::Pipeline`] lets the thread end once the decoders are done.
#[derive(Clone)]
pub(super) struct BatcherCtx {
    rx: Receiver<Ready>,
    engine: Engine,
    cfg: PipelineConfig,
    metrics: Arc<Metrics>,
    health: Arc<watch::Sender<bool>>,
    hooks: Arc<Hooks>,
}

impl BatcherCtx {
    pub(super) fn of(inner: &Inner) -> BatcherCtx {
        BatcherCtx {
            rx: inner.from_decoders.clone(),
            engine: inner.engine.clone(),
            cfg: inner.cfg.clone(),
            metrics: inner.metrics.clone(),
            health: inner.health.clone(),
            hooks: inner.hooks.clone(),
        }
    }
}

/// Restarts the batcher thread if it dies; disarmed when the loop ends normally.
struct DeathWatch {
    ctx: Option<BatcherCtx>,
    deaths: u32,
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        let Some(ctx) = self.ctx.take() else { return };
        // The thread is unwinding from a panic outside the per-batch guard: the items of the batch it held
        // were answered INTERNAL (their replies dropped). Say so, and start a new thread on the same queue.
        ctx.health.send_replace(false);
        ctx.metrics.pipeline_restarts.inc();
        let deaths = self.deaths + 1;
        tracing::error!(deaths, "the batcher thread died; health is NOT_SERVING until it is restarted");
        if let Err(e) = spawn_batcher(ctx, deaths) {
            tracing::error!(
                "cannot restart the batcher thread ({e}); exiting so that a supervisor restarts us"
            );
            std::process::exit(70);
        }
    }
}

/// Starts a batcher thread; after a death, it first waits a back-off (100 ms, doubling, at most 5 s).
pub(super) fn spawn_batcher(ctx: BatcherCtx, deaths: u32) -> crate::Result<()> {
    std::thread::Builder::new()
        .name("pharos-batcher".into())
        .spawn(move || {
            if deaths > 0 {
                std::thread::sleep(Duration::from_millis(100 << deaths.min(6)).min(Duration::from_secs(5)));
                ctx.health.send_replace(true);
                tracing::info!("batcher thread restarted; health is SERVING again");
            }
            let mut watch = DeathWatch { ctx: Some(ctx.clone()), deaths };
            batch_loop(&ctx);
            watch.ctx = None;
        })
        .map(drop)
        .map_err(Error::Io)
}

/// The batcher thread: collect, hash, answer; returns when every sender is gone.
fn batch_loop(ctx: &BatcherCtx) {
    let mut batch: Vec<Ready> = Vec::with_capacity(ctx.cfg.max_batch);
    let mut fallbacks = ctx.engine.fallbacks();
    while let Ok(first) = ctx.rx.recv() {
        batch.push(first);
        if ctx.hooks.kill_batcher.swap(false, Ordering::SeqCst) {
            panic!("injected batcher death (test hook)");
        }
        let flush_at = Instant::now() + ctx.cfg.max_delay;
        while batch.len() < ctx.cfg.max_batch {
            match ctx.rx.recv_deadline(flush_at) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // Jobs nobody waits for any more are answered (for the record) and not hashed.
        let (live, dead): (Vec<Ready>, Vec<Ready>) =
            batch.drain(..).partition(|r| !expired(r.deadline) && !r.reply.is_closed());
        for Ready { permit, reply, timings, .. } in dead {
            drop(permit);
            let _ = reply.send((Err(PipelineError::DeadlineExceeded), timings));
        }
        if live.is_empty() {
            continue;
        }
        hash_live(ctx, live);
        let now = ctx.engine.fallbacks();
        ctx.metrics.gpu_fallbacks.inc_by(now - fallbacks);
        fallbacks = now;
    }
}

/// Hashes one batch on the engine and answers its jobs; a panic fails this batch's items only.
fn hash_live(ctx: &BatcherCtx, live: Vec<Ready>) {
    let start = Instant::now();
    let dihedral = live.iter().any(|r| r.dihedral);
    let backend = ctx.engine.backend().name();
    let records = catch_unwind(AssertUnwindSafe(|| {
        let _span = tracing::debug_span!("hash", images = live.len(), backend).entered();
        let views: Vec<ImageView<'_>> = live.iter().map(|r| r.pixels.view()).collect();
        ctx.engine.hash_batch(&views, dihedral)
    }));
    let records = match records {
        Ok(r) => r,
        Err(payload) => {
            ctx.metrics.panics.with_label_values(&["batch"]).inc();
            tracing::error!(panic = panic_text(&*payload), images = live.len(), "hashing a batch panicked");
            for Ready { permit, reply, timings, .. } in live {
                drop(permit);
                let e = Error::Internal("hashing this image's batch failed unexpectedly (logged)".into());
                let _ = reply.send((Err(PipelineError::Failed(e)), timings));
            }
            return;
        }
    };
    let hash = start.elapsed();
    let n = live.len();
    ctx.metrics.batch_size.observe(n as f64);
    ctx.metrics.images_hashed.with_label_values(&[backend]).inc_by(n as u64);
    for (r, mut rec) in live.into_iter().zip(records) {
        if !r.dihedral {
            rec.dihedral = None;
        }
        rec.exact = r.exact;
        let timings = Timings { batch_wait: start - r.decoded_at, hash, batch_size: n, ..r.timings };
        let Ready { pixels, permit, reply, .. } = r;
        answer(&ctx.metrics, Some(pixels), permit, reply, rec, timings);
    }
}

/// Records a hashed job's stage times, frees its pixels and permit, then wakes its caller.
fn answer(
    metrics: &Metrics,
    pixels: Option<Decoded>,
    permit: Permit,
    reply: oneshot::Sender<Outcome>,
    rec: HashRecord,
    timings: Timings,
) {
    let stage = &metrics.stage_seconds;
    stage.with_label_values(&["queue"]).observe(timings.queue.as_secs_f64());
    stage.with_label_values(&["decode"]).observe(timings.decode.as_secs_f64());
    stage.with_label_values(&["batch_wait"]).observe(timings.batch_wait.as_secs_f64());
    stage.with_label_values(&["hash"]).observe(timings.hash.as_secs_f64());
    // Free the pixels (and the in-flight slot) before waking the caller.
    drop(pixels);
    drop(permit);
    let _ = reply.send((Ok(rec), timings));
}
