//! The buffers of one submission, grown on demand and reused ("slots"; a device has one per submission in
//! flight, at most `MAX_IN_FLIGHT`). The pixels arrive by a GPU-side copy from an upload buffer (`upload`).

use super::layout::{ImageMeta, Params, BUF64, DCT_SLOTS, OUT_STRIDE, THUMB};
use super::pipelines::Pipelines;
use wgpu::{BindGroup, Buffer, BufferUsages, Device};

/// Bytes each buffer of a submission needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub(crate) images: usize,
    pub(crate) pixel_words: usize,
    pub(crate) coeffs: usize,
    pub(crate) plane: usize,
    pub(crate) temp: usize,
}

impl Sizes {
    /// Bytes of the hash words of `images` images (the first part of the readback).
    pub(crate) fn hash_bytes(images: usize) -> usize {
        images * OUT_STRIDE * 4
    }

    /// Bytes of the readback: hash words, then thumbnails.
    pub(crate) fn readback_bytes(images: usize) -> usize {
        Self::hash_bytes(images) + images * THUMB * 4
    }
}

/// One set of buffers and the bind groups over them.
pub(crate) struct Slot {
    /// Capacities in elements, as created.
    cap: Sizes,
    pub(crate) params: Buffer,
    pub(crate) metas: Buffer,
    pub(crate) pixels: Buffer,
    pub(crate) coeffs: Buffer,
    pub(crate) plane_a: Buffer,
    pub(crate) plane_b: Buffer,
    pub(crate) buf64: Buffer,
    pub(crate) dct16: Buffer,
    pub(crate) hashes: Buffer,
    #[expect(dead_code, reason = "only bound (phash_group); the slot owns every buffer it binds")]
    pub(crate) temp: Buffer,
    pub(crate) thumbs: Buffer,
    /// MAP_READ copy of `hashes` followed by `thumbs`.
    pub(crate) staging: Buffer,
    pub(crate) pdq_group: BindGroup,
    pub(crate) phash_group: BindGroup,
}

/// Rounds a capacity up generously, so a slightly larger batch does not reallocate.
fn grow(need: usize) -> usize {
    (need.max(1) * 5 / 4).next_multiple_of(64)
}

fn entry(binding: u32, buffer: &Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() }
}

fn storage(device: &Device, label: &str, bytes: usize, extra: BufferUsages) -> Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.max(16) as u64).next_multiple_of(16),
        usage: BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

impl Slot {
    /// Buffers for at least `need`.
    /// `max_elems` is the device's largest storage binding in 4-byte elements; the headroom added to `need`
    /// stops there.
    pub(crate) fn new(
        device: &Device,
        pipelines: &Pipelines,
        consts: &Buffer,
        need: Sizes,
        max_elems: usize,
    ) -> Slot {
        let grow = |n: usize| grow(n).min(max_elems).max(n);
        let cap = Sizes {
            images: grow(need.images),
            pixel_words: grow(need.pixel_words),
            coeffs: grow(need.coeffs),
            plane: grow(need.plane),
            temp: grow(need.temp),
        };
        let n = cap.images;
        let dst = BufferUsages::COPY_DST;
        let src = BufferUsages::COPY_SRC;
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: BufferUsages::UNIFORM | dst,
            mapped_at_creation: false,
        });
        let metas = storage(device, "metas", n * std::mem::size_of::<ImageMeta>(), dst);
        let pixels = storage(device, "pixels", cap.pixel_words * 4, dst);
        let coeffs = storage(device, "coeffs", cap.coeffs * 4, dst);
        let plane_a = storage(device, "plane_a", cap.plane * 4, src);
        let plane_b = storage(device, "plane_b", cap.plane * 4, src);
        let buf64 = storage(device, "buf64", n * BUF64 * 4, src);
        let dct16 = storage(device, "dct16", n * DCT_SLOTS * 4, src);
        let hashes = storage(device, "hashes", Sizes::hash_bytes(n), src);
        let temp = storage(device, "temp", cap.temp * 4, src);
        let thumbs = storage(device, "thumbs", n * THUMB * 4, src);
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: Sizes::readback_bytes(n) as u64,
            usage: BufferUsages::MAP_READ | dst,
            mapped_at_creation: false,
        });
        let pdq_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("pdq"),
            layout: &pipelines.pdq_layout,
            entries: &[
                entry(0, &params),
                entry(1, &metas),
                entry(2, &pixels),
                entry(3, consts),
                entry(4, &plane_a),
                entry(5, &plane_b),
                entry(6, &buf64),
                entry(7, &hashes),
                entry(8, &dct16),
            ],
        });
        let phash_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("phash"),
            layout: &pipelines.phash_layout,
            entries: &[
                entry(0, &params),
                entry(1, &metas),
                entry(2, &pixels),
                entry(3, &coeffs),
                entry(4, &temp),
                entry(5, &thumbs),
            ],
        });
        Slot {
            cap,
            params,
            metas,
            pixels,
            coeffs,
            plane_a,
            plane_b,
            buf64,
            dct16,
            hashes,
            temp,
            thumbs,
            staging,
            pdq_group,
            phash_group,
        }
    }

    /// Whether these buffers can hold `need`.
    pub(crate) fn fits(&self, need: &Sizes) -> bool {
        let c = &self.cap;
        need.images <= c.images
            && need.pixel_words <= c.pixel_words
            && need.coeffs <= c.coeffs
            && need.plane <= c.plane
            && need.temp <= c.temp
    }

    /// Capacities, to grow from.
    pub(crate) fn capacity(&self) -> Sizes {
        self.cap
    }
}
