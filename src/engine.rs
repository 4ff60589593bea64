//! The hashing engine: which backend computes the hashes, the opened backend, and the GPU → CPU fallback.
//!
//! This is the one place that knows both the CPU reference ([`crate::hash`]) and the GPU backend
//! ([`crate::gpu`]): `auto` picks a real GPU when there is one; a GPU batch that fails (device lost,
//! out of memory, a readback error, a submission that does not finish in time) is recomputed here on the
//! CPU, logged and counted, so callers always get the reference's hashes. Images the GPU's buffers cannot
//! hold go to the CPU directly.
//!
//! The pipeline ([`crate::pipeline`]) drives an [`Engine`]; the CLI and the daemon never talk to `gpu`.
//!
//! ```
//! use pharos::engine::{hash_bytes, HashOptions};
//! // Bad input is a typed error, never a panic:
//! let err = hash_bytes(b"not an image", &HashOptions::default()).unwrap_err();
//! assert!(err.to_string().contains("unsupported"));
//! // A tiny valid GIF (1×1): below PDQ's 5-pixel minimum, so the reference's all-zero hash, quality 0.
//! let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
//! let rec = hash_bytes(gif, &HashOptions { dihedral: true, ..Default::default() })?;
//! assert_eq!((rec.width, rec.height, rec.pdq.quality), (1, 1, 0));
//! assert_eq!(rec.pdq.hash, pharos::hash::Hash256::ZERO);
//! # Ok::<(), pharos::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::gpu::{probe, AdapterPolicy, GpuError, GpuHasher, InFlight, UploadBuffer};
use crate::hash::exact::ExactHashes;
use crate::hash::{HashRecord, Hashers};
use crate::image::{decode, DecodeOptions};
use crate::pixels::ImageView;
use std::cell::RefCell;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which implementation computes the hashes (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A real GPU adapter when one exists, the CPU otherwise.
    #[default]
    Auto,
    /// The CPU reference.
    Cpu,
    /// The wgpu compute shaders (also on a software adapter, which is how CI exercises them).
    Gpu,
}

impl Backend {
    /// The backend that will actually run, probing the adapters without opening a device: `auto` gives `gpu`
    /// when a real GPU adapter (discrete or integrated) exists and `cpu` otherwise — never a software
    /// adapter; `gpu` accepts any adapter, software included (how CI runs the shaders on lavapipe), and is
    /// an error when there is none. [`Engine::new`] makes the same choice and opens it.
    pub fn resolve(self) -> Result<Backend> {
        match self {
            Backend::Cpu => Ok(Backend::Cpu),
            Backend::Auto => Ok(match probe(AdapterPolicy::HardwareOnly) {
                Some(_) => Backend::Gpu,
                None => Backend::Cpu,
            }),
            Backend::Gpu => match probe(AdapterPolicy::AllowSoftware) {
                Some(_) => Ok(Backend::Gpu),
                None => Err(Error::BackendUnavailable(
                    "no GPU adapter (install a Vulkan driver, e.g. mesa-vulkan-drivers); use --backend cpu or auto"
                        .into(),
                )),
            },
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
        }
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "cpu" => Ok(Backend::Cpu),
            "gpu" => Ok(Backend::Gpu),
            _ => Err(Error::BackendUnavailable(format!("unknown backend '{s}' (expected auto, cpu or gpu)"))),
        }
    }
}

/// What to compute for an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashOptions {
    /// Decoding limits and EXIF policy.
    pub decode: DecodeOptions,
    /// Also compute the seven PDQ dihedral variants (free: they come from the same DCT).
    pub dihedral: bool,
    /// Also compute MD5, SHA-1 and SHA-256 of the encoded bytes. Off unless asked: on a 45 KB JPEG the three
    /// cost a sizeable fraction of the decode, and most perceptual-hashing callers do not want them.
    pub exact: bool,
}

/// Decoding plus the CPU reference: file bytes → every hash, on the caller's thread and scratch space.
pub trait DecodeAndHash {
    /// Decodes `bytes` (limits checked from the header first) and hashes the pixels.
    fn hash_bytes(&mut self, bytes: &[u8], opts: &HashOptions) -> Result<HashRecord>;
}

