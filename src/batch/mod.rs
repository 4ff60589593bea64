//! The dynamic batcher: one queue shared by every connection, between encoded images and the backend.
//!
//! ```text
//! submit ─► admission ─► decode pool ─► bounded channel ─► batcher thread ─► Engine::hash_batch ─► reply
//!           (items, bytes)  (N threads)   (decoded pixels)   (flush at max_batch
//!                                                             or max_delay)
//! ```
//! - **Admission** is the only place a request waits for nothing: [`Batcher::submit`] either takes an
//!   in-flight slot (items and encoded bytes both bounded) or answers [`BatchError::Overloaded`] at once, which
//!   the server maps to `RESOURCE_EXHAUSTED`. Memory is therefore bounded by configuration, never by load.
//! - **Decoding** runs on its own thread pool, off the async runtime. Decoded pixels count against a second
//!   budget ([`BatchConfig::max_decoded_bytes`]) until their batch is hashed, so a flood of large images
//!   stalls the decoders instead of growing memory.
//! - **Batching** (GPU backend): one thread collects decoded images until `max_batch` are ready or
//!   `max_delay` has passed since the first, and hands them to the GPU as one submission. Decoding of the
//!   next batch overlaps the hashing of this one.
//! - **CPU backend**: batches buy nothing there (there is no per-submission cost to spread), and handing
//!   pixels to other threads costs cache misses and leaves cores idle at batch boundaries, so each decode
//!   worker hashes the image it has just decoded: a batch of one, on the same thread. `pharos bench grpc`
//!   measured the difference on the shared corpus: in-process, the batched CPU path ran at 87% of the
//!   direct decode-and-hash rate (`pharos hash`'s), the inline one at 94% (BENCHMARKS.md, "gRPC daemon").
//! - **Deadlines**: a job past its deadline is dropped before decoding and before hashing (its caller has
//!   already been told `DEADLINE_EXCEEDED`), so an overloaded daemon does not spend work on answers nobody
//!   waits for.
//!
//! Nothing here touches the disk or logs image bytes; an encoded image lives only in its job.

use crate::error::Error;
use crate::hash::ImageView;
use crate::image::{decode, Decoded, PixelData};
use crate::metrics::Metrics;
use crate::pipeline::{Engine, HashOptions, HashRecord, Hashers};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Sizes and bounds of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Images per backend submission, at most.
    pub max_batch: usize,
    /// How long the first image of a batch waits for others before the batch goes anyway.
    pub max_delay: Duration,
    /// Decoder threads (on the CPU backend they hash too).
    pub decode_threads: usize,
    /// Items admitted and not yet answered, at most (all connections together).
    pub max_in_flight: usize,
    /// Encoded bytes admitted and not yet answered, at most. One item larger than this is still admitted
    /// when nothing else is in flight (its size is bounded by the message and image limits).
    pub max_in_flight_bytes: u64,
    /// Decoded pixel bytes waiting for or in a batch, at most (the same exception for one huge image).
    pub max_decoded_bytes: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        BatchConfig {
            max_batch: 32,
            max_delay: Duration::from_millis(2),
            decode_threads: cpus,
            max_in_flight: 1024,
            max_in_flight_bytes: 1 << 30,
            max_decoded_bytes: 2 << 30,
        }
    }
}

/// One image to hash.
#[derive(Clone, Debug)]
pub struct Job {
    /// The encoded file.
    pub image: Bytes,
    /// What to compute and the decode limits.
    pub opts: HashOptions,
    /// Drop the job unanswered-for once this passes (the caller answers `DEADLINE_EXCEEDED` itself).
    pub deadline: Option<Instant>,
}

/// Why a job produced no hashes.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Too much in flight: retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The deadline passed before the job was done.
    #[error("deadline exceeded before the image was hashed")]
    DeadlineExceeded,
    /// The image could not be hashed (bad input, limits): the caller's fault.
    #[error(transparent)]
    Failed(#[from] Error),
    /// The batcher stopped (server shutting down) before answering.
    #[error("the hashing pipeline is shutting down")]
    ShuttingDown,
}

/// How long a job spent in each stage (zero for stages it did not reach).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Admitted → decoding starts.
    pub queue: Duration,
    /// Decoding.
    pub decode: Duration,
    /// Decoded → its batch starts hashing.
    pub batch_wait: Duration,
    /// Hashing its whole batch.
    pub hash: Duration,
    /// Images in its batch.
    pub batch_size: usize,
}

/// What a job's receiver gets.
pub type Outcome = (Result<HashRecord, BatchError>, Timings);

/// The shared pipeline. Cheap to clone (one `Arc`); dropping the last clone stops its threads once the
/// jobs in flight are answered.
#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: BatchConfig,
    engine: Engine,
    metrics: Arc<Metrics>,
    in_flight: AtomicUsize,
    in_flight_bytes: AtomicU64,
    decoded: Budget,
    decode_pool: rayon::ThreadPool,
    to_batcher: Mutex<Option<SyncSender<Ready>>>,
}

