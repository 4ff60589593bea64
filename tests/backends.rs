//! Every backend against the CPU reference (the oracle), on the corpus and on synthetic edge cases.
//!
//! The GPU tests run on whatever adapter exists, lavapipe included (CI installs it). Where `build.rs` finds
//! no Vulkan driver (or `PHAROS_NO_GPU=1`) they are marked ignored; where they run, a missing adapter is a
//! failure (`common::gpu()`). Tolerances (issue 3): PDQ within 2 bits on every
//! image and identical on ≥ 99%, quality identical, pHash identical on ≥ 99%; on lavapipe everything is
//! expected to be identical and the counts are printed.
//!
//! `PHAROS_GPU_CORPUS_STEP=N` subsamples the corpus to every N-th image
//! (default 1: all of it; the 517-image corpus takes about 20 s on lavapipe with 2 cores).

use crate::common;

use common::{gpu, histogram, rows};
use pharos::engine::Backend;
use pharos::hash::pdq::{self, PdqHasher};
use pharos::hash::phash::PhashHasher;
use pharos::hash::{HashRecord, Hashers};
use pharos::image::{decode, DecodeOptions, Decoded};
use pharos::pixels::ImageView;

fn corpus(step: usize) -> Vec<(String, Decoded)> {
    rows()
        .into_iter()
        .step_by(step)
        .map(|row| {
            let bytes = std::fs::read(row.path()).expect("read corpus image");
            let img = decode(&bytes, &DecodeOptions::default()).expect("decode");
            (row.get("path").to_string(), img)
        })
        .collect()
}

fn cpu(images: &[ImageView<'_>], dihedral: bool) -> Vec<HashRecord> {
    let mut h = Hashers::new();
    images.iter().map(|img| h.hash_pixels(*img, dihedral)).collect()
}

/// Patterned pixels (noise plus ramps), so no DCT coefficient ties the median by accident.
fn pattern(w: u32, h: u32, channels: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((w * h * channels) as usize);
    for y in 0..h {
        for x in 0..w {
            for c in 0..channels {
                let mixed =
                    x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ (c + seed).wrapping_mul(83492791);
                out.push(((mixed.wrapping_mul(2654435761) >> 26) + x + 2 * y + 50 * c) as u8);
            }
        }
    }
    out
}

#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn gpu_matches_cpu_on_the_corpus() {
    let gpu = gpu();
    let step: usize = std::env::var("PHAROS_GPU_CORPUS_STEP").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let images = corpus(step.max(1));
    let fallbacks = gpu.fallbacks();
    let views: Vec<ImageView<'_>> = images.iter().map(|(_, d)| d.view()).collect();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    for (k, batch) in views.chunks(32).enumerate() {
        let sizes: Vec<_> = batch.iter().map(|v| (v.width, v.height)).collect();
        got.extend(gpu.try_hash_batch(batch, true).unwrap_or_else(|e| panic!("batch {k} {sizes:?}: {e}")));
    }
    let gpu_time = start.elapsed();
    assert_eq!(gpu.fallbacks(), fallbacks, "the GPU failed and the CPU stepped in");
    let want = cpu(&views, true);
    let n = images.len();
    let (mut pdq_same, mut q_same, mut ph_same, mut dih_same) = (0, 0, 0, 0);
    let mut dists = Vec::new();
    let mut failures = Vec::new();
    for (((path, _), g), w) in images.iter().zip(&got).zip(&want) {
        let d = g.pdq.hash.distance(&w.pdq.hash);
        dists.push(d);
        pdq_same += usize::from(d == 0);
        q_same += usize::from(g.pdq.quality == w.pdq.quality);
        ph_same += usize::from(g.phash == w.phash);
        dih_same += usize::from(g.dihedral == w.dihedral);
        if d > 2 {
            failures.push(format!("{path}: PDQ distance {d}"));
        }
        if g.pdq.quality != w.pdq.quality {
            failures.push(format!("{path}: quality {} vs {}", g.pdq.quality, w.pdq.quality));
        }
        assert_eq!((g.width, g.height), (w.width, w.height));
    }
    println!(
        "GPU vs CPU on {n} corpus images (every {step}th; GPU {:.1} s on {}): PDQ identical {pdq_same}, \
         distances {}; quality identical {q_same}; pHash identical {ph_same}; all 8 dihedral hashes identical {dih_same}",
        gpu_time.as_secs_f64(),
        gpu.hasher().adapter(),
        histogram(&dists)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(pdq_same * 100 >= n * 99, "PDQ identical on only {pdq_same} of {n}");
    assert!(ph_same * 100 >= n * 99, "pHash identical on only {ph_same} of {n}");
}