impl DecodeAndHash for Hashers {
    fn hash_bytes(&mut self, bytes: &[u8], opts: &HashOptions) -> Result<HashRecord> {
        let img = decode(bytes, &opts.decode)?;
        // After the decode succeeded: an input refused by the limits or the decoder costs no digest.
        let exact = opts.exact.then(|| ExactHashes::of(bytes));
        Ok(HashRecord { exact, ..self.hash_pixels(img.view(), opts.dihedral) })
    }
}

thread_local! {
    static HASHERS: RefCell<Hashers> = RefCell::new(Hashers::new());
}

/// [`DecodeAndHash::hash_bytes`] with this thread's scratch space.
pub fn hash_bytes(bytes: &[u8], opts: &HashOptions) -> Result<HashRecord> {
    HASHERS.with(|h| h.borrow_mut().hash_bytes(bytes, opts))
}

/// Hashes decoded pixels with this thread's CPU scratch space.
pub fn hash_pixels(img: ImageView<'_>, dihedral: bool) -> HashRecord {
    HASHERS.with(|h| h.borrow_mut().hash_pixels(img, dihedral))
}

/// The CPU reference over a batch, in parallel on rayon's pool (results in input order).
pub fn cpu_batch(images: &[ImageView<'_>], dihedral: bool) -> Vec<HashRecord> {
    use rayon::prelude::*;
    images.par_iter().map_init(Hashers::new, |h, img| h.hash_pixels(*img, dihedral)).collect()
}

/// A resolved hashing backend, opened: what batches of decoded images are hashed with. Cheap to clone.
#[derive(Clone)]
pub enum Engine {
    /// The CPU reference.
    Cpu,
    /// The GPU backend, with the CPU as fallback for a batch the GPU fails.
    Gpu(Arc<GpuEngine>),
}

/// The GPU backend with its CPU fallback and its self-healing.
///
/// - A batch the GPU fails (an error wgpu reports, a readback failure, a submission past the wait timeout,
///   or a panic inside wgpu, which is caught) is recomputed on the CPU, logged and counted: no request
///   fails for it.
/// - When the failure leaves the device unusable (lost, hung, or panicked), a background thread opens a
///   replacement on an adapter chosen by the same policy, with back-off (initially 1 s, doubling, at most
///   60 s); the replacement must pass the start-up canary like the first device. Meanwhile every image is
///   hashed on the CPU where it was decoded, and [`GpuEngine::healthy`] is false (the daemon reports its
///   GPU health service NOT_SERVING: degraded, still serving). The GPU resumes as soon as the replacement
///   is in place.
pub struct GpuEngine {
    inner: Arc<GpuInner>,
}

struct GpuInner {
    current: parking_lot::RwLock<Arc<GpuHasher>>,
    policy: AdapterPolicy,
    fallbacks: AtomicU64,
    losses: AtomicU64,
    recreations: AtomicU64,
    recovering: AtomicBool,
    /// First back-off before a re-creation attempt, and its cap, in milliseconds.
    backoff_ms: (AtomicU64, AtomicU64),
    /// Test hook: this many re-created devices fail their canary.
    canary_faults: AtomicU32,
    /// One batch in this many has one image re-hashed on the CPU and compared (0: never).
    recheck_every: AtomicU64,
    /// Batches the GPU completed (the re-check's counter).
    completed: AtomicU64,
    rechecks: AtomicU64,
    recheck_mismatches: AtomicU64,
    /// Test hook: the next `n` GPU batches come back with one wrong PDQ bit per image.
    wrong_bits: AtomicU32,
}

/// Default of `PHAROS_GPU_RECHECK_EVERY`: one image of one batch in a hundred is re-hashed on the CPU (at a
/// batch of 32 images, about 0.03 % more CPU hashing).
const DEFAULT_RECHECK_EVERY: u64 = 100;

/// One batch in how many is re-checked on the CPU: `PHAROS_GPU_RECHECK_EVERY` (0 turns it off).
fn recheck_every() -> u64 {
    match std::env::var("PHAROS_GPU_RECHECK_EVERY") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            tracing::warn!("PHAROS_GPU_RECHECK_EVERY={v:?} is not a number; using {DEFAULT_RECHECK_EVERY}");
            DEFAULT_RECHECK_EVERY
        }),
        Err(_) => DEFAULT_RECHECK_EVERY,
    }
}

