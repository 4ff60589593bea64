//! The pipeline's threads: decode workers (which also hash on the CPU backend) and the batcher thread
//! (GPU backend), each guarded so that a panic fails only the items it was working on.

use super::staged::Batch;
use super::{Hooks, Inner, Outcome, Permit, PipelineConfig, PipelineError, Source, Timings};
use crate::engine::{Engine, GpuEngine, Submitted};
use crate::error::Error;
use crate::hash::exact::ExactHashes;
use crate::hash::HashRecord;
use crate::image::{decode, Decoded};
use crate::metrics::Metrics;
use crate::pixels::ImageView;
use crossbeam_channel::{Receiver, Sender};
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
    tx: Sender<Arc<Batch>>,
) {
    let start = Instant::now();
    let mut timings = Timings { queue: start - admitted, ..Timings::default() };
    if expired(job.deadline) || reply.is_closed() {
        refuse(permit, reply, timings, PipelineError::DeadlineExceeded);
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
            refuse(permit, reply, timings, PipelineError::Failed(e));
            return;
        }
        Err(payload) => {
            metrics.panics.with_label_values(&["decode"]).inc();
            tracing::error!(panic = panic_text(&*payload), "a decoder or hasher panicked; the item fails");
            refuse(
                permit,
                reply,
                timings,
                internal("decoding or hashing this image failed unexpectedly (logged)"),
            );
            return;
        }
    };
    match step {
        Step::Expired => {
            timings.decode = start.elapsed();
            refuse(permit, reply, timings, PipelineError::DeadlineExceeded);
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
            let Some(gpu) = inner.engine.gpu() else { unreachable!("only the GPU backend batches images") };
            if let Some(ready) = stage(&inner, gpu, ready, &tx) {
                // No room on the GPU now (device lost, or no upload buffer came back in time): here.
                hash_here(&metrics, ready);
            }
        }
    }
}

/// Copies a decoded image into the open GPU batch (opening one when there is none or it is closed) and
/// leaves its job there (`None`); gives the job back when the GPU cannot take it now.
fn stage(inner: &Inner, gpu: &GpuEngine, ready: Ready, tx: &Sender<Arc<Batch>>) -> Option<Ready> {
    // A fresh batch always takes an image the engine agreed to batch; a few attempts cover the races where
    // other workers fill each new batch first.
    for _ in 0..8 {
        let batch = {
            let mut open = inner.open.lock();
            match open.as_ref() {
                Some(b) if !b.is_closed() => b.clone(),
                _ => {
                    let Some(staging) = gpu.staging() else { return Some(ready) };
                    let batch = Arc::new(Batch::new(staging));
                    if tx.send(batch.clone()).is_err() {
                        return Some(ready);
                    }
                    *open = Some(batch.clone());
                    batch
                }
            }
        };
        let view = ready.pixels.view();
        let Some(room) = batch.reserve(&view, &inner.cfg) else { continue };
        if take_one(&inner.hooks.copy_panics) {
            panic!("injected panic while copying pixels into a GPU batch (test hook)");
        }
        match room.write(&view) {
            Ok(()) => {
                inner.metrics.gpu_staged_bytes.inc_by(view.bytes().len() as u64);
                inner.metrics.gpu_staged_images.inc();
                room.add(ready);
                return None;
            }
            Err(e) => {
                drop(room);
                tracing::warn!("copying pixels for the GPU failed ({e}); hashing on the CPU");
                return Some(ready);
            }
        }
    }
    Some(ready)
}