#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn gpu_matches_cpu_on_mixed_sizes_in_one_batch() {
    let gpu = gpu();
    // Tiny (PDQ all-zero), 64×64 (no filter), 32-pixel sides (skipped pHash passes), tall shapes (Pillow's
    // vertical-first order), grey and RGB, odd byte counts (pixel words padded).
    let shapes = [
        (1, 1, 3),
        (4, 100, 3),
        (5, 5, 1),
        (7, 3, 1),
        (64, 64, 3),
        (64, 64, 1),
        (32, 32, 3),
        (32, 100, 1),
        (100, 32, 3),
        (13, 45, 3),
        (45, 13, 1),
        (17, 300, 3),
        (300, 17, 1),
        (129, 257, 3),
        (640, 480, 3),
        (333, 1001, 1),
    ];
    let pixels: Vec<(u32, u32, u32, Vec<u8>)> =
        shapes.iter().enumerate().map(|(i, &(w, h, c))| (w, h, c, pattern(w, h, c, i as u32))).collect();
    let views: Vec<ImageView<'_>> = pixels
        .iter()
        .map(|(w, h, c, p)| if *c == 3 { ImageView::rgb(*w, *h, p) } else { ImageView::gray(*w, *h, p) })
        .collect();
    let fallbacks = gpu.fallbacks();
    for dihedral in [false, true] {
        let got = gpu.hash_batch(&views, dihedral);
        let want = cpu(&views, dihedral);
        for ((g, w), (sw, sh, c)) in got.iter().zip(&want).zip(shapes) {
            assert_eq!(g, w, "{sw}×{sh}×{c}, dihedral {dihedral}");
        }
    }
    assert_eq!(gpu.fallbacks(), fallbacks);
}

