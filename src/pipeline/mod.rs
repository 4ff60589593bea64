//! The hashing pipeline: encoded images in, hashes out. One implementation, used by `pharos hash`,
//! `pharos bench pipeline|capacity|grpc` and the daemon (shared by every connection).
//!
//! ```text
//! submit ─► admission ─► decode pool ──► (CPU) hash on the same worker ─────────────────────────► reply
//!           (items, bytes)  (N threads)  └► (GPU) copy pixels into the open batch's upload buffer
//!                                             batcher thread: seal (full or max_delay) ─► submit ─┐
//!                                             completion thread: wait ─► read back ─► reply  ◄────┘
//! ```
//! - **Admission** never waits: [`Pipeline::submit`] either takes an in-flight slot (items and encoded
//!   bytes both bounded) or answers [`PipelineError::Overloaded`] at once (the daemon's
//!   `RESOURCE_EXHAUSTED`). Memory is therefore bounded by configuration, never by load. [`run_ordered`]
//!   turns that into blocking, in-order processing for batch front ends (`pharos hash`, benchmarks).
//! - **Decoding** runs on its own thread pool. Decoded pixels waiting for the GPU count against a second
//!   budget ([`PipelineConfig::max_decoded_bytes`]), so a flood of large images stalls the decoders
//!   instead of growing memory.
//! - **CPU backend**: each decode worker hashes the image it has just decoded. Batches buy nothing there
//!   (no per-submission cost to spread), and handing pixels to other threads costs cache misses and leaves
//!   cores idle at batch boundaries: `pharos bench grpc` measured the batched CPU path at 87 % of the
//!   direct rate and the inline one at 94 % (BENCHMARKS.md, "gRPC daemon").
//! - **GPU backend** (`staged`): each decode worker copies the pixels it decoded straight into the open
//!   batch's upload buffer, a persistent host-mapped buffer of the device (the only host copy between the
//!   decoder and the GPU, made on many threads at once, counted in `pharos_gpu_staged_bytes_total`). A
//!   batch closes when its pixels reach [`PipelineConfig::max_batch_bytes`], at `max_batch` images, or
//!   `max_delay` after its first image; the batcher thread then submits it without waiting for the result,
//!   and a completion thread waits for it, so up to [`crate::gpu::MAX_IN_FLIGHT`] batches are in flight
//!   (`pharos_gpu_batches_in_flight`). The decoded copy is kept until the batch is answered: it is what
//!   the CPU recomputes from when the GPU fails. Images the device cannot hold, and every image while a
//!   lost device is being replaced, are hashed on the decode worker instead.
//! - **Deadlines**: a job past its deadline is dropped before decoding and before hashing.
//! - **Failures are contained**: a panic in a decoder or hasher fails only its item
//!   ([`PipelineError::Internal`], counted in `pharos_panics_total`); if the batcher thread itself dies,
//!   [`Pipeline::health`] goes false, the thread is started again after a back-off, and health returns.
//!
//! Nothing here touches the disk except reading the input files a job names, and nothing logs image bytes.

mod ordered;
mod staged;
mod workers;

pub use ordered::run_ordered;

use crate::engine::{Engine, HashOptions};
use crate::error::Error;
use crate::hash::HashRecord;
use crate::metrics::Metrics;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Sizes and bounds of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Images per backend submission, at most.
    pub max_batch: usize,
    /// A GPU batch closes once its pixels reach this many bytes (decoded size; a batch is sized by the
    /// work in it, not by a count of images of any size).
    pub max_batch_bytes: u64,
    /// How long the first image of a batch waits for others before the batch goes anyway.
    pub max_delay: Duration,
    /// Decoder threads (on the CPU backend they hash too).
    pub decode_threads: usize,
    /// Items admitted and not yet answered, at most (all callers together).
    pub max_in_flight: usize,
    /// Encoded bytes admitted and not yet answered, at most. One item larger than this is still admitted
    /// when nothing else is in flight (its size is bounded by the message and image limits).
    pub max_in_flight_bytes: u64,
    /// Decoded pixel bytes waiting for or in a batch, at most (the same exception for one huge image).
    pub max_decoded_bytes: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        PipelineConfig {
            max_batch: 32,
            max_batch_bytes: 64 << 20,
            max_delay: Duration::from_millis(2),
            decode_threads: cpus,
            max_in_flight: 1024,
            max_in_flight_bytes: 1 << 30,
            max_decoded_bytes: 2 << 30,
        }
    }
}

