//! File bytes → every hash Pharos computes for an image: the unit the CLI, the benchmarks and the daemon share.
//!
//! A [`Hashers`] owns the per-thread scratch space of all hashers, so hashing an image allocates only its
//! decoded pixel buffer. Use one per worker thread (or [`hash_bytes`], which keeps one per thread).
//!
//! ```
//! use pharos::pipeline::{hash_bytes, HashOptions};
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
use crate::gpu::{AdapterPolicy, GpuHasher};
use crate::hash::pdq::{Dihedral, PdqHash, PdqHasher};
use crate::hash::phash::PhashHasher;
use crate::hash::{Backend, Hash64, ImageView};
use crate::image::{decode, DecodeOptions};
use std::cell::RefCell;
use std::sync::Arc;

/// What to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashOptions {
    /// Decoding limits and EXIF policy.
    pub decode: DecodeOptions,
    /// Also compute the seven PDQ dihedral variants (free: they come from the same DCT).
    pub dihedral: bool,
}

/// Everything computed for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashRecord {
    /// Width of the hashed pixels (after EXIF orientation, when applied).
    pub width: u32,
    /// Height of the hashed pixels.
    pub height: u32,
    /// PDQ hash and quality.
    pub pdq: PdqHash,
    /// 64-bit pHash.
    pub phash: Hash64,
    /// The PDQ dihedral variants, when asked for.
    pub dihedral: Option<Dihedral>,
}

/// Scratch space for every hasher; one per thread.
#[derive(Default)]
pub struct Hashers {
    pdq: PdqHasher,
    phash: PhashHasher,
}

impl Hashers {
    /// Empty scratch space (grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes decoded pixels.
    pub fn hash_pixels(&mut self, img: ImageView<'_>, dihedral: bool) -> HashRecord {
        let (pdq, dihedral) = if dihedral {
            let (h, d) = self.pdq.hash_with_dihedral(img);
            (h, Some(d))
        } else {
            (self.pdq.hash(img), None)
        };
        HashRecord { width: img.width, height: img.height, pdq, phash: self.phash.hash(img), dihedral }
    }

    /// Decodes `bytes` and hashes the pixels.
    pub fn hash_bytes(&mut self, bytes: &[u8], opts: &HashOptions) -> Result<HashRecord> {
        let img = decode(bytes, &opts.decode)?;
        Ok(self.hash_pixels(img.view(), opts.dihedral))
    }
}

thread_local! {
    static HASHERS: RefCell<Hashers> = RefCell::new(Hashers::new());
}

/// [`Hashers::hash_bytes`] with this thread's scratch space.
pub fn hash_bytes(bytes: &[u8], opts: &HashOptions) -> Result<HashRecord> {
    HASHERS.with(|h| h.borrow_mut().hash_bytes(bytes, opts))
}

/// A resolved hashing backend, opened: what batches of decoded images are hashed with.
#[derive(Clone)]
pub enum Engine {
    /// The CPU reference, on rayon's thread pool.
    Cpu,
    /// The GPU backend (which itself falls back to the CPU for a batch the GPU fails).
    Gpu(Arc<GpuHasher>),
}

impl Engine {
    /// Opens `backend` (see [`Backend::resolve`] for the choice `auto` makes) and logs the backend in use.
    pub fn new(backend: Backend) -> Result<Engine> {
        let engine = match backend {
            Backend::Cpu => Engine::Cpu,
            Backend::Auto => match GpuHasher::new(AdapterPolicy::HardwareOnly) {
                Ok(gpu) => Engine::Gpu(Arc::new(gpu)),
                Err(e) => {
                    log::info!("backend auto: {e}; using the CPU");
                    Engine::Cpu
                }
            },
            Backend::Gpu => GpuHasher::new(AdapterPolicy::AllowSoftware)
                .map(|gpu| Engine::Gpu(Arc::new(gpu)))
                .map_err(|e| Error::BackendUnavailable(e.to_string()))?,
        };
        log::info!("hashing backend: {}", engine.describe());
        Ok(engine)
    }

    /// The backend this engine runs (never `auto`).
    pub fn backend(&self) -> Backend {
        match self {
            Engine::Cpu => Backend::Cpu,
            Engine::Gpu(_) => Backend::Gpu,
        }
    }

    /// "cpu", or "gpu: <adapter>", for logs and reports.
    pub fn describe(&self) -> String {
        match self {
            Engine::Cpu => "cpu".into(),
            Engine::Gpu(g) => format!("gpu: {}", g.adapter()),
        }
    }

    /// Hashes a batch of decoded images (results in input order). Blocks; call it from a worker thread.
    pub fn hash_batch(&self, images: &[ImageView<'_>], dihedral: bool) -> Vec<HashRecord> {
        match self {
            Engine::Cpu => {
                use rayon::prelude::*;
                images.par_iter().map_init(Hashers::new, |h, img| h.hash_pixels(*img, dihedral)).collect()
            }
            Engine::Gpu(g) => g.hash_batch(images, dihedral),
        }
    }
}