#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn every_gpu_stage_matches_its_cpu_function() {
    let gpu = gpu();
    let mut cases: Vec<(String, Decoded)> = corpus(1).into_iter().take(4).collect();
    cases.retain(|(_, d)| d.width >= 5 && d.height >= 5);
    let synthetic = [(333u32, 1001u32, 1u32), (129, 257, 3)];
    let pixels: Vec<(u32, u32, u32, Vec<u8>)> =
        synthetic.iter().map(|&(w, h, c)| (w, h, c, pattern(w, h, c, 7))).collect();
    let mut views: Vec<(String, ImageView<'_>)> = cases.iter().map(|(p, d)| (p.clone(), d.view())).collect();
    for (w, h, c, p) in &pixels {
        let v = if *c == 3 { ImageView::rgb(*w, *h, p) } else { ImageView::gray(*w, *h, p) };
        views.push((format!("synthetic {w}×{h}×{c}"), v));
    }
    // Both plane layouts of the horizontal passes (`RowLayout`): same operations, so the same values.
    // Other tests running meanwhile see either layout; their hashes must not change either.
    // The default (rows) last, as the other tests expect to find it.
    let layouts = [pharos::gpu::RowLayout::Columns, pharos::gpu::RowLayout::Rows];
    for ((name, img), layout) in views.iter().flat_map(|v| layouts.iter().map(move |l| (v, *l))) {
        gpu.hasher().set_row_layout(layout);
        let name = &format!("{name} ({} layout)", layout.name());
        let dump = gpu.hasher().debug_stages(*img).expect("GPU stages");
        let (h, w) = (img.height as usize, img.width as usize);
        // luma: exact (the CPU's tables, the reference's additions).
        let mut a = vec![0f32; h * w];
        pdq::luma(*img, &mut a);
        assert_eq!(dump.luma, a, "{name}: luma");
        // Box filter passes: the same running sums and divisions.
        let mut b = vec![0f32; h * w];
        let mut sums = vec![0f32; w];
        let mut worst = 0f32;
        // The second round is stored only where decimate reads: every row at the sampled columns, then
        // the sampled rows of those columns.
        let (cols, rows) = (centres(w), centres(h));
        for round in 0..2 {
            pdq::box_rows(&a, &mut b, h, w, pdq::window_size(w));
            let keep = |i: usize| round == 0 || cols[i % w];
            worst = worst.max(max_rel(&pick(&dump.passes[2 * round], keep), &pick(&b, keep)));
            pdq::box_cols(&b, &mut a, h, w, pdq::window_size(h), &mut sums);
            let keep = |i: usize| round == 0 || (cols[i % w] && rows[i / w]);
            worst = worst.max(max_rel(&pick(&dump.passes[2 * round + 1], keep), &pick(&a, keep)));
        }
        // Pinned, every operation and `div_exact` are exact on any driver: the passes are bit-equal.
        let pinned = gpu.hasher().float_mode() == pharos::gpu::FloatMode::Pinned;
        assert!(worst == 0.0 || (!pinned && worst <= 1e-6), "{name}: box filter relative error {worst}");
        let mut buf64 = [0f32; 4096];
        pdq::decimate(&dump.passes[3], h, w, &mut buf64);
        assert_eq!(dump.buf64, buf64.to_vec(), "{name}: decimate");
        assert_eq!(dump.quality, pdq::quality(&buf64), "{name}: quality");
        let dct = pdq::dct(&buf64);
        let dct_err = max_rel(&dump.dct[..256], &dct);
        assert!(dct_err <= 1e-5, "{name}: dct relative error {dct_err}");
        // threshold and dihedral from the GPU's own DCT: exact selection and sign/transpose moves.
        let gpu_dct: [f32; 256] = dump.dct[..256].try_into().unwrap();
        assert_eq!(dump.hashes[0], pdq::threshold(&gpu_dct), "{name}: threshold");
        let dih = pdq::dihedral(&gpu_dct);
        assert_eq!(&dump.hashes[..], &dih.all_with(dump.hashes[0])[..], "{name}: dihedral");
        // And end to end against the CPU pipeline.
        let (cpu_pdq, _) = PdqHasher::new().hash_with_dihedral(*img);
        println!(
            "{name}: box max rel err {worst:e}, dct max rel err {dct_err:e}, PDQ distance {}",
            dump.hashes[0].distance(&cpu_pdq.hash)
        );
        let thumb = PhashHasher::new().thumbnail(*img);
        assert_eq!(dump.thumb, thumb.to_vec(), "{name}: phash_resize");
    }
}

/// Which of `n` indices decimate samples (its 64 target centres along an axis of `n`).
fn centres(n: usize) -> Vec<bool> {
    let mut v = vec![false; n];
    for k in 0..64 {
        v[(2 * k + 1) * n / 128] = true;
    }
    v
}

/// The values of `plane` at the indices `keep` accepts.
fn pick(plane: &[f32], keep: impl Fn(usize) -> bool) -> Vec<f32> {
    plane.iter().enumerate().filter(|&(i, _)| keep(i)).map(|(_, &v)| v).collect()
}

fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f32::max)
}

