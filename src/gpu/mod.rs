//! The GPU backend: PDQ and pHash as wgpu compute shaders (`shaders/*.wgsl`), many images per submission,
//! with the CPU reference as the fallback whenever the GPU fails.
//!
//! # Layout
//! - `context`: adapter choice ([`AdapterPolicy`]: `auto` never takes a software adapter) and device.
//! - `pipelines`: the shaders, bind-group layouts and pipelines, built once per device.
//! - `layout`: the `#[repr(C)]` structs the shaders read (mirrors of `shaders/common.wgsl`).
//! - `buffers`: one submission's buffers ("slot"), grown on demand and reused; one per submission in flight.
//! - `upload`: the persistent, host-mapped upload buffers the pixels are copied into, one per batch.
//! - `plan`: a submission's bookkeeping: stage order, where each image sits in the buffers, dispatch extents.
//! - `debug`: the stage-by-stage test hook ([`StageDump`]) and the device division test.
//! - `spirv`: the shaders as SPIR-V with every float operation `NoContraction` ([`FloatMode::Pinned`]).
//! - `canary`: the start-up check on the stress images ([`crate::synth::stress_images`]).
//! - [`model`]: a CPU model of the shaders' float arithmetic under a driver's liberties (tests).
//!
//! # Exact by construction
//! The reference's float order is only reproducible if the driver may neither fuse (`a·b + c` → FMA) nor
//! reassociate, and divides exactly. On Vulkan the shaders are compiled here to SPIR-V with every float
//! `+ − × ÷` and negation decorated `NoContraction` and loaded through wgpu's passthrough, so no driver may
//! do either; the one division the stages need is `div_exact` (`shaders/common.wgsl`), an integer
//! quotient (from a float estimate it verifies), exact whatever the driver does with floats. Metal and DX12
//! (and Vulkan without passthrough) have no equivalent wgpu can express, so they are refused unless
//! `PHAROS_GPU_ALLOW_UNPINNED=1` accepts the risk. Every device, pinned or not, must pass the start-up
//! canary before it hashes anything.
//!
//! # A batch
//! Images of any sizes are packed into one submission (split only when their pixels exceed the buffer
//! budget): pixels are uploaded as bytes packed four to a `u32` (grey stays one byte per pixel), and each
//! stage is one dispatch over all images (`workgroup_id.y` = image). The stages mirror the CPU functions of
//! the same names, and the CPU code is the oracle they are tested against. What stays on the CPU: the
//! pHash DCT and median (float64 in imagehash, and WGSL has no portable f64; microseconds from the
//! 32 × 32 thumbnail the GPU produces) and the LANCZOS coefficient tables (built once per input length).
//!
//! # Submitting and waiting
//! The pixels reach the device through `upload` buffers: persistent, host-mapped, filled by whoever holds
//! the pixels ([`UploadBuffer::write`], several threads at once), then [`GpuHasher::submit_staged`] returns
//! as soon as the work is queued and [`GpuHasher::complete`] waits for one submission and reads it back.
//! Up to [`MAX_IN_FLIGHT`] submissions are in flight per device, each with its own slot of buffers, so
//! upload, compute and readback of consecutive batches overlap (the pipeline's batcher submits, its
//! completion thread waits). [`GpuHasher::try_hash_batch`] is the same path on the caller's thread, two
//! chunks deep. Waiting calls block their thread: call them from worker threads
//! (`tokio::task::spawn_blocking` in async code), never on a runtime thread.
//!
//! # Failures
//! A device loss, an out-of-memory or validation error reported by wgpu, a failed buffer mapping or a
//! submission that does not finish within the wait timeout makes [`GpuHasher::try_hash_batch`] return a
//! [`GpuError`]. This module never falls back by itself: the engine ([`crate::engine::GpuEngine`])
//! recomputes such a batch on the CPU, logs it and counts it, catches panics from wgpu, and after a loss
//! or a hang opens a replacement device in the background (with back-off; it must pass the canary too).

mod buffers;
mod canary;
mod context;
mod debug;
pub(crate) mod layout;
pub mod model;
pub(crate) mod pipelines;
mod plan;
mod spirv;
mod upload;

pub use canary::canary_failures;
pub use context::{probe, AdapterPolicy, AdapterSummary};
pub use debug::StageDump;
pub use layout::RowLayout;
pub use pipelines::FloatMode;
pub use plan::plane_len;
use plan::{stages, Dims, Stage};
use upload::UploadPool;
pub use upload::{upload_len, UploadBuffer};

