//! The shaders, the two bind-group layouts and every compute pipeline, created once per device.

use super::{spirv, GpuError};
use std::borrow::Cow;
use wgpu::{BindGroupLayout, BindingType, BufferBindingType, ComputePipeline, Device, ShaderStages};

/// How the shaders reach the driver, which decides whether float arithmetic is pinned to the reference's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatMode {
    /// Vulkan: SPIR-V compiled here with every float operation `NoContraction` (see `spirv`), loaded through
    /// wgpu's passthrough. No driver may fuse or reassociate.
    Pinned,
    /// WGSL translated by wgpu for the backend (Metal, DX12, or Vulkan without passthrough): a driver may
    /// fuse or reassociate, so hashes may differ from the reference. Used only when the operator accepts
    /// that risk (`PHAROS_GPU_ALLOW_UNPINNED=1`).
    Unpinned,
}

impl FloatMode {
    /// "pinned" or "unpinned", for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            FloatMode::Pinned => "pinned (SPIR-V NoContraction)",
            FloatMode::Unpinned => "unpinned (driver may fuse/reassociate)",
        }
    }
}

/// A shader module for the complete WGSL `source`, in `mode`.
pub(crate) fn module(
    device: &Device,
    label: &str,
    source: &str,
    mode: FloatMode,
) -> Result<wgpu::ShaderModule, GpuError> {
    match mode {
        FloatMode::Unpinned => Ok(device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        })),
        FloatMode::Pinned => {
            let compiled = spirv::compile(label, source)?;
            let entry_points: Vec<wgpu::PassthroughShaderEntryPoint<'_>> = compiled
                .entry_points
                .iter()
                .map(|(name, size)| wgpu::PassthroughShaderEntryPoint {
                    name: Cow::Borrowed(name.as_str()),
                    workgroup_size: (size[0], size[1], size[2]),
                })
                .collect();
            let desc = wgpu::ShaderModuleDescriptorPassthrough {
                label: Some(label),
                entry_points: Cow::Owned(entry_points),
                spirv: Some(Cow::Borrowed(&compiled.words)),
                ..Default::default()
            };
            // SAFETY: the words are naga's SPIR-V for WGSL that naga has just parsed and validated, with
            // bounds checks on every buffer access (`spirv::compile`); the only change is the added
            // decorations, which `spirv::compile` checks (`check_pinned`) before returning. Callers' bind-group
            // layouts declare every binding the WGSL declares (`tests/backends.rs` runs each pipeline).
            Ok(unsafe { device.create_shader_module_passthrough(desc) })
        }
    }
}

/// Declarations shared by every stage (`shaders/common.wgsl`), prepended to each of them.
pub(crate) const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// Every stage shader, by file stem, in the order a submission runs them.
pub(crate) const STAGES: &[(&str, &str)] = &[
    ("phash_resize", include_str!("../../shaders/phash_resize.wgsl")),
    ("luma", include_str!("../../shaders/luma.wgsl")),
    ("box_rows", include_str!("../../shaders/box_rows.wgsl")),
    ("box_cols", include_str!("../../shaders/box_cols.wgsl")),
    ("decimate", include_str!("../../shaders/decimate.wgsl")),
    ("quality", include_str!("../../shaders/quality.wgsl")),
    ("dct", include_str!("../../shaders/dct.wgsl")),
    ("dihedral", include_str!("../../shaders/dihedral.wgsl")),
    ("threshold", include_str!("../../shaders/threshold.wgsl")),
];

/// The complete WGSL of a stage: `common.wgsl` followed by the stage's file.
pub(crate) fn full_source(stage: &str) -> String {
    format!("{COMMON}\n{stage}")
}

/// Storage buffers of the PDQ bind group, by binding: (binding, read-only).
const PDQ_STORAGE: &[(u32, bool)] = &[
    (1, true),  // metas
    (2, true),  // pixels
    (3, true),  // consts: luma tables + DCT matrix
    (4, false), // plane_a
    (5, false), // plane_b
    (6, false), // buf64
    (7, false), // hashes
    (8, false), // dct16
];