impl GpuEngine {
    /// Wraps an opened GPU hasher; replacements are opened with the same adapter policy.
    pub fn new(gpu: GpuHasher) -> GpuEngine {
        let policy = gpu.policy();
        GpuEngine {
            inner: Arc::new(GpuInner {
                current: parking_lot::RwLock::new(Arc::new(gpu)),
                policy,
                fallbacks: AtomicU64::new(0),
                losses: AtomicU64::new(0),
                recreations: AtomicU64::new(0),
                recovering: AtomicBool::new(false),
                backoff_ms: (AtomicU64::new(1000), AtomicU64::new(60_000)),
                canary_faults: AtomicU32::new(0),
                recheck_every: AtomicU64::new(recheck_every()),
                completed: AtomicU64::new(0),
                rechecks: AtomicU64::new(0),
                recheck_mismatches: AtomicU64::new(0),
                wrong_bits: AtomicU32::new(0),
            }),
        }
    }

    /// The device in use now (a replacement after a loss). For its adapter description and test hooks.
    pub fn hasher(&self) -> Arc<GpuHasher> {
        self.inner.current.read().clone()
    }

    /// How many batches were recomputed on the CPU because the GPU failed.
    pub fn fallbacks(&self) -> u64 {
        self.inner.fallbacks.load(Ordering::Relaxed)
    }

    /// How many devices were lost (a loss reported by the driver, a hang, a panic inside wgpu).
    pub fn losses(&self) -> u64 {
        self.inner.losses.load(Ordering::Relaxed)
    }

    /// How many replacement devices were opened after losses.
    pub fn recreations(&self) -> u64 {
        self.inner.recreations.load(Ordering::Relaxed)
    }

    /// Whether the GPU is in use: false from a loss until its replacement is in place. A loss noticed here
    /// (reported by the driver between batches) starts the replacement too.
    pub fn healthy(&self) -> bool {
        let gpu = self.hasher();
        if gpu.is_lost() {
            self.lost(&gpu);
            return false;
        }
        true
    }

    /// Test hook: the back-off before re-creating a lost device, and its cap.
    #[doc(hidden)]
    pub fn set_recovery_backoff(&self, first: Duration, max: Duration) {
        self.inner.backoff_ms.0.store(first.as_millis() as u64, Ordering::SeqCst);
        self.inner.backoff_ms.1.store(max.as_millis() as u64, Ordering::SeqCst);
    }

    /// Production images re-hashed on the CPU to check the GPU ([`GpuEngine::set_recheck_every`]).
    pub fn rechecks(&self) -> u64 {
        self.inner.rechecks.load(Ordering::Relaxed)
    }

    /// Re-checked images whose GPU hashes differed from the CPU's (each refused the device).
    pub fn recheck_mismatches(&self) -> u64 {
        self.inner.recheck_mismatches.load(Ordering::Relaxed)
    }

    /// Re-hash one image of one GPU batch in `n` on the CPU and compare (0: never). A difference means the
    /// device computes something other than the reference after all (a driver update, a faulty card): the
    /// batch is answered from the CPU, the device is refused like a lost one, and its replacement must pass
    /// the start-up canary. Default: `PHAROS_GPU_RECHECK_EVERY`, else 100.
    pub fn set_recheck_every(&self, n: u64) {
        self.inner.recheck_every.store(n, Ordering::SeqCst);
    }

    /// Test hook: the next `n` GPU batches come back with one wrong PDQ bit in every image, as a faulty
    /// device's would.
    #[doc(hidden)]
    pub fn inject_wrong_bits(&self, n: u32) {
        self.inner.wrong_bits.store(n, Ordering::SeqCst);
    }