/// A decoded job waiting for its batch.
struct Ready {
    pixels: Decoded,
    dihedral: bool,
    deadline: Option<Instant>,
    timings: Timings,
    decoded_at: Instant,
    permit: Permit,
    reply: oneshot::Sender<Outcome>,
}

/// An admitted job's claim on the in-flight bounds; released when dropped (the job answered).
struct Permit {
    inner: Arc<Inner>,
    bytes: u64,
    decoded: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.inner.in_flight_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.inner.decoded.release(self.decoded);
        self.inner.metrics.queue_depth.dec();
        self.inner.metrics.queue_bytes.sub(self.bytes as i64);
    }
}

/// A blocking byte budget (a counting semaphore over bytes) for decoded pixels.
struct Budget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    /// Waits until `n` bytes fit (or nothing is held, so one oversized image cannot wait forever).
    fn acquire(&self, n: u64) {
        let mut used = self.used.lock().expect("budget lock");
        while *used > 0 && *used + n > self.limit {
            used = self.freed.wait(used).expect("budget lock");
        }
        *used += n;
    }

    fn release(&self, n: u64) {
        if n > 0 {
            *self.used.lock().expect("budget lock") -= n;
            self.freed.notify_all();
        }
    }
}

impl Batcher {
    /// Starts the decode pool and the batcher thread over an opened backend.
    pub fn new(engine: Engine, cfg: BatchConfig, metrics: Arc<Metrics>) -> crate::Result<Batcher> {
        if cfg.max_batch == 0 || cfg.decode_threads == 0 || cfg.max_in_flight == 0 {
            return Err(Error::InvalidInput(
                "max_batch, decode_threads and max_in_flight must be at least 1".into(),
            ));
        }
        let decode_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.decode_threads)
            .thread_name(|i| format!("pharos-decode-{i}"))
            .build()
            .map_err(|e| Error::InvalidInput(format!("decode pool: {e}")))?;
        // Room for one batch being collected and one more decoded behind it; decoders block beyond that.
        let (tx, rx) = sync_channel(cfg.max_batch);
        metrics.backend.with_label_values(&[&engine.describe()]).set(1);
        let inner = Arc::new(Inner {
            decoded: Budget { limit: cfg.max_decoded_bytes, used: Mutex::new(0), freed: Condvar::new() },
            cfg,
            engine,
            metrics,
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicU64::new(0),
            decode_pool,
            to_batcher: Mutex::new(Some(tx)),
        });
        let (engine, cfg, metrics) = (inner.engine.clone(), inner.cfg.clone(), inner.metrics.clone());
        std::thread::Builder::new()
            .name("pharos-batcher".into())
            .spawn(move || batch_loop(rx, engine, cfg, metrics))
            .map_err(Error::Io)?;
        Ok(Batcher { inner })
    }

    /// The backend hashing the batches.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BatchConfig {
        &self.inner.cfg
    }

    /// Items admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Admits a job, or says at once why not (never waits). The receiver gets exactly one [`Outcome`]
    /// (or is closed if the pipeline shuts down first).
    pub fn submit(&self, job: Job) -> Result<oneshot::Receiver<Outcome>, BatchError> {
        let inner = &self.inner;
        let bytes = job.image.len() as u64;
        let max = inner.cfg.max_in_flight;
        if inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(BatchError::Overloaded(format!("{max} images are in flight (the server's limit)")));
        }
        let max_bytes = inner.cfg.max_in_flight_bytes;
        let held = inner.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
        if held > 0 && held + bytes > max_bytes {
            inner.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel);
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(BatchError::Overloaded(format!(
                "{held} bytes of images are in flight; {bytes} more would pass the server's limit of {max_bytes}"
            )));
        }
        inner.metrics.queue_depth.inc();
        inner.metrics.queue_bytes.add(bytes as i64);
        let permit = Permit { inner: inner.clone(), bytes, decoded: 0 };
        let Some(tx) = inner.to_batcher.lock().expect("batcher lock").clone() else {
            return Err(BatchError::ShuttingDown);
        };
        let (reply, rx) = oneshot::channel();
        let admitted = Instant::now();
        inner.decode_pool.spawn(move || decode_job(job, admitted, permit, reply, tx));
        Ok(rx)
    }

    /// Submits a job and waits for its hashes (or its deadline).
    pub async fn hash(&self, job: Job) -> (Result<HashRecord, BatchError>, Timings) {
        let deadline = job.deadline;
        let rx = match self.submit(job) {
            Ok(rx) => rx,
            Err(e) => return (Err(e), Timings::default()),
        };
        let wait = async { rx.await.unwrap_or((Err(BatchError::ShuttingDown), Timings::default())) };
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), wait)
                .await
                .unwrap_or((Err(BatchError::DeadlineExceeded), Timings::default())),
            None => wait.await,
        }
    }

    /// Stops admitting jobs; those in flight are still answered.
    pub fn close(&self) {
        self.inner.to_batcher.lock().expect("batcher lock").take();
    }
}