/// Defect 11: a GPU wait has a timeout. A submission that does not finish in time (here: a zero timeout,
/// so every real submission "hangs") is recomputed on the CPU like a lost device, instead of blocking its
/// thread forever, and that device is not used again (the engine replaces it; see the self-healing test).
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn a_hung_gpu_submission_falls_back_to_the_cpu_like_a_lost_device() {
    // An adapter is there, or the test fails here.
    gpu();
    let gpu = pharos::engine::GpuEngine::new(
        pharos::gpu::GpuHasher::new(pharos::gpu::AdapterPolicy::AllowSoftware).expect("GPU"),
    );
    let images = corpus(1).into_iter().take(8).collect::<Vec<_>>();
    let views: Vec<ImageView<'_>> = images.iter().map(|(_, d)| d.view()).collect();
    let hung = gpu.hasher();
    hung.set_wait_timeout(std::time::Duration::ZERO);
    let started = std::time::Instant::now();
    let got = gpu.hash_batch(&views, true);
    assert_eq!(got, cpu(&views, true), "the hung batch's hashes are the CPU reference's");
    assert_eq!(gpu.fallbacks(), 1, "the fallback is counted");
    let err = hung.try_hash_batch(&views, false).expect_err("a hung device is not used again");
    assert!(err.to_string().contains("lost"), "{err}");
    eprintln!("hung submission handled in {:?}", started.elapsed());
}

#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn an_injected_gpu_failure_falls_back_to_exact_cpu_hashes() {
    // An adapter is there, or the test fails here.
    gpu();
    // A hasher of its own: the shared one serves tests running in parallel, which must not see the failure.
    let gpu = pharos::engine::GpuEngine::new(
        pharos::gpu::GpuHasher::new(pharos::gpu::AdapterPolicy::AllowSoftware).expect("GPU"),
    );
    let images = corpus(1).into_iter().take(6).collect::<Vec<_>>();
    let views: Vec<ImageView<'_>> = images.iter().map(|(_, d)| d.view()).collect();
    let before = gpu.fallbacks();
    gpu.hasher().inject_failures(1);
    assert!(gpu.try_hash_batch(&views, true).is_err(), "the injected failure surfaces from try_hash_batch");
    gpu.hasher().inject_failures(1);
    let got = gpu.hash_batch(&views, true);
    assert_eq!(got, cpu(&views, true), "fallback hashes are the CPU reference's");
    assert_eq!(gpu.fallbacks(), before + 1, "the fallback is counted");
    // And the GPU is used again for the next batch.
    let again = gpu.try_hash_batch(&views, true).expect("GPU works after a failed batch");
    assert_eq!(again.len(), views.len());
}

/// The shaders' only division, `div_exact` (common.wgsl, integer long division), run on the device as the
/// stages are compiled: every count the box filter and quality can use (1..4095) against IEEE division on
/// the CPU, over dividends where rounding is hardest (exact multiples, neighbours of powers of two, zero,
/// subnormals, the sums a box filter produces, random bit patterns).
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn gpu_division_is_exact_for_every_count() {
    let gpu = gpu();
    let mut rng = pharos::synth::SplitMix64::new(5);
    let mut pairs = Vec::new();
    for c in 1..4096u32 {
        let mut dividends =
            vec![0.0f32, f32::from_bits(1), f32::MIN_POSITIVE, f32::MAX, (c * 7) as f32, c as f32];
        for p in [-126i32, -3, 0, 7, 8, 15, 16, 23] {
            let x = f32::from_bits(((p + 127) as u32) << 23);
            dividends.extend([x, f32::from_bits(x.to_bits() - 1), f32::from_bits(x.to_bits() + 1)]);
        }
        for _ in 0..24 {
            dividends.push(f32::from_bits(rng.next_u64() as u32 & 0x7f7f_ffff));
            dividends.push(rng.below(255 * 4096 * 1000) as f32 / 1000.0);
        }
        pairs.extend(dividends.into_iter().flat_map(|s| [(s, c), (-s, c)]));
    }
    let got = gpu.hasher().debug_divide(&pairs).expect("GPU");
    let mut wrong = 0;
    for (&(s, c), q) in pairs.iter().zip(&got) {
        let want = s / c as f32;
        if q.to_bits() != want.to_bits() {
            wrong += 1;
            if wrong <= 10 {
                eprintln!("{s:e} / {c}: GPU {q:e}, IEEE {want:e}");
            }
        }
    }
    assert_eq!(wrong, 0, "{wrong} of {} quotients differ", pairs.len());
    println!(
        "{} quotients exact on {} ({})",
        pairs.len(),
        gpu.hasher().adapter(),
        gpu.hasher().float_mode().name()
    );
}