/// Where a job's encoded image is.
#[derive(Clone, Debug)]
pub enum Source {
    /// In memory (a gRPC message, a benchmark's corpus).
    Bytes(Bytes),
    /// A file the decode worker reads (refused before reading when larger than the byte limit), so that
    /// reading overlaps decoding as it does for in-memory inputs.
    File(PathBuf),
}

/// One image to hash.
#[derive(Clone, Debug)]
pub struct Job {
    /// The encoded file.
    pub source: Source,
    /// What to compute and the decode limits.
    pub opts: HashOptions,
    /// Drop the job once this passes (the caller answers `DEADLINE_EXCEEDED` itself).
    pub deadline: Option<Instant>,
}

impl Job {
    /// A job over in-memory bytes, without a deadline.
    pub fn bytes(image: impl Into<Bytes>, opts: HashOptions) -> Job {
        Job { source: Source::Bytes(image.into()), opts, deadline: None }
    }

    /// A job over a file, without a deadline.
    pub fn file(path: impl Into<PathBuf>, opts: HashOptions) -> Job {
        Job { source: Source::File(path.into()), opts, deadline: None }
    }

    fn admitted_bytes(&self) -> u64 {
        match &self.source {
            Source::Bytes(b) => b.len() as u64,
            // Not read yet; the decode worker reads it under the per-image byte limit.
            Source::File(_) => 0,
        }
    }
}

/// Why a job produced no hashes.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Too much in flight: retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The deadline passed before the job was done.
    #[error("deadline exceeded before the image was hashed")]
    DeadlineExceeded,
    /// The image could not be hashed (bad input, limits, an unreadable file, a caught panic).
    #[error(transparent)]
    Failed(#[from] Error),
    /// The pipeline stopped admitting work (shutting down).
    #[error("the hashing pipeline is shutting down")]
    ShuttingDown,
}

/// How long a job spent in each stage (zero for stages it did not reach).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Admitted → decoding starts.
    pub queue: Duration,
    /// Reading (for file jobs) and decoding.
    pub decode: Duration,
    /// Decoded → its batch starts hashing.
    pub batch_wait: Duration,
    /// Hashing its whole batch.
    pub hash: Duration,
    /// Images in its batch.
    pub batch_size: usize,
}

/// What a job's receiver gets.
pub type Outcome = (Result<HashRecord, PipelineError>, Timings);

/// A submitted job's answer, to wait for.
pub struct Ticket(oneshot::Receiver<Outcome>);

impl Ticket {
    /// Whether the answer is there (waiting for it would not block).
    pub fn is_ready(&self) -> bool {
        !self.0.is_empty() || self.0.is_terminated()
    }

    /// Waits for the answer (async).
    pub async fn wait(self) -> Outcome {
        self.0.await.unwrap_or_else(|_| lost())
    }

    /// Waits for the answer, blocking this thread (never call it on an async runtime's thread).
    pub fn wait_blocking(self) -> Outcome {
        self.0.blocking_recv().unwrap_or_else(|_| lost())
    }
}

/// The answer of a job whose reply was dropped unanswered: something failed on its way (a worker died).
fn lost() -> Outcome {
    let e = Error::Internal("the hashing pipeline lost this item (a worker failed); retry it".into());
    (Err(PipelineError::Failed(e)), Timings::default())
}

