//! Adapter choice and device creation.
//!
//! `auto` must not land on a software rasteriser (lavapipe, llvmpipe, WARP: `DeviceType::Cpu`), which is far
//! slower than the CPU backend; those are used only when the GPU backend is asked for explicitly, which is how
//! CI runs the real shaders without a GPU.

use super::pipelines::FloatMode;
use super::GpuError;
use wgpu::{Adapter, DeviceType, Instance};

/// Which adapters the GPU backend may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// A real GPU (discrete, integrated or virtual), never a software adapter: what `--backend auto` uses.
    HardwareOnly,
    /// Any adapter, a software one included when nothing else exists: what `--backend gpu` uses.
    AllowSoftware,
}

/// What the backend runs on, for logs, health and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The adapter's name, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// The graphics API wgpu drives it through, e.g. "vulkan".
    pub api: String,
    /// "discrete", "integrated", "virtual", "software (CPU)" or "other".
    pub kind: &'static str,
    /// Whether it is a software rasteriser running on the CPU.
    pub software: bool,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.kind, self.api)
    }
}

pub(crate) fn summary(adapter: &Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let kind = match info.device_type {
        DeviceType::DiscreteGpu => "discrete",
        DeviceType::IntegratedGpu => "integrated",
        DeviceType::VirtualGpu => "virtual",
        DeviceType::Cpu => "software (CPU)",
        DeviceType::Other => "other",
    };
    AdapterSummary {
        name: info.name.clone(),
        api: info.backend.to_string(),
        kind,
        software: info.device_type == DeviceType::Cpu,
    }
}

/// Preference order: discrete, integrated, virtual, other, software.
fn rank(t: DeviceType) -> u8 {
    match t {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Other => 3,
        DeviceType::Cpu => 4,
    }
}

/// A wgpu instance over the native APIs (honouring `WGPU_BACKEND` and friends).
pub(crate) fn instance() -> Instance {
    Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// The best adapter the policy allows, if any.
pub(crate) fn pick_adapter(instance: &Instance, policy: AdapterPolicy) -> Option<Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters
        .into_iter()
        .filter(|a| policy == AdapterPolicy::AllowSoftware || a.get_info().device_type != DeviceType::Cpu)
        .min_by_key(|a| rank(a.get_info().device_type))
}

/// The adapter the policy would pick, without creating a device (cheap enough for `--backend` resolution).
pub fn probe(policy: AdapterPolicy) -> Option<AdapterSummary> {
    pick_adapter(&instance(), policy).map(|a| summary(&a))
}

/// How the shaders can reach this adapter's driver: pinned (SPIR-V with `NoContraction`) on Vulkan when wgpu
/// offers shader passthrough there, unpinned everywhere else. Metal and DX12 have no per-operation
/// equivalent wgpu can express (wgpu's Metal backend compiles with fast math; DX12 gets no `precise`).
pub(crate) fn float_mode(adapter: &Adapter) -> FloatMode {
    let vulkan = adapter.get_info().backend == wgpu::Backend::Vulkan;
    if vulkan && adapter.features().contains(wgpu::Features::PASSTHROUGH_SHADERS) {
        FloatMode::Pinned
    } else {
        FloatMode::Unpinned
    }
}

/// A device on `adapter` with the adapter's own limits (larger storage bindings than the WebGPU defaults,
/// so a batch can hold several 12 MP images), and shader passthrough when `mode` is pinned.
pub(crate) fn device(adapter: &Adapter, mode: FloatMode) -> Result<(wgpu::Device, wgpu::Queue), GpuError> {
    let required_features = match mode {
        FloatMode::Pinned => wgpu::Features::PASSTHROUGH_SHADERS,
        FloatMode::Unpinned => wgpu::Features::empty(),
    };
    let desc = wgpu::DeviceDescriptor {
        label: Some("pharos"),
        required_limits: adapter.limits(),
        required_features,
        ..Default::default()
    };
    pollster::block_on(adapter.request_device(&desc)).map_err(|e| GpuError::Device(e.to_string()))
}
