//! Which vector instructions the CPU hashers may use, decided once per process.
//!
//! The hashers have a portable path (plain Rust, the oracle every vector path is tested against) and
//! hand-written x86-64 kernels. Asking the CPU on every image or every block costs a few atomic loads and
//! branches each time, so the answer is computed on first use and cached in an atomic (the way `memchr`
//! caches its choice of kernel). Every path gives the same bits; the level only changes speed.
//!
//! `PHAROS_SIMD` caps the level, so tests and benchmarks can compare paths on one machine:
//! `scalar` (portable code only), `avx2`, or `avx512` (the default: the best the CPU has). The value is
//! read once, the first time a hasher runs; an unknown value is ignored with a warning.

use std::sync::atomic::{AtomicU8, Ordering};

/// A vector instruction level, ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable Rust only (the reference the others are tested against).
    Scalar = 1,
    /// x86-64 AVX2 + FMA kernels.
    Avx2 = 2,
    /// x86-64 AVX-512 (F, BW, VL, VNNI, VBMI) kernels where they exist; AVX2 kernels elsewhere.
    Avx512 = 3,
}

impl Level {
    /// The level named by a `PHAROS_SIMD` value (case-insensitive), if it is one.
    pub fn parse(name: &str) -> Option<Level> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" | "portable" | "none" => Some(Level::Scalar),
            "avx2" => Some(Level::Avx2),
            "avx512" | "avx-512" => Some(Level::Avx512),
            _ => None,
        }
    }

    /// The level's `PHAROS_SIMD` name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            3 => Level::Avx512,
            2 => Level::Avx2,
            _ => Level::Scalar,
        }
    }
}

/// 0 until the first call of [`level`], then the chosen `Level as u8`.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level the hashers use: the best the CPU supports, capped by `PHAROS_SIMD`. Detected on the first call
/// and cached; later calls are one relaxed load.
#[inline]
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => {
            let chosen = detect().min(env_cap());
            // Racing first callers compute the same value, so a plain store is enough.
            LEVEL.store(chosen as u8, Ordering::Relaxed);
            chosen
        }
        v => Level::from_u8(v),
    }
}

/// The best level this CPU supports (ignoring `PHAROS_SIMD`).
pub fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        let avx512 = avx2
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vl")
            && has!("avx512vnni")
            && has!("avx512vbmi");
        if avx512 {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
    }
    Level::Scalar
}

/// The cap from `PHAROS_SIMD` (no cap when unset or unrecognised).
fn env_cap() -> Level {
    match std::env::var("PHAROS_SIMD") {
        Ok(v) => Level::parse(&v).unwrap_or_else(|| {
            tracing::warn!(value = %v, "PHAROS_SIMD: expected scalar, avx2 or avx512; ignoring it");
            Level::Avx512
        }),
        Err(_) => Level::Avx512,
    }
}

/// Every level this CPU can run, lowest first: what the differential tests iterate over.
pub fn available() -> Vec<Level> {
    [Level::Scalar, Level::Avx2, Level::Avx512].into_iter().filter(|&l| l <= detect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in [Level::Scalar, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse(" AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("sse9"), None);
    }

    #[test]
    fn the_cached_level_is_supported() {
        assert!(level() <= detect());
        assert_eq!(level(), level());
        assert_eq!(available().first(), Some(&Level::Scalar));
    }
}
