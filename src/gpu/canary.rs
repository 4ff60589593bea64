//! The start-up canary: before a device hashes anything for real, it hashes the stress images
//! ([`crate::synth::stress_images`]: flat, near-flat, black-bordered, gradients, the special shapes) and
//! must give the CPU reference's hashes, quality and dihedral variants bit for bit. A driver that fuses,
//! reassociates or divides differently from what the shaders were written for shows up here first, on the
//! images where it matters most, and the GPU is refused (logged, counted in [`canary_failures`], exported
//! as `pharos_gpu_canary_failures_total`) instead of serving hashes nobody else can match.

use super::{GpuError, GpuHasher};
use crate::hash::{HashRecord, Hashers};
use crate::pixels::ImageView;
use crate::synth::{stress_images, StressImage};
use std::sync::atomic::{AtomicU64, Ordering};

static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Canary failures in this process so far (every device opened, refused or not).
pub fn canary_failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

fn view(img: &StressImage) -> ImageView<'_> {
    match img.channels {
        1 => ImageView::gray(img.width, img.height, &img.pixels),
        _ => ImageView::rgb(img.width, img.height, &img.pixels),
    }
}

/// The first difference between two records, for the log.
fn difference(gpu: &HashRecord, cpu: &HashRecord) -> String {
    if gpu.pdq.hash != cpu.pdq.hash {
        return format!("PDQ differs in {} bits", gpu.pdq.hash.distance(&cpu.pdq.hash));
    }
    if gpu.pdq.quality != cpu.pdq.quality {
        return format!("quality {} on the GPU, {} on the CPU", gpu.pdq.quality, cpu.pdq.quality);
    }
    if gpu.phash != cpu.phash {
        return format!("pHash differs in {} bits", gpu.phash.distance(&cpu.phash));
    }
    "a dihedral variant differs".into()
}

impl GpuHasher {
    /// Hashes the stress images on this device and on the CPU; any difference refuses the device. `fault`
    /// is a test hook: the device's results get one wrong PDQ bit, as a faulty driver's would.
    #[doc(hidden)]
    pub fn canary(&self, fault: bool) -> Result<(), GpuError> {
        let images = stress_images(false);
        let views: Vec<ImageView<'_>> = images.iter().map(view).collect();
        let mut got = self.try_hash_batch(&views, true)?;
        if fault {
            got[2].pdq.hash.limbs[0] ^= 1 << 17;
        }
        let mut cpu = Hashers::new();
        for ((img, v), g) in images.iter().zip(&views).zip(&got) {
            let want = cpu.hash_pixels(*v, true);
            if *g != want {
                let n = FAILURES.fetch_add(1, Ordering::Relaxed) + 1;
                let why = format!("{} on the {} image", difference(g, &want), img.name);
                tracing::error!(adapter = %self.adapter, failures = n, "GPU canary failed: {why}; refusing the GPU");
                return Err(GpuError::Canary(why));
            }
        }
        tracing::debug!(images = images.len(), "GPU canary passed");
        Ok(())
    }
}
