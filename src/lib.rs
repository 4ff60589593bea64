//! Pharos: perceptual hashing (Meta's PDQ and a 64-bit DCT pHash) and matching, for hotlines and crawlers
//! that compare images against banks of hashes of known abuse material without ever keeping the images.
//!
//! # Layers
//! Leaves first; a module imports only from layers below its own, never from its own layer's siblings
//! above it or from higher layers (`tests/layers.rs` checks every `crate::` path in `src/`):
//! 1. [`pixels`] (the image view decoders produce and hashers read), [`error`], [`metrics`] (the
//!    Prometheus registry), [`synth`] (generated test and bench data) — leaves.
//! 2. [`image`]: bytes → pixels (format sniffing, limits checked from the header before any pixel buffer
//!    exists, the reference's decode policy). [`hash`]: pixels → hashes; [`hash::pdq`] is Meta's C++
//!    reference bit for bit, [`hash::phash`] imagehash 4.3.2's `phash`. These CPU functions are the oracle
//!    every other backend is tested against.
//! 3. [`gpu`]: the same hashes from wgpu compute shaders (`shaders/`), each stage mirroring a named
//!    [`hash`] function. [`matcher`]: exact Hamming range search (multi-index hash + brute-force scan).
//! 4. [`engine`]: backend choice, the opened backend and the GPU → CPU fallback. [`store`]: bank rows in
//!    an embedded, crash-safe database (redb).
//! 5. [`pipeline`]: admission, decode pool, batches for the GPU, per-worker hashing for the CPU, results
//!    in input order. [`banks`]: kinds, labels, search with dihedral variants and its limits, the live
//!    banks kept in step with the store, the text formats banks are imported from and exported to.
//! 6. [`server`]: `pharos serve`, the gRPC daemon (tonic) and its configuration; the binary's `cli`
//!    module (`src/cli/`, including `pharos bench`) — thin front ends over the layers below.

pub mod banks;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod hash;
pub mod image;
pub mod matcher;
pub mod metrics;
pub mod pipeline;
pub mod pixels;
pub mod server;
pub mod store;
#[doc(hidden)]
pub mod synth;

pub use error::{Error, Result};