fn stress_view(img: &pharos::synth::StressImage) -> ImageView<'_> {
    if img.channels == 1 {
        ImageView::gray(img.width, img.height, &img.pixels)
    } else {
        ImageView::rgb(img.width, img.height, &img.pixels)
    }
}

/// Acceptance 1 of the GPU issue, synthetic half: GPU = CPU on every stress image (flat, near-flat,
/// black borders, gradients, 5×5, 1×N, 64×64, 12 MP), hash, quality, dihedral variants and pHash.
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn gpu_matches_cpu_on_every_stress_image() {
    let gpu = gpu();
    let images = pharos::synth::stress_images(true);
    for img in &images {
        let view = [stress_view(img)];
        let got = gpu.try_hash_batch(&view, true).expect("GPU");
        assert_eq!(got, cpu(&view, true), "{}", img.name);
    }
    // And all in one batch, as the canary runs them.
    let views: Vec<ImageView<'_>> = images.iter().map(stress_view).collect();
    assert_eq!(gpu.try_hash_batch(&views, false).expect("GPU"), cpu(&views, false));
    if !gpu.hasher().adapter().software {
        return;
    }
    assert_eq!(
        gpu.hasher().float_mode(),
        pharos::gpu::FloatMode::Pinned,
        "lavapipe (Vulkan) must run pinned SPIR-V"
    );
}

/// The start-up canary refuses a device whose hashes differ from the CPU's, logs it and counts it.
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn a_canary_mismatch_refuses_the_gpu_and_is_counted() {
    let gpu = gpu();
    gpu.hasher().canary(false).expect("the canary passes on a correct device");
    let before = pharos::gpu::canary_failures();
    let err = gpu.hasher().canary(true).expect_err("a wrong bit fails the canary");
    assert!(matches!(err, pharos::gpu::GpuError::Canary(_)), "{err}");
    assert!(err.to_string().contains("PDQ differs in 1 bits"), "{err}");
    assert!(pharos::gpu::canary_failures() > before);
}