/// Hashes a decoded job on this thread (CPU) and answers it.
fn hash_here(metrics: &Arc<Metrics>, ready: Ready) {
    if expired(ready.deadline) {
        let Ready { permit, reply, timings, .. } = ready;
        refuse(permit, reply, timings, PipelineError::DeadlineExceeded);
        return;
    }
    let hash_start = Instant::now();
    let rec = catch_unwind(AssertUnwindSafe(|| {
        let _span = tracing::debug_span!("hash", images = 1, backend = "cpu").entered();
        crate::engine::hash_pixels(ready.pixels.view(), ready.dihedral)
    }));
    let Ready { pixels, exact, permit, reply, mut timings, .. } = ready;
    match rec {
        Ok(rec) => {
            timings.hash = hash_start.elapsed();
            timings.batch_size = 1;
            metrics.batch_size.observe(1.0);
            metrics.images_hashed.with_label_values(&["cpu"]).inc();
            answer(metrics, Some(pixels), permit, reply, HashRecord { exact, ..rec }, timings);
        }
        Err(payload) => {
            metrics.panics.with_label_values(&["decode"]).inc();
            tracing::error!(panic = panic_text(&*payload), "a hasher panicked; the item fails");
            refuse(permit, reply, timings, internal("hashing this image failed unexpectedly (logged)"));
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
    rx: Receiver<Arc<Batch>>,
    engine: Engine,
    cfg: PipelineConfig,
    metrics: Arc<Metrics>,
    health: Arc<watch::Sender<bool>>,
    hooks: Arc<Hooks>,
    /// Held by every batcher thread and dropped last, after its handle on the engine: when all are
    /// gone, [`super::Pipeline::shutdown`] knows that no thread of the pipeline still touches the GPU.
    #[expect(dead_code, reason = "held, not read: its drop is the signal")]
    alive: Sender<std::convert::Infallible>,
}

impl BatcherCtx {
    pub(super) fn of(inner: &Inner, alive: Sender<std::convert::Infallible>) -> BatcherCtx {
        BatcherCtx {
            rx: inner.from_decoders.clone(),
            engine: inner.engine.clone(),
            cfg: inner.cfg.clone(),
            metrics: inner.metrics.clone(),
            health: inner.health.clone(),
            hooks: inner.hooks.clone(),
            alive,
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
        // Counted first, so that whoever sees NOT_SERVING also sees the restart counted.
        ctx.metrics.pipeline_restarts.inc();
        ctx.health.send_replace(false);
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
                while ctx.hooks.hold_restart.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
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

/// The batcher thread: seals each batch as it closes (or its delay passes), submits it to the GPU and hands
/// it to the completion thread, which waits for it while the next batches are filled and submitted.
/// Returns when every sender is gone and every batch is answered.
fn batch_loop(ctx: &BatcherCtx) {
    let Some(gpu) = ctx.engine.gpu().cloned() else {
        // The CPU backend hashes on the decode workers; nothing ever comes here.
        while ctx.rx.recv().is_ok() {}
        return;
    };
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Done>(crate::gpu::MAX_IN_FLIGHT);
    std::thread::scope(|scope| {
        let completer = std::thread::Builder::new()
            .name("pharos-gpu-complete".into())
            .spawn_scoped(scope, || complete_loop(ctx, &gpu, done_rx));
        if let Err(e) = completer {
            tracing::error!("cannot start the GPU completion thread ({e}); the batcher restarts");
            panic!("no GPU completion thread");
        }
        while let Ok(batch) = ctx.rx.recv() {
            // If this thread dies before the batch is handed on, its jobs are failed, not left waiting.
            let held = Held(Some(batch));
            if ctx.hooks.kill_batcher.swap(false, Ordering::SeqCst) {
                // Dies holding a job, as the hook promises: without the wait, a thread quicker than the
                // decode worker would close the batch still empty, and the job would go to the next one.
                held.batch().wait_for_a_reservation(Duration::from_secs(10));
                panic!("injected batcher death (test hook)");
            }
            let items = held.batch().seal(ctx.cfg.max_delay);
            // Jobs nobody waits for any more are answered (for the record) and not hashed.
            let (live, dead): (Vec<Placed>, Vec<Placed>) =
                items.into_iter().partition(|(r, _)| !expired(r.deadline) && !r.reply.is_closed());
            for (Ready { permit, reply, timings, .. }, _) in dead {
                refuse(permit, reply, timings, PipelineError::DeadlineExceeded);
            }
            let batch = held.release();
            if live.is_empty() {
                continue;
            }
            let start = Instant::now();
            let dihedral = live.iter().any(|(r, _)| r.dihedral);
            let (live, offsets): (Vec<Ready>, Vec<u64>) = live.into_iter().unzip();
            let submitted = {
                let _span = tracing::debug_span!("submit", images = live.len()).entered();
                let views: Vec<ImageView<'_>> = live.iter().map(|r| r.pixels.view()).collect();
                gpu.submit(&batch.staging, &views, &offsets, dihedral)
            };
            let in_flight = submitted.in_flight();
            if in_flight > 0 {
                ctx.metrics.gpu_batches_in_flight.observe(in_flight as f64);
            }
            tracing::debug!(images = live.len(), in_flight, "GPU batch submitted");
            if done_tx.send(Done { batch, live, submitted, start, dihedral }).is_err() {
                panic!("the GPU completion thread is gone");
            }
        }
        drop(done_tx);
    });
}

/// A batch the batcher thread has taken from the queue. Dropped while the thread unwinds from a panic, it
/// closes the batch and answers every job in it `INTERNAL`, so that no caller waits for a batch nobody
/// will submit.
struct Held(Option<Arc<Batch>>);

impl Held {
    fn batch(&self) -> &Batch {
        self.0.as_ref().expect("held until released")
    }

    fn release(mut self) -> Arc<Batch> {
        self.0.take().expect("held until released")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(batch) = self.0.take() else { return };
        for (Ready { permit, reply, timings, .. }, _) in batch.seal(Duration::ZERO) {
            refuse(
                permit,
                reply,
                timings,
                internal("the batcher thread failed while holding this image's batch (logged)"),
            );
        }
    }
}

/// A job and the byte offset of its pixels in its batch's upload buffer.
type Placed = (Ready, u64);

/// A submitted batch on its way to the completion thread.
struct Done {
    /// Owns the upload buffer until the submission is complete.
    #[expect(dead_code, reason = "held, not read: keeps the batch's upload buffer alive while in flight")]
    batch: Arc<Batch>,
    live: Vec<Ready>,
    submitted: Submitted,
    start: Instant,
    dihedral: bool,
}

/// The completion thread: waits for each submitted batch in order and answers its jobs (a batch the GPU
/// failed is recomputed on the CPU by the engine).
fn complete_loop(ctx: &BatcherCtx, gpu: &GpuEngine, rx: Receiver<Done>) {
    let (mut fallbacks, mut rechecks, mut mismatches) =
        (gpu.fallbacks(), gpu.rechecks(), gpu.recheck_mismatches());
    for done in rx {
        let Done { live, submitted, start, dihedral, .. } = done;
        let records = catch_unwind(AssertUnwindSafe(|| {
            let _span = tracing::debug_span!("hash", images = live.len(), backend = "gpu").entered();
            let views: Vec<ImageView<'_>> = live.iter().map(|r| r.pixels.view()).collect();
            gpu.complete(submitted, &views, dihedral)
        }));
        answer_batch(ctx, live, records, start);
        let now = (gpu.fallbacks(), gpu.rechecks(), gpu.recheck_mismatches());
        ctx.metrics.gpu_fallbacks.inc_by(now.0 - fallbacks);
        ctx.metrics.gpu_rechecks.inc_by(now.1 - rechecks);
        ctx.metrics.gpu_recheck_mismatches.inc_by(now.2 - mismatches);
        (fallbacks, rechecks, mismatches) = now;
    }
}

/// Answers one batch's jobs with its records, or fails them all when hashing the batch panicked.
fn answer_batch(
    ctx: &BatcherCtx,
    live: Vec<Ready>,
    records: std::thread::Result<Vec<HashRecord>>,
    start: Instant,
) {
    let records = match records {
        Ok(r) => r,
        Err(payload) => {
            ctx.metrics.panics.with_label_values(&["batch"]).inc();
            tracing::error!(panic = panic_text(&*payload), images = live.len(), "hashing a batch panicked");
            for Ready { permit, reply, timings, .. } in live {
                refuse(
                    permit,
                    reply,
                    timings,
                    internal("hashing this image's batch failed unexpectedly (logged)"),
                );
            }
            return;
        }
    };
    let hash = start.elapsed();
    let n = live.len();
    let backend = ctx.engine.backend().name();
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

/// Answers a job with an error, after releasing its claim on the in-flight bounds.
fn refuse(permit: Permit, reply: oneshot::Sender<Outcome>, timings: Timings, err: PipelineError) {
    drop(permit);
    let _ = reply.send((Err(err), timings));
}

/// An item failed by something unexpected on our side (logged where it happened).
fn internal(msg: &str) -> PipelineError {
    PipelineError::Failed(Error::Internal(msg.into()))
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