    /// The sampled re-check of a batch the GPU returned: one batch in `recheck_every` has one image (a
    /// different position each time) hashed again on the CPU; a difference refuses the device.
    fn recheck(
        &self,
        gpu: &Arc<GpuHasher>,
        mut records: Vec<HashRecord>,
        images: &[ImageView<'_>],
        dihedral: bool,
    ) -> std::result::Result<Vec<HashRecord>, GpuError> {
        if records.is_empty() {
            return Ok(records);
        }
        if self
            .inner
            .wrong_bits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            for r in &mut records {
                r.pdq.hash.limbs[0] ^= 1 << 9;
            }
        }
        let every = self.inner.recheck_every.load(Ordering::Relaxed);
        let k = self.inner.completed.fetch_add(1, Ordering::Relaxed);
        if every == 0 || !k.is_multiple_of(every) {
            return Ok(records);
        }
        let i = ((k / every) % records.len() as u64) as usize;
        self.inner.rechecks.fetch_add(1, Ordering::Relaxed);
        let want = hash_pixels(images[i], dihedral);
        if records[i] == want {
            return Ok(records);
        }
        let n = self.inner.recheck_mismatches.fetch_add(1, Ordering::Relaxed) + 1;
        let why = format!(
            "a production image ({}×{}) hashed differently on the GPU ({} PDQ bits apart) than on the CPU",
            want.width,
            want.height,
            records[i].pdq.hash.distance(&want.pdq.hash)
        );
        tracing::error!(adapter = %gpu.adapter(), mismatches = n, "GPU re-check failed: {why}; refusing the device");
        gpu.mark_lost();
        self.lost(gpu);
        Err(GpuError::Canary(why))
    }

    /// Test hook: the next `n` replacement devices fail their canary (as a faulty driver would).
    #[doc(hidden)]
    pub fn inject_canary_faults(&self, n: u32) {
        self.inner.canary_faults.store(n, Ordering::SeqCst);
    }