/// Self-healing: an injected hang, device loss, panic inside the backend, and a replacement device that
/// fails its canary. Every batch is the CPU reference's (no request would fail), the engine reports
/// unhealthy until a replacement device is in place, then hashes on the GPU again.
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn every_injected_gpu_failure_heals_without_a_wrong_or_failed_batch() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    // An adapter is there, or the test fails here; the engine gets devices of its own.
    gpu();
    let engine = pharos::engine::GpuEngine::new(
        pharos::gpu::GpuHasher::new(pharos::gpu::AdapterPolicy::AllowSoftware).expect("GPU"),
    );
    engine.set_recovery_backoff(Duration::from_millis(10), Duration::from_millis(200));
    let images = corpus(1).into_iter().take(6).collect::<Vec<_>>();
    let views: Vec<ImageView<'_>> = images.iter().map(|(_, d)| d.view()).collect();
    let want = cpu(&views, true);
    let canary_before = pharos::gpu::canary_failures();
    let failures = ["hang", "device loss", "panic", "canary mismatch on re-creation"];
    for (k, failure) in failures.iter().enumerate() {
        let first = engine.hasher();
        match k {
            0 => first.set_wait_timeout(Duration::ZERO),
            1 => first.destroy_device(),
            2 => first.inject_panics(1),
            _ => {
                engine.inject_canary_faults(2);
                first.destroy_device();
            }
        }
        assert_eq!(engine.hash_batch(&views, true), want, "{failure}: the failed batch is redone on the CPU");
        let started = Instant::now();
        while !engine.healthy() || Arc::ptr_eq(&first, &engine.hasher()) {
            assert!(started.elapsed() < Duration::from_secs(120), "{failure}: no replacement device");
            // Degraded, and still exact.
            assert_eq!(engine.hash_batch(&views[..2], false), cpu(&views[..2], false), "{failure}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(engine.losses(), k as u64 + 1, "{failure}: the loss is counted once");
        assert_eq!(engine.recreations(), k as u64 + 1, "{failure}: the re-creation is counted");
        let again = engine.hasher().try_hash_batch(&views, true).expect("the replacement device hashes");
        assert_eq!(again, want, "{failure}: the replacement device is exact");
        eprintln!("{failure}: healed in {:?}", started.elapsed());
    }
    assert!(pharos::gpu::canary_failures() >= canary_before + 2, "the two faulty replacements were refused");
}

#[test]
fn auto_never_picks_a_software_adapter() {
    let hardware = pharos::gpu::probe(pharos::gpu::AdapterPolicy::HardwareOnly);
    if let Some(a) = &hardware {
        assert!(!a.software, "{a}");
    }
    let expect = if hardware.is_some() { Backend::Gpu } else { Backend::Cpu };
    assert_eq!(Backend::Auto.resolve().unwrap(), expect);
    assert_eq!(Backend::Cpu.resolve().unwrap(), Backend::Cpu);
    match pharos::gpu::probe(pharos::gpu::AdapterPolicy::AllowSoftware) {
        Some(a) => {
            println!("gpu backend would use {a}; auto would use {}", expect.name());
            assert_eq!(Backend::Gpu.resolve().unwrap(), Backend::Gpu);
        }
        None => assert!(Backend::Gpu.resolve().is_err()),
    }
}

/// `PHAROS_GPU_ROW_LAYOUT`: either layout hashes like the CPU through the CLI; any other value is refused
/// with a message naming the accepted ones (exit code 1, nothing on stdout).
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn the_row_layout_setting_is_checked_and_changes_no_hash() {
    gpu();
    let dir = common::corpus_dir().join("images").join("te_bridge");
    let run = |backend: &str, layout: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pharos"))
            .args(["hash", "--dihedral", "--backend", backend])
            .arg(&dir)
            .env("PHAROS_GPU_ROW_LAYOUT", layout)
            .output()
            .expect("run pharos")
    };
    let cpu = run("cpu", "columns");
    assert_eq!(cpu.status.code(), Some(0), "{cpu:?}");
    assert!(!cpu.stdout.is_empty());
    for layout in ["rows", "columns"] {
        let gpu = run("gpu", layout);
        assert_eq!(gpu.status.code(), Some(0), "{layout}: {gpu:?}");
        assert_eq!(
            String::from_utf8_lossy(&gpu.stdout),
            String::from_utf8_lossy(&cpu.stdout),
            "{layout} layout"
        );
    }
    let bad = run("gpu", "diagonal");
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(bad.stdout.is_empty());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("PHAROS_GPU_ROW_LAYOUT must be 'columns' or 'rows', not 'diagonal'"), "{err}");
}

