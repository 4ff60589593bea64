//! Pharos: perceptual hashing (Meta's PDQ and a 64-bit DCT pHash) and matching, for hotlines and crawlers
//! that compare images against banks of hashes of known abuse material without ever keeping the images.
//!
//! # Layout
//! - [`image`]: bytes → pixels. Format sniffing, limits checked from the header before any pixel buffer
//!   exists, the reference's decode policy (full resolution, alpha dropped, EXIF orientation only on request).
//! - [`hash`]: pixels → hashes. [`hash::pdq`] is Meta's C++ reference bit for bit; [`hash::phash`] is
//!   imagehash 4.3.2's `phash` bit for bit. These CPU functions are the oracle every other backend is
//!   tested against.
//! - [`gpu`]: the same hashes from wgpu compute shaders (`shaders/`), batched, with the CPU as fallback.
//! - [`pipeline`]: file bytes → a [`pipeline::HashRecord`] (decode + every hash), the unit the CLI, the
//!   benchmarks and the daemon share.
//! - [`matcher`]: exact Hamming range search over banks (multi-index hash + brute-force scan), in parallel.
//! - [`store`]: banks persisted in an embedded, crash-safe database (redb), and the text formats banks are
//!   imported from and exported to.
//! - [`batch`]: the daemon's dynamic batcher: bounded admission, a decode pool, batches to the backend.
//! - [`server`]: `pharos serve`, the gRPC daemon (tonic), its configuration and banks; [`metrics`] what it
//!   exports to Prometheus.
//! - [`error`]: the crate's error type; every failure a caller can see is one of its variants.
//!
//! The binary (`src/main.rs`) is a thin clap front end over these modules.

pub mod batch;
pub mod error;
pub mod gpu;
pub mod hash;
pub mod image;
pub mod matcher;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod store;

pub use error::{Error, Result};
