//! The stage shaders as SPIR-V in which no driver may fuse or reassociate a float operation.
//!
//! # Why
//! WGSL (and naga's SPIR-V for it) leaves a driver free to contract `a * b + c` into a fused multiply-add and,
//! with fast-math defaults some compilers have, to reassociate sums: `(sum + x) - y` becoming
//! `sum + (x - y)`. Either changes the last bits of a box-filter output or a DCT coefficient, and a
//! coefficient next to the median then flips a hash bit. lavapipe happens to do neither, so tests there
//! cannot see it. SPIR-V has the switch GLSL's `precise` compiles to: the `NoContraction` decoration on an
//! arithmetic instruction forbids combining it with any other instruction, fusion and reassociation both
//! (SPIR-V specification, "NoContraction"). Vulkan drivers must honour it.
//!
//! So on Vulkan the shaders are compiled here, at device creation, from the same WGSL (naga: parse,
//! validate, write SPIR-V), every float `+ − × ÷` and negation is decorated `NoContraction`
//! ([`decorate_no_contraction`]), and the words are handed to the driver through wgpu's passthrough
//! (`Features::PASSTHROUGH_SHADERS`), bypassing wgpu's own translation, which would not decorate them.
//! Compiling at run time rather than in `build.rs` costs a few milliseconds once per device and keeps a
//! single source of truth: the WGSL that `tests/shaders.rs` validates is what runs.
//!
//! What `NoContraction` does not settle is the precision of division itself (Vulkan allows 2.5 ULP for
//! `OpFDiv`); the shaders therefore divide only through `div_exact` (`shaders/common.wgsl`), whose one
//! float division (a reciprocal) is only an estimate that integer arithmetic verifies, so it is exact on
//! any driver. Nothing depends on infinities, NaNs or the sign of zero either, so the float-controls mode
//! `SignedZeroInfNanPreserve` is not needed (and wgpu cannot tell whether a device supports it, which an
//! unsupported declaration would require).

use super::GpuError;

/// SPIR-V opcodes (SPIR-V 1.6 specification, section 3.52) this module reads or writes.
mod op {
    pub(super) const DECORATE: u32 = 71;
    pub(super) const MEMBER_DECORATE: u32 = 72;
    pub(super) const DECORATION_GROUP: u32 = 73;
    pub(super) const GROUP_DECORATE: u32 = 74;
    pub(super) const GROUP_MEMBER_DECORATE: u32 = 75;
    pub(super) const DECORATE_ID: u32 = 332;
    pub(super) const DECORATE_STRING: u32 = 5632;
    pub(super) const MEMBER_DECORATE_STRING: u32 = 5633;
    /// Float arithmetic: every instruction a driver could fuse or reassociate. Each has the layout
    /// `opcode | result type | result id | operands…`.
    pub(super) const FLOAT_ARITHMETIC: &[u32] = &[
        127, // OpFNegate
        129, // OpFAdd
        131, // OpFSub
        133, // OpFMul
        136, // OpFDiv
        140, // OpFRem
        141, // OpFMod
        142, // OpVectorTimesScalar
        143, // OpMatrixTimesScalar
        144, // OpVectorTimesMatrix
        145, // OpMatrixTimesVector
        146, // OpMatrixTimesMatrix
        147, // OpOuterProduct
        148, // OpDot
    ];
    /// Extended-instruction call (`OpExtInst`: result type, result id, set, instruction, operands).
    pub(super) const EXT_INST: u32 = 12;
    /// GLSL.std.450 instructions that fuse by definition: `FMix` (46) and `Fma` (50).
    pub(super) const FUSING_EXT: &[u32] = &[46, 50];
}

/// The `NoContraction` decoration.
const NO_CONTRACTION: u32 = 42;
/// SPIR-V's magic number, the first word of every module.
const MAGIC: u32 = 0x0723_0203;
/// Words in the module header.
const HEADER: usize = 5;

/// A compiled module: the words, and each entry point's name and workgroup size.
pub(crate) struct Compiled {
    pub(crate) words: Vec<u32>,
    pub(crate) entry_points: Vec<(String, [u32; 3])>,
}

/// Compiles one stage's complete WGSL to SPIR-V with every float operation decorated `NoContraction`.
pub(crate) fn compile(label: &str, wgsl: &str) -> Result<Compiled, GpuError> {
    let fail = |what: &str, e: String| GpuError::Device(format!("compiling shader {label} ({what}): {e}"));
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| fail("parse", e.emit_to_string(wgsl)))?;
    let info =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .map_err(|e| fail("validate", e.emit_to_string(wgsl)))?;
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    let options = naga::back::spv::Options {
        // Vulkan 1.0 accepts SPIR-V 1.0 everywhere.
        lang_version: (1, 0),
        flags: naga::back::spv::WriterFlags::empty(),
        // No binding map: every resource keeps the group and binding its WGSL declares, which is what the
        // bind-group layouts in `pipelines` are built from.
        fake_missing_bindings: true,
        // What wgpu asks of naga for its own translation: out-of-range indices are clamped, never
        // followed, so a bug in a shader cannot read or write outside its buffers.
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: restrict,
            buffer: restrict,
            image_load: restrict,
            binding_array: restrict,
        },
        ..Default::default()
    };
    let words = naga::back::spv::write_vec(&module, &info, &options, None)
        .map_err(|e| fail("SPIR-V", e.to_string()))?;
    let words = decorate_no_contraction(&words).map_err(|e| fail("decorate", e))?;
    // Cheap insurance that the decoration pass and the module agree.
    check_pinned(&words).map_err(|e| fail("check", e))?;
    let entry_points = module.entry_points.iter().map(|e| (e.name.clone(), e.workgroup_size)).collect();
    Ok(Compiled { words, entry_points })
}