#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn the_batch_budget_setting_is_checked_and_changes_no_hash() {
    gpu();
    // te_bridge's images are mostly 1600 × 1004 (1.6 MP): a 1-megapixel budget leaves them too large for
    // any submission (the CPU hashes them), 2.5 puts one in each, and 65536 (more than any device binds)
    // is capped to the device's limit, which holds them all.
    let dir = common::corpus_dir().join("images").join("te_bridge");
    let run = |backend: &str, budget: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pharos"));
        cmd.args(["hash", "--dihedral", "--backend", backend])
            .arg(&dir)
            .env_remove("PHAROS_GPU_BATCH_MEGAPIXELS");
        if let Some(b) = budget {
            cmd.env("PHAROS_GPU_BATCH_MEGAPIXELS", b);
        }
        cmd.output().expect("run pharos")
    };
    let cpu = run("cpu", None);
    assert_eq!(cpu.status.code(), Some(0), "{cpu:?}");
    assert!(!cpu.stdout.is_empty());
    // The log says which budget is in force; one larger than the device's largest storage binding is
    // capped to it with a warning (lavapipe's is 128 MiB, 33.6 M floats).
    for (budget, logged) in [
        ("1", "1.0 megapixels per submission"),
        ("2.5", "2.5 megapixels per submission"),
        ("65536", "65536.0 megapixels per submission asked, the device's largest storage binding holds"),
    ] {
        let gpu = run("gpu", Some(budget));
        assert_eq!(gpu.status.code(), Some(0), "{budget}: {gpu:?}");
        assert_eq!(
            String::from_utf8_lossy(&gpu.stdout),
            String::from_utf8_lossy(&cpu.stdout),
            "{budget} megapixels per submission"
        );
        let err = String::from_utf8_lossy(&gpu.stderr);
        assert!(err.contains(logged), "{budget}: {err}");
    }
    for bad in ["0", "lots"] {
        let out = run("gpu", Some(bad));
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "PHAROS_GPU_BATCH_MEGAPIXELS must be a number of megapixels from 1 to 65536, not '{bad}'"
            )),
            "{err}"
        );
    }
}

#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn cli_gpu_output_equals_cpu_output() {
    // An adapter is there, or the test fails here.
    gpu();
    let dir = common::corpus_dir().join("images");
    let run = |backend: &str| -> Vec<serde_json::Value> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pharos"))
            .args(["hash", "--dihedral", "--backend", backend])
            .arg(&dir)
            .output()
            .expect("run pharos");
        assert!(out.status.code() == Some(0) || out.status.code() == Some(2), "{backend}: {out:?}");
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (cpu, gpu) = (run("cpu"), run("gpu"));
    assert_eq!(cpu.len(), gpu.len());
    let mut same = 0;
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!(c["path"], g["path"]);
        assert_eq!(c["quality"], g["quality"], "{}", c["path"]);
        let hex = |v: &serde_json::Value| pharos::hash::Hash256::from_hex(v.as_str().unwrap()).unwrap();
        if c.get("pdq").is_some() {
            assert!(hex(&c["pdq"]).distance(&hex(&g["pdq"])) <= 2, "{}", c["path"]);
        }
        same += usize::from(c == g);
    }
    println!("pharos hash --backend gpu: {same} of {} JSON lines identical to --backend cpu", cpu.len());
    assert!(same * 100 >= cpu.len() * 99);
}

