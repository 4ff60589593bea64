//! Upload buffers: persistent, host-mapped buffers that the decode workers copy pixels into, one batch per
//! buffer.
//!
//! Why: the one copy of an image's pixels the host makes on their way to the GPU should happen on the
//! thread that decoded them (many threads, in parallel, while the pixels are still in its cache), into
//! memory the GPU can copy from directly, and not a second time on the one thread that feeds the GPU.
//! `Queue::write_buffer` does the latter and also allocates a fresh staging buffer for every write. Here a
//! buffer is created mapped once, filled by any number of threads at disjoint 8-byte-aligned offsets
//! (wgpu allows concurrent non-overlapping mapped views), unmapped when its batch is submitted, copied by
//! the GPU into the submission's pixel buffer, and mapped again asynchronously once that submission has
//! finished, which returns it to the pool. The pool holds a few buffers: one being filled, the ones whose
//! batches are in flight, and one being re-mapped.

use super::GpuError;
use crate::pixels::ImageView;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Offsets of images in an upload buffer are multiples of this (wgpu's `MAP_ALIGNMENT`), so each image
/// gets its own mapped view.
pub(crate) const UPLOAD_ALIGN: u64 = wgpu::MAP_ALIGNMENT;

/// Bytes an image takes in an upload buffer: its pixel bytes rounded up to the alignment.
pub fn upload_len(img: &ImageView<'_>) -> u64 {
    (img.bytes().len() as u64).next_multiple_of(UPLOAD_ALIGN)
}

/// The pool of upload buffers of one device.
pub(crate) struct UploadPool {
    device: wgpu::Device,
    /// Bytes per buffer: the largest pixel upload of one submission.
    capacity: u64,
    /// Buffers alive (free, being filled, in flight or being re-mapped), at most `max`.
    created: AtomicUsize,
    max: usize,
    free: Mutex<Vec<wgpu::Buffer>>,
    returned: Condvar,
}

/// A mapped upload buffer, taken from the pool: the pixels of one batch are copied into it (from any
/// thread, at disjoint offsets) and it is handed to [`super::GpuHasher::submit_staged`]. Dropped without
/// being submitted, it goes back to the pool still mapped.
pub struct UploadBuffer {
    /// `None` once submitted. Behind a lock only so that writers (which clone the handle) and the one
    /// submitter (which takes it) can share the buffer by reference.
    buffer: Mutex<Option<wgpu::Buffer>>,
    pool: Arc<UploadPool>,
}

impl UploadPool {
    pub(crate) fn new(device: wgpu::Device, capacity: u64, max: usize) -> Arc<UploadPool> {
        Arc::new(UploadPool {
            device,
            capacity: capacity.next_multiple_of(UPLOAD_ALIGN),
            created: AtomicUsize::new(0),
            max,
            free: Mutex::new(Vec::new()),
            returned: Condvar::new(),
        })
    }

    /// A mapped buffer: a free one, a new one while fewer than `max` exist, or the next one re-mapped,
    /// waiting at most `timeout` (the device is polled meanwhile, so re-mappings complete even when no
    /// other thread is waiting on the GPU).
    pub(crate) fn take(self: &Arc<Self>, timeout: Duration) -> Result<UploadBuffer, GpuError> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(buffer) = self.free.lock().pop() {
                return Ok(UploadBuffer { buffer: Mutex::new(Some(buffer)), pool: self.clone() });
            }
            let grown = self
                .created
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < self.max).then_some(n + 1))
                .is_ok();
            if grown {
                let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("upload"),
                    size: self.capacity,
                    usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: true,
                });
                return Ok(UploadBuffer { buffer: Mutex::new(Some(buffer)), pool: self.clone() });
            }
            let _ = self.device.poll(wgpu::PollType::Poll);
            let mut free = self.free.lock();
            if free.is_empty() {
                let now = Instant::now();
                if now >= until {
                    return Err(GpuError::Timeout(timeout));
                }
                // Short waits: a re-mapping may complete through our own poll above rather than a notify.
                self.returned.wait_for(&mut free, (until - now).min(Duration::from_millis(5)));
            }
        }
    }

    /// A mapped buffer back into the pool.
    fn put(&self, buffer: wgpu::Buffer) {
        self.free.lock().push(buffer);
        self.returned.notify_one();
    }

    /// Maps `buffer` again (after the submission that reads it) and returns it to the pool when that is
    /// done; a buffer whose mapping fails (device lost) is dropped.
    pub(crate) fn recycle(self: &Arc<Self>, buffer: wgpu::Buffer) {
        let pool = self.clone();
        let again = buffer.clone();
        buffer.slice(..).map_async(wgpu::MapMode::Write, move |r| match r {
            Ok(()) => pool.put(again),
            Err(_) => {
                pool.created.fetch_sub(1, Ordering::SeqCst);
                pool.returned.notify_one();
            }
        });
    }

    /// Bytes per buffer.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl UploadBuffer {
    /// Bytes this buffer holds.
    pub fn capacity(&self) -> u64 {
        self.pool.capacity
    }

    /// Copies `img`'s pixel bytes to byte `offset` (a multiple of [`UPLOAD_ALIGN`], with
    /// [`upload_len`]`(img)` bytes free there, which the caller reserved). The padding after the pixels is
    /// zeroed, as the shaders' packed-byte reads expect nothing in particular there. Safe from several
    /// threads at once for disjoint ranges.
    pub fn write(&self, offset: u64, img: &ImageView<'_>) -> Result<(), GpuError> {
        let bytes = img.bytes();
        let len = upload_len(img);
        if !offset.is_multiple_of(UPLOAD_ALIGN) || offset + len > self.capacity() {
            return Err(GpuError::Map(format!("upload range {offset}+{len} out of the buffer")));
        }
        if len == 0 {
            return Ok(());
        }
        let buffer = self.buffer.lock().clone();
        let buffer = buffer.ok_or_else(|| GpuError::Map("the upload buffer was already submitted".into()))?;
        let mut view = buffer
            .slice(offset..offset + len)
            .get_mapped_range_mut()
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let whole = bytes.len();
        view.slice(..whole).copy_from_slice(bytes);
        if len as usize > whole {
            view.slice(whole..).copy_from_slice(&[0u8; UPLOAD_ALIGN as usize][..len as usize - whole]);
        }
        Ok(())
    }

    /// The buffer, for submission (unmapped there, so every writer must be done); the pool gets it back
    /// through [`UploadPool::recycle`].
    pub(crate) fn take(&self) -> Result<(wgpu::Buffer, Arc<UploadPool>), GpuError> {
        let buffer = self.buffer.lock().take();
        let buffer = buffer.ok_or_else(|| GpuError::Map("the upload buffer was already submitted".into()))?;
        Ok((buffer, self.pool.clone()))
    }
}

impl Drop for UploadBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.get_mut().take() {
            // Never submitted: still mapped, ready for the next batch.
            self.pool.put(buffer);
        }
    }
}
