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
use crate::gpu::{probe, AdapterPolicy, GpuError, GpuHasher};
use crate::hash::exact::ExactHashes;
use crate::hash::{HashRecord, Hashers};
use crate::image::{decode, DecodeOptions};
use crate::pixels::ImageView;
use std::cell::RefCell;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// The GPU backend with its CPU fallback: the device, and the count of batches that fell back to the CPU.
///
/// Dereferences to the [`GpuHasher`] for its adapter description and test hooks.
pub struct GpuEngine {
    gpu: GpuHasher,
    fallbacks: AtomicU64,
}

impl std::ops::Deref for GpuEngine {
    type Target = GpuHasher;
    fn deref(&self) -> &GpuHasher {
        &self.gpu
    }
}

impl GpuEngine {
    /// Wraps an opened GPU hasher.
    pub fn new(gpu: GpuHasher) -> GpuEngine {
        GpuEngine { gpu, fallbacks: AtomicU64::new(0) }
    }

    /// How many batches were recomputed on the CPU because the GPU failed.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Hashes `images` on the GPU, or says why it could not. Images the device's buffers cannot hold are
    /// hashed on the CPU (that is not a failure).
    pub fn try_hash_batch(
        &self,
        images: &[ImageView<'_>],
        dihedral: bool,
    ) -> std::result::Result<Vec<HashRecord>, GpuError> {
        let (fit, big): (Vec<usize>, Vec<usize>) =
            (0..images.len()).partition(|&i| self.gpu.fits(&images[i]));
        if big.is_empty() {
            return self.gpu.try_hash_batch(images, dihedral);
        }
        tracing::debug!(images = big.len(), "images exceed the GPU buffer budget; hashed on the CPU");
        let mut out: Vec<Option<HashRecord>> = vec![None; images.len()];
        let pick = |idx: &[usize]| idx.iter().map(|&i| images[i]).collect::<Vec<_>>();
        for (&i, rec) in big.iter().zip(cpu_batch(&pick(&big), dihedral)) {
            out[i] = Some(rec);
        }
        if !fit.is_empty() {
            for (&i, rec) in fit.iter().zip(self.gpu.try_hash_batch(&pick(&fit), dihedral)?) {
                out[i] = Some(rec);
            }
        }
        Ok(out.into_iter().map(|r| r.expect("every image hashed")).collect())
    }

    /// Hashes `images` (PDQ with quality, pHash, and the dihedral variants when asked). On any GPU failure
    /// the batch is recomputed on the CPU, logged and counted, so the result is always the reference's.
    /// Blocks until done.
    pub fn hash_batch(&self, images: &[ImageView<'_>], dihedral: bool) -> Vec<HashRecord> {
        self.try_hash_batch(images, dihedral).unwrap_or_else(|e| {
            let n = self.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                "GPU batch of {} images failed ({e}); recomputed on the CPU ({n} so far)",
                images.len()
            );
            cpu_batch(images, dihedral)
        })
    }
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
            Engine::Gpu(g) => !g.gpu.is_lost() && g.gpu.fits(img),
        }
    }

    /// "cpu", or "gpu: <adapter>", for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu => "cpu".into(),
            Engine::Gpu(g) => format!("gpu: {}", g.gpu.adapter()),
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