/// The GPU issue's acceptance 5: under load the pipeline keeps more than one batch in flight (upload,
/// compute and readback of consecutive batches overlap), the decode workers copy each image's pixels
/// exactly once on their way to the GPU (the staged bytes are the decoded bytes, image for image), and
/// every hash is still the CPU reference's.
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn a_loaded_gpu_pipeline_overlaps_batches_and_copies_each_image_once() {
    use pharos::engine::{Engine, HashOptions};
    use pharos::pipeline::{run_ordered, Job, Pipeline, PipelineConfig};
    use std::sync::Arc;
    common::gpu();
    let gpu = pharos::gpu::GpuHasher::new(pharos::gpu::AdapterPolicy::AllowSoftware).expect("GPU");
    let metrics = Arc::new(pharos::metrics::Metrics::new());
    let cfg = PipelineConfig {
        max_batch: 4,
        max_batch_bytes: 2 << 20,
        max_delay: std::time::Duration::from_millis(20),
        decode_threads: 2,
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::new(Engine::from_gpu(gpu), cfg, metrics.clone()).unwrap();
    let opts = HashOptions { dihedral: true, ..HashOptions::default() };
    // A quarter of the corpus, repeated up to 40 images where that is fewer (the fixtures give 6): with
    // only two batches, a loaded machine could finish the first before the second is filled.
    let picked: Vec<_> = rows().into_iter().step_by(4).collect();
    let files: Vec<Vec<u8>> = picked
        .iter()
        .cycle()
        .take(picked.len().max(40))
        .map(|row| std::fs::read(row.path()).expect("read"))
        .collect();
    let mut got = Vec::new();
    run_ordered(
        &pipeline,
        files.iter().enumerate().map(|(i, b)| (i, Ok(Job::bytes(b.clone(), opts)))),
        |i, r| -> Result<(), ()> {
            got.push((i, r.expect("hashed")));
            Ok(())
        },
    )
    .unwrap();
    pipeline.close();
    assert_eq!(got.len(), files.len());
    let mut pixel_bytes = 0u64;
    for (i, rec) in &got {
        let want = pharos::engine::hash_bytes(&files[*i], &opts).unwrap();
        assert_eq!(*rec, want, "image {i}");
        pixel_bytes += decode(&files[*i], &opts.decode).unwrap().view().bytes().len() as u64;
    }
    let hashed = |backend: &str| metrics.images_hashed.with_label_values(&[backend]).get();
    assert_eq!(hashed("gpu"), files.len() as u64, "every image on the GPU");
    assert_eq!(metrics.gpu_staged_images.get(), files.len() as u64, "each image staged once");
    assert_eq!(metrics.gpu_staged_bytes.get(), pixel_bytes, "each image's pixels copied exactly once");
    let text = metrics.render();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in the metrics"))
    };
    let batches = sample("pharos_gpu_batches_in_flight_count");
    let alone = sample("pharos_gpu_batches_in_flight_bucket{le=\"1\"}");
    println!(
        "{} images, {} pixel bytes staged once; {batches} batches, {} submitted with another in flight",
        files.len(),
        pixel_bytes,
        batches - alone
    );
    assert!(batches > 1.0 && batches - alone >= 1.0, "no batch overlapped another ({batches} batches)");
}

/// The GPU issue's sampled re-check: one batch in `n` has one image re-hashed on the CPU; a GPU that
/// starts computing something else (here: one wrong PDQ bit per image, as a faulty card would) is caught,
/// the batch is answered from the CPU, and the device is refused like a lost one.
#[test]
#[cfg_attr(pharos_no_gpu, ignore = "no GPU adapter on this machine")]
fn a_sampled_recheck_catches_a_wrong_gpu_hash_and_refuses_the_device() {
    use pharos::engine::Engine;
    common::gpu();
    let gpu = pharos::gpu::GpuHasher::new(pharos::gpu::AdapterPolicy::AllowSoftware).expect("GPU");
    let Engine::Gpu(g) = Engine::from_gpu(gpu) else { unreachable!() };
    g.set_recovery_backoff(std::time::Duration::from_secs(600), std::time::Duration::from_secs(600));
    g.set_recheck_every(1);
    let pixels: Vec<Vec<u8>> = (0..3).map(|s| pattern(96, 80, 3, s)).collect();
    let views: Vec<ImageView<'_>> = pixels.iter().map(|p| ImageView::rgb(96, 80, p)).collect();
    let want = cpu(&views, true);
    assert_eq!(g.hash_batch(&views, true), want, "a sound device");
    assert_eq!((g.rechecks(), g.recheck_mismatches(), g.losses()), (1, 0, 0));
    g.inject_wrong_bits(1);
    assert_eq!(g.hash_batch(&views, true), want, "the faulty batch is answered from the CPU");
    assert_eq!((g.rechecks(), g.recheck_mismatches(), g.losses()), (2, 1, 1));
    assert!(!g.healthy(), "the device is refused until a replacement passes the canary");
    assert_eq!(g.hash_batch(&views, true), want);
}