use crate::hash::pdq::{self, Dihedral, PdqHash};
use crate::hash::phash::{self, LanczosTable};
use crate::hash::{Hash256, Hash64, HashRecord};
use crate::pixels::ImageView;
use buffers::{Sizes, Slot};
use layout::*;
use pipelines::Pipelines;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Why the GPU could not produce a batch's hashes.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No adapter the policy allows.
    #[error("no suitable GPU adapter ({0})")]
    NoAdapter(&'static str),
    /// The device could not be created.
    #[error("cannot create the GPU device: {0}")]
    Device(String),
    /// The device was lost (driver reset, GPU removed, …); the backend now runs on the CPU.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// wgpu reported an error for a submission (out of memory, validation).
    #[error("GPU error: {0}")]
    Submission(String),
    /// Reading the results back failed.
    #[error("GPU readback failed: {0}")]
    Map(String),
    /// A submission did not finish within the wait timeout ([`GpuHasher::set_wait_timeout`]): the device
    /// is treated as lost, since its buffers may still be in use.
    #[error("GPU submission did not finish within {0:?}; treating the device as lost")]
    Timeout(Duration),
    /// An image larger than one submission's buffers ([`GpuHasher::fits`]); the engine hashes those on the CPU.
    #[error("a {0}×{1} image does not fit the GPU's buffers")]
    TooLarge(u32, u32),
    /// The backend cannot pin float arithmetic to the reference's (not Vulkan, or no shader passthrough),
    /// and the operator has not accepted that risk (`PHAROS_GPU_ALLOW_UNPINNED=1`).
    #[error(
        "the {0} backend cannot forbid the driver to fuse or reassociate float operations, so GPU hashes \
         could differ from the reference; refusing the GPU (set PHAROS_GPU_ALLOW_UNPINNED=1 to accept the risk)"
    )]
    Unpinned(String),
    /// The start-up canary: the GPU's hashes of the stress images differ from the CPU's.
    #[error("GPU canary failed: {0}; refusing the GPU")]
    Canary(String),
    /// A failure injected by a test ([`GpuHasher::inject_failures`]).
    #[error("injected GPU failure (test hook)")]
    Injected,
}

/// Most images in one submission.
const MAX_IMAGES_PER_SUBMISSION: usize = 1024;
/// Default budget of filter-plane floats per submission (each of the two planes): 32 M floats, 128 MB, so
/// a submission holds about 33.5 megapixels (two 12 MP photos, or 32 images of 1 MP). Safe on any GPU; a
/// large one needs more images in flight to fill it ([`batch_budget_from_env`]).
const DEFAULT_PLANE_BUDGET: usize = 32 << 20;
/// The environment variable that sets the plane budget, in megapixels ([`parse_batch_megapixels`]).
pub const BATCH_MEGAPIXELS_VAR: &str = "PHAROS_GPU_BATCH_MEGAPIXELS";
/// How long a submission may take before the device is considered hung. Generous: a full submission of the
/// largest images takes well under a second on real GPUs and a few seconds on a software adapter.
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Grid-stride dispatches use at most this many workgroups along x.
const MAX_GROUPS_X: usize = 2048;
/// Submissions in flight at most per device (each has its own slot of buffers): enough for one batch to
/// upload, one to compute and one to be read back at the same time.
pub const MAX_IN_FLIGHT: usize = 3;

/// The GPU hasher: device, pipelines and pooled buffers, created once. Share it (it is `Sync`); batches from
/// several threads take turns.
pub struct GpuHasher {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipelines: Pipelines,
    consts: wgpu::Buffer,
    adapter: AdapterSummary,
    /// Whether float arithmetic is pinned to the reference's on this device.
    float_mode: FloatMode,
    /// The policy the adapter was chosen by (a replacement device is chosen the same way).
    policy: AdapterPolicy,
    /// Largest plane (in f32) one submission may use: the budget, capped by the device's limits.
    plane_budget: usize,
    /// The device's largest storage binding, in 4-byte elements ([`max_binding_elems`]).
    max_elems: usize,
    /// Buffers of the submissions, one slot per submission in flight.
    slots: Arc<SlotPool>,
    /// Mapped upload buffers the pixels are copied into ([`upload`]).
    uploads: Arc<UploadPool>,
    /// LANCZOS tables by input length (cleared when it grows large).
    tables: Mutex<HashMap<usize, Arc<LanczosTable>>>,
    /// The first error wgpu reported outside an error scope since the last batch.
    uncaptured: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    inject: AtomicU32,
    inject_panics: AtomicU32,
    /// Longest wait for one submission, in nanoseconds.
    wait_timeout_ns: AtomicU64,
    /// Whether the horizontal box passes read column-major planes ([`RowLayout`]); read once per
    /// submission.
    columns: AtomicBool,
}

/// Per-image results before assembly.
type Raw = (PdqHash, Option<Dihedral>, Hash64);