/// Storage buffers of the pHash bind group.
const PHASH_STORAGE: &[(u32, bool)] = &[
    (1, true),  // metas
    (2, true),  // pixels
    (3, true),  // coeffs
    (4, false), // temp
    (5, false), // thumbs
];

/// All pipelines of the backend.
pub(crate) struct Pipelines {
    /// Layout of group 0 for the PDQ stages.
    pub(crate) pdq_layout: BindGroupLayout,
    /// Layout of group 0 for the pHash stages.
    pub(crate) phash_layout: BindGroupLayout,
    pub(crate) phash_first: ComputePipeline,
    pub(crate) phash_second: ComputePipeline,
    pub(crate) luma: ComputePipeline,
    pub(crate) box_rows: ComputePipeline,
    /// The second round's horizontal pass: divides and stores at the sampled columns only.
    pub(crate) box_rows_sampled: ComputePipeline,
    pub(crate) box_cols: ComputePipeline,
    /// The second round's vertical pass: the sampled columns only, stored at the sampled rows.
    pub(crate) box_cols_sampled: ComputePipeline,
    pub(crate) decimate: ComputePipeline,
    pub(crate) quality: ComputePipeline,
    pub(crate) dct: ComputePipeline,
    pub(crate) dihedral: ComputePipeline,
    pub(crate) threshold: ComputePipeline,
}

fn layout(device: &Device, label: &str, storage: &[(u32, bool)]) -> BindGroupLayout {
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: ShaderStages::COMPUTE,
        ty: BindingType::Buffer {
            ty: BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }];
    entries.extend(storage.iter().map(|&(binding, read_only)| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: ShaderStages::COMPUTE,
        ty: BindingType::Buffer {
            ty: BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }));
    device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries })
}

impl Pipelines {
    /// Compiles every shader (in `mode`) and builds the pipelines.
    pub(crate) fn new(device: &Device, mode: FloatMode) -> Result<Pipelines, GpuError> {
        let pdq_layout = layout(device, "pharos pdq", PDQ_STORAGE);
        let phash_layout = layout(device, "pharos phash", PHASH_STORAGE);
        let pdq_pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("pharos pdq"),
            bind_group_layouts: &[Some(&pdq_layout)],
            immediate_size: 0,
        });
        let phash_pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("pharos phash"),
            bind_group_layouts: &[Some(&phash_layout)],
            immediate_size: 0,
        });
        let module = |name: &str| {
            let (_, src) = STAGES.iter().find(|(n, _)| *n == name).expect("known stage");
            module(device, name, &full_source(src), mode)
        };
        let pipeline =
            |layout: &wgpu::PipelineLayout, module: &wgpu::ShaderModule, label: &str, entry: &str| {
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(label),
                    layout: Some(layout),
                    module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
            };
        let pdq = |name: &str| module(name).map(|m| pipeline(&pdq_pl, &m, name, "main"));
        let phash = module("phash_resize")?;
        let rows = module("box_rows")?;
        let cols = module("box_cols")?;
        Ok(Pipelines {
            phash_first: pipeline(&phash_pl, &phash, "phash_resize first", "first"),
            phash_second: pipeline(&phash_pl, &phash, "phash_resize second", "second"),
            luma: pdq("luma")?,
            box_rows: pipeline(&pdq_pl, &rows, "box_rows", "main"),
            box_rows_sampled: pipeline(&pdq_pl, &rows, "box_rows sampled", "sampled"),
            box_cols: pipeline(&pdq_pl, &cols, "box_cols", "main"),
            box_cols_sampled: pipeline(&pdq_pl, &cols, "box_cols sampled", "sampled"),
            decimate: pdq("decimate")?,
            quality: pdq("quality")?,
            dct: pdq("dct")?,
            dihedral: pdq("dihedral")?,
            threshold: pdq("threshold")?,
            pdq_layout,
            phash_layout,
        })
    }
}