thread_local! {
    /// Hashing scratch space of each decode worker (CPU backend).
    static HASHERS: std::cell::RefCell<Hashers> = std::cell::RefCell::new(Hashers::new());
}

fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// On a decode thread: bytes → pixels → the batcher's channel (blocking while it is full).
fn decode_job(
    job: Job,
    admitted: Instant,
    mut permit: Permit,
    reply: oneshot::Sender<Outcome>,
    tx: SyncSender<Ready>,
) {
    let start = Instant::now();
    let mut timings = Timings { queue: start - admitted, ..Timings::default() };
    if expired(job.deadline) || reply.is_closed() {
        drop(permit);
        let _ = reply.send((Err(BatchError::DeadlineExceeded), timings));
        return;
    }
    let decoded = {
        let _span = tracing::debug_span!("decode", bytes = job.image.len()).entered();
        decode(&job.image, &job.opts.decode)
    };
    timings.decode = start.elapsed();
    drop(job.image);
    let pixels = match decoded {
        Ok(p) => p,
        Err(e) => {
            drop(permit);
            let _ = reply.send((Err(BatchError::Failed(e)), timings));
            return;
        }
    };
    if matches!(permit.inner.engine, Engine::Cpu) {
        if expired(job.deadline) || reply.is_closed() {
            drop(permit);
            let _ = reply.send((Err(BatchError::DeadlineExceeded), timings));
            return;
        }
        let start = Instant::now();
        let rec = {
            let _span = tracing::debug_span!("hash", images = 1, backend = "cpu").entered();
            HASHERS.with(|h| h.borrow_mut().hash_pixels(pixels.view(), job.opts.dihedral))
        };
        timings.hash = start.elapsed();
        timings.batch_size = 1;
        let metrics = permit.inner.metrics.clone();
        metrics.batch_size.observe(1.0);
        metrics.images_hashed.with_label_values(&["cpu"]).inc();
        answer(&metrics, pixels, permit, reply, rec, timings);
        return;
    }
    let size = pixel_bytes(&pixels);
    permit.inner.decoded.acquire(size);
    permit.decoded = size;
    let ready = Ready {
        pixels,
        dihedral: job.opts.dihedral,
        deadline: job.deadline,
        timings,
        decoded_at: Instant::now(),
        permit,
        reply,
    };
    if let Err(std::sync::mpsc::SendError(r)) = tx.send(ready) {
        let Ready { permit, reply, timings, .. } = r;
        drop(permit);
        let _ = reply.send((Err(BatchError::ShuttingDown), timings));
    }
}

fn pixel_bytes(d: &Decoded) -> u64 {
    match &d.data {
        PixelData::Rgb(v) | PixelData::Gray(v) => v.len() as u64,
    }
}

/// The batcher thread: collect, hash, answer; returns when every sender is gone.
fn batch_loop(rx: Receiver<Ready>, engine: Engine, cfg: BatchConfig, metrics: Arc<Metrics>) {
    let mut batch: Vec<Ready> = Vec::with_capacity(cfg.max_batch);
    let mut fallbacks = 0;
    while let Ok(first) = rx.recv() {
        batch.push(first);
        let flush_at = Instant::now() + cfg.max_delay;
        while batch.len() < cfg.max_batch {
            match rx.recv_timeout(flush_at.saturating_duration_since(Instant::now())) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // Jobs nobody waits for any more are answered (for the record) and not hashed.
        let (live, dead): (Vec<Ready>, Vec<Ready>) =
            batch.drain(..).partition(|r| !expired(r.deadline) && !r.reply.is_closed());
        for Ready { permit, reply, timings, .. } in dead {
            drop(permit);
            let _ = reply.send((Err(BatchError::DeadlineExceeded), timings));
        }
        if live.is_empty() {
            continue;
        }
        let start = Instant::now();
        let dihedral = live.iter().any(|r| r.dihedral);
        let records = {
            let _span = tracing::debug_span!("hash", images = live.len(), backend = engine.backend().name())
                .entered();
            let views: Vec<ImageView<'_>> = live.iter().map(|r| r.pixels.view()).collect();
            engine.hash_batch(&views, dihedral)
        };
        let hash = start.elapsed();
        let n = live.len();
        metrics.batch_size.observe(n as f64);
        metrics.images_hashed.with_label_values(&[engine.backend().name()]).inc_by(n as u64);
        if let Engine::Gpu(g) = &engine {
            let now = g.fallbacks();
            metrics.gpu_fallbacks.inc_by(now - fallbacks);
            fallbacks = now;
        }
        for (r, mut rec) in live.into_iter().zip(records) {
            if !r.dihedral {
                rec.dihedral = None;
            }
            let timings = Timings { batch_wait: start - r.decoded_at, hash, batch_size: n, ..r.timings };
            let Ready { pixels, permit, reply, .. } = r;
            answer(&metrics, pixels, permit, reply, rec, timings);
        }
    }
}

/// Records a hashed job's stage times, frees its pixels and permit, then wakes its caller.
fn answer(
    metrics: &Metrics,
    pixels: Decoded,
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