/// The shared pipeline. Cheap to clone (one `Arc`); dropping the last clone stops its threads once the
/// jobs in flight are answered.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: PipelineConfig,
    engine: Engine,
    metrics: Arc<Metrics>,
    in_flight: AtomicUsize,
    in_flight_bytes: AtomicU64,
    decoded: Budget,
    decode_pool: rayon::ThreadPool,
    /// The decoders' way to the batcher thread (each GPU batch, as it opens); `None` once closed.
    to_batcher: Mutex<Option<crossbeam_channel::Sender<Arc<staged::Batch>>>>,
    /// The batcher thread's end, kept so a restarted thread can take over the same queue.
    from_decoders: crossbeam_channel::Receiver<Arc<staged::Batch>>,
    /// The GPU batch the decode workers are filling now.
    open: Mutex<Option<Arc<staged::Batch>>>,
    /// True while the pipeline can answer (false while a dead batcher thread is being restarted).
    health: Arc<watch::Sender<bool>>,
    hooks: Arc<Hooks>,
    /// Disconnected once every batcher thread has ended (each holds the other end): see
    /// [`Pipeline::shutdown`].
    batchers_gone: crossbeam_channel::Receiver<std::convert::Infallible>,
}

/// Test hooks: failures injected on purpose, to prove that they are contained.
#[derive(Default)]
struct Hooks {
    /// The next `n` decodes panic (as a buggy decoder would).
    decode_panics: AtomicU32,
    /// The batcher thread panics outside its per-batch guard on its next batch (as if it died).
    kill_batcher: AtomicBool,
    /// A restarted batcher thread waits while this is set (so a test can see the restart in progress).
    hold_restart: AtomicBool,
    /// The next `n` copies into a GPU batch panic after reserving their room (as a bug in the copy would).
    copy_panics: AtomicU32,
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
        let mut used = self.used.lock();
        while *used > 0 && *used + n > self.limit {
            self.freed.wait(&mut used);
        }
        *used += n;
    }

    fn release(&self, n: u64) {
        if n > 0 {
            *self.used.lock() -= n;
            self.freed.notify_all();
        }
    }
}