/// A submitted chunk waiting to be read back.
struct Pending {
    index: wgpu::SubmissionIndex,
    rx: mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
    flags: Vec<u32>,
    dihedral: bool,
}

/// The slots of a device: each submission in flight holds one; at most [`MAX_IN_FLIGHT`] exist.
struct SlotPool {
    free: parking_lot::Mutex<Vec<Slot>>,
    freed: parking_lot::Condvar,
    created: AtomicUsize,
    /// Submissions made and not yet completed (or abandoned).
    in_flight: AtomicUsize,
}

impl SlotPool {
    /// A slot back after its submission was read back.
    fn put(&self, slot: Slot) {
        self.free.lock().push(slot);
        self.freed.notify_one();
    }

    /// A slot that may still be in use by the device (a failed or abandoned submission): never reused.
    fn discard(&self, slot: Slot) {
        drop(slot);
        self.created.fetch_sub(1, Ordering::SeqCst);
        self.freed.notify_one();
    }
}

/// A submission on its way through the GPU ([`GpuHasher::submit_staged`]); [`GpuHasher::complete`] waits for
/// it and reads the hashes back. Dropped without completing, its buffers are discarded (they may still be
/// in use), never reused.
pub struct InFlight {
    slot: Option<Slot>,
    pending: Option<Pending>,
    /// Width and height of each image, in order.
    dims: Vec<(u32, u32)>,
    pool: Arc<SlotPool>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.discard(slot);
        }
        self.pool.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GpuHasher {
    /// Opens a device on the best adapter `policy` allows, builds every pipeline and runs the start-up canary
    /// ([`canary`]): a device whose hashes of the stress images differ from the CPU's is refused.
    ///
    /// Refuses a backend that cannot pin float arithmetic ([`FloatMode::Unpinned`]) unless
    /// `PHAROS_GPU_ALLOW_UNPINNED=1` accepts the risk (the canary still runs).
    pub fn new(policy: AdapterPolicy) -> Result<GpuHasher, GpuError> {
        GpuHasher::new_with_canary_fault(policy, false)
    }

    /// Test hook: [`GpuHasher::new`], with the canary seeing one wrong bit when `fault` is set.
    #[doc(hidden)]
    pub fn new_with_canary_fault(policy: AdapterPolicy, fault: bool) -> Result<GpuHasher, GpuError> {
        let hasher = GpuHasher::open(policy)?;
        hasher.canary(fault)?;
        tracing::info!(
            "GPU backend on {} (float arithmetic {}, PHAROS_GPU_ROW_LAYOUT={}, {:.1} megapixels per submission)",
            hasher.adapter,
            hasher.float_mode.name(),
            hasher.row_layout().name(),
            hasher.plane_budget as f64 / 1e6
        );
        Ok(hasher)
    }

    /// [`GpuHasher::new`] without the canary.
    fn open(policy: AdapterPolicy) -> Result<GpuHasher, GpuError> {
        let instance = context::instance();
        let adapter = context::pick_adapter(&instance, policy)
            .ok_or(match policy {
                AdapterPolicy::HardwareOnly => "no hardware adapter",
                AdapterPolicy::AllowSoftware => {
                    "no adapter at all (install a Vulkan driver, e.g. mesa-vulkan-drivers)"
                }
            })
            .map_err(GpuError::NoAdapter)?;
        let summary = context::summary(&adapter);
        let float_mode = context::float_mode(&adapter);
        if float_mode == FloatMode::Unpinned {
            if !allow_unpinned() {
                return Err(GpuError::Unpinned(summary.api.clone()));
            }
            tracing::warn!(
                "GPU backend on {summary}: float arithmetic is not pinned (PHAROS_GPU_ALLOW_UNPINNED=1); \
                 hashes may differ from the reference"
            );
        }
        let row_layout = RowLayout::from_env().map_err(GpuError::Device)?;
        let (device, queue) = context::device(&adapter, float_mode)?;
        let uncaptured = Arc::new(Mutex::new(None::<String>));
        let lost = Arc::new(AtomicBool::new(false));
        {
            let uncaptured = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                tracing::error!("GPU error: {e}");
                let mut slot = uncaptured.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert_with(|| e.to_string());
            }));
            let lost = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                tracing::error!("GPU device lost ({reason:?}): {msg}");
                lost.store(true, Ordering::SeqCst);
            });
        }
        let pipelines = Pipelines::new(&device, float_mode)?;
        let consts = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("consts"),
            size: (CONSTS_LEN * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&consts, 0, bytemuck::cast_slice(&constants()));
        let limits = device.limits();
        let max_elems = max_binding_elems(&limits);
        let wanted = batch_budget_from_env().map_err(GpuError::Device)?.unwrap_or(DEFAULT_PLANE_BUDGET);
        let plane_budget = wanted.min(max_elems);
        if plane_budget < wanted {
            tracing::warn!(
                "{BATCH_MEGAPIXELS_VAR}: {:.1} megapixels per submission asked, the device's largest storage \
                 binding holds {:.1}; using that",
                wanted as f64 / 1e6,
                plane_budget as f64 / 1e6
            );
        }
        // Three bytes of RGB per plane float: the upload buffer holds what the planes can.
        let pixel_budget = (3 * plane_budget / 4).min(max_elems);
        // One buffer filling, the in-flight ones, one being re-mapped.
        let uploads = UploadPool::new(device.clone(), pixel_budget as u64 * 4, MAX_IN_FLIGHT + 2);
        let hasher = GpuHasher {
            device,
            queue,
            pipelines,
            consts,
            adapter: summary,
            float_mode,
            policy,
            plane_budget,
            max_elems,
            slots: Arc::new(SlotPool {
                free: parking_lot::Mutex::new(Vec::new()),
                freed: parking_lot::Condvar::new(),
                created: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
            }),
            uploads,
            tables: Mutex::new(HashMap::new()),
            uncaptured,
            lost,
            inject: AtomicU32::new(0),
            inject_panics: AtomicU32::new(0),
            wait_timeout_ns: AtomicU64::new(DEFAULT_WAIT_TIMEOUT.as_nanos() as u64),
            columns: AtomicBool::new(row_layout == RowLayout::Columns),
        };
        // Surface compilation or validation errors now rather than on the first batch.
        hasher
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Device(e.to_string()))?;
        hasher.check_errors()?;
        Ok(hasher)
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.adapter
    }

    /// Whether the shaders' float arithmetic is pinned to the reference's on this device.
    pub fn float_mode(&self) -> FloatMode {
        self.float_mode
    }

    /// Whether one submission's buffers can hold `img` (the engine hashes larger images on the CPU).
    pub fn fits(&self, img: &ImageView<'_>) -> bool {
        plane_len(img) <= self.plane_budget && upload_len(img) <= self.uploads.capacity()
    }

    /// Filter-plane floats one submission may use ([`plan::plane_len`] of its images, summed).
    pub fn plane_budget(&self) -> usize {
        self.plane_budget
    }

    /// Submissions made on this device and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.slots.in_flight.load(Ordering::SeqCst)
    }

    /// A mapped upload buffer for the next batch's pixels ([`UploadBuffer::write`]), waiting at most the
    /// wait timeout for one to come back from an earlier submission.
    pub fn upload_buffer(&self) -> Result<UploadBuffer, GpuError> {
        if self.is_lost() {
            return Err(GpuError::DeviceLost("earlier in this process".into()));
        }
        self.uploads.take(self.wait_timeout())
    }

    /// Whether the device was lost (or a submission hung): from then on every batch fails at once.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Marks the device lost (after a panic inside wgpu, whose state is then unknown): every later batch
    /// fails at once, and the engine replaces the device.
    pub fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// The adapter policy this device was opened with.
    pub fn policy(&self) -> AdapterPolicy {
        self.policy
    }

    /// Test hook: destroys the device, as a driver reset would; wgpu reports the loss through the same
    /// callback a real one uses.
    #[doc(hidden)]
    pub fn destroy_device(&self) {
        self.device.destroy();
        // The callback runs when wgpu next looks at the device; make sure it has.
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Test hook: the next `n` batches panic inside [`GpuHasher::try_hash_batch`], as a wgpu panic would.
    #[doc(hidden)]
    pub fn inject_panics(&self, n: u32) {
        self.inject_panics.store(n, Ordering::SeqCst);
    }

    /// How long to wait for one submission before treating the device as hung (lost). A test hook too: a
    /// zero timeout makes every submission on a real driver "hang".
    pub fn set_wait_timeout(&self, timeout: Duration) {
        self.wait_timeout_ns.store(timeout.as_nanos().min(u128::from(u64::MAX)) as u64, Ordering::SeqCst);
    }

    /// The layout of the planes the horizontal box passes read ([`RowLayout`]).
    pub fn row_layout(&self) -> RowLayout {
        if self.columns.load(Ordering::SeqCst) {
            RowLayout::Columns
        } else {
            RowLayout::Rows
        }
    }

    /// Test hook: switches the layout for the submissions written from now on (the hashes do not change,
    /// which is what the tests check).
    #[doc(hidden)]
    pub fn set_row_layout(&self, layout: RowLayout) {
        self.columns.store(layout == RowLayout::Columns, Ordering::SeqCst);
    }

    fn wait_timeout(&self) -> Duration {
        Duration::from_nanos(self.wait_timeout_ns.load(Ordering::SeqCst))
    }

    /// Test hook: the next `n` batches fail as a readback failure would, after their submission.
    #[doc(hidden)]
    pub fn inject_failures(&self, n: u32) {
        self.inject.store(n, Ordering::SeqCst);
    }

    /// Hashes `images` on the GPU, or says why it could not. The images are copied into upload buffers on
    /// this thread and submitted in chunks that fit the budgets, two in flight at a time.
    pub fn try_hash_batch(
        &self,
        images: &[ImageView<'_>],
        dihedral: bool,
    ) -> Result<Vec<HashRecord>, GpuError> {
        if let Some(img) = images.iter().find(|img| !self.fits(img)) {
            return Err(GpuError::TooLarge(img.width, img.height));
        }
        let mut out = Vec::with_capacity(images.len());
        let mut pending: Option<InFlight> = None;
        for chunk in self.chunks(images) {
            let batch = &images[chunk];
            let (upload, offsets) = self.stage(batch)?;
            let submitted = self.submit_staged(&upload, batch, &offsets, dihedral)?;
            if let Some(p) = pending.replace(submitted) {
                out.extend(self.complete(p)?);
            }
        }
        if let Some(p) = pending {
            out.extend(self.complete(p)?);
        }
        Ok(out)
    }

    /// Copies `images` into a fresh upload buffer, back to back: the buffer and each image's byte offset.
    fn stage(&self, images: &[ImageView<'_>]) -> Result<(UploadBuffer, Vec<u64>), GpuError> {
        let upload = self.upload_buffer()?;
        let mut offsets = Vec::with_capacity(images.len());
        let mut at = 0;
        for img in images {
            upload.write(at, img)?;
            offsets.push(at);
            at += upload_len(img);
        }
        Ok((upload, offsets))
    }

    /// Splits the images into consecutive runs that fit one submission.
    fn chunks(&self, images: &[ImageView<'_>]) -> Vec<std::ops::Range<usize>> {
        let mut chunks = Vec::new();
        let mut start = 0;
        let (mut plane, mut bytes) = (0usize, 0u64);
        for (i, img) in images.iter().enumerate() {
            let (p, b) = (plane_len(img), upload_len(img));
            if i > start
                && (plane + p > self.plane_budget
                    || bytes + b > self.uploads.capacity()
                    || i - start == MAX_IMAGES_PER_SUBMISSION)
            {
                chunks.push(start..i);
                start = i;
                plane = 0;
                bytes = 0;
            }
            plane += p;
            bytes += b;
        }
        if start < images.len() {
            chunks.push(start..images.len());
        }
        chunks
    }

    /// Submits one batch whose pixels are in `upload` (image `i` at byte `offsets[i]`, written with
    /// [`UploadBuffer::write`]): the GPU copies them into the submission's pixel buffer and runs every stage.
    /// Returns at once; [`GpuHasher::complete`] waits for the results. Blocks only while
    /// [`MAX_IN_FLIGHT`] submissions are already in flight (until one completes, at most the wait timeout).
    pub fn submit_staged(
        &self,
        upload: &UploadBuffer,
        images: &[ImageView<'_>],
        offsets: &[u64],
        dihedral: bool,
    ) -> Result<InFlight, GpuError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(GpuError::DeviceLost("earlier in this process".into()));
        }
        if self.inject_panics.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            panic!("injected GPU panic (test hook)");
        }
        if images.len() != offsets.len() || images.len() > MAX_IMAGES_PER_SUBMISSION {
            return Err(GpuError::Submission(format!(
                "{} images with {} offsets (at most {MAX_IMAGES_PER_SUBMISSION} per submission)",
                images.len(),
                offsets.len()
            )));
        }
        let mut plane = 0;
        let mut end = 0;
        for (img, &at) in images.iter().zip(offsets) {
            if !self.fits(img) {
                return Err(GpuError::TooLarge(img.width, img.height));
            }
            plane += plane_len(img);
            end = end.max(at + upload_len(img));
        }
        if plane > self.plane_budget || end > upload.capacity() {
            return Err(GpuError::Submission("the batch exceeds one submission's buffers".into()));
        }
        let (metas, coeffs, sizes, dims) = self.plan(images, offsets, dihedral);
        let slot = self.take_slot(&sizes)?;
        let mut flight = InFlight {
            slot: Some(slot),
            pending: None,
            dims: images.iter().map(|img| (img.width, img.height)).collect(),
            pool: self.slots.clone(),
        };
        self.slots.in_flight.fetch_add(1, Ordering::SeqCst);
        let slot = flight.slot.as_ref().expect("just taken");
        self.write_params(slot, Params::new(images.len(), dihedral, self.row_layout()), &metas, &coeffs);
        let (buffer, pool) = upload.take()?;
        buffer.unmap();
        let mut encoder = self.device.create_command_encoder(&Default::default());
        if end > 0 {
            encoder.copy_buffer_to_buffer(&buffer, 0, &slot.pixels, 0, end);
        }
        for stage in stages(dihedral) {
            self.record(&mut encoder, slot, stage, &dims);
        }
        let bytes = Sizes::readback_bytes(images.len()) as u64;
        let hash_bytes = Sizes::hash_bytes(images.len()) as u64;
        encoder.copy_buffer_to_buffer(&slot.hashes, 0, &slot.staging, 0, hash_bytes);
        encoder.copy_buffer_to_buffer(&slot.thumbs, 0, &slot.staging, hash_bytes, bytes - hash_bytes);
        let index = self.queue.submit([encoder.finish()]);
        // Mapped again once this submission has read it: back in the pool for a later batch.
        pool.recycle(buffer);
        let (tx, rx) = mpsc::channel();
        slot.staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        flight.pending =
            Some(Pending { index, rx, flags: metas.iter().map(|m| m.flags).collect(), dihedral });
        self.check_errors()?;
        Ok(flight)
    }

    /// Waits (at most the wait timeout) for a submission and reads its hashes back, in the order its images
    /// were given to [`GpuHasher::submit_staged`].
    pub fn complete(&self, mut flight: InFlight) -> Result<Vec<HashRecord>, GpuError> {
        let pending = flight.pending.take().expect("a submitted batch");
        let slot = flight.slot.take().expect("a submitted batch");
        match self.finish(&slot, pending) {
            Ok(raw) => {
                self.slots.put(slot);
                Ok(flight
                    .dims
                    .iter()
                    .zip(raw)
                    .map(|(&(width, height), (pdq, dihedral, phash))| HashRecord {
                        width,
                        height,
                        pdq,
                        phash,
                        dihedral,
                        exact: None,
                    })
                    .collect())
            }
            Err(e) => {
                // Its buffers may be mid-mapping or belong to a lost device: never reused.
                self.slots.discard(slot);
                Err(e)
            }
        }
    }

    /// The LANCZOS table for `in_size`, cached.
    fn table(&self, in_size: usize) -> Arc<LanczosTable> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if tables.len() > 256 {
            tables.clear();
        }
        tables.entry(in_size).or_insert_with(|| Arc::new(LanczosTable::new(in_size))).clone()
    }

    /// A slot that holds `sizes`: a free one (grown if it is too small), a new one while fewer than
    /// [`MAX_IN_FLIGHT`] exist, or the next one freed, waiting at most the wait timeout.
    fn take_slot(&self, sizes: &Sizes) -> Result<Slot, GpuError> {
        let timeout = self.wait_timeout();
        let until = std::time::Instant::now() + timeout;
        let mut free = self.slots.free.lock();
        loop {
            if let Some(slot) = free.pop() {
                drop(free);
                if slot.fits(sizes) {
                    return Ok(slot);
                }
                let c = slot.capacity();
                let need = Sizes {
                    images: c.images.max(sizes.images),
                    pixel_words: c.pixel_words.max(sizes.pixel_words),
                    coeffs: c.coeffs.max(sizes.coeffs),
                    plane: c.plane.max(sizes.plane),
                    temp: c.temp.max(sizes.temp),
                };
                drop(slot);
                return Ok(Slot::new(&self.device, &self.pipelines, &self.consts, need, self.max_elems));
            }
            let pool = &self.slots;
            if pool
                .created
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_IN_FLIGHT).then_some(n + 1))
                .is_ok()
            {
                drop(free);
                return Ok(Slot::new(&self.device, &self.pipelines, &self.consts, *sizes, self.max_elems));
            }
            if self.slots.freed.wait_until(&mut free, until).timed_out() && free.is_empty() {
                return Err(GpuError::Submission(format!(
                    "no submission completed within {timeout:?} to free its buffers"
                )));
            }
        }
    }

    /// Waits for a chunk and decodes its results.
    fn finish(&self, slot: &Slot, p: Pending) -> Result<Vec<Raw>, GpuError> {
        let timeout = self.wait_timeout();
        match self
            .device
            .poll(wgpu::PollType::Wait { submission_index: Some(p.index), timeout: Some(timeout) })
        {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                // A hung submission: its buffers stay busy, so this device is not used again.
                tracing::error!(
                    "GPU submission did not finish within {timeout:?}; using the CPU from now on"
                );
                self.lost.store(true, Ordering::SeqCst);
                return Err(GpuError::Timeout(timeout));
            }
            Err(e) => return Err(GpuError::Submission(e.to_string())),
        }
        let mapped = p.rx.recv().map_err(|_| GpuError::Map("mapping callback dropped".into()))?;
        mapped.map_err(|e| GpuError::Map(e.to_string()))?;
        self.check_errors()?;
        if self.inject.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            slot.staging.unmap();
            return Err(GpuError::Injected);
        }
        let n = p.flags.len();
        let bytes = Sizes::readback_bytes(n) as u64;
        let words: Vec<u32> = {
            let view =
                slot.staging.slice(..bytes).get_mapped_range().map_err(|e| GpuError::Map(e.to_string()))?;
            bytemuck::cast_slice(&view).to_vec()
        };
        slot.staging.unmap();
        let (hashes, thumbs) = words.split_at(n * OUT_STRIDE);
        Ok((0..n)
            .map(|i| {
                let out = &hashes[i * OUT_STRIDE..(i + 1) * OUT_STRIDE];
                let pdq_skip = p.flags[i] & FLAG_PDQ_SKIP != 0;
                let (pdq, dih) = if pdq_skip {
                    (PdqHash::default(), p.dihedral.then(Dihedral::default))
                } else {
                    let h = |v: usize| hash256(&out[v * 8..v * 8 + 8]);
                    let pdq = PdqHash { hash: h(0), quality: out[OUT_QUALITY] };
                    let dih = p.dihedral.then(|| Dihedral {
                        rot90: h(1),
                        rot180: h(2),
                        rot270: h(3),
                        flipx: h(4),
                        flipy: h(5),
                        flipplus1: h(6),
                        flipminus1: h(7),
                    });
                    (pdq, dih)
                };
                let phash = if p.flags[i] & FLAG_PHASH_SKIP != 0 {
                    Hash64(0)
                } else {
                    let t: [u8; THUMB] = std::array::from_fn(|k| thumbs[i * THUMB + k] as u8);
                    phash::hash_thumbnail(&t)
                };
                (pdq, dih, phash)
            })
            .collect())
    }

    /// Fails if wgpu reported an error or lost the device.
    fn check_errors(&self) -> Result<(), GpuError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(GpuError::DeviceLost("reported by the driver".into()));
        }
        match self.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(msg) => Err(GpuError::Submission(msg)),
            None => Ok(()),
        }
    }

    /// Writes a submission's parameters, metadata and LANCZOS tables (small; through the queue).
    fn write_params(&self, slot: &Slot, params: Params, metas: &[ImageMeta], coeffs: &[i32]) {
        self.queue.write_buffer(&slot.params, 0, bytemuck::bytes_of(&params));
        self.queue.write_buffer(&slot.metas, 0, bytemuck::cast_slice(metas));
        if !coeffs.is_empty() {
            self.queue.write_buffer(&slot.coeffs, 0, bytemuck::cast_slice(coeffs));
        }
    }

    /// Records one stage: a compute pass with one dispatch over every image of the chunk.
    fn record(&self, encoder: &mut wgpu::CommandEncoder, slot: &Slot, stage: Stage, d: &Dims) {
        let p = &self.pipelines;
        let groups = |items: usize| items.div_ceil(64).clamp(1, MAX_GROUPS_X) as u32;
        let (pipeline, group, x) = match stage {
            Stage::PhashFirst => (&p.phash_first, &slot.phash_group, groups(d.max_first)),
            Stage::PhashSecond => (&p.phash_second, &slot.phash_group, 16),
            Stage::Luma => (&p.luma, &slot.pdq_group, groups(d.max_pixels)),
            Stage::BoxRows => (&p.box_rows, &slot.pdq_group, groups(d.max_h)),
            Stage::BoxCols => (&p.box_cols, &slot.pdq_group, groups(d.max_w)),
            Stage::BoxRowsSampled => (&p.box_rows_sampled, &slot.pdq_group, groups(d.max_h)),
            Stage::BoxColsSampled => (&p.box_cols_sampled, &slot.pdq_group, 1),
            Stage::Decimate => (&p.decimate, &slot.pdq_group, 64),
            Stage::Quality => (&p.quality, &slot.pdq_group, 1),
            Stage::Dct => (&p.dct, &slot.pdq_group, 1),
            Stage::Dihedral => (&p.dihedral, &slot.pdq_group, 1),
            Stage::Threshold => (&p.threshold, &slot.pdq_group, if d.dihedral { 8 } else { 1 }),
        };
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(stage.name()),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(x, d.n, 1);
    }
}