/// The instructions of a module after its header: (offset of the instruction, opcode, word count).
fn instructions(words: &[u32]) -> Result<Vec<(usize, u32, usize)>, String> {
    if words.len() < HEADER || words[0] != MAGIC {
        return Err("not a SPIR-V module".into());
    }
    let mut out = Vec::new();
    let mut at = HEADER;
    while at < words.len() {
        let count = (words[at] >> 16) as usize;
        if count == 0 || at + count > words.len() {
            return Err(format!("malformed instruction at word {at}"));
        }
        out.push((at, words[at] & 0xffff, count));
        at += count;
    }
    Ok(out)
}

fn is_annotation(opcode: u32) -> bool {
    matches!(
        opcode,
        op::DECORATE
            | op::MEMBER_DECORATE
            | op::DECORATION_GROUP
            | op::GROUP_DECORATE
            | op::GROUP_MEMBER_DECORATE
            | op::DECORATE_ID
            | op::DECORATE_STRING
            | op::MEMBER_DECORATE_STRING
    )
}

/// `words` with an `OpDecorate <id> NoContraction` for the result of every float arithmetic instruction,
/// placed at the end of the module's annotation section (where the SPIR-V logical layout requires
/// decorations). Refuses modules with an extended-instruction call that could be an explicit FMA.
pub(crate) fn decorate_no_contraction(words: &[u32]) -> Result<Vec<u32>, String> {
    let insts = instructions(words)?;
    let mut ids = Vec::new();
    for &(at, opcode, count) in &insts {
        if op::FLOAT_ARITHMETIC.contains(&opcode) {
            if count < 3 {
                return Err(format!("float instruction {opcode} at word {at} has no result"));
            }
            ids.push(words[at + 2]);
        }
    }
    let end_of_annotations = insts
        .iter()
        .filter(|&&(_, opcode, _)| is_annotation(opcode))
        .map(|&(at, _, count)| at + count)
        .max()
        .ok_or("the module has no annotation section to extend")?;
    let mut out = Vec::with_capacity(words.len() + 3 * ids.len());
    out.extend_from_slice(&words[..end_of_annotations]);
    for id in ids {
        out.extend_from_slice(&[(3 << 16) | op::DECORATE, id, NO_CONTRACTION]);
    }
    out.extend_from_slice(&words[end_of_annotations..]);
    Ok(out)
}

/// Checks a module the way a reviewer would: every float arithmetic result carries `NoContraction`, and no
/// extended instruction that fuses by definition (GLSL.std.450 `Fma`, `FMix`) is called. Returns how many
/// float instructions it found.
pub(crate) fn check_pinned(words: &[u32]) -> Result<usize, String> {
    let insts = instructions(words)?;
    let decorated: std::collections::HashSet<u32> = insts
        .iter()
        .filter(|&&(at, opcode, count)| {
            opcode == op::DECORATE && count == 3 && words[at + 2] == NO_CONTRACTION
        })
        .map(|&(at, _, _)| words[at + 1])
        .collect();
    let mut n = 0;
    for &(at, opcode, count) in &insts {
        if opcode == op::EXT_INST && count > 4 && op::FUSING_EXT.contains(&words[at + 4]) {
            return Err(format!("fusing extended instruction {} at word {at}", words[at + 4]));
        }
        if op::FLOAT_ARITHMETIC.contains(&opcode) {
            n += 1;
            if !decorated.contains(&words[at + 2]) {
                return Err(format!("float instruction {opcode} at word {at} is not NoContraction"));
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::pipelines::{full_source, STAGES};

    #[test]
    fn every_stage_compiles_with_every_float_operation_pinned() {
        let mut total = 0;
        for (name, src) in STAGES {
            let words = compile(name, &full_source(src)).unwrap().words;
            total += check_pinned(&words).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // The box filters, luma, the DCT and quality do float arithmetic; a count of zero would mean the
        // opcode table no longer matches what naga writes.
        assert!(total >= 10, "only {total} float instructions found");
    }

    #[test]
    fn an_undecorated_module_is_caught() {
        let (name, src) = STAGES.iter().find(|(n, _)| *n == "dct").unwrap();
        let module = naga::front::wgsl::parse_str(&full_source(src)).unwrap();
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap();
        let raw = naga::back::spv::write_vec(&module, &info, &Default::default(), None).unwrap();
        let err = check_pinned(&raw).unwrap_err();
        assert!(err.contains("not NoContraction"), "{name}: {err}");
        assert!(check_pinned(&decorate_no_contraction(&raw).unwrap()).is_ok());
    }

    #[test]
    fn malformed_words_are_refused() {
        assert!(decorate_no_contraction(&[1, 2, 3]).is_err());
        assert!(decorate_no_contraction(&[MAGIC, 0, 0, 0, 0, 0]).is_err());
    }
}