impl Pipeline {
    /// Starts the decode pool and the batcher thread over an opened backend.
    pub fn new(engine: Engine, cfg: PipelineConfig, metrics: Arc<Metrics>) -> crate::Result<Pipeline> {
        if cfg.max_batch == 0 || cfg.decode_threads == 0 || cfg.max_in_flight == 0 {
            return Err(Error::InvalidInput(
                "max_batch, decode_threads and max_in_flight must be at least 1".into(),
            ));
        }
        let panic_metrics = metrics.clone();
        let decode_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.decode_threads)
            .thread_name(|i| format!("pharos-decode-{i}"))
            // Jobs catch their own panics; this is the backstop that keeps rayon from aborting the process.
            .panic_handler(move |_| {
                panic_metrics.panics.with_label_values(&["decode"]).inc();
                tracing::error!("a decode worker panicked outside its guard; its item was answered INTERNAL");
            })
            .build()
            .map_err(|e| Error::InvalidInput(format!("decode pool: {e}")))?;
        // Batches as they open: bounded in practice by the GPU's upload buffers, each batch holding one.
        let (tx, rx) = crossbeam_channel::unbounded();
        // Nothing is ever sent: the batcher threads hold `alive`, and its disconnection says they ended.
        let (alive, batchers_gone) = crossbeam_channel::bounded(0);
        metrics.backend.with_label_values(&[&engine.describe()]).set(1);
        // A device refused at start-up by its canary left the engine on the CPU; say so in the metrics.
        metrics.gpu_canary_failures.inc_by(crate::engine::canary_failures());
        let inner = Arc::new(Inner {
            decoded: Budget { limit: cfg.max_decoded_bytes, used: Mutex::new(0), freed: Condvar::new() },
            cfg,
            engine,
            metrics,
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicU64::new(0),
            decode_pool,
            to_batcher: Mutex::new(Some(tx)),
            from_decoders: rx,
            open: Mutex::new(None),
            health: Arc::new(watch::channel(true).0),
            hooks: Arc::new(Hooks::default()),
            batchers_gone,
        });
        workers::spawn_batcher(workers::BatcherCtx::of(&inner, alive), 0)?;
        Ok(Pipeline { inner })
    }

    /// The backend hashing the images.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PipelineConfig {
        &self.inner.cfg
    }

    /// Items admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Whether the pipeline can answer: false while its batcher thread is being restarted. Subscribe to
    /// follow changes (the daemon maps it to its health status).
    pub fn health(&self) -> watch::Receiver<bool> {
        self.inner.health.subscribe()
    }

    /// Admits a job, or says at once why not (never waits). The ticket gets exactly one [`Outcome`].
    pub fn submit(&self, job: Job) -> Result<Ticket, PipelineError> {
        let inner = &self.inner;
        let bytes = job.admitted_bytes();
        let max = inner.cfg.max_in_flight;
        if inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_err()
        {
            return Err(PipelineError::Overloaded(format!(
                "{max} images are in flight (the server's limit)"
            )));
        }
        let max_bytes = inner.cfg.max_in_flight_bytes;
        let held = inner.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
        if held > 0 && held + bytes > max_bytes {
            inner.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel);
            inner.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(PipelineError::Overloaded(format!(
                "{held} bytes of images are in flight; {bytes} more would pass the server's limit of {max_bytes}"
            )));
        }
        inner.metrics.queue_depth.inc();
        inner.metrics.queue_bytes.add(bytes as i64);
        let permit = Permit { inner: inner.clone(), bytes, decoded: 0 };
        let Some(tx) = inner.to_batcher.lock().clone() else {
            return Err(PipelineError::ShuttingDown);
        };
        let (reply, rx) = oneshot::channel();
        let admitted = Instant::now();
        inner.decode_pool.spawn(move || workers::decode_job(job, admitted, permit, reply, tx));
        Ok(Ticket(rx))
    }

    /// Submits a job and waits for its hashes (or its deadline).
    pub async fn hash(&self, job: Job) -> Outcome {
        let deadline = job.deadline;
        let ticket = match self.submit(job) {
            Ok(t) => t,
            Err(e) => return (Err(e), Timings::default()),
        };
        match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), ticket.wait())
                .await
                .unwrap_or((Err(PipelineError::DeadlineExceeded), Timings::default())),
            None => ticket.wait().await,
        }
    }

    /// Stops admitting jobs; those in flight are still answered.
    pub fn close(&self) {
        self.inner.to_batcher.lock().take();
    }

    /// Closes the pipeline and waits, at most `within`, until its batcher thread has ended; says whether
    /// it did. Call it before the process exits. The batcher thread holds a handle on the GPU device,
    /// and if it is the last one, it destroys the device when it ends. That must not happen while
    /// `exit` runs the driver's own destructors: on NVIDIA's driver, `pharos hash --backend gpu`
    /// printed every line and then died with "double free or corruption" (SIGABRT or SIGSEGV).
    /// Jobs in flight keep the thread running until they are answered; past `within` it is logged.
    pub fn shutdown(&self, within: Duration) -> bool {
        self.close();
        let ended = matches!(
            self.inner.batchers_gone.recv_timeout(within),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        if !ended {
            tracing::warn!("the pipeline's batcher thread did not end within {within:?}");
        }
        ended
    }

    /// Test hook: the next `n` decodes panic inside the decoder, as a decoder bug would.
    #[doc(hidden)]
    pub fn inject_decode_panics(&self, n: u32) {
        self.inner.hooks.decode_panics.store(n, Ordering::SeqCst);
    }

    /// Test hook: the next `n` decode workers to copy pixels into a GPU batch panic after reserving room.
    #[doc(hidden)]
    pub fn inject_copy_panics(&self, n: u32) {
        self.inner.hooks.copy_panics.store(n, Ordering::SeqCst);
    }

    /// Test hook: the batcher thread dies (panics outside its per-batch guard) on its next batch, once a
    /// job is in it (or after 10 s), so that job is the one failed.
    #[doc(hidden)]
    pub fn inject_batcher_death(&self) {
        self.inner.hooks.kill_batcher.store(true, Ordering::SeqCst);
    }

    /// Test hook: while `hold` is set, a batcher thread restarted after a death waits before it serves
    /// (and before health returns), so a test can watch the restart in progress.
    #[doc(hidden)]
    pub fn hold_batcher_restart(&self, hold: bool) {
        self.inner.hooks.hold_restart.store(hold, Ordering::SeqCst);
    }
}
