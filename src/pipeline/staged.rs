//! GPU batches filled by the decode workers themselves.
//!
//! A batch is one upload buffer of the GPU ([`Staging`]): each decode worker that has decoded an image for
//! the GPU reserves room in the open batch, copies the pixels in (in parallel with the others: the one
//! host copy of the pixels on their way to the GPU), and leaves the job in the batch. A batch closes when
//! its pixels reach `max_batch_bytes`, when it holds `max_batch` images or cannot take the next one, or
//! when the batcher thread finds it open `max_delay` after its first image; the batcher waits for the
//! writers still copying, submits it and moves on to the next batch while a completion thread waits for
//! this one, so up to [`crate::gpu::MAX_IN_FLIGHT`] batches upload, compute and read back at once.

use super::workers::Ready;
use super::PipelineConfig;
use crate::engine::Staging;
use crate::gpu::GpuError;
use crate::pixels::ImageView;
use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One batch being filled, then sealed, submitted and answered.
pub(super) struct Batch {
    pub(super) staging: Staging,
    opened: Instant,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Bytes of the upload buffer reserved so far.
    used: u64,
    /// PDQ plane floats reserved so far.
    plane: usize,
    images: usize,
    /// Decode workers holding a [`Reservation`] (between reserving and [`Batch::add`] or [`Batch::abandon`]).
    writers: usize,
    /// No more reservations.
    closed: bool,
    /// The jobs whose pixels are in the buffer, with their byte offsets.
    items: Vec<(Ready, u64)>,
}

impl Batch {
    pub(super) fn new(staging: Staging) -> Batch {
        Batch {
            staging,
            opened: Instant::now(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// Whether the batch takes no more images.
    pub(super) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Reserves room for `img`, or `None` when the batch is closed or cannot take it (then it is closed,
    /// unless it is empty: an image an empty batch cannot take goes to the CPU instead).
    pub(super) fn reserve(&self, img: &ImageView<'_>, cfg: &PipelineConfig) -> Option<Reservation<'_>> {
        let (bytes, plane) = (crate::gpu::upload_len(img), crate::gpu::plane_len(img));
        let mut s = self.state.lock();
        if s.closed {
            return None;
        }
        let fits = s.images < cfg.max_batch
            && s.used + bytes <= self.staging.capacity()
            && s.plane + plane <= self.staging.plane_budget();
        if !fits {
            if s.images > 0 {
                s.closed = true;
                self.changed.notify_all();
            }
            return None;
        }
        let at = s.used;
        s.used += bytes;
        s.plane += plane;
        s.images += 1;
        s.writers += 1;
        if s.images >= cfg.max_batch || s.used >= cfg.max_batch_bytes {
            s.closed = true;
            self.changed.notify_all();
        }
        Some(Reservation { batch: self, at, added: false })
    }

    /// Waits (at most `within`) until some decode worker has reserved room in the batch. Only the batcher's
    /// death hook needs it: a batch reaches the batcher thread as it opens, before its first reservation,
    /// and a thread that died on it then would close it empty and send that job to the next batch.
    pub(super) fn wait_for_a_reservation(&self, within: Duration) {
        let until = Instant::now() + within;
        let mut s = self.state.lock();
        while s.images == 0 && !self.changed.wait_until(&mut s, until).timed_out() {}
    }

    /// The job whose pixels were written at `at`: part of the batch from now on.
    fn add(&self, ready: Ready, at: u64) {
        let mut s = self.state.lock();
        s.items.push((ready, at));
        s.writers -= 1;
        self.changed.notify_all();
    }

    /// A reservation whose copy failed (or whose worker panicked): the room stays unused.
    fn abandon(&self) {
        let mut s = self.state.lock();
        s.writers -= 1;
        self.changed.notify_all();
    }

    /// The batcher's side: waits until the batch is closed or `max_delay` has passed since it opened, closes
    /// it, waits for the writers still copying, and takes its jobs (in the order they were added).
    pub(super) fn seal(&self, max_delay: Duration) -> Vec<(Ready, u64)> {
        let flush_at = self.opened + max_delay;
        let mut s = self.state.lock();
        while !s.closed && !self.changed.wait_until(&mut s, flush_at).timed_out() {}
        s.closed = true;
        while s.writers > 0 {
            self.changed.wait(&mut s);
        }
        std::mem::take(&mut s.items)
    }
}

/// Room one decode worker reserved in a batch for one image. The batcher waits for every reservation before
/// it submits the batch, so each must end: in [`Reservation::add`], or, dropped without it (the copy failed,
/// or the worker panicked while copying), abandoned. Without the guard a panic between the two would leave
/// the batcher waiting for good, and with it every later GPU job.
pub(super) struct Reservation<'a> {
    batch: &'a Batch,
    at: u64,
    added: bool,
}

impl Reservation<'_> {
    /// Copies `img` into the reserved room.
    pub(super) fn write(&self, img: &ImageView<'_>) -> Result<(), GpuError> {
        self.batch.staging.write(self.at, img)
    }

    /// The job whose pixels were written: part of the batch from now on.
    pub(super) fn add(mut self, ready: Ready) {
        self.added = true;
        self.batch.add(ready, self.at);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.added {
            self.batch.abandon();
        }
    }
}
