//! Shared helpers for the integration tests: where the corpus is, and its `expected.tsv`.
//!
//! The corpus is `$PHAROS_CORPUS` when set (CI points it at `../shared/testdata`, 517 images), otherwise the
//! small fixture set carried in `tests/fixtures` (same layout, same columns), so a fresh clone tests itself.

#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

pub(crate) mod daemon;
pub(crate) mod server;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The corpus directory in use.
pub(crate) fn corpus_dir() -> PathBuf {
    match std::env::var_os("PHAROS_CORPUS") {
        Some(dir) if !dir.is_empty() => {
            let p = PathBuf::from(dir);
            assert!(p.join("expected.tsv").is_file(), "PHAROS_CORPUS={} has no expected.tsv", p.display());
            p
        }
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// One row of `expected.tsv`, by column name.
pub(crate) struct Row(pub(crate) HashMap<String, String>);

impl Row {
    pub(crate) fn get(&self, col: &str) -> &str {
        self.0.get(col).unwrap_or_else(|| panic!("expected.tsv has no column {col}"))
    }
    pub(crate) fn path(&self) -> PathBuf {
        corpus_dir().join(self.get("path"))
    }
}

/// All rows of the corpus' `expected.tsv`.
pub(crate) fn rows() -> Vec<Row> {
    let dir = corpus_dir();
    let text = std::fs::read_to_string(dir.join("expected.tsv")).expect("read expected.tsv");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("header").split('\t').map(String::from).collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| Row(header.iter().cloned().zip(l.split('\t').map(String::from)).collect()))
        .collect()
}

/// The Python interpreter named by the variable `var` (set by `scripts/test.sh` from `script`, which builds
/// the venv), or `None` after saying on stderr why the test that needs it (`what`) is skipped. Under
/// `PHAROS_REQUIRE_PYTHON=1` (CI) a missing interpreter fails the test instead.
pub(crate) fn python_from_env(var: &str, script: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            if std::env::var("PHAROS_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
                panic!("PHAROS_REQUIRE_PYTHON=1 but {var} is not set ({var}=\"$({script} | tail -n 1)\")");
            }
            eprintln!("\n*** SKIPPED: {what} needs {var}, a python that {script} prints ***\n");
            None
        }
    }
}

/// `h` with its `n` lowest bits flipped (a PDQ hash at distance `n`).
pub(crate) fn flipped(h: pharos::hash::Hash256, n: usize) -> pharos::hash::Hash256 {
    let mut out = h;
    for k in 0..n {
        out.limbs[k / 64] ^= 1 << (k % 64);
    }
    out
}

/// Lower-case hex SHA-256.
pub(crate) fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    pharos::hash::exact::hex(&md5::Md5::digest(bytes))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A histogram of small integers, printed as `value:count` pairs.
pub(crate) fn histogram(values: &[u32]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for &v in values {
        *counts.entry(v).or_insert(0usize) += 1;
    }
    counts.iter().map(|(v, c)| format!("{v}:{c}")).collect::<Vec<_>>().join(" ")
}

/// CRC-32 (IEEE 802.3, reflected, as PNG uses), bit by bit: to patch PNG headers in tests.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The GPU hasher the GPU tests share, on any adapter (lavapipe included).
///
/// GPU tests carry `#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]`: `build.rs` sets
/// `cfg(pharos_no_gpu)` where no adapter can be expected (no Vulkan driver installed, or `PHAROS_NO_GPU=1`),
/// so there they are listed as ignored rather than passing without having run. Where they do run, an adapter
/// is expected, and its absence is a failure, never a skip: with `PHAROS_REQUIRE_GPU=1` (CI) because an
/// adapter is required, and without it because the build found a Vulkan driver that then offers no adapter,
/// a broken setup these tests exist to notice (`PHAROS_NO_GPU=1` marks them ignored instead). The same holds
/// for ignored tests run anyway (`--ignored`).
pub(crate) fn gpu() -> &'static pharos::engine::GpuEngine {
    use std::sync::OnceLock;
    static GPU: OnceLock<Result<pharos::engine::GpuEngine, String>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        let gpu = pharos::gpu::GpuHasher::new(pharos::gpu::AdapterPolicy::AllowSoftware);
        if let Ok(g) = &gpu {
            eprintln!("GPU tests run on {}", g.adapter());
        }
        gpu.map(pharos::engine::GpuEngine::new).map_err(|e| e.to_string())
    });
    match gpu {
        Ok(g) => g,
        Err(e) if std::env::var("PHAROS_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("PHAROS_REQUIRE_GPU=1 but no GPU adapter: {e}")
        }
        Err(e) if cfg!(pharos_no_gpu) => {
            panic!("this GPU test is ignored on this machine (no GPU adapter) and was run anyway: {e}")
        }
        Err(e) => panic!(
            "no GPU adapter, although a Vulkan driver is installed (build.rs found its manifest): {e}. Fix the \
             driver, or rebuild with PHAROS_NO_GPU=1 to mark the GPU tests ignored"
        ),
    }
}

/// Runs the `pharos` binary with `args` and extra `env`, stdin closed, without the caller's `PHAROS_*`
/// variables (so a developer's environment cannot change what a test sees).
pub(crate) fn pharos_env<I, S>(args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pharos"));
    cmd.args(args.into_iter().map(Into::into)).stdin(Stdio::null());
    for (k, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        if k.starts_with("PHAROS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run the pharos binary")
}

/// [`pharos_env`] with no extra variables.
pub(crate) fn pharos<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    pharos_env(args, &[])
}

/// A process's status and output, for assertion messages.
pub(crate) fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
