//! Test hooks: one image run stage by stage with every intermediate buffer read back, so the tests can
//! compare each GPU stage with the CPU function it mirrors.

use super::layout::*;
use super::plan::{stages, Stage};
use super::{hash256, GpuError, GpuHasher};
use crate::hash::Hash256;
use crate::pixels::ImageView;
use std::sync::mpsc;

/// Intermediate results of every stage for one image, for the stage-by-stage tests against the CPU.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct StageDump {
    /// After `luma` (h × w, row-major).
    pub luma: Vec<f32>,
    /// After each `box_rows` and `box_cols` pass: rows 1, cols 1, rows 2, cols 2 (h × w each, row-major
    /// whatever the device's layout; the second round's values only at decimate's sampled columns, and for
    /// cols 2 its sampled rows).
    pub passes: Vec<Vec<f32>>,
    /// After `decimate` (64 × 64).
    pub buf64: Vec<f32>,
    /// After `quality`.
    pub quality: u32,
    /// After `dct` and `dihedral`: 8 slots of 16 × 16.
    pub dct: Vec<f32>,
    /// After `threshold`: the original and the 7 variants.
    pub hashes: [Hash256; 8],
    /// After `phash_resize`.
    pub thumb: Vec<u8>,
}

impl GpuHasher {
    /// Test hook: runs one image stage by stage and reads every intermediate buffer back.
    #[doc(hidden)]
    pub fn debug_stages(&self, img: ImageView<'_>) -> Result<StageDump, GpuError> {
        let images = [img];
        let (upload, offsets) = self.stage(&images)?;
        let (metas, coeffs, sizes, dims) = self.plan(&images, &offsets, true);
        let slot = self.take_slot(&sizes)?;
        // Read once: the planes are turned back to row-major below by the layout the shaders used.
        let layout = self.row_layout();
        self.write_params(&slot, Params::new(1, true, layout), &metas, &coeffs);
        let (buffer, pool) = upload.take()?;
        buffer.unmap();
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&buffer, 0, &slot.pixels, 0, (sizes.pixel_words * 4) as u64);
        self.queue.submit([encoder.finish()]);
        pool.recycle(buffer);
        let plane = (img.width * img.height) as usize;
        // The luma plane and the first vertical pass's output are stored column by column (luma.wgsl,
        // box_cols.wgsl) for images the filter runs on; the dump gives every plane row-major.
        let filtered = metas[0].flags & (FLAG_PDQ_SKIP | FLAG_NO_FILTER) == 0;
        let columns = layout == super::RowLayout::Columns;
        let mut dump = self.debug_run(&slot, &dims, plane);
        if let (Ok(d), true) = (&mut dump, filtered && columns) {
            let (w, h) = (img.width as usize, img.height as usize);
            d.luma = row_major(&d.luma, w, h);
            d.passes[1] = row_major(&d.passes[1], w, h);
        }
        // Every submission that used the slot has been waited for by the readbacks.
        match dump {
            Ok(_) => self.slots.put(slot),
            Err(_) => self.slots.discard(slot),
        }
        dump
    }

    fn debug_run(
        &self,
        slot: &super::buffers::Slot,
        dims: &super::plan::Dims,
        plane: usize,
    ) -> Result<StageDump, GpuError> {
        let mut dump = StageDump::default();
        for stage in stages(true) {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            self.record(&mut encoder, slot, stage, dims);
            self.queue.submit([encoder.finish()]);
            match stage {
                Stage::Luma => dump.luma = self.read_f32(&slot.plane_a, plane)?,
                Stage::BoxRows | Stage::BoxRowsSampled => {
                    dump.passes.push(self.read_f32(&slot.plane_b, plane)?)
                }
                Stage::BoxCols | Stage::BoxColsSampled => {
                    dump.passes.push(self.read_f32(&slot.plane_a, plane)?)
                }
                Stage::Decimate => dump.buf64 = self.read_f32(&slot.buf64, BUF64)?,
                Stage::Quality => dump.quality = self.read_u32(&slot.hashes, OUT_STRIDE)?[OUT_QUALITY],
                Stage::Dihedral => dump.dct = self.read_f32(&slot.dct16, DCT_SLOTS)?,
                Stage::Threshold => {
                    let words = self.read_u32(&slot.hashes, OUT_STRIDE)?;
                    dump.hashes = std::array::from_fn(|v| hash256(&words[v * 8..v * 8 + 8]));
                }
                Stage::PhashSecond => {
                    dump.thumb = self.read_u32(&slot.thumbs, THUMB)?.into_iter().map(|v| v as u8).collect()
                }
                _ => {}
            }
        }
        self.check_errors()?;
        Ok(dump)
    }

    fn read_u32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<u32>, GpuError> {
        let bytes = (len.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("debug readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        let index = self.queue.submit([encoder.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| GpuError::Submission(e.to_string()))?;
        rx.recv()
            .map_err(|_| GpuError::Map("callback dropped".into()))?
            .map_err(|e| GpuError::Map(e.to_string()))?;
        let out = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| GpuError::Map(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view)[..len].to_vec()
        };
        staging.unmap();
        Ok(out)
    }

    fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, GpuError> {
        Ok(self.read_u32(buffer, len)?.into_iter().map(f32::from_bits).collect())
    }
}

/// A `w × h` plane stored column by column (sample (y, x) at x·h + y), row-major.
fn row_major(columns: &[f32], w: usize, h: usize) -> Vec<f32> {
    (0..w * h).map(|p| columns[(p % w) * h + p / w]).collect()
}

/// The division test shader: `div_exact` (common.wgsl) over a list of (dividend bits, count) pairs.
const DIVIDE_WGSL: &str = "
@group(0) @binding(1) var<storage, read> divs: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> quotients: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = id.x + id.y * nwg.x * 64u;
    if (i < arrayLength(&divs)) {
        let d = divs[i];
        quotients[i] = bitcast<u32>(div_exact(bitcast<f32>(d.x), d.y));
    }
}
";

impl GpuHasher {
    /// Test hook: `div_exact` (common.wgsl) on this device, compiled as the stages are, for each
    /// `(dividend, count)`; the tests compare the quotients with IEEE division on the CPU.
    #[doc(hidden)]
    pub fn debug_divide(&self, pairs: &[(f32, u32)]) -> Result<Vec<f32>, GpuError> {
        use wgpu::util::DeviceExt;
        let source = super::pipelines::full_source(DIVIDE_WGSL);
        let module = super::pipelines::module(&self.device, "divide test", &source, self.float_mode)?;
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("divide test"),
            entries: &[
                // `params` (common.wgsl), declared by every shader.
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, false),
            ],
        });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("divide test"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("divide test"),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let words: Vec<u32> = pairs.iter().flat_map(|&(s, c)| [s.to_bits(), c]).collect();
        let input = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("divide test in"),
            contents: bytemuck::cast_slice(&words),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let output = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("divide test out"),
            size: (pairs.len().max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("divide test params"),
            contents: bytemuck::bytes_of(&Params::default()),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("divide test"),
            layout: &layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: input.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: output.as_entire_binding() },
            ],
        });
        let groups = pairs.len().div_ceil(64) as u32;
        let (x, y) = (groups.min(1024), groups.div_ceil(1024));
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(x, y.max(1), 1);
        }
        self.queue.submit([encoder.finish()]);
        let out = self.read_f32(&output, pairs.len())?;
        self.check_errors()?;
        Ok(out)
    }
}