/// The largest storage binding the buffers may have, in 4-byte elements: the device's limit rounded down
/// to whole 16-byte units, because storage buffers are sized in multiples of 16 bytes and bound whole.
/// NVIDIA's limit is 2^31 - 4 bytes: a plane of that many bytes, rounded up to 2^31, failed validation
/// (with `PHAROS_GPU_BATCH_MEGAPIXELS=512` on an H200, every 12 MP batch fell back to the CPU).
fn max_binding_elems(limits: &wgpu::Limits) -> usize {
    let bytes = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) as usize;
    bytes / 16 * 4
}

/// The plane budget `PHAROS_GPU_BATCH_MEGAPIXELS` asks for (`None` when unset), refused with a message
/// when it is not a number of megapixels [`parse_batch_megapixels`] accepts.
///
/// Why a knob: the box filter runs one thread per row or column (the reference's running sums are
/// sequential), so a 12 MP image keeps only ~7,000 threads busy per pass, and a datacenter GPU has room for
/// a few hundred thousand resident. Filling it takes tens of large images per submission, which costs
/// device memory (pixels and two float planes, ~12 bytes per pixel per submission in flight) and mapped
/// host memory (3 bytes per pixel per upload buffer); wgpu does not say how much memory a device has, so
/// the default stays small enough for any GPU and the operator of a big one raises it (with
/// `--max-batch-bytes` and `--max-batch`, which close the daemon's batches first).
fn batch_budget_from_env() -> Result<Option<usize>, String> {
    match std::env::var(BATCH_MEGAPIXELS_VAR) {
        Err(_) => Ok(None),
        Ok(v) => parse_batch_megapixels(&v).map(Some),
    }
}