    /// Hashes `images` on the GPU, or says why it could not. Images the device's buffers cannot hold are
    /// hashed on the CPU (that is not a failure). A panic inside wgpu is caught and reported as a loss.
    pub fn try_hash_batch(
        &self,
        images: &[ImageView<'_>],
        dihedral: bool,
    ) -> std::result::Result<Vec<HashRecord>, GpuError> {
        let gpu = self.hasher();
        let records = self.guarded(&gpu, || on_device(&gpu, images, dihedral))?;
        self.recheck(&gpu, records, images, dihedral)
    }

    /// Runs `f` on `gpu`: a panic inside it is caught and becomes a loss of `gpu`; a loss (caught or
    /// reported) starts the replacement.
    fn guarded<T>(
        &self,
        gpu: &Arc<GpuHasher>,
        f: impl FnOnce() -> std::result::Result<T, GpuError>,
    ) -> std::result::Result<T, GpuError> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            gpu.mark_lost();
            Err(GpuError::DeviceLost(format!("panic inside the GPU backend: {what}")))
        });
        if result.is_err() && gpu.is_lost() {
            self.lost(gpu);
        }
        result
    }

    /// A batch to fill for the device in use: a mapped upload buffer the decode workers copy pixels into
    /// ([`Staging::write`]). `None` while the device is lost, or when no buffer came back within the wait
    /// timeout: the caller hashes on the CPU instead.
    pub fn staging(&self) -> Option<Staging> {
        if !self.healthy() {
            return None;
        }
        let gpu = self.hasher();
        match self.guarded(&gpu, || gpu.upload_buffer()) {
            Ok(upload) => Some(Staging { gpu, upload }),
            Err(e) => {
                tracing::warn!("no GPU upload buffer ({e}); hashing on the CPU");
                None
            }
        }
    }

    /// Submits a filled batch (image `i` at byte `offsets[i]` of `staging`) and returns at once; the
    /// results come from [`GpuEngine::complete`]. A failure here is not lost: `complete` recomputes the
    /// batch on the CPU.
    pub fn submit(
        &self,
        staging: &Staging,
        images: &[ImageView<'_>],
        offsets: &[u64],
        dihedral: bool,
    ) -> Submitted {
        let gpu = staging.gpu.clone();
        let flight = self.guarded(&gpu, || gpu.submit_staged(&staging.upload, images, offsets, dihedral));
        let in_flight = gpu.in_flight();
        Submitted { gpu, flight, in_flight }
    }

    /// Waits for a submitted batch and returns its hashes; on any failure (at submission or now) the batch
    /// is recomputed on the CPU from `images` (the same images, in the same order), logged and counted.
    pub fn complete(
        &self,
        submitted: Submitted,
        images: &[ImageView<'_>],
        dihedral: bool,
    ) -> Vec<HashRecord> {
        let Submitted { gpu, flight, .. } = submitted;
        let result = flight.and_then(|f| self.guarded(&gpu, || gpu.complete(f))).and_then(|records| {
            if records.len() == images.len() {
                self.recheck(&gpu, records, images, dihedral)
            } else {
                Ok(records)
            }
        });
        match result {
            Ok(records) if records.len() == images.len() => records,
            Ok(records) => self.fall_back(
                images,
                dihedral,
                &GpuError::Map(format!("{} results for {} images", records.len(), images.len())),
            ),
            Err(e) => self.fall_back(images, dihedral, &e),
        }
    }

    /// The CPU's hashes of a batch the GPU failed, logged and counted.
    fn fall_back(&self, images: &[ImageView<'_>], dihedral: bool, e: &GpuError) -> Vec<HashRecord> {
        let n = self.inner.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            "GPU batch of {} images failed ({e}); recomputed on the CPU ({n} so far)",
            images.len()
        );
        cpu_batch(images, dihedral)
    }

    /// Hashes `images` (PDQ with quality, pHash, and the dihedral variants when asked). On any GPU failure
    /// the batch is recomputed on the CPU, logged and counted, so the result is always the reference's.
    /// Blocks until done.
    pub fn hash_batch(&self, images: &[ImageView<'_>], dihedral: bool) -> Vec<HashRecord> {
        self.try_hash_batch(images, dihedral).unwrap_or_else(|e| self.fall_back(images, dihedral, &e))
    }

    /// `gpu` is lost: count it once and start re-creating a device, unless that is already under way.
    fn lost(&self, gpu: &Arc<GpuHasher>) {
        if !Arc::ptr_eq(gpu, &self.hasher()) || self.inner.recovering.swap(true, Ordering::SeqCst) {
            return;
        }
        let n = self.inner.losses.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(losses = n, "GPU device lost; hashing on the CPU while a new device is opened");
        let inner = self.inner.clone();
        let spawned =
            std::thread::Builder::new().name("pharos-gpu-recovery".into()).spawn(move || recover(&inner));
        if let Err(e) = spawned {
            tracing::error!("cannot start the GPU recovery thread ({e}); staying on the CPU");
        }
    }
}

/// A batch being filled for the GPU: a mapped upload buffer of one device ([`GpuEngine::staging`]).
/// Several threads may write into it at once, at disjoint offsets.
pub struct Staging {
    gpu: Arc<GpuHasher>,
    upload: UploadBuffer,
}

impl Staging {
    /// Bytes of pixels it holds ([`crate::gpu::upload_len`] of each image, summed).
    pub fn capacity(&self) -> u64 {
        self.upload.capacity()
    }

    /// Filter-plane floats one submission may use (`width × height` of each PDQ-hashable image, summed).
    pub fn plane_budget(&self) -> usize {
        self.gpu.plane_budget()
    }

    /// Copies `img`'s pixels to byte `offset`, which the caller reserved ([`crate::gpu::upload_len`]
    /// bytes, a multiple of 8 apart).
    pub fn write(&self, offset: u64, img: &ImageView<'_>) -> std::result::Result<(), GpuError> {
        self.upload.write(offset, img)
    }
}

/// A batch submitted to the GPU ([`GpuEngine::submit`]), or the reason it could not be.
pub struct Submitted {
    gpu: Arc<GpuHasher>,
    flight: std::result::Result<InFlight, GpuError>,
    in_flight: usize,
}

impl Submitted {
    /// Submissions in flight on the device just after this one was made, itself included (0 when it
    /// failed).
    pub fn in_flight(&self) -> usize {
        if self.flight.is_ok() {
            self.in_flight
        } else {
            0
        }
    }
}

/// The GPU part of a batch: oversized images on the CPU, the rest on `gpu`.
fn on_device(
    gpu: &GpuHasher,
    images: &[ImageView<'_>],
    dihedral: bool,
) -> std::result::Result<Vec<HashRecord>, GpuError> {
    let (fit, big): (Vec<usize>, Vec<usize>) = (0..images.len()).partition(|&i| gpu.fits(&images[i]));
    if big.is_empty() {
        return gpu.try_hash_batch(images, dihedral);
    }
    tracing::debug!(images = big.len(), "images exceed the GPU buffer budget; hashed on the CPU");
    let mut out: Vec<Option<HashRecord>> = vec![None; images.len()];
    let pick = |idx: &[usize]| idx.iter().map(|&i| images[i]).collect::<Vec<_>>();
    for (&i, rec) in big.iter().zip(cpu_batch(&pick(&big), dihedral)) {
        out[i] = Some(rec);
    }
    if !fit.is_empty() {
        for (&i, rec) in fit.iter().zip(gpu.try_hash_batch(&pick(&fit), dihedral)?) {
            out[i] = Some(rec);
        }
    }
    Ok(out.into_iter().map(|r| r.expect("every image hashed")).collect())
}

/// The recovery thread: opens a replacement device (which runs the canary) with back-off until one works.
fn recover(inner: &GpuInner) {
    let mut wait = Duration::from_millis(inner.backoff_ms.0.load(Ordering::SeqCst));
    let cap = Duration::from_millis(inner.backoff_ms.1.load(Ordering::SeqCst));
    loop {
        std::thread::sleep(wait);
        let fault = inner
            .canary_faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        match GpuHasher::new_with_canary_fault(inner.policy, fault) {
            Ok(gpu) => {
                *inner.current.write() = Arc::new(gpu);
                let n = inner.recreations.fetch_add(1, Ordering::Relaxed) + 1;
                inner.recovering.store(false, Ordering::SeqCst);
                tracing::info!(recreations = n, "GPU device re-created; hashing on the GPU again");
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "re-creating the GPU device failed ({e}); next attempt in {:?}",
                    (wait * 2).min(cap)
                );
                wait = (wait * 2).min(cap);
            }
        }
    }
}

/// GPU devices refused by their start-up canary in this process ([`crate::gpu::canary_failures`]).
pub fn canary_failures() -> u64 {
    crate::gpu::canary_failures()
}

impl Engine {
    /// Opens `backend` (see [`Backend::resolve`] for the choice `auto` makes) and logs the backend in use.
    pub fn new(backend: Backend) -> Result<Engine> {
        let engine = match backend {
            Backend::Cpu => Engine::Cpu,
            Backend::Auto => match GpuHasher::new(AdapterPolicy::HardwareOnly) {
                Ok(gpu) => Engine::from_gpu(gpu),
                Err(e) => {
                    tracing::info!("backend auto: {e}; using the CPU");
                    Engine::Cpu
                }
            },
            Backend::Gpu => GpuHasher::new(AdapterPolicy::AllowSoftware)
                .map(Engine::from_gpu)
                .map_err(|e| Error::BackendUnavailable(e.to_string()))?,
        };
        tracing::info!("hashing backend: {}", engine.describe());
        Ok(engine)
    }

    /// An engine over an already opened GPU hasher.
    pub fn from_gpu(gpu: GpuHasher) -> Engine {
        Engine::Gpu(Arc::new(GpuEngine::new(gpu)))
    }

    /// The backend this engine runs (never `auto`).
    pub fn backend(&self) -> Backend {
        match self {
            Engine::Cpu => Backend::Cpu,
            Engine::Gpu(_) => Backend::Gpu,
        }
    }

    /// Whether `img` should wait for a GPU batch. Not on the CPU backend, not when the device's buffers
    /// cannot hold it, and not once the device is lost: those images are hashed on the CPU where they were
    /// decoded, in parallel, instead of one at a time on the thread that feeds the GPU, where one huge
    /// image or a dead device would hold up every batch behind it.
    pub fn batches_image(&self, img: &ImageView<'_>) -> bool {
        match self {
            Engine::Cpu => false,
            Engine::Gpu(g) => g.healthy() && g.hasher().fits(img),
        }
    }

    /// The GPU backend, when this engine runs on it (for the pipeline's staged batches).
    pub fn gpu(&self) -> Option<&Arc<GpuEngine>> {
        match self {
            Engine::Cpu => None,
            Engine::Gpu(g) => Some(g),
        }
    }

    /// "cpu", or "gpu: <adapter>", for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu => "cpu".into(),
            Engine::Gpu(g) => format!("gpu: {}", g.hasher().adapter()),
        }
    }

    /// How many GPU batches were recomputed on the CPU so far (0 on the CPU backend).
    pub fn fallbacks(&self) -> u64 {
        match self {
            Engine::Cpu => 0,
            Engine::Gpu(g) => g.fallbacks(),
        }
    }

    /// Hashes a batch of decoded images (results in input order). Blocks; call it from a worker thread.
    /// The result never depends on the device: see [`GpuEngine::hash_batch`].
    pub fn hash_batch(&self, images: &[ImageView<'_>], dihedral: bool) -> Vec<HashRecord> {
        match self {
            Engine::Cpu => cpu_batch(images, dihedral),
            Engine::Gpu(g) => g.hash_batch(images, dihedral),
        }
    }
}
