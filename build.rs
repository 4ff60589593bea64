//! Two jobs:
//! - Compiles `proto/pharos/v1/pharos.proto` into Rust (messages, tonic server and client) without a system
//!   `protoc`: protox parses the file in Rust, tonic-prost-build generates the code. The encoded descriptor
//!   set is written too, for gRPC server reflection (so `grpcurl` works without the .proto file).
//! - Decides whether this machine plausibly has a GPU adapter for the GPU tests, and if not sets
//!   `cfg(pharos_no_gpu)`, which marks them `#[ignore]`d (listed as ignored, not passed). See [`gpu_cfg`].

use prost::Message as _;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gpu_cfg();
    let proto = "proto/pharos/v1/pharos.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("pharos_v1_descriptor.bin"), fds.encode_to_vec())?;
    // Image fields as `bytes::Bytes`: the decoder reads them where tonic put them, no copy.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".pharos.v1.HashRequest.image")
        .bytes(".pharos.v1.HashAndMatchRequest.image")
        .compile_fds(fds)?;
    Ok(())
}

/// Sets `cfg(pharos_no_gpu)` when no GPU adapter can be expected here:
/// - `PHAROS_REQUIRE_GPU=1`: never (the GPU tests run, and fail without an adapter; CI sets it);
/// - otherwise `PHAROS_NO_GPU=1`: always;
/// - otherwise on Linux and the BSDs (where wgpu is built with Vulkan only), when no Vulkan driver is
///   installed: no ICD manifest (`*.json`) in the loader's directories or in `VK_DRIVER_FILES` /
///   `VK_ICD_FILENAMES`. A manifest only makes an adapter plausible; the tests check at run time that there
///   is one (`tests/common/mod.rs`, `gpu()`) and fail if not, so a broken driver is never a silent pass.
/// - macOS and Windows always have Metal or DX12.
///
/// Decided on the machine that builds, which is the machine that runs the tests. After installing or
/// removing a Vulkan driver where none of the loader's directories existed before, `touch build.rs` (cargo
/// watches only directories that existed when this ran).
fn gpu_cfg() {
    println!("cargo::rustc-check-cfg=cfg(pharos_no_gpu)");
    for var in ["PHAROS_REQUIRE_GPU", "PHAROS_NO_GPU", "VK_DRIVER_FILES", "VK_ICD_FILENAMES", "XDG_DATA_DIRS"]
    {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let env_is_1 = |var: &str| std::env::var(var).is_ok_and(|v| v == "1");
    let no_gpu = if env_is_1("PHAROS_REQUIRE_GPU") {
        if env_is_1("PHAROS_NO_GPU") {
            println!("cargo::warning=PHAROS_REQUIRE_GPU=1 wins over PHAROS_NO_GPU=1: the GPU tests run");
        }
        false
    } else if env_is_1("PHAROS_NO_GPU") {
        true
    } else {
        let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        !matches!(os.as_str(), "macos" | "ios" | "windows") && !vulkan_driver_installed()
    };
    if no_gpu {
        println!("cargo::rustc-cfg=pharos_no_gpu");
    }
}

/// Whether the Vulkan loader would find at least one driver manifest.
fn vulkan_driver_installed() -> bool {
    // An explicit list replaces the search (colon-separated manifest files or directories).
    for var in ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"] {
        if let Some(list) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return std::env::split_paths(&list)
                .any(|p| if p.is_dir() { has_manifest(&p) } else { p.is_file() });
        }
    }
    let data_dirs = std::env::var_os("XDG_DATA_DIRS").filter(|v| !v.is_empty());
    let data_dirs: Vec<PathBuf> = match data_dirs {
        Some(list) => std::env::split_paths(&list).collect(),
        None => vec!["/usr/local/share".into(), "/usr/share".into()],
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for d in data_dirs.into_iter().chain(["/etc".into(), "/usr/share".into()]) {
        let d = d.join("vulkan/icd.d");
        if d.is_dir() && !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    for d in &dirs {
        println!("cargo::rerun-if-changed={}", d.display());
    }
    dirs.iter().any(|d| has_manifest(d))
}

fn has_manifest(dir: &Path) -> bool {
    // An entry that cannot be read is not a manifest the loader could use either.
    std::fs::read_dir(dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "json")))
}