/// Megapixels (10^6 pixels, decimals allowed) per submission, 1 to 65,536, as plane floats.
pub fn parse_batch_megapixels(v: &str) -> Result<usize, String> {
    let refuse =
        || format!("{BATCH_MEGAPIXELS_VAR} must be a number of megapixels from 1 to 65536, not '{v}'");
    let mp: f64 = v.trim().parse().map_err(|_| refuse())?;
    if !(1.0..=65536.0).contains(&mp) {
        return Err(refuse());
    }
    Ok((mp * 1e6).round() as usize)
}

/// Whether the operator accepted unpinned float arithmetic (`PHAROS_GPU_ALLOW_UNPINNED=1`).
fn allow_unpinned() -> bool {
    std::env::var("PHAROS_GPU_ALLOW_UNPINNED").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The constants buffer: the CPU's luma tables (`c · v` in float32), then the DCT matrix, row-major.
fn constants() -> Vec<f32> {
    let mut c = Vec::with_capacity(CONSTS_LEN);
    for table in pdq::luma_tables() {
        c.extend_from_slice(table);
    }
    for row in pdq::dct_matrix() {
        c.extend_from_slice(row);
    }
    debug_assert_eq!(c.len(), CONSTS_LEN);
    c
}

/// 8 u32 words (bit k of the hash in word k / 32) as a [`Hash256`].
fn hash256(words: &[u32]) -> Hash256 {
    Hash256 { limbs: std::array::from_fn(|l| u64::from(words[2 * l]) | (u64::from(words[2 * l + 1]) << 32)) }
}

#[cfg(test)]
mod tests {
    use super::{max_binding_elems, parse_batch_megapixels};

    #[test]
    fn the_largest_buffer_rounded_up_to_16_bytes_still_fits_the_binding_limit() {
        // NVIDIA's limit (2^31 - 4, seen on an H200), a limit in whole 16-byte units, and a buffer-size cap.
        for (binding, buffer, elems) in [
            (u32::MAX as u64 / 2 - 3, 1 << 40, (1 << 29) - 4),
            (1 << 27, 1 << 40, 1 << 25),
            (1 << 30, (1 << 28) + 8, 1 << 26),
        ] {
            let limits = wgpu::Limits {
                max_storage_buffer_binding_size: binding as _,
                max_buffer_size: buffer,
                ..wgpu::Limits::default()
            };
            assert_eq!(max_binding_elems(&limits), elems);
            // What `buffers::storage` allocates, and binds whole, for the largest plane.
            assert!(((elems * 4) as u64).next_multiple_of(16) <= binding.min(buffer));
        }
    }

    #[test]
    fn batch_megapixels_parse_within_their_range_and_refuse_anything_else() {
        assert_eq!(parse_batch_megapixels("1"), Ok(1_000_000));
        assert_eq!(parse_batch_megapixels(" 512 "), Ok(512_000_000));
        assert_eq!(parse_batch_megapixels("33.5"), Ok(33_500_000));
        assert_eq!(parse_batch_megapixels("65536"), Ok(65_536_000_000));
        for bad in ["0", "0.5", "-4", "65537", "NaN", "inf", "", "12MP", "1e400"] {
            let e = parse_batch_megapixels(bad).unwrap_err();
            assert!(e.contains(&format!("from 1 to 65536, not '{bad}'")), "{bad}: {e}");
        }
    }
}
